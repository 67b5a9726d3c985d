"""Late-interaction scoring: MaxSim and friends, pure jnp.

Einsum letters: B queries, Q query tokens, N documents, T document tokens, D embedding dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -1e4  # large enough to never win a max, small enough to stay finite in bfloat16


def _check_rank(name: str, x: jax.Array, rank: int) -> None:
    if x.ndim != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {tuple(x.shape)}")


def token_similarities(queries: jax.Array, docs: jax.Array) -> jax.Array:
    """All query-token x document-token dot products.

    queries [B, Q, D], docs [N, T, D] -> [B, N, Q, T] (float32 accumulation).
    """
    _check_rank("queries", queries, 3)
    _check_rank("docs", docs, 3)
    return jnp.einsum("BQD,NTD->BNQT", queries, docs, preferred_element_type=jnp.float32)


def maxsim(
    queries: jax.Array,
    docs: jax.Array,
    doc_mask: jax.Array | None = None,
    query_mask: jax.Array | None = None,
) -> jax.Array:
    """ColBERT MaxSim of every query against every document.

    queries [B, Q, D], docs [N, T, D], doc_mask [N, T] (True = real token),
    query_mask [B, Q] (True = counts; ColBERT counts every query position, [MASK]s included).
    Returns scores [B, N]: sum over query tokens of the max over document tokens.
    """
    sims = token_similarities(queries, docs)
    if doc_mask is not None:
        _check_rank("doc_mask", doc_mask, 2)
        sims = jnp.where(doc_mask[None, :, None, :], sims, _NEG)
    best = sims.max(axis=-1)  # [B, N, Q]
    if query_mask is not None:
        _check_rank("query_mask", query_mask, 2)
        best = jnp.where(query_mask[:, None, :], best, 0.0)
    return best.sum(axis=-1)


def maxsim_paired(
    queries: jax.Array,
    docs: jax.Array,
    doc_mask: jax.Array | None = None,
    query_mask: jax.Array | None = None,
) -> jax.Array:
    """MaxSim of query b against its own documents only (training tuples).

    queries [B, Q, D], docs [B, K, T, D], doc_mask [B, K, T] -> scores [B, K].
    """
    _check_rank("docs", docs, 4)
    per_query = jax.vmap(maxsim)  # one query row against its K documents
    q = queries[:, None]  # [B, 1, Q, D]
    dm = doc_mask if doc_mask is not None else jnp.ones(docs.shape[:3], bool)
    qm = query_mask[:, None] if query_mask is not None else jnp.ones(q.shape[:3], bool)
    return per_query(q, docs, dm, qm)[:, 0, :]


def maxsim_alignment(
    query: jax.Array, doc: jax.Array, doc_mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """For one query [Q, D] and one document [T, D]: which document token each query token
    matched (argmax index [Q]) and the similarity of that match [Q]."""
    _check_rank("query", query, 2)
    _check_rank("doc", doc, 2)
    sims = jnp.einsum("QD,TD->QT", query, doc, preferred_element_type=jnp.float32)
    if doc_mask is not None:
        sims = jnp.where(doc_mask[None, :], sims, _NEG)
    return sims.argmax(axis=-1), sims.max(axis=-1)


maxsim_jit = jax.jit(maxsim)
maxsim_paired_jit = jax.jit(maxsim_paired)
