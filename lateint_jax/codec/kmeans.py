"""Spherical k-means in jnp for the index centroids, deterministic for a seed.

Follows colbert-ai's choices: the centroid count is `2**floor(log2(16 * sqrt(M)))` for M token
vectors, the training sample is drawn by passage (`sample_doc_indices`), at most 256 points per
centroid are used (faiss's default cap), a few Lloyd iterations are run, and the centroids are
L2-normalised. We renormalise after every iteration (spherical k-means) rather than only at the
end, since ColBERT vectors live on the unit sphere and MaxSim uses dot products.

Assignment is a chunked matmul + argmax over fixed-size row blocks, so memory stays bounded
(R x C scores per block) and nothing recompiles from block to block. On the CPU backend the
argmax runs in numpy over XLA's scores (`nearest_in_block`).

Shapes: S sample points, D embedding dim, C centroids, R rows per block.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lateint_jax.errors import InputError

MAX_POINTS_PER_CENTROID = 256
TYPICAL_DOCLEN = 120  # colbert-ai samples passages as if each had this many tokens
# R * C float32 scores per block: 16 MiB, which stays in cache; 64 MiB blocks took about 2x
# the time per score on a 2-core AMD EPYC (2026-12-03)
SCORE_BLOCK_ELEMENTS = 2**22


def default_num_centroids(num_embeddings: int) -> int:
    """colbert-ai's rule: the power of two at or below 16 * sqrt(M)."""
    if num_embeddings <= 0:
        raise InputError("cannot choose a centroid count for zero token vectors")
    return int(2 ** math.floor(math.log2(16 * math.sqrt(num_embeddings))))


def sample_doc_indices(num_docs: int, seed: int = 0) -> np.ndarray:
    """Which passages feed k-means, as colbert-ai's `_sample_pids`: 16 * sqrt(120 * N) of them
    (all of them for small corpora), drawn without replacement; returned sorted."""
    count = min(1 + int(16 * math.sqrt(TYPICAL_DOCLEN * num_docs)), num_docs)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_docs, size=count, replace=False))


def block_rows(num_centroids: int, num_points: int | None = None) -> int:
    """Rows per assignment block: scores stay near SCORE_BLOCK_ELEMENTS, and a small input gets
    the next power of two at or above its size (few distinct shapes, so few compilations)."""
    rows = int(max(256, min(65536, SCORE_BLOCK_ELEMENTS // max(num_centroids, 1))))
    if num_points is not None:
        rows = min(rows, max(256, 1 << max(int(num_points) - 1, 0).bit_length()))
    return rows


@jax.jit
def _block_scores(points: jax.Array, centroids: jax.Array) -> jax.Array:
    """points [R, D], centroids [C, D] -> scores [R, C] float32."""
    return jnp.einsum("RD,CD->RC", points, centroids, preferred_element_type=jnp.float32)


@jax.jit
def _block_argmax(points: jax.Array, centroids: jax.Array) -> jax.Array:
    """points [R, D], centroids [C, D] -> nearest centroid [R] int32."""
    return _block_scores(points, centroids).argmax(axis=-1).astype(jnp.int32)


def nearest_in_block(points: jax.Array, centroids: jax.Array):
    """Nearest centroid of each row of one block -> [R] int32: a numpy array on the CPU
    backend, where XLA's argmax (a two-output reduce) took 3x as long as the matmul before it
    and numpy's a sixth of it (65,536 x 8,192 scores, 2-core AMD EPYC, 2026-12-03: 1.3 s
    against 0.2 s); elsewhere a device array from XLA's argmax."""
    if next(iter(centroids.devices())).platform == "cpu":
        return np.asarray(_block_scores(points, centroids)).argmax(axis=1).astype(np.int32)
    return _block_argmax(points, centroids)


@functools.partial(jax.jit, static_argnames="num_centroids")
def _accumulate_block(points, valid, codes, num_centroids: int):
    """Per-centroid sums [C, D] and counts [C] of the valid points [R, D] of one block."""
    weights = valid.astype(jnp.float32)
    sums = jax.ops.segment_sum(points * weights[:, None], codes, num_segments=num_centroids)
    counts = jax.ops.segment_sum(weights, codes, num_segments=num_centroids)
    return sums, counts


def _blocks(points: np.ndarray, rows: int):
    """Yield (block [R, D] float32 zero-padded, valid [R] bool, start) over the rows of points."""
    for start in range(0, points.shape[0], rows):
        block = np.asarray(points[start : start + rows], np.float32)
        valid = np.ones(rows, bool)
        if block.shape[0] < rows:
            valid[block.shape[0] :] = False
            block = np.pad(block, ((0, rows - block.shape[0]), (0, 0)))
        yield block, valid, start


def assign_nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest (largest dot product) centroid of each point: points [M, D], centroids [C, D]
    -> codes [M] int32. Runs in fixed-size blocks of rows."""
    if points.ndim != 2 or centroids.ndim != 2 or points.shape[1] != centroids.shape[1]:
        raise InputError(
            f"points [M, D] and centroids [C, D] must share D, got {points.shape} and "
            f"{centroids.shape}"
        )
    rows = block_rows(centroids.shape[0], points.shape[0])
    cents = jnp.asarray(centroids, jnp.float32)
    codes = np.empty(points.shape[0], np.int32)
    for block, valid, start in _blocks(points, rows):
        block_codes = nearest_in_block(jnp.asarray(block), cents)
        codes[start : start + int(valid.sum())] = np.asarray(block_codes)[valid]
    return codes


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def kmeans(
    points: np.ndarray,
    num_centroids: int,
    *,
    niters: int = 4,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Spherical k-means (Lloyd): points [S, D] -> unit-norm centroids [C, D] float32.

    Initialised from C distinct random points; at most 256 * C points are used (random subset);
    an empty cluster is re-seeded from a random point. Deterministic for a given seed.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise InputError(f"k-means needs a non-empty [S, D] array, got shape {points.shape}")
    if num_centroids <= 0:
        raise InputError(f"num_centroids must be positive, got {num_centroids}")
    if num_centroids > points.shape[0]:
        raise InputError(
            f"num_centroids={num_centroids} exceeds the {points.shape[0]} training vectors"
        )
    rng = np.random.default_rng(seed)
    cap = MAX_POINTS_PER_CENTROID * num_centroids
    if points.shape[0] > cap:
        points = points[np.sort(rng.choice(points.shape[0], size=cap, replace=False))]
    points = np.asarray(points, np.float32)
    centroids = _normalise(points[rng.choice(points.shape[0], num_centroids, replace=False)])
    rows = min(block_rows(num_centroids), points.shape[0])
    for _ in tqdm(range(niters), desc="k-means", unit="iter", disable=not progress):
        cents = jnp.asarray(centroids)
        sums = jnp.zeros_like(cents)
        counts = jnp.zeros(num_centroids, jnp.float32)
        for block, valid, _ in _blocks(points, rows):
            block_j, valid_j = jnp.asarray(block), jnp.asarray(valid)
            codes = nearest_in_block(block_j, cents)
            block_sums, block_counts = _accumulate_block(block_j, valid_j, codes, num_centroids)
            sums, counts = sums + block_sums, counts + block_counts
        sums, counts = np.array(sums), np.asarray(counts)
        empty = np.flatnonzero(counts == 0)
        sums[empty] = points[rng.choice(points.shape[0], size=empty.size, replace=False)]
        centroids = _normalise(sums)
    return centroids.astype(np.float32)
