"""ColBERT's projection head: a chain of Dense layers from the encoder's hidden states to the
token embedding, as PyLate writes it (`1_Dense`, `2_Dense`, ... after the Transformer).

Each layer (`ProjectionLayer`, a `flax.nnx` module): y = act(x W + b) (+ x R, or + x when
in == out, with `residual`), PyLate's `pylate.models.Dense`. Parameters per layer: {"kernel": [In, Out], "bias": [Out] (optional),
"residual": [In, Out] (residual with In != Out)}; what is not a parameter (the activation,
whether there is a residual) is a static `DenseLayer`. One layer, no bias, identity: colbert-ai's
`linear`. Einsum letters: B batch, T tokens, I a layer's input width, O its output width.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from lateint_jax.errors import CheckpointError
from lateint_jax.models.layers import ParamsModule, matmul, normal

# torch.nn activation class -> ours; PyLate saves the class path, instantiated without arguments
# (so GELU is the exact one).
ACTIVATIONS = {
    "Identity": lambda x: x,
    "Tanh": jnp.tanh,
    "ReLU": jax.nn.relu,
    "GELU": lambda x: jax.nn.gelu(x, approximate=False),
    "SiLU": jax.nn.silu,
    "Sigmoid": jax.nn.sigmoid,
}
_TORCH_MODULE = {"Identity": "torch.nn.modules.linear"}  # the rest: torch.nn.modules.activation


@dataclass(frozen=True)
class DenseLayer:
    """What a Dense layer does beyond its parameters (hashable: a static jit argument)."""

    activation: str = "Identity"
    residual: bool = False

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise CheckpointError(
                f"Dense activation_function {self.activation!r} is not supported "
                f"(one of {sorted(ACTIVATIONS)})"
            )

    @classmethod
    def from_torch_name(cls, name: str, residual: bool = False) -> DenseLayer:
        """From the `activation_function` class path in a Dense config.json."""
        module, _, short = name.rpartition(".")
        if not module.startswith("torch.nn") or short not in ACTIVATIONS:
            raise CheckpointError(
                f"Dense activation_function {name!r} is not supported "
                f"(torch.nn {', '.join(sorted(ACTIVATIONS))})"
            )
        return cls(short, residual)

    @property
    def torch_name(self) -> str:
        module = _TORCH_MODULE.get(self.activation, "torch.nn.modules.activation")
        return f"{module}.{self.activation}"


LINEAR = (DenseLayer(),)  # colbert-ai's head: one linear map, no bias


def as_layers(head_params) -> list[dict]:
    """params["linear"] as a list of layer dicts (one layer may be stored as a bare dict)."""
    return list(head_params) if isinstance(head_params, (list, tuple)) else [head_params]


def output_dim(head_params) -> int:
    return int(as_layers(head_params)[-1]["kernel"].shape[1])


def project(
    head_params, layers: tuple[DenseLayer, ...], hidden: jax.Array, compute_dtype=jnp.float32
) -> jax.Array:
    """hidden [B, T, H] -> [B, T, D] float32 through the chain (not normalised)."""
    params = as_layers(head_params)
    if len(params) != len(layers):
        raise CheckpointError(f"{len(params)} Dense layers of parameters but {len(layers)} specs")
    x = hidden.astype(jnp.float32)
    for p, layer in zip(params, layers, strict=True):
        x = apply_layer(p, layer, x, compute_dtype)
    return x


def apply_layer(p: dict, layer: DenseLayer, x: jax.Array, compute_dtype) -> jax.Array:
    """One layer on x [B, T, I] float32 -> [B, T, O] float32."""
    y = matmul(x, p["kernel"], compute_dtype)
    if p.get("bias") is not None:
        y = y + p["bias"].astype(jnp.float32)
    y = ACTIVATIONS[layer.activation](y)
    if layer.residual:
        y = y + (matmul(x, p["residual"], compute_dtype) if p.get("residual") is not None else x)
    return y


def layer_shapes(head_params) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """(output widths, has-bias flags) of each layer of params["linear"]: the static
    structure a `ProjectionLayer` chain needs to hold those params."""
    layers = as_layers(head_params)
    dims = tuple(int(p["kernel"].shape[1]) for p in layers)
    return dims, tuple("bias" in p for p in layers)


class ProjectionLayer(ParamsModule):
    """One head layer: kernel [in, out] (+ bias [out]) (+ residual [in, out] when `layer` has a
    residual and in != out), float32, multiplied in compute_dtype."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        layer: DenseLayer = DenseLayer(),
        *,
        rngs: nnx.Rngs,
        use_bias: bool = False,
        compute_dtype=jnp.float32,
    ):
        self.kernel = normal(rngs, (n_in, n_out))
        self.bias = nnx.Param(jnp.zeros((n_out,), jnp.float32)) if use_bias else None
        self.residual = normal(rngs, (n_in, n_out)) if layer.residual and n_in != n_out else None
        self.layer, self.compute_dtype = layer, compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        arrays = {"kernel": self.kernel[...]}
        for name in ("bias", "residual"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)[...]
        return apply_layer(arrays, self.layer, x.astype(jnp.float32), self.compute_dtype)
