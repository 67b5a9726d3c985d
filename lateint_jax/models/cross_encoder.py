"""The cross-encoder: BERT with a sequence-classification head, one logit per (query, passage).

params = {"bert": bert params, "head": ...} where head is, for BERT
(`BertForSequenceClassification`): the pooler in params["bert"]["pooler"] and
{"classifier": {kernel [H, 1], bias [1]}}; for RoBERTa / XLM-R (`*ForSequenceClassification`):
{"dense": {kernel [H, H], bias [H]}, "out_proj": {kernel [H, 1], bias [1]}} on the first token;
for ModernBERT (`ModernBertForSequenceClassification`): the first token or the mean (the
config's classifier_pooling), then {"dense": {kernel [H, H][, bias]}, "norm": {scale[, bias]}}
with the config's activation between them, and {"classifier": {kernel [H, 1], bias [1]}}.
Einsum letters: B batch, T tokens, H hidden.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lateint_jax.models.bert import ACTIVATIONS, dense, layer_norm, pooler_forward
from lateint_jax.models.bi_encoder import mean_pool
from lateint_jax.models.encoder import EncoderConfig, encoder_forward
from lateint_jax.models.modernbert import ModernBertConfig


def init_head(bert_config: EncoderConfig, key) -> dict:
    """Random head params matching the model type (see the module docstring)."""
    H = bert_config.hidden_size
    k1, k2 = jax.random.split(key)

    def layer(k, n_in, n_out):
        w = 0.02 * jax.random.normal(k, (n_in, n_out), jnp.float32)
        return {"kernel": w, "bias": jnp.zeros((n_out,), jnp.float32)}

    if bert_config.model_type == "bert":
        return {"classifier": layer(k1, H, 1)}
    if isinstance(bert_config, ModernBertConfig):
        head = {
            "dense": layer(k1, H, H),
            "norm": {"scale": jnp.ones((H,), jnp.float32)},
            "classifier": layer(k2, H, 1),
        }
        if not bert_config.classifier_bias:
            del head["dense"]["bias"]
        if bert_config.norm_bias:
            head["norm"]["bias"] = jnp.zeros((H,), jnp.float32)
        return head
    return {"dense": layer(k1, H, H), "out_proj": layer(k2, H, 1)}


def cross_encoder_forward(
    params: dict,
    bert_config: EncoderConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None,
    compute_dtype=jnp.float32,
) -> jax.Array:
    """Relevance logits [B] float32 of pair encodings input_ids/attention_mask/token_type_ids [B, T]."""
    hidden = encoder_forward(
        params["bert"], bert_config, input_ids, attention_mask, token_type_ids, compute_dtype
    )
    head = params["head"]
    if isinstance(bert_config, ModernBertConfig):
        if bert_config.classifier_pooling == "mean":
            pooled = mean_pool(hidden, attention_mask)
        else:
            pooled = hidden[:, 0]
        x = ACTIVATIONS[bert_config.classifier_activation](
            dense(pooled, head["dense"], compute_dtype)
        )
        x = layer_norm(x, head["norm"], bert_config.norm_eps)
        logits = dense(x, head["classifier"], compute_dtype)
    elif "classifier" in head:
        pooled = pooler_forward(params["bert"], hidden, compute_dtype)
        logits = dense(pooled, head["classifier"], compute_dtype)
    else:
        x = jnp.tanh(dense(hidden[:, 0], head["dense"], compute_dtype))
        logits = dense(x, head["out_proj"], compute_dtype)
    return logits[:, 0]
