"""The ModernBERT encoder as a `flax.nnx` module, `ModernBertEncoder`.

What differs from BERT: no position embeddings but rotary ones (RoPE) inside attention, with one
base (theta) for global layers and another for local ones; every `global_every`-th layer
(the first included) attends over the whole sequence, the others over a sliding window of
`local_window // 2` tokens each side; pre-norm layers (the first layer has no attention norm),
a final norm; a gated feed-forward (act(x W_in) * (x W_gate)) W_out; biases only where the
config asks for them.

Parameters (the module's state as a pure dict, `to_params()`), float32, kernels stored
[in, out]; "bias" entries exist only when enabled:

    embeddings: word [V, H], ln {scale[, bias]}
    layers: {"0": layer, ...}, each
        attention_ln {scale[, bias]} (not in layer 0), attention: qkv {kernel [H, 3H][, bias]},
        output {kernel [H, H][, bias]}; mlp_ln, mlp: wi {kernel [H, 2I][, bias]}, wo {kernel [I, H][, bias]}
    final_ln {scale[, bias]}

Einsum letters: B batch, T tokens (S for attended tokens), H hidden, A heads, E head dim, I ffn.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from lateint_jax.errors import CheckpointError
from lateint_jax.models.bert import check_inputs
from lateint_jax.models.layers import (
    ACTIVATIONS,
    Dense,
    Norm,
    ParamsModule,
    attend,
    graphdef_of,
    normal,
)

GLOBAL_THETA = 160_000.0  # ModernBERT's defaults when a config.json names none
LOCAL_THETA = 10_000.0


@dataclass(frozen=True)
class ModernBertConfig:
    """The architecture of a ModernBERT encoder, read from a Hugging Face config.json (both
    the original fields and the `layer_types` / `rope_parameters` of transformers >= 5)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 8192
    global_every: int = 3
    local_window: int = 128
    global_theta: float = GLOBAL_THETA
    local_theta: float = LOCAL_THETA
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "gelu"
    pad_token_id: int = 50283
    # The sequence-classification head (cross-encoders): pooling, then dense, act, norm.
    classifier_pooling: str = "cls"
    classifier_activation: str = "gelu"
    classifier_bias: bool = False
    model_type: str = "modernbert"

    @classmethod
    def from_hf(cls, config: dict) -> ModernBertConfig:
        """From a config.json dict; CheckpointError naming any field we cannot honour."""
        required = (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size",
        )  # fmt: skip
        missing = [name for name in required if config.get(name) is None]
        if missing:
            raise CheckpointError(f"config.json lacks {', '.join(missing)}")
        values = {name: config[name] for name in required}
        for ours, theirs in (
            ("max_position_embeddings", "max_position_embeddings"),
            ("local_window", "local_attention"),
            ("norm_eps", "norm_eps"),
            ("norm_bias", "norm_bias"),
            ("attention_bias", "attention_bias"),
            ("mlp_bias", "mlp_bias"),
            ("hidden_act", "hidden_activation"),
            ("pad_token_id", "pad_token_id"),
            ("classifier_pooling", "classifier_pooling"),
            ("classifier_activation", "classifier_activation"),
            ("classifier_bias", "classifier_bias"),
        ):
            if config.get(theirs) is not None:
                values[ours] = config[theirs]
        values["global_every"] = _global_every(config, values["num_hidden_layers"])
        values.update(_thetas(config))
        for ours, theirs in (("hidden_act", "hidden_activation"), ("classifier_activation",) * 2):
            if values.get(ours, "gelu") not in ACTIVATIONS:
                raise CheckpointError(f"{theirs} {values[ours]!r} is not supported")
        if values.get("classifier_pooling", "cls") not in ("cls", "mean"):
            raise CheckpointError(
                f"classifier_pooling {values['classifier_pooling']!r} is not supported"
            )
        if values["hidden_size"] % values["num_attention_heads"]:
            raise CheckpointError("hidden_size is not a multiple of num_attention_heads")
        if (values["hidden_size"] // values["num_attention_heads"]) % 2:
            raise CheckpointError("the head size must be even for rotary embeddings")
        return cls(**values)

    def to_hf(self) -> dict:
        """The config.json fields this config determines (the original ModernBERT names)."""
        return {
            "architectures": ["ModernBertModel"],
            "model_type": "modernbert",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "global_attn_every_n_layers": self.global_every,
            "local_attention": self.local_window,
            "global_rope_theta": self.global_theta,
            "local_rope_theta": self.local_theta,
            "norm_eps": self.norm_eps,
            "norm_bias": self.norm_bias,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "hidden_activation": self.hidden_act,
            "pad_token_id": self.pad_token_id,
            "classifier_pooling": self.classifier_pooling,
            "classifier_activation": self.classifier_activation,
            "classifier_bias": self.classifier_bias,
        }

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def position_offset(self) -> int:
        return 0

    def is_global(self, layer: int) -> bool:
        return layer % self.global_every == 0


def _global_every(config: dict, num_layers: int) -> int:
    """The global-layer period, from `global_attn_every_n_layers` or from `layer_types`."""
    layer_types = config.get("layer_types")
    if layer_types is None:
        return int(config.get("global_attn_every_n_layers") or 3)
    if len(layer_types) != num_layers:
        raise CheckpointError(f"layer_types has {len(layer_types)} entries for {num_layers} layers")
    unknown = sorted(set(layer_types) - {"full_attention", "sliding_attention"})
    if unknown:
        raise CheckpointError(f"layer_types {unknown} are not supported")
    full = [i for i, kind in enumerate(layer_types) if kind == "full_attention"]
    period = full[1] - full[0] if len(full) > 1 else num_layers
    if not full or full != list(range(0, num_layers, period)):
        raise CheckpointError(
            "layer_types must put full attention on every n-th layer from the first, "
            f"got {layer_types}"
        )
    return period


def _thetas(config: dict) -> dict:
    """global_theta / local_theta from `rope_parameters` or the original fields."""
    out = {}
    rope = config.get("rope_parameters")
    if rope:
        for kind, ours in (
            ("full_attention", "global_theta"),
            ("sliding_attention", "local_theta"),
        ):
            params = rope.get(kind) or {}
            if params.get("rope_type", "default") != "default":
                raise CheckpointError(
                    f"rope_parameters.{kind}.rope_type {params['rope_type']!r} is not supported"
                )
            if params.get("rope_theta") is not None:
                out[ours] = float(params["rope_theta"])
    for ours, theirs in (
        ("global_theta", "global_rope_theta"),
        ("local_theta", "local_rope_theta"),
    ):
        if ours not in out and config.get(theirs) is not None:
            out[ours] = float(config[theirs])
    if config.get("rope_scaling"):
        raise CheckpointError("rope_scaling is not supported")
    return out


def rotary(x: jax.Array, theta: float) -> jax.Array:
    """RoPE on x [B, T, A, E] at positions 0..T-1: each half of E is rotated against the
    other (the `rotate_half` layout), frequencies theta ** (-2j / E)."""
    E = x.shape[-1]
    inverse = 1.0 / (theta ** (jnp.arange(0, E, 2, dtype=jnp.float32) / E))  # [E/2]
    angles = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * inverse[None]  # [T, E/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[None, :, None, :]  # [1, T, 1, E]
    x32 = x.astype(jnp.float32)
    first, second = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-second, first], axis=-1)
    return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


