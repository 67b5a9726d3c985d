"""Training losses for late-interaction, bi-encoder and cross-encoder models: pure jnp.

Every loss returns a float32 scalar (the mean over the batch) and is jit/vmap/grad-able.
Einsum letters: B queries (tuples), K documents per tuple (the positive first), N candidate
documents in the batch, H embedding width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _check_rank(name: str, x: jax.Array, rank: int) -> None:
    if x.ndim != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {tuple(x.shape)}")


def _at_least_f32(x: jax.Array) -> jax.Array:
    """bfloat16 scores are upcast (softmax over them loses too much); float64 stays float64."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def nway_cross_entropy(scores: jax.Array) -> jax.Array:
    """Softmax cross-entropy over each tuple, the positive at position 0.

    scores [B, K] -> mean over B of -log softmax(scores_b)[0]. With K = 2 this is ColBERT v1's
    pairwise loss (positive vs one negative).
    """
    _check_rank("scores", scores, 2)
    log_probs = jax.nn.log_softmax(_at_least_f32(scores), axis=-1)
    return -log_probs[:, 0].mean()


def pairwise_softmax_cross_entropy(positive: jax.Array, negative: jax.Array) -> jax.Array:
    """ColBERT v1: softmax cross-entropy of (positive, negative) scores, both [B]."""
    return nway_cross_entropy(jnp.stack([positive, negative], axis=-1))


def in_batch_cross_entropy(scores: jax.Array, positive_index: jax.Array) -> jax.Array:
    """Cross-entropy of each query against every document of the batch.

    scores [B, N] (query b against all N in-batch documents), positive_index [B] int.
    """
    _check_rank("scores", scores, 2)
    return optax.softmax_cross_entropy_with_integer_labels(
        _at_least_f32(scores), positive_index
    ).mean()


def kl_distillation(
    student_scores: jax.Array, teacher_scores: jax.Array, teacher_temperature: float = 1.0
) -> jax.Array:
    """ColBERTv2 distillation: KL(teacher || student) between softmaxes over each tuple.

    student_scores, teacher_scores [B, K]. The teacher's scores are divided by
    `teacher_temperature` before its softmax (ColBERTv2's `distillation_alpha` is 1 / temperature).
    Returns sum_k p_teacher * (log p_teacher - log p_student), averaged over B ("batchmean").
    """
    _check_rank("student_scores", student_scores, 2)
    _check_rank("teacher_scores", teacher_scores, 2)
    teacher = jax.nn.log_softmax(_at_least_f32(teacher_scores) / teacher_temperature, -1)
    student = jax.nn.log_softmax(_at_least_f32(student_scores), axis=-1)
    return (jnp.exp(teacher) * (teacher - student)).sum(axis=-1).mean()


def distillation_loss(
    student_scores: jax.Array,
    teacher_scores: jax.Array,
    teacher_temperature: float = 1.0,
    alpha: float = 1.0,
) -> jax.Array:
    """alpha * KL(teacher || student) + (1 - alpha) * n-way cross-entropy; both [B, K].

    alpha = 1 is ColBERTv2's pure KL; alpha < 1 mixes in the hard label (positive at 0).
    """
    kl = kl_distillation(student_scores, teacher_scores, teacher_temperature)
    if alpha == 1.0:
        return kl
    return alpha * kl + (1.0 - alpha) * nway_cross_entropy(student_scores)


def triplet_loss(
    anchor: jax.Array, positive: jax.Array, negative: jax.Array, margin: float = 1.0
) -> jax.Array:
    """Sentence-BERT triplet loss with Euclidean distance.

    anchor, positive, negative [B, H] -> mean of max(|a - p| - |a - n| + margin, 0).
    """
    for name, x in (("anchor", anchor), ("positive", positive), ("negative", negative)):
        _check_rank(name, x, 2)
    to_positive = _euclidean(anchor, positive)
    to_negative = _euclidean(anchor, negative)
    return jax.nn.relu(to_positive - to_negative + margin).mean()


def _euclidean(a: jax.Array, b: jax.Array) -> jax.Array:
    # The epsilon keeps the gradient finite when two embeddings coincide.
    diff = _at_least_f32(a - b)
    return jnp.sqrt((diff * diff).sum(axis=-1) + 1e-12)


def multiple_negatives_ranking_loss(
    anchors: jax.Array, candidates: jax.Array, scale: float = 20.0
) -> jax.Array:
    """Sentence-BERT's in-batch loss: anchor b's positive is candidate b; every other
    candidate (other anchors' positives, then any extra hard negatives) is a negative.

    anchors [B, H], candidates [N, H] with N >= B -> cross-entropy over scale * cosine [B, N].
    """
    _check_rank("anchors", anchors, 2)
    _check_rank("candidates", candidates, 2)
    a = _normalize(anchors)
    c = _normalize(candidates)
    scores = scale * jnp.einsum("BH,NH->BN", a, c)
    return in_batch_cross_entropy(scores, jnp.arange(anchors.shape[0]))


def _normalize(x: jax.Array) -> jax.Array:
    x = _at_least_f32(x)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Pointwise cross-encoder loss: logits [B] (one per pair), labels [B] in [0, 1]."""
    _check_rank("logits", logits, 1)
    return optax.sigmoid_binary_cross_entropy(_at_least_f32(logits), _at_least_f32(labels)).mean()
