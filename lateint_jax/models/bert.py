"""The BERT-family encoder (BERT, RoBERTa, XLM-RoBERTa) as a `flax.nnx` module, `BertEncoder`.

Its parameters (the module's `nnx.Param` state as a pure dict, `BertEncoder.to_params()`) are
float32, kernels stored [in, out]:

    embeddings: word [V, H], position [P, H], token_type [TT, H], ln {scale, bias}
    layers: {"0": layer, "1": layer, ...}, each
        attention: query/key/value/output {kernel [H, H], bias [H]}, ln {scale, bias}
        mlp: intermediate {kernel [H, I], bias [I]}, output {kernel [I, H], bias [H]}, ln
    pooler (optional; cross-encoders use it; kept so checkpoints round-trip): {kernel, bias}

`bert_forward(params, config, ...)` is the same computation as a pure function of that dict.
Einsum letters: B batch, T tokens (S for attended tokens), H hidden, A heads, E head dim, I ffn.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from lateint_jax.errors import CheckpointError
from lateint_jax.models.layers import (
    ACTIVATIONS,
    Dense,
    Norm,
    ParamsModule,
    attend,
    graphdef_of,
    normal,
)

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
_ROBERTA_LIKE = ("roberta", "xlm-roberta")


@dataclass(frozen=True)
class BertConfig:
    """The architecture of a BERT-family encoder, read from a Hugging Face config.json."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    model_type: str = "bert"

    @classmethod
    def from_hf(cls, config: dict | str | os.PathLike) -> BertConfig:
        """From a config dict, a config.json path, or a directory holding config.json."""
        if not isinstance(config, dict):
            path = Path(config)
            if path.is_dir():
                path = path / "config.json"
            try:
                config = json.loads(path.read_text())
            except FileNotFoundError as err:
                raise CheckpointError(f"no config.json at {path}") from err
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{path} is not valid JSON: {err}") from err
        model_type = config.get("model_type", "bert")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise CheckpointError(
                f"model_type {model_type!r} is not supported (expected one of "
                f"{', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        values = {}
        for field in fields(cls):
            if field.name in config and config[field.name] is not None:
                values[field.name] = config[field.name]
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING]
        if missing:
            raise CheckpointError(f"config.json lacks {', '.join(missing)}")
        values["model_type"] = model_type
        hidden_act = values.get("hidden_act", "gelu")
        if hidden_act not in ACTIVATIONS:
            raise CheckpointError(f"hidden_act {hidden_act!r} is not supported")
        if values["hidden_size"] % values["num_attention_heads"]:
            raise CheckpointError("hidden_size is not a multiple of num_attention_heads")
        return cls(**values)

    def to_hf(self) -> dict:
        """The Hugging Face config.json fields this config determines."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        arch = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"}
        out["architectures"] = [arch[self.model_type]]
        return out

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def position_offset(self) -> int:
        """RoBERTa-family position ids start after the padding index."""
        return self.pad_token_id + 1 if self.model_type in _ROBERTA_LIKE else 0


def tiny_bert_config(vocab_size: int) -> BertConfig:
    """2 layers, width 32: a model that trains in seconds on CPU (tests and smoke runs)."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        type_vocab_size=2,
    )


def position_ids(config: BertConfig, input_ids: jax.Array) -> jax.Array:
    """[B, T] positions: 0.. for BERT; for RoBERTa-likes, counted over non-pad tokens from pad+1."""
    if config.model_type in _ROBERTA_LIKE:
        not_pad = (input_ids != config.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(not_pad, axis=1) * not_pad + config.pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)


