"""What each task trains: the model, its loss over a batch, how tuples become a batch, and how
the trained parameters are exported.

The model is a `flax.nnx` module (`models.colbert.ColBERTModel`, ...) split once into a static
graphdef (built with the training compute dtype) and its parameters as a plain nested dict (the
checkpoint layout, which the TrainState, optax and orbax hold). Each loss_fn merges the two
inside the jitted train step (`ColBERTModel.merge(graphdef, params)`) and calls the module.

Batch layouts (numpy, leading axis B = tuples; K = nway; lengths are fixed buckets):
  colbert:       query_input_ids/query_attention_mask [B, Q]; doc_input_ids/doc_attention_mask/
                 doc_token_mask [B, K, T]; teacher_scores [B, K] float32 (distillation only)
  cross_encoder: input_ids/attention_mask/token_type_ids [B, K, L] (pair b, k = query b, doc k)
  bi_encoder:    query_input_ids/query_attention_mask [B, L]; doc_input_ids/doc_attention_mask [B, K, L]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lateint_jax import losses, scoring, shapes
from lateint_jax.convert.load import load_checkpoint
from lateint_jax.data.tuples import TrainingTuple
from lateint_jax.encoders import BiEncoder, ColBERT, CrossEncoder, load_tokenizer
from lateint_jax.errors import InputError
from lateint_jax.models.bert import init_bert_params, tiny_bert_config
from lateint_jax.models.bi_encoder import BiEncoderModel, bi_encoder_graphdef
from lateint_jax.models.colbert import (
    ColBERTConfig,
    ColBERTModel,
    colbert_graphdef,
    init_projection,
)
from lateint_jax.models.cross_encoder import (
    CrossEncoderModel,
    cross_encoder_graphdef,
    init_head,
)
from lateint_jax.models.projection import LINEAR, output_dim
from lateint_jax.training.config import TrainConfig


@dataclass
class Task:
    params: dict
    loss_fn: Callable  # (params, batch, key) -> (loss, metrics)
    collate: Callable[[list[TrainingTuple]], dict[str, np.ndarray]]
    export: Callable[[dict, Path], list[Path]]  # (host params, folder) -> written model dirs
    encoder: object  # the lateint_jax.encoders object (tokenizer, configs)


def build_task(config: TrainConfig, fixed_lengths: bool = False) -> Task:
    """The task named by config.task. fixed_lengths pads every batch to the maximum lengths
    (needed with several processes, whose local batches must agree on shapes)."""
    builders = {"colbert": _colbert, "cross_encoder": _cross_encoder, "bi_encoder": _bi_encoder}
    return builders[config.task](config, fixed_lengths)


def _dtype(config: TrainConfig):
    return jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32


def _base(config: TrainConfig):
    """(bert params, bert config, tokenizer, checkpoint) for config.model or the tiny model."""
    ckpt = load_checkpoint(config.model)
    tokenizer = load_tokenizer(ckpt)
    if config.tiny_model:
        bert_config = tiny_bert_config(ckpt.bert_config.vocab_size)
        bert = init_bert_params(bert_config, jax.random.key(config.seed))
        return bert, bert_config, tokenizer, None
    return ckpt.bert, ckpt.bert_config, tokenizer, ckpt


# ---------------------------------------------------------------------------- ColBERT
def _colbert(config: TrainConfig, fixed_lengths: bool) -> Task:
    bert, bert_config, tokenizer, ckpt = _base(config)
    settings = ColBERTConfig(
        query_maxlen=config.query_maxlen, doc_maxlen=config.doc_maxlen, dim=config.dim
    )
    head = LINEAR
    if ckpt is not None and ckpt.linear is not None:
        linear, head = ckpt.linear, ckpt.dense_layers
        if output_dim(linear) != config.dim:
            raise InputError(
                f"{config.model} has a {output_dim(linear)}-d ColBERT head but dim={config.dim}"
            )
        settings = ColBERTConfig.from_dict({**ckpt.colbert, **settings.to_dict()})
    else:
        linear = init_projection(bert_config.hidden_size, config.dim, seed=0)
    params = {"bert": bert, "linear": linear}
    model = ColBERT(
        params, bert_config, settings, tokenizer, str(config.model or "default"), head=head
    )
    graphdef, K = colbert_graphdef(params, bert_config, head, _dtype(config)), config.nway

    def loss_fn(params, batch, key):
        B, _, T = batch["doc_input_ids"].shape
        net = ColBERTModel.merge(graphdef, params)
        q = net(batch["query_input_ids"], batch["query_attention_mask"])
        d = net(
            batch["doc_input_ids"].reshape(B * K, T),
            batch["doc_attention_mask"].reshape(B * K, T),
        )
        d = d.reshape(B, K, T, -1)
        token_mask = batch["doc_token_mask"].astype(bool)
        scores = scoring.maxsim_paired(q, d, token_mask)  # [B, K]
        if config.loss == "distill":
            loss = losses.distillation_loss(
                scores, batch["teacher_scores"], config.teacher_temperature, config.distill_alpha
            )
        else:
            loss = losses.nway_cross_entropy(scores)
        metrics = {"accuracy": (scores.argmax(-1) == 0).mean()}
        if config.in_batch_negatives:
            everything = scoring.maxsim(q, d.reshape(B * K, T, -1), token_mask.reshape(B * K, T))
            in_batch = losses.in_batch_cross_entropy(everything, jnp.arange(B) * K)
            metrics["in_batch_loss"] = in_batch
            loss = loss + in_batch
        return loss, metrics

    def collate(tuples: list[TrainingTuple]) -> dict[str, np.ndarray]:
        q = model.tokenize_queries([t.query for t in tuples])
        docs = [d for t in tuples for d in t.documents]
        d = model.tokenize_documents(docs, length=config.doc_maxlen if fixed_lengths else None)
        B = len(tuples)
        batch = {
            "query_input_ids": q["input_ids"],
            "query_attention_mask": q["attention_mask"],
            **{f"doc_{k}": v.reshape(B, K, -1) for k, v in d.items()},
        }
        if config.uses_teacher:
            batch["teacher_scores"] = np.array([t.scores for t in tuples], np.float32)
        return batch

    def export(params, folder: Path) -> list[Path]:
        trained = ColBERT(params, bert_config, settings, tokenizer, model.model_name, head=head)
        written = []
        for layout in config.export_layouts:
            target = folder / f"model_{layout}"
            trained.save_pretrained(target, layout=layout, overwrite=True)
            written.append(target)
        return written

    return Task(params, loss_fn, collate, export, model)


# ---------------------------------------------------------------------------- cross-encoder
def _cross_encoder(config: TrainConfig, fixed_lengths: bool) -> Task:
    bert, bert_config, tokenizer, ckpt = _base(config)
    if (
        bert_config.model_type == "bert" and "pooler" not in bert
    ):  # BERT classifies the pooled [CLS]
        bert = {**bert, "pooler": init_bert_params(bert_config, jax.random.key(1))["pooler"]}
    head = ckpt.head if ckpt is not None and ckpt.head is not None else None
    if head is None:
        head = init_head(bert_config, jax.random.key(config.seed))
    params = {"bert": bert, "head": head}
    model = CrossEncoder(params, bert_config, tokenizer, config.pair_maxlen, str(config.model))
    graphdef, K = cross_encoder_graphdef(params, bert_config, _dtype(config)), config.nway

    def loss_fn(params, batch, key):
        B, _, L = batch["input_ids"].shape
        flat = {k: v.reshape(B * K, L) for k, v in batch.items()}
        net = CrossEncoderModel.merge(graphdef, params)
        logits = net(flat["input_ids"], flat["attention_mask"], flat["token_type_ids"])
        logits = logits.reshape(B, K)
        if config.loss == "bce":
            labels = jnp.zeros((B, K)).at[:, 0].set(1.0)
            loss = losses.binary_cross_entropy(logits.reshape(-1), labels.reshape(-1))
        else:
            loss = losses.nway_cross_entropy(logits)
        return loss, {"accuracy": (logits.argmax(-1) == 0).mean()}

    def collate(tuples: list[TrainingTuple]) -> dict[str, np.ndarray]:
        queries = [t.query for t in tuples for _ in t.documents]
        docs = [d for t in tuples for d in t.documents]
        pairs = model.tokenize_pairs(queries, docs)
        if fixed_lengths:
            pairs = {k: shapes.pad_axis(v, config.pair_maxlen, axis=-1) for k, v in pairs.items()}
        return {k: v.reshape(len(tuples), K, -1) for k, v in pairs.items()}

    def export(params, folder: Path) -> list[Path]:
        target = folder / "model_hf"
        CrossEncoder(params, bert_config, tokenizer, config.pair_maxlen).save_pretrained(
            target, overwrite=True
        )
        return [target]

    return Task(params, loss_fn, collate, export, model)


# ---------------------------------------------------------------------------- bi-encoder
def _bi_encoder(config: TrainConfig, fixed_lengths: bool) -> Task:
    bert, bert_config, tokenizer, ckpt = _base(config)
    normalize = True if ckpt is None else ckpt.normalize
    model = BiEncoder(bert, bert_config, tokenizer, normalize, config.pair_maxlen)
    graphdef = bi_encoder_graphdef(bert, bert_config, normalize, _dtype(config))
    K = config.nway

    def loss_fn(params, batch, key):
        B, _, L = batch["doc_input_ids"].shape
        net = BiEncoderModel.merge(graphdef, params)
        q = net(batch["query_input_ids"], batch["query_attention_mask"])
        d = net(
            batch["doc_input_ids"].reshape(B * K, L),
            batch["doc_attention_mask"].reshape(B * K, L),
        ).reshape(B, K, -1)
        if config.loss == "triplet":
            loss = losses.triplet_loss(q, d[:, 0], d[:, 1], config.triplet_margin)
        else:
            candidates = jnp.concatenate([d[:, 0], d[:, 1:].reshape(B * (K - 1), -1)])
            loss = losses.multiple_negatives_ranking_loss(q, candidates, config.mnrl_scale)
        return loss, {}

    def collate(tuples: list[TrainingTuple]) -> dict[str, np.ndarray]:
        length = config.pair_maxlen if fixed_lengths else None
        q = model.tokenizer.frame_single([t.query for t in tuples], config.pair_maxlen, length)
        docs = [d for t in tuples for d in t.documents]
        d = model.tokenizer.frame_single(docs, config.pair_maxlen, length)
        return {
            "query_input_ids": q["input_ids"],
            "query_attention_mask": q["attention_mask"],
            **{f"doc_{k}": v.reshape(len(tuples), K, -1) for k, v in d.items()},
        }

    def export(params, folder: Path) -> list[Path]:
        target = folder / "model_sentence_transformers"
        BiEncoder(params, bert_config, tokenizer, normalize, config.pair_maxlen).save_pretrained(
            target, overwrite=True
        )
        return [target]

    return Task(bert, loss_fn, collate, export, model)
