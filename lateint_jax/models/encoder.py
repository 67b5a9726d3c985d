"""The transformer families under every model, behind one set of functions: the config from
a config.json (by its model_type), the `flax.nnx` module, random params, and the forward pass.

Families: BERT / RoBERTa / XLM-RoBERTa (`models.bert.BertEncoder`) and ModernBERT
(`models.modernbert.ModernBertEncoder`); both take (config, *, rngs, compute_dtype,
with_pooler) and are called as encoder(input_ids, attention_mask, token_type_ids).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lateint_jax.models.bert import BertConfig, BertEncoder
from lateint_jax.models.layers import graphdef_of
from lateint_jax.models.modernbert import ModernBertConfig, ModernBertEncoder

EncoderConfig = BertConfig | ModernBertConfig
Encoder = BertEncoder | ModernBertEncoder


def encoder_config_from_hf(config: dict) -> EncoderConfig:
    """The architecture a config.json describes; CheckpointError for an unsupported one."""
    if config.get("model_type") == "modernbert":
        return ModernBertConfig.from_hf(config)
    return BertConfig.from_hf(config)


def encoder_class(config: EncoderConfig) -> type[BertEncoder | ModernBertEncoder]:
    return ModernBertEncoder if isinstance(config, ModernBertConfig) else BertEncoder


def make_encoder(
    config: EncoderConfig, *, rngs: nnx.Rngs, compute_dtype=jnp.float32, with_pooler: bool = False
) -> Encoder:
    """A randomly initialised encoder of the config's family (the pooler only for BERT)."""
    with_pooler = with_pooler and isinstance(config, BertConfig)
    return encoder_class(config)(
        config, rngs=rngs, compute_dtype=compute_dtype, with_pooler=with_pooler
    )


def has_pooler(params: dict) -> bool:
    return "pooler" in params


def init_encoder_params(config: EncoderConfig, key, with_pooler: bool = True) -> dict:
    """Random params of the family's layout (BERT's optional pooler only for BERT)."""
    return make_encoder(config, rngs=nnx.Rngs(key), with_pooler=with_pooler).to_params()


def encoder_module(params: dict, config: EncoderConfig, compute_dtype=jnp.float32) -> Encoder:
    """The encoder module holding `params` (no copy; works under jit)."""
    cls = encoder_class(config)
    with_pooler = has_pooler(params) and cls is BertEncoder
    graphdef = graphdef_of(cls, config, compute_dtype=compute_dtype, with_pooler=with_pooler)
    return cls.merge(graphdef, params)


def encoder_forward(
    params: dict,
    config: EncoderConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None = None,
    compute_dtype=jnp.float32,
) -> jax.Array:
    """Last hidden states [B, T, H] float32 of input_ids / attention_mask [B, T]."""
    module = encoder_module(params, config, compute_dtype)
    return module(input_ids, attention_mask, token_type_ids)