class BertEmbeddings(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        H = config.hidden_size
        self.word = normal(rngs, (config.vocab_size, H))
        self.position = normal(rngs, (config.max_position_embeddings, H))
        self.token_type = normal(rngs, (config.type_vocab_size, H))
        self.ln = Norm(H, config.layer_norm_eps)
        self.config = config

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        x = (
            self.word[...][input_ids]
            + self.position[...][position_ids(self.config, input_ids)]
            + self.token_type[...][token_type_ids]
        )
        return self.ln(x)


class BertAttention(nnx.Module):
    """Post-norm self-attention: ln(x + output(attend(query x, key x, value x)))."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, compute_dtype):
        H = config.hidden_size
        for name in ("query", "key", "value", "output"):
            setattr(self, name, Dense(H, H, rngs=rngs, compute_dtype=compute_dtype))
        self.ln = Norm(H, config.layer_norm_eps)
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
        B, T, _ = x.shape

        def heads(dense):
            return dense(x).reshape(B, T, self.heads, self.head_dim).astype(self.compute_dtype)

        ctx = attend(heads(self.query), heads(self.key), heads(self.value), key_mask)
        out = self.output(ctx.reshape(B, T, self.heads * self.head_dim))
        return self.ln(out + x)


class BertMLP(nnx.Module):
    """Post-norm feed-forward: ln(x + output(act(intermediate x)))."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, compute_dtype):
        H, I = config.hidden_size, config.intermediate_size
        self.intermediate = Dense(H, I, rngs=rngs, compute_dtype=compute_dtype)
        self.output = Dense(I, H, rngs=rngs, compute_dtype=compute_dtype)
        self.ln = Norm(H, config.layer_norm_eps)
        self.act = config.hidden_act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.ln(self.output(ACTIVATIONS[self.act](self.intermediate(x))) + x)


class BertLayer(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, compute_dtype):
        self.attention = BertAttention(config, rngs=rngs, compute_dtype=compute_dtype)
        self.mlp = BertMLP(config, rngs=rngs, compute_dtype=compute_dtype)

    def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
        return self.mlp(self.attention(x, key_mask))


class BertEncoder(ParamsModule):
    """BERT / RoBERTa / XLM-RoBERTa: input ids -> last hidden states.

    Random init: normal(0.02) weights, zero biases, unit LayerNorm (load a checkpoint with
    `convert.load_checkpoint` and `load_params`, or through `lateint_jax.encoders`).
    compute_dtype: the matmuls' dtype (float32 or bfloat16); parameters stay float32.
    """

    def __init__(
        self,
        config: BertConfig,
        *,
        rngs: nnx.Rngs,
        compute_dtype=jnp.float32,
        with_pooler: bool = True,
    ):
        self.config = config
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        self.layers = nnx.Dict(
            {
                str(i): BertLayer(config, rngs=rngs, compute_dtype=compute_dtype)
                for i in range(config.num_hidden_layers)
            }
        )
        H = config.hidden_size
        self.pooler = Dense(H, H, rngs=rngs, compute_dtype=compute_dtype) if with_pooler else None

    @classmethod
    def from_hf_config(
        cls, config_json, *, rngs: nnx.Rngs, compute_dtype=jnp.float32, with_pooler: bool = True
    ) -> BertEncoder:
        """From a config.json (dict, file or directory), randomly initialised."""
        return cls(
            BertConfig.from_hf(config_json),
            rngs=rngs,
            compute_dtype=compute_dtype,
            with_pooler=with_pooler,
        )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Last hidden states [B, T, H] float32 of input_ids [B, T] under attention_mask [B, T]."""
        check_inputs(input_ids, attention_mask)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        key_mask = attention_mask.astype(bool)[:, None, None, :]  # [B, 1, 1, S]
        for i in range(self.config.num_hidden_layers):
            x = self.layers[str(i)](x, key_mask)
        return x

    def pool(self, hidden: jax.Array) -> jax.Array:
        """BERT's pooler: tanh(dense(first token)); hidden [B, T, H] -> [B, H]."""
        if self.pooler is None:
            raise ValueError("this BertEncoder was built with_pooler=False")
        return jnp.tanh(self.pooler(hidden[:, 0]))


def check_inputs(input_ids: jax.Array, attention_mask: jax.Array) -> None:
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids and attention_mask must both be [B, T], got {input_ids.shape} "
            f"and {attention_mask.shape}"
        )


# ---------------------------------------------------------------------------- as pure functions


def init_bert_params(config: BertConfig, key, with_pooler: bool = True) -> dict:
    """Random float32 params of a `BertEncoder` (see the module docstring for the layout)."""
    return BertEncoder(config, rngs=nnx.Rngs(key), with_pooler=with_pooler).to_params()


def bert_module(params: dict, config: BertConfig, compute_dtype=jnp.float32) -> BertEncoder:
    """The `BertEncoder` holding `params` (no copy; works under jit)."""
    graphdef = graphdef_of(
        BertEncoder, config, compute_dtype=compute_dtype, with_pooler="pooler" in params
    )
    return BertEncoder.merge(graphdef, params)


def bert_forward(
    params: dict,
    config: BertConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None = None,
    compute_dtype=jnp.float32,
) -> jax.Array:
    """`BertEncoder.__call__` as a pure function of params: hidden states [B, T, H] float32.

    Matmuls run in compute_dtype (float32 or bfloat16); LayerNorm and softmax in float32.
    """
    check_inputs(input_ids, attention_mask)
    return bert_module(params, config, compute_dtype)(input_ids, attention_mask, token_type_ids)


def pooler_forward(params: dict, hidden: jax.Array, compute_dtype=jnp.float32) -> jax.Array:
    """BERT pooler: tanh(dense(first token)); hidden [B, T, H] -> [B, H]."""
    pooler = params["pooler"]
    H = pooler["kernel"].shape[0]
    graphdef = graphdef_of(Dense, H, H, compute_dtype=compute_dtype)
    return jnp.tanh(nnx.merge(graphdef, pooler)(hidden[:, 0]))
