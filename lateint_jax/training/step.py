"""The data-parallel training step: one jitted pure function over a ("data",) mesh.

The mesh is `sharding.data_mesh(jax.devices(), explicit=False)`: an Auto axis, so XLA carries
the batch sharding through the model and the loss by itself (an Explicit axis would need an
output sharding on every embedding gather and in-batch einsum). Parameters and optimizer state
are replicated; every batch leaf is sharded along its leading (example) axis. The loss is the
mean over the global batch, so XLA's all-reduce of the gradient gives exactly the mean of
per-device gradients that a pmapped step computes with `pmean`.

The step is a pure function of pytrees: `TrainState.params` is the model's `flax.nnx` state as a
plain nested dict (the checkpoint layout), and each task's loss_fn merges it with the module's
static graphdef inside the jitted step (`training.tasks`), the nnx split/merge pattern.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lateint_jax.sharding import DATA_AXIS
from lateint_jax.training.state import TrainState

# loss_fn(params, batch, key) -> (scalar loss, dict of scalar metrics); params: the module's
# state as a pure dict, merged with its graphdef inside the loss (see the module docstring)
LossFn = Callable[[dict, dict, jax.Array], tuple[jax.Array, dict]]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """This process's slice of the global batch (numpy, leading axis = its examples) -> global
    jax.Arrays sharded along "data". In a single process the slice is the whole batch."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def _split_microbatches(batch: dict, accum_steps: int) -> dict:
    """[B, ...] -> [A, B / A, ...] with microbatch a = rows a, A + a, 2A + a, ...

    Striding (not slicing) keeps each microbatch spread evenly over the devices, since each
    device holds a contiguous block of rows.
    """

    def split(x):
        x = x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    accum_steps: int = 1,
    schedule: optax.Schedule | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The jitted `train_step(state, batch) -> (state, metrics)`; `state` is donated.

    With accum_steps = A, the global batch is cut into A microbatches whose gradients are
    averaged before one optimizer update (same update as one big batch, for per-example losses).
    metrics: loss, grad_norm (before clipping), learning_rate (at this step), plus loss_fn's own.
    """
    if mesh.axis_types != (AxisType.Auto,):
        raise ValueError(
            "the train step needs a mesh with an Auto axis: "
            "sharding.data_mesh(devices, explicit=False)"
        )
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    data_sharding = batch_sharding(mesh)

    def train_step(state: TrainState, batch: dict):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        if accum_steps == 1:
            (loss, aux), grads = grad_fn(state.params, batch, key)
        else:
            micro = _split_microbatches(batch, accum_steps)

            def accumulate(carry, xs):
                index, one = xs
                one = jax.lax.with_sharding_constraint(one, data_sharding)
                (loss, aux), grads = grad_fn(state.params, one, jax.random.fold_in(key, index))
                total = jax.tree.map(jnp.add, carry, (loss, aux, grads))
                return total, None

            zeros = jax.tree.map(
                jnp.zeros_like,
                jax.eval_shape(lambda: grad_fn(state.params, _first(micro), key)),
            )
            zeros = (zeros[0][0], zeros[0][1], zeros[1])
            (loss, aux, grads), _ = jax.lax.scan(
                accumulate, zeros, (jnp.arange(accum_steps), micro)
            )
            loss, aux, grads = jax.tree.map(lambda x: x / accum_steps, (loss, aux, grads))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
        if schedule is not None:
            metrics["learning_rate"] = schedule(state.step)
        new_state = TrainState(params, opt_state, state.step + 1, state.rng)
        return new_state, metrics

    return jax.jit(
        train_step,
        in_shardings=(replicated(mesh), data_sharding),
        out_shardings=(replicated(mesh), replicated(mesh)),
        donate_argnums=(0,),
    )


def _first(micro: dict) -> dict:
    return jax.tree.map(lambda x: x[0], micro)


def place_state(state: TrainState, mesh: Mesh) -> TrainState:
    """Replicate a host/one-device state over the mesh (the step donates its input)."""
    return jax.device_put(state, replicated(mesh))
