"""WARP-style search over a residual-compressed index: candidates and their scores come from
the centroid-ordered token lists without rebuilding any vector; only the few best documents are
decompressed and scored exactly.

Stages (after WARP, Scheerer et al., SIGIR 2025, which builds on XTR's imputation):
  1. probe: query-to-centroid scores [Q, C]; each real query token's `nprobe` best centroids,
     and the score of the next best centroid, which stands in for that token when a document
     has no stored token under any probed centroid (every such token sits under a centroid
     that scores no better);
  2. score: every token stored under a probed centroid scores centroid score + residual
     contribution. The contribution is a sum over the R packed residual bytes of a per-query
     table [Q, R, 256] (query . bucket values of the dimensions a byte value encodes), so a
     token costs R lookups and no decompression. Per (query token, document) the best score is
     kept, then summed over query tokens (two-stage reduction, missing ones imputed): in one
     [n, Q] buffer for a small shard, else one query token at a time over [n] arrays of which
     only the touched documents' entries change;
  3. rerank: the `rerank` best documents over all shards are decompressed and scored with
     exact MaxSim; with rerank=0 the stage-2 scores are final. A document's tokens are listed
     in document order by centroid id (`doc_codes`) and row within that centroid's slice
     (`doc_cell_rows`), so their residuals are read without any search.

Layout (`WarpShards`), per shard of documents: the shard's tokens sorted by centroid, so a
centroid's tokens are one slice; nothing is padded to the longest document. The whole search is
one compiled program per (batch bucket, query tokens, knobs, k): each query runs stages 1-2 and
3 in turn (`lax.map`), a padded batch row skips them (`lax.cond`), and stages 2 and 3 walk the
probed lists and the reranked documents a cache-sized chunk at a time in loops whose trip count
is traced, so a query pays for what it probes rather than for a static worst case, and no
probed-list size needs a program of its own.

Shapes: B queries, Q query tokens, D dim, C centroids, S shards, n documents per shard,
M' tokens per shard (padded to the fullest shard), R = D * nbits / 8 bytes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from lateint_jax import shapes, sharding
from lateint_jax.codec.codes_io import encode_centroids
from lateint_jax.codec.residual import decompress_with_table, residual_table
from lateint_jax.errors import InputError
from lateint_jax.index.layout import CentroidOrder, IndexArrays

DOC_MULTIPLE = 16  # documents per shard are a multiple of this, as in plaid
MIN_CHUNK = 256
TOKEN_WIDTH_STEPS = 16
TOP_K_BLOCK = 32  # columns per block of top_k_by_blocks
CHUNK = 4096  # slots per step of stage 2 (see chunk_size)
# Stage 3 decompresses [chunk, D] float32 per step: 2,048 slots ran its steps 25-40% faster
# than 4,096 at D = 128 and 384 (SciFact, real top-64 documents), 512 slower at D = 384.
EXACT_CHUNK = 2048
# Largest [n, Q] buffer stage 2 reduces densely (see stage_two_scores). Measured on synthetic
# shards (docs/SEARCH.md): dense ~7% faster at 5,000 documents x 32 tokens, equal at 100,000.
DENSE_CELLS = 1 << 22


def take(array: jax.Array, index: jax.Array) -> jax.Array:
    """array[index] along axis 0 for indices in range by construction: XLA's CPU gather runs
    several times faster without the out-of-bounds fill of plain indexing."""
    return jnp.take(array, index, axis=0, mode="clip")


def exact_depth(k: int) -> int:
    """Documents stage 3 rescores by default for a top-k: colbert-ai's depth of exact
    scoring (a quarter of its `ndocs`: 64 up to k=10, 256 up to k=100, then max(k, 1024)).
    Beyond it stage 2's order rarely changes the top k: on the SciFact vectors of
    benchmarks/engines.py, 64 instead of 256 lost 0.004 of recall@10 and cost a quarter."""
    return 64 if k <= 10 else 256 if k <= 100 else max(k, 1024)


def probe_depth(k: int) -> int:
    """Centroids probed per query token by default for a top-k: 16 up to k=10 (WARP's paper
    probes 8-16 at its fast settings), doubled up to k=100 and doubled again beyond, as
    colbert-ai doubles its `ncells` (1, 2, 4). A top-100 needs documents that match fewer
    query tokens well: on the SciFact vectors of benchmarks/engines.py, k=100 at nprobe 16
    kept 0.749 of the exact top-100 against 0.809 at 32 (2-bit index; 0.761 and 0.866 at 4 bits)."""
    return 16 if k <= 10 else 32 if k <= 100 else 64


@dataclass(frozen=True)
class WarpParams:
    """Search knobs: `nprobe` centroids per query token, `rerank` documents rescored exactly
    (0: none). The defaults (`defaults(k)`) are set from first principles, not tuned to one
    dataset: the probe depth follows WARP's published settings and grows with k as
    colbert-ai's does (`probe_depth`); the rerank depth follows colbert-ai's (`exact_depth`)."""

    nprobe: int
    rerank: int

    @classmethod
    def defaults(cls, k: int, nprobe=None, rerank=None) -> WarpParams:
        params = cls(
            nprobe=int(probe_depth(k) if nprobe is None else nprobe),
            rerank=int(exact_depth(k) if rerank is None else rerank),
        )
        if params.nprobe < 1 or params.rerank < 0:
            raise InputError(f"nprobe must be >= 1 and rerank >= 0, got {params}")
        return params


@dataclass(frozen=True)
class Statics:
    """The hashable part of a placed index: a static argument of the jitted stages."""

    mesh: Mesh
    docs_per_shard: int


@dataclass
class WarpShards:
    """An index placed on a ("data",) mesh, split by document, tokens in centroid order.

    centroids [C, D] int8 and centroid_scales [C] float32: row c is centroids[c] *
        centroid_scales[c] (a power of two), exactly the stored centroid (int6 / int8 rows on
        disk always are; other rows are kept float32 with scales of 1), bucket_weights
        [D, 2**nbits] float32: replicated (the residual table stages 2 and 3 read is built from
        the weights inside each search, so the device holds 2 KB instead of its 128 KB).
    cell_offsets [S, C + 1] int32: shard s's tokens under centroid c are
        cell_offsets[s, c]:cell_offsets[s, c + 1].
    token_docs [S, M'] uint16 (n < 65,536) or int32: local document number of each token (n
        for padding).
    token_residuals [S, M', R] uint8.
    doc_offsets [S, n + 1] int32, doc_codes [S, M'] uint16 (C <= 65,536) or int32: document
        d's centroid ids are doc_codes[doc_offsets[d]:doc_offsets[d + 1]], in ascending order;
        doc_cell_rows [S, M'] uint16 (no centroid holds more than 65,536 tokens of a shard) or
        int32: the row of each of those tokens within its centroid's slice.
    """

    mesh: Mesh
    nbits: int
    num_docs: int
    docs_per_shard: int
    centroids: jax.Array
    centroid_scales: jax.Array
    bucket_weights: jax.Array
    cell_offsets: jax.Array
    token_docs: jax.Array
    token_residuals: jax.Array
    doc_offsets: jax.Array
    doc_codes: jax.Array
    doc_cell_rows: jax.Array

    @property
    def num_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @functools.cached_property
    def statics(self) -> Statics:
        return Statics(self.mesh, self.docs_per_shard)

    @functools.cached_property
    def token_arrays(self) -> tuple:
        return (self.cell_offsets, self.token_docs, self.token_residuals)

    @functools.cached_property
    def doc_arrays(self) -> tuple:
        return (self.doc_offsets, self.doc_codes, self.doc_cell_rows)

    def device_bytes(self) -> int:
        """Bytes the layout holds on all devices together (a replicated array counts once
        per device)."""
        arrays = (self.centroids, self.centroid_scales, self.bucket_weights, *self.token_arrays,
                  *self.doc_arrays)  # fmt: skip
        return int(sum(s.data.nbytes for a in arrays for s in a.addressable_shards))


def _shard_tokens(order: CentroidOrder, doc_offsets: np.ndarray, first: int, stop: int):
    """One shard's documents [first, stop) cut out of the index's centroid order, which it
    keeps (rows are sorted by centroid, then document) -> (cell counts [C], local document of
    each token, residuals, and for the shard's tokens in document order (ascending centroid
    within each document) their centroid ids and rows within their centroid's slice). One pass
    over the token documents; a single shard takes the arrays as they are."""
    docs = order.token_docs
    rows = order.document_rows[doc_offsets[first] : doc_offsets[stop]]
    codes = order.cells[rows]
    if first == 0 and stop == doc_offsets.shape[0] - 1:
        cell_rows = rows - order.cell_offsets[codes]
        return np.diff(order.cell_offsets), docs, order.residuals, codes, cell_rows
    mine = (docs >= first) & (docs < stop)
    before = np.zeros(docs.shape[0] + 1, np.int64)  # the shard's rows before each row
    np.cumsum(mine, out=before[1:])
    counts = np.diff(before[order.cell_offsets])
    taken = np.flatnonzero(mine)
    cell_rows = before[rows] - before[order.cell_offsets[codes]]
    return counts, docs[taken] - first, np.asarray(order.residuals)[taken], codes, cell_rows


def _stacked(pieces: list[np.ndarray], width: int, fill, dtype) -> np.ndarray:
    """[S, width, ...] of the shards' pieces, padded with `fill`; one piece that fills the
    width is taken as it is (a view of a memory-mapped file stays one)."""
    if len(pieces) == 1 and pieces[0].shape[0] == width and pieces[0].dtype == dtype:
        return np.asarray(pieces[0])[None]
    out = np.full((len(pieces), width, *pieces[0].shape[1:]), fill, dtype)
    for s, piece in enumerate(pieces):
        out[s, : piece.shape[0]] = piece
    return out


def small_integer_rows(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """centroids [C, D] float32 -> (values [C, D], scales [C] float32) with values * scales
    equal to them: int8 values and power-of-two scales when that is exact (always for the int6
    and int8 encodings on disk: a quarter of float32's bytes), else the rows and scales of 1."""
    stored = encode_centroids(centroids, "int8")
    values = stored["centroids.npy"]
    scales = np.exp2(stored["centroid_exponents.npy"].astype(np.float32))
    if np.array_equal(values.astype(np.float32) * scales[:, None], centroids):
        return values, scales
    return centroids, np.ones(centroids.shape[0], np.float32)


def token_width(tokens: int) -> int:
    """Tokens per shard on the devices of an index that takes writes, rounded up to a 1/16 step
    of the next power of two (at most ~6% padding): every compiled stage has this static width,
    so documents added to a served index (serving/live_writes.py) recompile nothing until the
    width crosses a step."""
    step = max(1, shapes.power_of_two(tokens) // TOKEN_WIDTH_STEPS)
    return max(1, -(-int(tokens) // step) * step)


def place(arrays: IndexArrays, mesh: Mesh, slack: bool = False) -> WarpShards:
    """Put the index on the mesh split by document (`WarpShards`), each shard's tokens in
    centroid order, cut from `arrays.order` without sorting. Narrow device dtypes where they
    are exact: token documents uint16 when a shard numbers at most 65,535 documents (else
    int32); centroids as int8 rows times a power of two when exact (int6 / int8 rows times a power
    of two always are), so scores are unchanged. With `slack` (an index that takes writes) the
    token width is rounded up by `token_width`."""
    shards = sharding.num_shards(mesh)
    c = arrays.num_centroids
    per_shard = shapes.padded_size(arrays.num_docs, shards, DOC_MULTIPLE) // shards
    order, offsets = arrays.order, arrays.doc_offsets
    parts = []
    for s in range(shards):
        first = min(s * per_shard, arrays.num_docs)
        stop = min(first + per_shard, arrays.num_docs)
        parts.append(_shard_tokens(order, offsets, first, stop))
    width = max(1, max(p[1].shape[0] for p in parts))
    width = token_width(width) if slack else width
    doc_type = np.uint16 if per_shard < 1 << 16 else np.int32  # per_shard marks padding
    token_docs = _stacked([p[1] for p in parts], width, per_shard, doc_type)
    token_residuals = _stacked([p[2] for p in parts], width, 0, np.uint8)
    code_type = np.uint16 if c <= 1 << 16 else np.int32
    doc_codes = _stacked([p[3] for p in parts], width, 0, code_type)
    largest_cell = max(int(p[0].max(initial=0)) for p in parts)
    doc_cell_rows = _stacked(
        [p[4] for p in parts], width, 0, np.uint16 if largest_cell <= 1 << 16 else np.int32
    )
    cell_offsets = np.zeros((shards, c + 1), np.int32)
    doc_offsets = np.zeros((shards, per_shard + 1), np.int32)
    for s, (counts, *_) in enumerate(parts):
        first = min(s * per_shard, arrays.num_docs)
        stop = min(first + per_shard, arrays.num_docs)
        lengths = np.zeros(per_shard, np.int64)
        lengths[: stop - first] = np.diff(offsets[first : stop + 1])
        np.cumsum(counts, out=cell_offsets[s, 1:])
        np.cumsum(lengths, out=doc_offsets[s, 1:])
    weights = np.asarray(arrays.bucket_weights, np.float32)
    centroids, scales = small_integer_rows(np.asarray(arrays.centroids, np.float32))
    return WarpShards(
        mesh=mesh,
        nbits=arrays.nbits,
        num_docs=arrays.num_docs,
        docs_per_shard=per_shard,
        centroids=sharding.replicate(centroids, mesh),
        centroid_scales=sharding.replicate(scales, mesh),
        bucket_weights=sharding.replicate(weights, mesh),
        cell_offsets=sharding.shard_along(cell_offsets, mesh),
        token_docs=sharding.shard_along(token_docs, mesh),
        token_residuals=sharding.shard_along(token_residuals, mesh),
        doc_offsets=sharding.shard_along(doc_offsets, mesh),
        doc_codes=sharding.shard_along(doc_codes, mesh),
        doc_cell_rows=sharding.shard_along(doc_cell_rows, mesh),
    )


# ---------------------------------------------------------- per-query stages (pure jnp)


def centroids_and_table(codec) -> tuple[tuple, jax.Array]:
    """(centroids, scales, bucket_weights [D, 2**nbits]) -> ((centroids, scales), residual
    table [R, 256, 8/nbits])."""
    centroids, scales, weights = codec
    nbits = int(weights.shape[1]).bit_length() - 1
    return (centroids, scales), residual_table(weights, nbits)


def top_k_by_blocks(scores: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """lax.top_k over the last axis of scores [T, C], in two smaller selections: the k best
    values lie in the k blocks of TOP_K_BLOCK columns with the best maxima, so top_k runs over
    the C / TOP_K_BLOCK block maxima and then over those k blocks' columns (XLA's CPU top_k
    sorts, and 4x fewer columns measured 0.45 against 0.68 ms at C = 8,192, k = 17). Same
    values as lax.top_k; among equal values either column may be returned."""
    tokens, columns = scores.shape
    if columns % TOP_K_BLOCK or 4 * k * TOP_K_BLOCK > columns:
        return jax.lax.top_k(scores, k)
    blocks = scores.reshape(tokens, columns // TOP_K_BLOCK, TOP_K_BLOCK)
    _, best_blocks = jax.lax.top_k(blocks.max(-1), k)  # [T, k]
    candidates = jnp.take_along_axis(blocks, best_blocks[..., None], axis=1).reshape(tokens, -1)
    best, where = jax.lax.top_k(candidates, k)
    block = jnp.take_along_axis(best_blocks, where // TOP_K_BLOCK, axis=1)
    return best, block * TOP_K_BLOCK + where % TOP_K_BLOCK


def best_cells(queries: jax.Array, centroids: tuple, nprobe: int):
    """queries [B, Q, D], centroids (values [C, D], scales [C]) -> (cells [B, Q, nprobe] int32, their scores
    [B, Q, nprobe], imputation [B, Q]: the score of the best centroid not probed, or the worst
    probed one when every centroid is)."""
    batch, tokens, dim = queries.shape
    flat = queries.reshape(batch * tokens, dim)
    values, scales = centroids
    scores = jnp.einsum(
        "TD,CD->TC", flat, values.astype(flat.dtype), preferred_element_type=jnp.float32
    )
    scores = scores * scales[None, :]  # a power of two: the same as scaling the rows
    best, cells = top_k_by_blocks(scores, min(nprobe + 1, scores.shape[-1]))
    best, cells = best.reshape(batch, tokens, -1), cells.reshape(batch, tokens, -1)
    probed = min(nprobe, scores.shape[-1])
    return cells[..., :probed].astype(jnp.int32), best[..., :probed], best[..., -1]


def ragged_chunk(starts, sizes, ends, step, chunk: int):
    """Chunk `step` (`chunk` slots) of the ranges [starts[i], starts[i] + sizes[i]) laid end to
    end (ends = cumsum(sizes)) -> (position [chunk], range index [chunk], real [chunk] bool)."""
    slot = step * chunk + jnp.arange(chunk, dtype=ends.dtype)
    which = jnp.minimum(jnp.searchsorted(ends, slot, side="right"), sizes.shape[0] - 1)
    real = slot < ends[-1]
    position = jnp.where(real, take(starts, which) + slot - take(ends - sizes, which), 0)
    return position, which, real


def over_ranges(starts, sizes, chunk: int, step_fn, init):
    """Run `step_fn(carry, position, which, real) -> carry` over the ranges' slots, `chunk`
    at a time. The number of steps is traced (a while loop): a query pays for the tokens it
    probes, not for the most any query of its batch could probe, and no size is static."""
    ends = jnp.cumsum(sizes)
    steps = (ends[-1] + chunk - 1) // chunk

    def body(step, carry):
        return step_fn(carry, *ragged_chunk(starts, sizes, ends, step, chunk))

    return jax.lax.fori_loop(0, steps, body, init)


def residual_lookup(query: jax.Array, table: jax.Array) -> jax.Array:
    """query [Q, D], residual table [R, 256, 8/nbits] -> [Q, R, 256]: the dot product of each
    query token with the residual values a byte value encodes at each byte position."""
    per_byte = table.shape[2]
    q = query.reshape(query.shape[0], -1, per_byte)
    return jnp.einsum("QRI,RBI->QRB", q, table, preferred_element_type=jnp.float32)


def chunk_size(rows: int) -> int:
    """Slots per step over a shard of `rows` token rows: CHUNK, or less for a small shard.
    Work done in one piece past CHUNK ran several times slower per slot on CPU (its
    intermediates fall out of cache); the last step of a query is padded to a whole chunk."""
    return min(CHUNK, shapes.power_of_two(max(rows, 1), MIN_CHUNK))


def best_per_token(query, cells, cell_scores, query_mask, token_arrays, table,
                   num_docs: int) -> jax.Array:  # fmt: skip
    """Stage 2's gather and first reduction: score every token under the probed cells of
    this shard (centroid score + residual lookups) and keep, per (document, query token), the
    best -> [num_docs, Q] (-inf where the token found nothing in that document). Documents are
    the major axis so that the sum over query tokens reads contiguous rows: token-major, that
    sum strides across the whole array and cost about 6 ns per cell at 1e5 documents."""
    cell_offsets, token_docs, token_residuals = token_arrays
    num_tokens, nprobe = cells.shape
    starts = cell_offsets[cells].reshape(-1)
    sizes = jnp.where(query_mask[:, None], cell_offsets[cells + 1] - cell_offsets[cells], 0)
    lookup = residual_lookup(query, table).reshape(-1)
    centroid_part = cell_scores.reshape(-1)
    width = token_residuals.shape[1]

    def step(best, position, which, real):
        docs = jnp.where(real, take(token_docs, position), num_docs)
        packed = take(token_residuals, position).astype(jnp.int32)  # [chunk, R]
        token_of = which // nprobe
        index = (token_of[:, None] * width + jnp.arange(width)[None, :]) * 256 + packed
        scores = take(centroid_part, which) + take(lookup, index).sum(-1)
        flat = jnp.minimum(docs.astype(jnp.int32), num_docs) * num_tokens + token_of  # 1-d
        return best.at[flat].max(scores)

    start = jnp.full(((num_docs + 1) * num_tokens,), -jnp.inf)
    chunk = chunk_size(token_docs.shape[0])
    best = over_ranges(starts, sizes.reshape(-1), chunk, step, start)
    return best.reshape(num_docs + 1, num_tokens)[:num_docs]


def dense_document_scores(best, imputed, query_mask) -> jax.Array:
    """Stage 2's second reduction: best [n, Q] per (document, query token) -> per document
    the sum over real query tokens, imputing where a token found nothing (a document with no
    probed token at all scores the sum of the imputations) -> [n]."""
    per_token = jnp.where(jnp.isfinite(best), best, imputed[None, :])
    return jnp.where(query_mask[None, :], per_token, 0.0).sum(1)


def stage_two_scores(query, cells, cell_scores, imputed, query_mask, token_arrays, table,
                     num_docs: int) -> jax.Array:  # fmt: skip
    """Stage 2 -> [n] document scores, by the dense reduction while its [n, Q] buffer is at
    most DENSE_CELLS (one pass over the probed tokens, faster there), else the sparse one
    (work and memory follow the probed tokens). Both give the same scores."""
    if (num_docs + 1) * query.shape[0] <= DENSE_CELLS:
        best = best_per_token(query, cells, cell_scores, query_mask, token_arrays, table, num_docs)
        return dense_document_scores(best, imputed, query_mask)
    return sparse_document_scores(query, cells, cell_scores, imputed, query_mask, token_arrays,
                                  table, num_docs)  # fmt: skip


def token_chunk_size(rows: int, cells: int, nprobe: int) -> int:
    """Slots per step over one query token's probed lists: the power of two at or below what
    a token probes on average (nprobe lists of rows / cells tokens), within [MIN_CHUNK, CHUNK],
    so the padded last step of each token wastes at most about as much as it does."""
    mean = max(1, nprobe * rows // max(cells, 1))
    return min(CHUNK, max(MIN_CHUNK, 1 << (mean.bit_length() - 1)))


def sparse_document_scores(query, cells, cell_scores, imputed, query_mask, token_arrays, table,
                           num_docs: int) -> jax.Array:  # fmt: skip
    """Stage 2 with work that follows the tokens probed, not the shard's documents: a
    document's score is the sum of the imputations plus, per query token that found it, its
    best score there minus that token's imputation. One query token at a time: its probed
    tokens scatter their best into `best` [n + 1] (pass 1), then a second pass over the same
    slots adds each touched document's gain to `total` [n + 1] and resets `best` there, so no
    [n, Q] array exists and nothing but the touched entries is reset. Duplicate documents in
    one step write identical values (read before the step), so each counts once -> [n]."""
    cell_offsets, token_docs, token_residuals = token_arrays
    num_tokens, nprobe = cells.shape
    starts = cell_offsets[cells]
    sizes = jnp.where(query_mask[:, None], cell_offsets[cells + 1] - starts, 0)
    lookup = residual_lookup(query, table)  # [Q, R, 256]
    width = token_residuals.shape[1]
    chunk = token_chunk_size(token_docs.shape[0], cell_offsets.shape[0] - 1, nprobe)
    byte_base = jnp.arange(width, dtype=jnp.int32)[None, :] * 256

    def slot_docs(position, real):  # padded slots land on the spare entry n
        return jnp.where(real, take(token_docs, position).astype(jnp.int32), num_docs)

    def one_token(t, carry):
        token_lookup = jax.lax.dynamic_index_in_dim(lookup, t, keepdims=False).reshape(-1)
        token_cells = jax.lax.dynamic_index_in_dim(cell_scores, t, keepdims=False)
        token_starts = jax.lax.dynamic_index_in_dim(starts, t, keepdims=False)
        token_sizes = jax.lax.dynamic_index_in_dim(sizes, t, keepdims=False)
        imputation = jax.lax.dynamic_index_in_dim(imputed, t, keepdims=False)

        def keep_best(state, position, which, real):
            total, best = state
            docs = slot_docs(position, real)
            packed = take(token_residuals, position).astype(jnp.int32)
            scores = take(token_cells, which) + take(token_lookup, byte_base + packed).sum(-1)
            return total, best.at[docs].max(scores)

        def add_gain(state, position, which, real):
            total, best = state
            docs = slot_docs(position, real)
            found = take(best, docs)
            gain = jnp.where(jnp.isfinite(found), found - imputation, 0.0)
            return total.at[docs].set(take(total, docs) + gain), best.at[docs].set(-jnp.inf)

        carry = over_ranges(token_starts, token_sizes, chunk, keep_best, carry)
        return over_ranges(token_starts, token_sizes, chunk, add_gain, carry)

    start = (jnp.zeros((num_docs + 1,)), jnp.full((num_docs + 1,), -jnp.inf))
    total, _ = jax.lax.fori_loop(0, num_tokens, one_token, start)
    return total[:num_docs] + jnp.where(query_mask, imputed, 0.0).sum()


def exact_scores(query, query_mask, docs, mine, centroids, table, token_arrays,
                 doc_arrays) -> jax.Array:  # fmt: skip
    """Stage 3: decompress this shard's documents `docs` [r] (where `mine`) and score them with
    exact MaxSim -> [r]. Their tokens are visited ragged, a cache-sized chunk at a time; a
    token's residuals are the row cell_offsets[code] + its row within the cell."""
    cell_offsets, _, token_residuals = token_arrays
    doc_offsets, doc_codes, doc_cell_rows = doc_arrays
    starts = doc_offsets[docs]
    lengths = jnp.where(mine, doc_offsets[docs + 1] - starts, 0)

    def step(best, slot, which, real):
        codes = take(doc_codes, slot).astype(jnp.int32)
        rows = take(cell_offsets, codes) + take(doc_cell_rows, slot).astype(jnp.int32)
        vectors = decompress_with_table(centroids, table, codes, take(token_residuals, rows))
        sims = jnp.einsum("TD,QD->TQ", vectors, query, preferred_element_type=jnp.float32)
        return best.at[jnp.where(real, which, docs.shape[0])].max(sims)

    start = jnp.full((docs.shape[0] + 1, query.shape[0]), -jnp.inf)
    chunk = min(EXACT_CHUNK, chunk_size(doc_codes.shape[0]))
    best = over_ranges(starts, lengths, chunk, step, start)
    return jnp.where(query_mask[None, :], best[:-1], 0.0).sum(-1)


# ----------------------------------------------------------------------- jitted entry points


@functools.partial(jax.jit, static_argnames=("statics", "nprobe"))
def probed_tokens(queries, query_mask, centroids, cell_offsets, *, statics, nprobe):
    """How many stored tokens each query's real tokens probe, at most over the shards -> [B]
    (what stage 2 visits; for tests and diagnostics, search does not need it)."""

    def per_shard_fn(queries, query_mask, centroids, cell_offsets):
        cells, _, _ = best_cells(queries, centroids, nprobe)  # [B, Q, nprobe]
        sizes = cell_offsets[0][cells + 1] - cell_offsets[0][cells]
        totals = jnp.where(query_mask[..., None], sizes, 0).sum((1, 2))
        return jax.lax.pmax(totals, sharding.DATA_AXIS)

    data = sharding.DATA_AXIS
    return jax.shard_map(
        per_shard_fn,
        mesh=statics.mesh,
        in_specs=(P(), P(), P(), P(data)),
        out_specs=P(),
        check_vma=False,
    )(queries, query_mask, centroids, cell_offsets)


def _skip_padding_rows(stage, fill):
    """Wrap a per-query stage for `lax.map` so a padded batch row (no real token, args[1] is
    its token mask) costs nothing: XLA runs only the taken branch of a `cond`."""

    def run(args):
        return jax.lax.cond(args[1].any(), stage, lambda _: fill, args)

    return run


def _approximate(queries, query_mask, allowed, codec, token_arrays, *, statics, nprobe, keep):
    """Stages 1 and 2 -> the best `keep` documents over all shards: (scores [B, keep], global
    document numbers [B, keep], -1 where fewer)."""
    per_shard = statics.docs_per_shard

    def per_shard_fn(queries, query_mask, allowed, codec, token_arrays):
        token_arrays = tuple(a[0] for a in token_arrays)
        centroids, table = centroids_and_table(codec)

        def stages12(args):
            query, mask = args
            cells, cell_scores, imputed = (a[0] for a in best_cells(query[None], centroids, nprobe))
            scores = stage_two_scores(query, cells, cell_scores, imputed, mask, token_arrays,
                                      table, per_shard)  # fmt: skip
            return jnp.where(allowed, scores, -jnp.inf)

        nothing = jnp.full((per_shard,), -jnp.inf)
        approx = jax.lax.map(_skip_padding_rows(stages12, nothing), (queries, query_mask))
        local = jnp.broadcast_to(jnp.arange(per_shard, dtype=jnp.int32), approx.shape)
        best, ids = sharding.local_top_k(approx, local, keep, sharding.shard_offset(per_shard))
        return sharding.merge_top_k(best, ids, keep)

    data = sharding.DATA_AXIS
    return jax.shard_map(
        per_shard_fn,
        mesh=statics.mesh,
        in_specs=(P(), P(), P(data), P(), P(data)),
        out_specs=(P(), P()),
        check_vma=False,
    )(queries, query_mask, allowed, codec, token_arrays)


def _rerank(queries, query_mask, ids, codec, token_arrays, doc_arrays, *, statics, k):
    """Stage 3: exact MaxSim of the documents `ids` [B, r] (global, -1 = none), each scored
    on the shard that holds it -> (scores [B, k], ids [B, k])."""
    per_shard = statics.docs_per_shard

    def per_shard_fn(queries, query_mask, ids, codec, token_arrays, doc_arrays):
        token_arrays = tuple(a[0] for a in token_arrays)
        doc_arrays = tuple(a[0] for a in doc_arrays)
        centroids, table = centroids_and_table(codec)

        def stage3(args):
            query, mask, docs, mine = args
            return exact_scores(query, mask, docs, mine, centroids, table, token_arrays,
                                doc_arrays)  # fmt: skip

        mine, local = sharding.owned(ids, sharding.shard_offset(per_shard), per_shard)
        nothing = jnp.zeros((ids.shape[1],))
        exact = jax.lax.map(_skip_padding_rows(stage3, nothing), (queries, query_mask, local, mine))
        scores = sharding.combine_owned(exact, mine, ids >= 0)
        best, where = jax.lax.top_k(scores, min(k, scores.shape[1]))
        return best, jnp.where(jnp.isfinite(best), jnp.take_along_axis(ids, where, axis=1), -1)

    data = sharding.DATA_AXIS
    return jax.shard_map(
        per_shard_fn,
        mesh=statics.mesh,
        in_specs=(P(), P(), P(), P(), P(data), P(data)),
        out_specs=(P(), P()),
        check_vma=False,
    )(queries, query_mask, ids, codec, token_arrays, doc_arrays)


@functools.partial(jax.jit, static_argnames=("statics", "nprobe", "keep", "k"))
def _search(queries, query_mask, allowed, codec, token_arrays, doc_arrays, *, statics, nprobe,
            keep, k):  # fmt: skip
    """The whole search as one program (no host round trip between stages): stages 1-2 keep
    `keep` documents, stage 3 rescores them exactly."""
    _, ids = _approximate(queries, query_mask, allowed, codec, token_arrays, statics=statics,
                          nprobe=nprobe, keep=keep)  # fmt: skip
    return _rerank(queries, query_mask, ids, codec, token_arrays, doc_arrays, statics=statics, k=k)


@functools.partial(jax.jit, static_argnames=("statics", "nprobe", "k"))
def _search_approximate(queries, query_mask, allowed, codec, token_arrays, *, statics, nprobe,
                        k):  # fmt: skip
    """Stages 1-2 only (rerank=0): the approximate scores are final."""
    return _approximate(queries, query_mask, allowed, codec, token_arrays, statics=statics,
                        nprobe=nprobe, keep=k)  # fmt: skip


def _depth(shards: WarpShards, params: WarpParams, k: int) -> int:
    """How many documents stage 2 hands on: `rerank` (at least k) or, without rerank, k."""
    total = shards.docs_per_shard * sharding.num_shards(shards.mesh)
    return min(max(params.rerank, k), total) if params.rerank else k


def search(shards: WarpShards, queries, query_mask, allowed, params: WarpParams, k: int):
    """queries [B, Q, D], query_mask [B, Q], allowed [N] sharded -> (scores [B, k], global
    document numbers [B, k], -1 where fewer were found). One compiled program per (batch
    shape, nprobe, rerank depth, k): the work inside follows what each query probes."""
    codec = (shards.centroids, shards.centroid_scales, shards.bucket_weights)
    nprobe = min(params.nprobe, shards.num_centroids)
    if not params.rerank:
        return _search_approximate(queries, query_mask, allowed, codec, shards.token_arrays,
                                   statics=shards.statics, nprobe=nprobe, k=k)  # fmt: skip
    return _search(
        queries, query_mask, allowed, codec, shards.token_arrays, shards.doc_arrays,
        statics=shards.statics, nprobe=nprobe, keep=_depth(shards, params, k), k=k,
    )  # fmt: skip


def warmup(shards: WarpShards, queries, query_mask, allowed, params: WarpParams, k: int) -> int:
    """Compile the one program a search of this batch shape and these knobs runs. Returns
    the calls made."""
    jax.block_until_ready(search(shards, queries, query_mask, allowed, params, k))
    return 1
