"""The cross-encoder: an encoder with a sequence-classification head, one logit per
(query, passage), as the `flax.nnx` module `CrossEncoderModel`.

params (`CrossEncoderModel.to_params()`) = {"bert": encoder params, "head": ...} where head is,
for BERT (`BertForSequenceClassification`): the pooler in params["bert"]["pooler"] and
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
from flax import nnx

from lateint_jax.models.bi_encoder import mean_pool
from lateint_jax.models.encoder import (
    Encoder,
    EncoderConfig,
    encoder_config_from_hf,
    has_pooler,
    make_encoder,
)
from lateint_jax.models.layers import ACTIVATIONS, Dense, Norm, ParamsModule, graphdef_of
from lateint_jax.models.modernbert import ModernBertConfig


class BertClassifier(ParamsModule):
    """BertForSequenceClassification: classifier(pooler(hidden))."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs, compute_dtype=jnp.float32):
        self.classifier = Dense(config.hidden_size, 1, rngs=rngs, compute_dtype=compute_dtype)

    def __call__(self, hidden, attention_mask, encoder: Encoder) -> jax.Array:
        return self.classifier(encoder.pool(hidden))


class RobertaClassifier(ParamsModule):
    """RobertaClassificationHead: out_proj(tanh(dense(first token)))."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs, compute_dtype=jnp.float32):
        H = config.hidden_size
        self.dense = Dense(H, H, rngs=rngs, compute_dtype=compute_dtype)
        self.out_proj = Dense(H, 1, rngs=rngs, compute_dtype=compute_dtype)

    def __call__(self, hidden, attention_mask, encoder: Encoder) -> jax.Array:
        return self.out_proj(jnp.tanh(self.dense(hidden[:, 0])))


class ModernBertClassifier(ParamsModule):
    """ModernBertForSequenceClassification: classifier(norm(act(dense(pooled))))."""

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs, compute_dtype=jnp.float32):
        H = config.hidden_size
        self.dense = Dense(
            H, H, rngs=rngs, use_bias=config.classifier_bias, compute_dtype=compute_dtype
        )
        self.norm = Norm(H, config.norm_eps, use_bias=config.norm_bias)
        self.classifier = Dense(H, 1, rngs=rngs, compute_dtype=compute_dtype)
        self.pooling, self.act = config.classifier_pooling, config.classifier_activation

    def __call__(self, hidden, attention_mask, encoder: Encoder) -> jax.Array:
        pooled = mean_pool(hidden, attention_mask) if self.pooling == "mean" else hidden[:, 0]
        return self.classifier(self.norm(ACTIVATIONS[self.act](self.dense(pooled))))


def classifier_head(config: EncoderConfig, *, rngs: nnx.Rngs, compute_dtype=jnp.float32):
    """The one-logit head of the config's family (random: normal(0.02), zero biases)."""
    if isinstance(config, ModernBertConfig):
        cls = ModernBertClassifier
    else:
        cls = BertClassifier if config.model_type == "bert" else RobertaClassifier
    return cls(config, rngs=rngs, compute_dtype=compute_dtype)


class CrossEncoderModel(ParamsModule):
    """Encoder + sequence-classification head: pair encodings [B, T] -> logits [B] float32.
    with_pooler defaults to True for BERT (which classifies the pooled first token) only."""

    def __init__(
        self,
        encoder_config: EncoderConfig,
        *,
        rngs: nnx.Rngs,
        compute_dtype=jnp.float32,
        with_pooler: bool | None = None,
    ):
        if with_pooler is None:
            with_pooler = encoder_config.model_type == "bert"
        self.bert = make_encoder(
            encoder_config, rngs=rngs, compute_dtype=compute_dtype, with_pooler=with_pooler
        )
        self.head = classifier_head(encoder_config, rngs=rngs, compute_dtype=compute_dtype)

    @classmethod
    def from_hf_config(
        cls, config_json: dict, *, rngs: nnx.Rngs, compute_dtype=jnp.float32
    ) -> CrossEncoderModel:
        return cls(encoder_config_from_hf(config_json), rngs=rngs, compute_dtype=compute_dtype)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        return self.head(hidden, attention_mask, self.bert)[:, 0]


def init_head(bert_config: EncoderConfig, key) -> dict:
    """Random head params matching the model type (see the module docstring)."""
    return classifier_head(bert_config, rngs=nnx.Rngs(key)).to_params()


def cross_encoder_graphdef(
    params: dict, bert_config: EncoderConfig, compute_dtype=jnp.float32
) -> nnx.GraphDef:
    with_pooler = has_pooler(params["bert"])
    return graphdef_of(
        CrossEncoderModel, bert_config, compute_dtype=compute_dtype, with_pooler=with_pooler
    )


def cross_encoder_forward(
    params: dict,
    bert_config: EncoderConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None,
    compute_dtype=jnp.float32,
) -> jax.Array:
    """`CrossEncoderModel.__call__` as a pure function of params: logits [B] float32 of pair
    encodings input_ids/attention_mask/token_type_ids [B, T]."""
    graphdef = cross_encoder_graphdef(params, bert_config, compute_dtype)
    return CrossEncoderModel.merge(graphdef, params)(input_ids, attention_mask, token_type_ids)
