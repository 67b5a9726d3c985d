"""The training state pytree and the optimizer (AdamW, global-norm clipping, linear warmup and
linear decay)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TrainState:
    """Everything a step reads and returns; nothing else persists between steps.

    params: the model's nested dict; opt_state: optax state; step: int32 []; rng: uint32 [2]
    (raw key data, so orbax stores it as a plain array). A step's randomness is
    `fold_in(rng, step)`, which makes a resumed run draw exactly what an unbroken one would.
    """

    params: dict
    opt_state: optax.OptState
    step: jax.Array
    rng: jax.Array


def learning_rate_schedule(peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""
    warmup_steps = max(0, min(warmup_steps, total_steps))
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
            optax.linear_schedule(peak, 0.0, max(total_steps - warmup_steps, 1)),
        ],
        boundaries=[warmup_steps],
    )


def make_optimizer(
    schedule: optax.Schedule, weight_decay: float = 0.01, max_grad_norm: float | None = 1.0
) -> optax.GradientTransformation:
    """Clip by global norm (when max_grad_norm is set), then AdamW on `schedule`.

    LayerNorm scales and all biases (rank < 2) are not decayed, as in BERT fine-tuning.
    """
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    adamw = optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask)
    if max_grad_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), adamw)


def create_state(params: dict, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh state at step 0 (params as float32)."""
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    return TrainState(
        params=params,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(jax.random.key(seed)),
    )
