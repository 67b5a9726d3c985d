"""The transformer families under every model, behind one set of functions: the config from
a config.json (by its model_type), random params, and the forward pass.

Families: BERT / RoBERTa / XLM-RoBERTa (`models.bert`) and ModernBERT (`models.modernbert`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lateint_jax.models.bert import BertConfig, bert_forward, init_bert_params
from lateint_jax.models.modernbert import (
    ModernBertConfig,
    init_modernbert_params,
    modernbert_forward,
)

EncoderConfig = BertConfig | ModernBertConfig


def encoder_config_from_hf(config: dict) -> EncoderConfig:
    """The architecture a config.json describes; CheckpointError for an unsupported one."""
    if config.get("model_type") == "modernbert":
        return ModernBertConfig.from_hf(config)
    return BertConfig.from_hf(config)


def init_encoder_params(config: EncoderConfig, key, with_pooler: bool = True) -> dict:
    """Random params of the family's layout (BERT's optional pooler only for BERT)."""
    if isinstance(config, ModernBertConfig):
        return init_modernbert_params(config, key)
    return init_bert_params(config, key, with_pooler=with_pooler)


def encoder_forward(
    params: dict,
    config: EncoderConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None = None,
    compute_dtype=jnp.float32,
) -> jax.Array:
    """Last hidden states [B, T, H] float32 of input_ids / attention_mask [B, T]."""
    forward = modernbert_forward if isinstance(config, ModernBertConfig) else bert_forward
    return forward(params, config, input_ids, attention_mask, token_type_ids, compute_dtype)
