"""The building blocks every encoder and head shares, as `flax.nnx` modules, and the bridge
between a module and its parameters as a plain nested dict.

`Dense` and `Norm` hold their arrays as `nnx.Param`s named like the checkpoint name maps'
leaves ("kernel" [in, out], "bias", "scale"), so a module's state, as a pure dict
(`nnx.to_pure_dict`), is exactly the params dict `convert` reads and writes. Matmuls run in the
module's `compute_dtype` (float32 or bfloat16) and accumulate in float32; norms, softmax and
everything after a matmul stay float32. Parameters are float32 whatever the compute dtype.

Einsum letters: B batch, T tokens (S attended tokens), A heads, E head dim.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def normal(rngs: nnx.Rngs, shape: tuple[int, ...]) -> nnx.Param:
    """A float32 parameter drawn from normal(0, 0.02), BERT's initialisation."""
    return nnx.Param(0.02 * jax.random.normal(rngs.params(), shape, jnp.float32))


class Dense(nnx.Module):
    """y = x @ kernel [+ bias]; kernel [in, out] float32, multiplied in compute_dtype."""

    def __init__(
        self, n_in: int, n_out: int, *, rngs: nnx.Rngs, use_bias: bool = True,
        compute_dtype=jnp.float32,
    ):  # fmt: skip
        self.kernel = normal(rngs, (n_in, n_out))
        self.bias = nnx.Param(jnp.zeros((n_out,), jnp.float32)) if use_bias else None
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = matmul(x, self.kernel[...], self.compute_dtype)
        return y if self.bias is None else y + self.bias[...]


class Norm(nnx.Module):
    """LayerNorm over the last axis, always in float32 (without bias: no shift)."""

    def __init__(self, width: int, eps: float, *, use_bias: bool = True):
        self.scale = nnx.Param(jnp.ones((width,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((width,), jnp.float32)) if use_bias else None
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...]
        return y if self.bias is None else y + self.bias[...]


def matmul(x: jax.Array, kernel: jax.Array, compute_dtype) -> jax.Array:
    """x [..., in] @ kernel [in, out] with both operands in compute_dtype, accumulated in f32."""
    return jnp.einsum(
        "...i,io->...o",
        x.astype(compute_dtype),
        kernel.astype(compute_dtype),
        preferred_element_type=jnp.float32,
    )


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(E)) v over the attended keys: q/k/v [B, T, A, E], mask broadcastable
    to [B, A, T, S] (True = attend) -> [B, T, A, E] in q's dtype.

    Logits and softmax are float32 whatever q's dtype. On CPU, `attend_einsum`; elsewhere
    `jax.nn.dot_product_attention` (cuDNN's fused kernel on a GPU where its constraints hold).
    """
    if jax.default_backend() == "cpu":
        return attend_einsum(q, k, v, mask)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=None)


# Masked logits, as jax.nn.dot_product_attention sets them: finite, so a row with no attended
# key gives equal weights instead of NaN.
_MASKED_LOGIT = float(-0.7 * jnp.finfo(jnp.float32).max)


def attend_einsum(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """`attend` written out head-major, normalising after the value product.

    On XLA's CPU backend the logits, mask, exp, row sums, value product and division fuse into
    one kernel per layer and the [B, A, T, S] probabilities are never transposed or written out
    more than once: measured against `jax.nn.dot_product_attention` on MiniLM (32 x 180 tokens),
    attention fell from about a quarter of the forward pass's CPU time to about a sixth
    (docs/ENCODERS.md). Dividing the [B, A, T, E] product by the row sums does T * E divisions
    where normalising the probabilities first does T * S.
    """
    scale = 1.0 / float(q.shape[-1]) ** 0.5
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # [B, A, T|S, E]
    logits = jnp.einsum("bate,base->bats", q, k, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(mask, logits, _MASKED_LOGIT)
    weights = jnp.exp(logits - logits.max(axis=-1, keepdims=True))
    ctx = jnp.einsum(
        "bats,base->bate", weights.astype(v.dtype), v, preferred_element_type=jnp.float32
    )
    ctx = ctx / weights.sum(axis=-1)[..., None]
    return ctx.transpose(0, 2, 1, 3).astype(q.dtype)


# ---------------------------------------------------------------------------- params <-> module


class ParamsModule(nnx.Module):
    """A module whose `nnx.Param` state, as a pure dict, is a documented params layout.

    `to_params()` reads the state out (the arrays themselves, no copy); `merge(graphdef, params)`
    builds the module back from a graphdef and such a dict, inside or outside `jax.jit`.
    Subclasses whose layout differs from the raw pure dict (a list where nnx keeps int keys, a
    wrapper level the checkpoints do not have) override `params_to_state` / `state_to_params`.
    """

    @classmethod
    def params_to_state(cls, params: dict) -> dict:
        return params

    @classmethod
    def state_to_params(cls, state: dict) -> dict:
        return state

    def to_params(self) -> dict:
        return self.state_to_params(nnx.to_pure_dict(nnx.state(self, nnx.Param)))

    def load_params(self, params: dict) -> None:
        """Replace the module's arrays by `params` (same layout and shapes)."""
        nnx.update(self, self.params_to_state(params))

    @classmethod
    def merge(cls, graphdef: nnx.GraphDef, params: dict):
        return nnx.merge(graphdef, cls.params_to_state(params))


@functools.lru_cache(maxsize=64)
def graphdef_of(cls, *args, **kwargs) -> nnx.GraphDef:
    """The graphdef of `cls(*args, rngs=..., **kwargs)` from an abstract (shape-only) build;
    the arguments must be hashable (configs are frozen dataclasses)."""
    return nnx.graphdef(nnx.eval_shape(lambda: cls(*args, rngs=nnx.Rngs(0), **kwargs)))


def abstract_params(cls, *args, **kwargs) -> dict:
    """The params layout of `cls(*args, **kwargs)` with jax.ShapeDtypeStruct leaves."""
    return nnx.eval_shape(lambda: cls(*args, rngs=nnx.Rngs(0), **kwargs)).to_params()
