"""ColBERTv2 residual codec: each token vector becomes the id of its nearest centroid plus, per
dimension, an nbits bucket index of its residual (vector - centroid), bit-packed.

Bucket fitting. colbert-ai computes the residuals of a held-out 5% of the k-means sample (at
most 50,000 vectors) and takes quantiles of all their values pooled over every dimension: one
set of 2**nbits - 1 cutoffs (quantiles k / 2**nbits) and 2**nbits bucket values (quantiles
(k + 0.5) / 2**nbits) shared by all dimensions. We take the same quantiles per dimension
(`bucket_cutoffs` [D, 2**nbits - 1], `bucket_weights` [D, 2**nbits]), which costs nothing at
decode time (the byte table below is per byte position anyway) and follows dimensions whose
residual spread differs.

Decoding is one gather: a [D*nbits/8, 256, 8/nbits] table maps (byte position, byte value) to
the residual values of the dimensions that byte holds; the result is added to the centroid and
L2-normalised, as ColBERTv2 does.

Shapes: M token vectors, D embedding dim, C centroids, S held-out sample vectors.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lateint_jax.codec.bitpack import byte_table, check_nbits, pack_bits, packed_width
from lateint_jax.codec.kmeans import assign_nearest, block_rows
from lateint_jax.errors import InputError


def fit_buckets(residuals: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension residual quantiles: residuals [S, D] -> (cutoffs [D, 2**nbits - 1],
    weights [D, 2**nbits]) float32."""
    check_nbits(nbits)
    if residuals.ndim != 2 or residuals.shape[0] == 0:
        raise InputError(f"need a non-empty [S, D] residual sample, got {residuals.shape}")
    options = 2**nbits
    cutoff_q = np.arange(1, options) / options
    weight_q = (np.arange(options) + 0.5) / options
    cutoffs = np.quantile(residuals, cutoff_q, axis=0).T
    weights = np.quantile(residuals, weight_q, axis=0).T
    return cutoffs.astype(np.float32), weights.astype(np.float32)


def bucketize(residuals: jax.Array, bucket_cutoffs: jax.Array) -> jax.Array:
    """residuals [M, D], cutoffs [D, 2**nbits - 1] -> bucket index [M, D] uint8 = number of cutoffs below
    the value (torch.bucketize's convention)."""
    return (residuals[:, :, None] > bucket_cutoffs[None]).sum(-1).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames="nbits")
def _encode_block(points, codes, centroids, bucket_cutoffs, nbits: int):
    residuals = points - centroids[codes]
    return pack_bits(bucketize(residuals, bucket_cutoffs), nbits)


def compress(
    embeddings: np.ndarray,
    centroids: np.ndarray,
    bucket_cutoffs: np.ndarray,
    nbits: int,
    *,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """embeddings [M, D] -> (codes [M] int32 nearest centroid, residuals [M, D*nbits/8] uint8)."""
    check_nbits(nbits)
    m, d = embeddings.shape
    width = packed_width(d, nbits)
    codes = np.empty(m, np.int32)
    packed = np.empty((m, width), np.uint8)
    # A bigger block than assign_nearest's amortises the Python loop; a small input is padded
    # to the next power of two at or above its size, not past it.
    rows = min(block_rows(centroids.shape[0]) * 4, block_rows(1, m))
    cents = jnp.asarray(centroids, jnp.float32)
    cuts = jnp.asarray(bucket_cutoffs, jnp.float32)
    for start in tqdm(range(0, m, rows), desc="compress", unit="block", disable=not progress):
        block = np.asarray(embeddings[start : start + rows], np.float32)
        n = block.shape[0]
        block_codes = assign_nearest(block, centroids)
        if n < rows:  # pad the tail so the jitted encoder sees one shape
            block = np.pad(block, ((0, rows - n), (0, 0)))
            block_codes = np.pad(block_codes, (0, rows - n))
        out = _encode_block(jnp.asarray(block), jnp.asarray(block_codes), cents, cuts, nbits)
        codes[start : start + n] = block_codes[:n]
        packed[start : start + n] = np.asarray(out)[:n]
    return codes, packed


def residual_table(bucket_weights: jax.Array, nbits: int) -> jax.Array:
    """bucket_weights [D, 2**nbits] -> [D*nbits/8, 256, 8/nbits] float32: for each byte position
    and byte value, the residual values of the 8/nbits dimensions stored in that byte."""
    per_byte = 8 // nbits
    lut = jnp.asarray(byte_table(nbits), jnp.int32)  # [256, per_byte]
    d = bucket_weights.shape[0]
    weights = jnp.asarray(bucket_weights, jnp.float32).reshape(d // per_byte, per_byte, 2**nbits)
    return weights[:, jnp.arange(per_byte)[None, :], lut]


def centroid_rows(centroids, codes: jax.Array | None = None) -> jax.Array:
    """Centroid rows as float32: all of them [C, D], or those of `codes` [M] -> [M, D].
    `centroids` is a [C, D] array or (values [C, D] int8, scales [C]): rows stored as small
    integers times a per-row power of two (what `index/warp.py` places), exact in float32."""
    if isinstance(centroids, tuple):
        values, scales = centroids
        if codes is not None:
            values = jnp.take(values, codes, axis=0, mode="clip")
            scales = jnp.take(scales, codes, axis=0, mode="clip")
        return values.astype(jnp.float32) * scales[:, None]
    if codes is not None:
        centroids = jnp.take(centroids, codes, axis=0, mode="clip")
    return jnp.asarray(centroids, jnp.float32)


def decompress(
    centroids: jax.Array,
    bucket_weights: jax.Array,
    codes: jax.Array,
    packed: jax.Array,
    nbits: int,
) -> jax.Array:
    """Rebuild token vectors: centroids [C, D] (or as `centroid_rows` takes them), bucket_weights [D, 2**nbits], codes [M],
    packed [M, D*nbits/8] uint8 -> [M, D] float32, L2-normalised. Pure; jit with nbits static."""
    check_nbits(nbits)
    if packed.ndim != 2 or codes.ndim != 1:
        raise InputError(
            f"codes must be [M] and packed [M, bytes], got {codes.shape}, {packed.shape}"
        )
    table = residual_table(bucket_weights, nbits)
    return decompress_with_table(centroids, table, codes, packed)


def decompress_with_table(
    centroids: jax.Array, table: jax.Array, codes: jax.Array, packed: jax.Array
) -> jax.Array:
    """`decompress` with the residual table [P, 256, per_byte] already built."""
    positions, _, per_byte = table.shape
    flat_index = jnp.arange(positions, dtype=jnp.int32)[None, :] * 256 + packed.astype(jnp.int32)
    # mode="clip": indices are in range by construction, and XLA's CPU gather runs several
    # times faster without the out-of-bounds fill
    rows = table.reshape(positions * 256, per_byte)
    residuals = jnp.take(rows, flat_index, axis=0, mode="clip")  # [M, P, per_byte]
    vectors = centroid_rows(centroids, codes) + residuals.reshape(packed.shape[0], -1)
    return vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


decompress_jit = jax.jit(decompress, static_argnames="nbits")