class ModernBertAttention(nnx.Module):
    """Rotary self-attention over the whole sequence (global) or a sliding window (local)."""

    def __init__(self, config: ModernBertConfig, is_global: bool, *, rngs, compute_dtype):
        H, bias = config.hidden_size, config.attention_bias
        self.qkv = Dense(H, 3 * H, rngs=rngs, use_bias=bias, compute_dtype=compute_dtype)
        self.output = Dense(H, H, rngs=rngs, use_bias=bias, compute_dtype=compute_dtype)
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.theta = config.global_theta if is_global else config.local_theta
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B, T, H], mask [B, 1, T, S] -> [B, T, H]."""
        B, T, _ = x.shape
        A, E, dtype = self.heads, self.head_dim, self.compute_dtype
        qkv = self.qkv(x).reshape(B, T, 3, A, E)
        q, k, v = (qkv[:, :, j] for j in range(3))
        q, k = rotary(q, self.theta), rotary(k, self.theta)
        ctx = attend(q.astype(dtype), k.astype(dtype), v.astype(dtype), mask)
        # A padding position farther than the window from every real token attends to nothing:
        # zeros, as PyTorch's scaled_dot_product_attention gives (ColBERT's [MASK] query padding
        # keeps these vectors, so they must match).
        attends = jnp.any(mask, axis=-1)[:, 0, :, None, None]  # [B, T, 1, 1]
        ctx = jnp.where(attends, ctx, 0.0)
        return self.output(ctx.reshape(B, T, A * E))


class ModernBertMLP(nnx.Module):
    """Gated feed-forward: (act(x W_in) * (x W_gate)) W_out, W_in and W_gate stacked in `wi`."""

    def __init__(self, config: ModernBertConfig, *, rngs, compute_dtype):
        H, I, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.wi = Dense(H, 2 * I, rngs=rngs, use_bias=bias, compute_dtype=compute_dtype)
        self.wo = Dense(I, H, rngs=rngs, use_bias=bias, compute_dtype=compute_dtype)
        self.act = config.hidden_act

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden, gate = jnp.split(self.wi(x), 2, axis=-1)
        return self.wo(ACTIVATIONS[self.act](hidden) * gate)


class ModernBertLayer(nnx.Module):
    """Pre-norm: x + attention(norm x), then x + mlp(norm x); layer 0 has no attention norm."""

    def __init__(self, config: ModernBertConfig, index: int, *, rngs, compute_dtype):
        H, eps, bias = config.hidden_size, config.norm_eps, config.norm_bias
        self.is_global = config.is_global(index)
        self.attention_ln = Norm(H, eps, use_bias=bias) if index > 0 else None
        self.attention = ModernBertAttention(
            config, self.is_global, rngs=rngs, compute_dtype=compute_dtype
        )
        self.mlp_ln = Norm(H, eps, use_bias=bias)
        self.mlp = ModernBertMLP(config, rngs=rngs, compute_dtype=compute_dtype)

    def __call__(self, x: jax.Array, key_mask: jax.Array, window: jax.Array) -> jax.Array:
        h = x if self.attention_ln is None else self.attention_ln(x)
        x = x + self.attention(h, key_mask if self.is_global else key_mask & window)
        return x + self.mlp(self.mlp_ln(x))


class ModernBertEmbeddings(nnx.Module):
    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        self.word = normal(rngs, (config.vocab_size, config.hidden_size))
        self.ln = Norm(config.hidden_size, config.norm_eps, use_bias=config.norm_bias)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        return self.ln(self.word[...][input_ids])


class ModernBertEncoder(ParamsModule):
    """ModernBERT: input ids -> last hidden states (random init: normal(0.02) weights, zero
    biases, unit norms). compute_dtype: the matmuls' dtype; parameters stay float32."""

    def __init__(
        self,
        config: ModernBertConfig,
        *,
        rngs: nnx.Rngs,
        compute_dtype=jnp.float32,
        with_pooler: bool = False,
    ):
        del with_pooler  # ModernBERT has no pooler; accepted so every family builds alike
        self.config = config
        self.embeddings = ModernBertEmbeddings(config, rngs=rngs)
        self.layers = nnx.Dict(
            {
                str(i): ModernBertLayer(config, i, rngs=rngs, compute_dtype=compute_dtype)
                for i in range(config.num_hidden_layers)
            }
        )
        self.final_ln = Norm(config.hidden_size, config.norm_eps, use_bias=config.norm_bias)

    @classmethod
    def from_hf_config(
        cls, config_json: dict, *, rngs: nnx.Rngs, compute_dtype=jnp.float32
    ) -> ModernBertEncoder:
        return cls(ModernBertConfig.from_hf(config_json), rngs=rngs, compute_dtype=compute_dtype)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Last hidden states [B, T, H] float32 of right-padded input_ids [B, T] under
        attention_mask [B, T] (token_type_ids: ModernBERT has none; ignored)."""
        check_inputs(input_ids, attention_mask)
        T = input_ids.shape[1]
        x = self.embeddings(input_ids)
        key_mask = attention_mask.astype(bool)[:, None, None, :]  # [B, 1, 1, S]
        distance = jnp.abs(jnp.arange(T)[:, None] - jnp.arange(T)[None, :])
        window = (distance <= self.config.local_window // 2)[None, None]  # [1, 1, T, S]
        for i in range(self.config.num_hidden_layers):
            x = self.layers[str(i)](x, key_mask, window)
        return self.final_ln(x)


# ---------------------------------------------------------------------------- as pure functions


def init_modernbert_params(config: ModernBertConfig, key) -> dict:
    """Random float32 params of a `ModernBertEncoder` (layout in the module docstring)."""
    return ModernBertEncoder(config, rngs=nnx.Rngs(key)).to_params()


def modernbert_forward(
    params: dict,
    config: ModernBertConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None = None,
    compute_dtype=jnp.float32,
) -> jax.Array:
    """`ModernBertEncoder.__call__` as a pure function of params: [B, T, H] float32."""
    check_inputs(input_ids, attention_mask)
    graphdef = graphdef_of(ModernBertEncoder, config, compute_dtype=compute_dtype)
    return ModernBertEncoder.merge(graphdef, params)(input_ids, attention_mask)
