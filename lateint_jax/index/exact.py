"""Exact brute-force MaxSim over every (decompressed) document of an index: the reference the
PLAID stages are measured against, and the better choice for small corpora.

The documents are decompressed once into a padded [N, T, D] float32 tensor split by document
over the mesh. A search scans each shard's documents in chunks; every chunk is one fat matrix
product of all B*Q query tokens against chunk*T document tokens (so a batch of queries runs
near the CPU's matmul ceiling), followed by the max over T and the sum over Q. Each shard keeps
its top-k, then the shards merge.

Shapes: B queries, Q query tokens, D dim, N documents (padded), T tokens per document (padded).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from lateint_jax import shapes, sharding
from lateint_jax.codec.residual import decompress
from lateint_jax.index.plaid import DOC_MULTIPLE, PlaidShards
from lateint_jax.scoring import maxsim

CHUNK_BYTES = 16 << 20  # similarity block per step: big enough for GEMM, small enough for cache


@functools.partial(jax.jit, static_argnames=("mesh", "nbits"))
def _decompress_docs(centroids, weights, doc_codes, doc_residuals, *, mesh, nbits):
    def per_shard(centroids, weights, doc_codes, doc_residuals):
        tokens, docs = doc_codes.shape
        codes = jnp.minimum(doc_codes.T, centroids.shape[0] - 1).reshape(-1)  # pads: any id
        packed = doc_residuals.reshape(codes.shape[0], -1)
        return decompress(centroids, weights, codes, packed, nbits).reshape(docs, tokens, -1)

    data = sharding.DATA_AXIS
    return jax.shard_map(
        per_shard,
        mesh=mesh,
        in_specs=(P(), P(), P(None, data), P(data)),
        out_specs=P(data),
        check_vma=False,
    )(centroids, weights, doc_codes, doc_residuals)


def decompress_docs(shards: PlaidShards) -> jax.Array:
    """Every document decompressed: [N, T, D] float32, split by document like the index."""
    return _decompress_docs(
        shards.centroids,
        shards.bucket_weights,
        shards.doc_codes,
        shards.doc_residuals,
        mesh=shards.mesh,
        nbits=shards.nbits,
    )


@functools.partial(jax.jit, static_argnames=("nbits",))
def score_documents(queries, query_mask, centroids, weights, codes, residuals, lengths, *, nbits):
    """MaxSim of queries [B, Q, D] (query_mask [B, Q]) against n compressed documents:
    codes [n, T] int32, residuals [n, T, R] uint8, lengths [n] (0 = padding) -> [B, n]."""
    docs, tokens = codes.shape
    vectors = decompress(
        centroids, weights, codes.reshape(-1), residuals.reshape(docs * tokens, -1), nbits
    ).reshape(docs, tokens, -1)
    token_mask = jnp.arange(tokens)[None, :] < lengths[:, None]
    return maxsim(queries, vectors, token_mask, query_mask)


def chunk_docs(per_shard: int, batch: int, query_tokens: int, doc_tokens: int) -> int:
    """Documents per step: the largest power of two dividing the shard whose [B, n, Q, T]
    similarity block stays under CHUNK_BYTES."""
    target = max(1, CHUNK_BYTES // (4 * batch * query_tokens * doc_tokens))
    chunk = 1
    while chunk * 2 <= target and per_shard % (chunk * 2) == 0:
        chunk *= 2
    return chunk


@functools.partial(jax.jit, static_argnames=("mesh", "k", "chunk"))
def _exact_search(queries, query_mask, vectors, doc_lengths, allowed, *, mesh, k, chunk):

    def per_shard(queries, query_mask, vectors, doc_lengths, allowed):
        docs, tokens, dim = vectors.shape
        blocks = vectors.reshape(docs // chunk, chunk, tokens, dim)
        lengths = doc_lengths.reshape(docs // chunk, chunk)

        def score_block(args):
            block, block_lengths = args
            mask = jnp.arange(tokens)[None, :] < block_lengths[:, None]
            return maxsim(queries, block, mask, query_mask)  # [B, chunk]

        scores = jax.lax.map(score_block, (blocks, lengths))  # [docs/chunk, B, chunk]
        scores = jnp.moveaxis(scores, 1, 0).reshape(queries.shape[0], docs)
        scores = jnp.where(allowed[None, :], scores, -jnp.inf)
        local = jnp.broadcast_to(jnp.arange(docs, dtype=jnp.int32), scores.shape)
        offset = sharding.shard_offset(docs)
        return sharding.merge_top_k(*sharding.local_top_k(scores, local, k, offset), k)

    data = sharding.DATA_AXIS
    return jax.shard_map(
        per_shard,
        mesh=mesh,
        in_specs=(P(), P(), P(data), P(data), P(data)),
        out_specs=(P(), P()),
        check_vma=False,
    )(queries, query_mask, vectors, doc_lengths, allowed)


def exact_search(shards: PlaidShards, vectors: jax.Array, queries, query_mask, allowed, k: int):
    """Top-k by exact MaxSim among `allowed` documents.

    vectors [N, T, D] from decompress_docs, queries [B, Q, D], query_mask [B, Q], allowed [N]
    bool (sharded) -> (scores [B, k], global doc numbers [B, k], -1 where fewer exist).
    """
    return search_vectors(vectors, shards.doc_lengths, queries, query_mask, allowed, k, shards.mesh)


def search_vectors(vectors, doc_lengths, queries, query_mask, allowed, k: int, mesh):
    """Exact MaxSim top-k over padded documents vectors [N, T, D] and doc_lengths [N], both
    split by document over `mesh` (see place_documents)."""
    per_shard = vectors.shape[0] // sharding.num_shards(mesh)
    chunk = chunk_docs(per_shard, queries.shape[0], queries.shape[1], vectors.shape[1])
    return _exact_search(
        queries, query_mask, vectors, doc_lengths, allowed, mesh=mesh, k=k, chunk=chunk
    )


def place_documents(doc_embeddings, mesh):
    """Raw (uncompressed) documents, a list of [T_i, D] arrays -> (vectors [N, T, D] float32,
    doc_lengths [N] int32, live [N] bool), padded and split by document over `mesh`: exact
    MaxSim without any compression, the reference compressed search is measured against."""
    shards = sharding.num_shards(mesh)
    total = shapes.padded_size(len(doc_embeddings), shards, DOC_MULTIPLE)
    lengths = np.zeros(total, np.int32)
    lengths[: len(doc_embeddings)] = [len(e) for e in doc_embeddings]
    tokens = max(8, -(-int(lengths.max()) // 8) * 8)
    vectors = np.zeros((total, tokens, doc_embeddings[0].shape[1]), np.float32)
    for n, embedding in enumerate(doc_embeddings):
        vectors[n, : len(embedding)] = embedding
    live = np.arange(total) < len(doc_embeddings)
    place = functools.partial(sharding.shard_along, mesh=mesh)
    return place(vectors), place(lengths), place(live)
