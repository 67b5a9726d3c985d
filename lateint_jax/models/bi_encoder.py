"""The Sentence-BERT bi-encoder: BERT -> mean pooling over the attention mask -> optional L2,
as the `flax.nnx` module `BiEncoderModel`.

params (`BiEncoderModel.to_params()`) = the encoder's params, as a sentence-transformers
checkpoint holds them (the module keeps the encoder under `bert`; the layout drops that level).
Einsum letters: B batch, T tokens, H hidden.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lateint_jax.models.colbert import l2_normalize
from lateint_jax.models.encoder import (
    EncoderConfig,
    encoder_config_from_hf,
    has_pooler,
    make_encoder,
)
from lateint_jax.models.layers import ParamsModule, graphdef_of


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """hidden [B, T, H], attention_mask [B, T] -> [B, H] mean of the attended tokens."""
    mask = attention_mask.astype(jnp.float32)[..., None]
    summed = jnp.sum(hidden * mask, axis=1)
    # sentence-transformers clamps the count at 1e-9 so empty rows give zeros, not NaN.
    return summed / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)


class BiEncoderModel(ParamsModule):
    """Encoder -> mean pooling -> L2 normalisation when `normalize`: [B, H] float32."""

    def __init__(
        self,
        encoder_config: EncoderConfig,
        *,
        rngs: nnx.Rngs,
        normalize: bool = True,
        compute_dtype=jnp.float32,
        with_pooler: bool = False,
    ):
        self.bert = make_encoder(
            encoder_config, rngs=rngs, compute_dtype=compute_dtype, with_pooler=with_pooler
        )
        self.normalize = normalize

    @classmethod
    def from_hf_config(
        cls, config_json: dict, *, rngs: nnx.Rngs, normalize: bool = True, compute_dtype=jnp.float32
    ) -> BiEncoderModel:
        return cls(
            encoder_config_from_hf(config_json),
            rngs=rngs,
            normalize=normalize,
            compute_dtype=compute_dtype,
        )

    @classmethod
    def state_to_params(cls, state: dict) -> dict:
        return state["bert"]

    @classmethod
    def params_to_state(cls, params: dict) -> dict:
        return {"bert": params}

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Sentence embeddings [B, H] float32 of input_ids/attention_mask [B, T]."""
        pooled = mean_pool(self.bert(input_ids, attention_mask), attention_mask)
        return l2_normalize(pooled) if self.normalize else pooled


def bi_encoder_graphdef(
    params: dict, bert_config: EncoderConfig, normalize: bool, compute_dtype=jnp.float32
) -> nnx.GraphDef:
    return graphdef_of(
        BiEncoderModel,
        bert_config,
        normalize=normalize,
        compute_dtype=compute_dtype,
        with_pooler=has_pooler(params),
    )


def bi_encoder_forward(
    params: dict,
    bert_config: EncoderConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    normalize: bool,
    compute_dtype=jnp.float32,
) -> jax.Array:
    """`BiEncoderModel.__call__` as a pure function of params: [B, H] float32."""
    graphdef = bi_encoder_graphdef(params, bert_config, normalize, compute_dtype)
    return BiEncoderModel.merge(graphdef, params)(input_ids, attention_mask)
