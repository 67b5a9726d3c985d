"""ColBERT's projection head: a chain of Dense layers from the encoder's hidden states to the
token embedding, as PyLate writes it (`1_Dense`, `2_Dense`, ... after the Transformer).

Each layer: y = act(x W + b) (+ x R, or + x when in == out, with `residual`), PyLate's
`pylate.models.Dense`. Parameters per layer: {"kernel": [In, Out], "bias": [Out] (optional),
"residual": [In, Out] (residual with In != Out)}; what is not a parameter (the activation,
whether there is a residual) is a static `DenseLayer`. One layer, no bias, identity: colbert-ai's
`linear`. Einsum letters: B batch, T tokens, I a layer's input width, O its output width.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from lateint_jax.errors import CheckpointError

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
        y = _matmul(x, p["kernel"], compute_dtype)
        if "bias" in p:
            y = y + p["bias"].astype(jnp.float32)
        y = ACTIVATIONS[layer.activation](y)
        if layer.residual:
            y = y + (_matmul(x, p["residual"], compute_dtype) if "residual" in p else x)
        x = y
    return x


def _matmul(x: jax.Array, kernel: jax.Array, compute_dtype) -> jax.Array:
    return jnp.einsum(
        "BTI,IO->BTO",
        x.astype(compute_dtype),
        kernel.astype(compute_dtype),
        preferred_element_type=jnp.float32,
    )
