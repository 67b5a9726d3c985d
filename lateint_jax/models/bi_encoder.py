"""The Sentence-BERT bi-encoder: BERT -> mean pooling over the attention mask -> optional L2.

params = the encoder's params (the dict `models.encoder.encoder_forward` takes).
Einsum letters: B batch, T tokens, H hidden.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lateint_jax.models.colbert import l2_normalize
from lateint_jax.models.encoder import EncoderConfig, encoder_forward


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """hidden [B, T, H], attention_mask [B, T] -> [B, H] mean of the attended tokens."""
    mask = attention_mask.astype(jnp.float32)[..., None]
    summed = jnp.sum(hidden * mask, axis=1)
    # sentence-transformers clamps the count at 1e-9 so empty rows give zeros, not NaN.
    return summed / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)


def bi_encoder_forward(
    params: dict,
    bert_config: EncoderConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    normalize: bool,
    compute_dtype=jnp.float32,
) -> jax.Array:
    """Sentence embeddings [B, H] float32 of input_ids/attention_mask [B, T]."""
    hidden = encoder_forward(
        params, bert_config, input_ids, attention_mask, compute_dtype=compute_dtype
    )
    pooled = mean_pool(hidden, attention_mask)
    return l2_normalize(pooled) if normalize else pooled
