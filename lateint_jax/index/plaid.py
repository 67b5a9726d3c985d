"""PLAID search over a residual-compressed index, as pure jitted stages sharded by document.

Stages (ColBERTv2/PLAID, as colbert-ai's IndexScorer runs them):
  1. query-to-centroid scores S [B, Q, C]; the top `ncells` centroids of every query token;
  2. candidates: the union of those centroids' inverted lists (a per-query bitmap over the
     shard's documents, so duplicates vanish), compacted to a bucketed static size;
  3. centroid interaction with pruning: each candidate scores sum_q max_t S[q, code_t] over its
     tokens whose centroid has max_q S >= `centroid_score_threshold` (-9999 when none); the best
     `ndocs` over all shards survive;
  4. the same without pruning on those, keeping `ndocs // 4` (at least k);
  5. decompression of the survivors and exact MaxSim (`scoring.maxsim_paired`); top-k.

Layout for speed on CPU: every document's centroid ids are stored padded and transposed,
`doc_codes` [T, N] (pad id C points at a score row of -9999), so stage 3 is a `lax.scan` over
token positions whose step gathers one [B, n, Q] block of centroid scores and keeps a running
max: about 10 G elements/s on one core, where gathering [n, T, Q] at once runs 20x slower.

Stages 1-2 (`candidates`) and 3-5 (`rank`) are two jitted calls: the first returns the candidate
count, which picks the static compaction size bucket for the second. Inside `shard_map`, each
shard scores only its own documents; global selections all-gather the per-shard lists, and
later stages are summed from the owning shard, so any device count ranks identically.

Shapes: B queries, Q query tokens, D dim, C centroids, N documents (padded, all shards),
T tokens per document (padded), R = D * nbits / 8 bytes, n candidates per shard.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from lateint_jax import sharding
from lateint_jax.codec.residual import decompress
from lateint_jax.index.layout import IndexArrays
from lateint_jax.scoring import maxsim_paired

PRUNED = -9999.0  # colbert-ai's score for a query token with no unpruned document token
TRACE_COUNTS: Counter = Counter()  # traces of each jitted stage, for the no-recompilation test
DOC_MULTIPLE = 16  # documents per shard are a multiple of this (exact search chunks evenly)


@dataclass(frozen=True)
class PlaidParams:
    """Search knobs; `defaults(k)` gives colbert-ai's choice for a given k."""

    ncells: int
    centroid_score_threshold: float
    ndocs: int

    @classmethod
    def defaults(cls, k: int, ncells=None, centroid_score_threshold=None, ndocs=None):
        if k <= 10:
            base = (1, 0.5, 256)
        elif k <= 100:
            base = (2, 0.45, 1024)
        else:
            base = (4, 0.4, max(k * 4, 4096))
        return cls(
            ncells=int(base[0] if ncells is None else ncells),
            centroid_score_threshold=float(
                base[1] if centroid_score_threshold is None else centroid_score_threshold
            ),
            ndocs=int(base[2] if ndocs is None else ndocs),
        )


@dataclass
class PlaidShards:
    """An index placed on a ("data",) mesh, split by document.

    centroids [C, D], bucket_weights [D, 2**nbits]: replicated.
    doc_codes [T, N] int32 (pad = C), doc_residuals [N, T, R] uint8, doc_lengths [N] int32,
    live [N] bool: split along N. ivf_pids [S, L] int32 local doc numbers and ivf_offsets
    [S, C + 1] int32: shard s's inverted lists. list_sizes [S, C] (host): each shard's list
    lengths sorted descending, cumulated (bounds the inverted-list entries a search gathers).
    """

    mesh: Mesh
    nbits: int
    num_docs: int
    docs_per_shard: int
    centroids: jax.Array
    bucket_weights: jax.Array
    doc_codes: jax.Array
    doc_residuals: jax.Array
    doc_lengths: jax.Array
    live: jax.Array
    ivf_pids: jax.Array
    ivf_offsets: jax.Array
    list_sizes: np.ndarray

    @property
    def num_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def doc_tokens(self) -> int:
        return int(self.doc_codes.shape[0])


def bucket(n: int, minimum: int = 1) -> int:
    """Next power of two >= max(n, minimum): the static sizes searches compile for."""
    n = max(int(n), int(minimum), 1)
    return 1 << (n - 1).bit_length()


def _padded_docs(arrays: IndexArrays, total: int, tokens: int):
    """Flat token rows -> per-document padded codes [N, T] (pad C) and residuals [N, T, R]."""
    lengths = arrays.doc_lengths
    n = arrays.num_docs
    position = np.arange(tokens)
    rows = arrays.doc_offsets[:-1, None] + position[None, :]
    real = position[None, :] < lengths[:, None]
    rows = np.where(real, rows, 0)
    codes = np.full((total, tokens), arrays.num_centroids, np.int32)
    codes[:n] = np.where(real, arrays.codes[rows], arrays.num_centroids)
    residuals = np.zeros((total, tokens, arrays.residuals.shape[1]), np.uint8)
    residuals[:n] = np.asarray(arrays.residuals)[rows] * real[..., None]
    return codes, residuals


def _shard_ivf(arrays: IndexArrays, shards: int, per_shard: int):
    """Split the inverted lists by document range: -> pids [S, L] (local numbers), offsets
    [S, C + 1], and per shard the descending cumulative list sizes [S, C]."""
    c = arrays.num_centroids
    cell_of = np.repeat(np.arange(c), np.diff(arrays.ivf_offsets))
    pids = arrays.ivf_pids.astype(np.int64)
    if arrays.deleted.any():  # lists may predate a deletion
        keep = ~arrays.deleted[pids]
        pids, cell_of = pids[keep], cell_of[keep]
    shard_of = pids // per_shard
    counts = np.zeros((shards, c), np.int64)
    np.add.at(counts, (shard_of, cell_of), 1)
    offsets = np.zeros((shards, c + 1), np.int64)
    np.cumsum(counts, axis=1, out=offsets[:, 1:])
    width = max(int(offsets[:, -1].max()), 1)
    local = np.zeros((shards, width), np.int32)
    for s in range(shards):
        mine = shard_of == s  # entries stay sorted by centroid, then document
        local[s, : mine.sum()] = pids[mine] - s * per_shard
    sizes = np.cumsum(-np.sort(-counts, axis=1), axis=1)
    return local, offsets.astype(np.int32), sizes


def place(arrays: IndexArrays, mesh: Mesh) -> PlaidShards:
    """Pad an index by document and put it on the mesh (see PlaidShards)."""
    shards = sharding.num_shards(mesh)
    total = sharding.padded_size(arrays.num_docs, shards, DOC_MULTIPLE)
    per_shard = total // shards
    tokens = max(8, -(-int(arrays.doc_lengths.max(initial=1)) // 8) * 8)
    codes, residuals = _padded_docs(arrays, total, tokens)
    lengths = sharding.pad_axis(arrays.doc_lengths.astype(np.int32), total)
    live = sharding.pad_axis(~arrays.deleted.astype(bool), total, value=False)
    ivf_pids, ivf_offsets, sizes = _shard_ivf(arrays, shards, per_shard)
    return PlaidShards(
        mesh=mesh,
        nbits=arrays.nbits,
        num_docs=arrays.num_docs,
        docs_per_shard=per_shard,
        centroids=sharding.replicate(np.asarray(arrays.centroids, np.float32), mesh),
        bucket_weights=sharding.replicate(np.asarray(arrays.bucket_weights, np.float32), mesh),
        doc_codes=sharding.shard_along(np.ascontiguousarray(codes.T), mesh, axis=1),
        doc_residuals=sharding.shard_along(residuals, mesh),
        doc_lengths=sharding.shard_along(lengths, mesh),
        live=sharding.shard_along(live, mesh),
        ivf_pids=sharding.shard_along(ivf_pids, mesh),
        ivf_offsets=sharding.shard_along(ivf_offsets, mesh),
        list_sizes=sizes,
    )


# ---------------------------------------------------------------- per-shard stages (pure jnp)


def centroid_scores(queries: jax.Array, centroids: jax.Array) -> jax.Array:
    """queries [B, Q, D], centroids [C, D] -> S [B, Q, C] float32."""
    return jnp.einsum("BQD,CD->BQC", queries, centroids, preferred_element_type=jnp.float32)


def probe_cells(scores: jax.Array, query_mask: jax.Array, ncells: int) -> jax.Array:
    """The top `ncells` centroids of every real query token: scores [B, Q, C] -> [B, Q * ncells]
    centroid ids, -1 for padding query tokens."""
    cells = jax.lax.top_k(scores, ncells)[1]  # [B, Q, ncells]
    cells = jnp.where(query_mask[..., None], cells, -1)
    return cells.reshape(cells.shape[0], -1)


def candidate_bitmap(
    cells: jax.Array, ivf_pids: jax.Array, ivf_offsets: jax.Array, num_docs: int, entries: int
) -> jax.Array:
    """Union of the cells' inverted lists as a bitmap over the shard's documents.

    cells [B, E] (-1 = none), ivf_pids [L], ivf_offsets [C + 1] -> [B, num_docs] bool. The
    lists are concatenated into `entries` static slots (at least the sum of the E largest).
    """
    safe = jnp.maximum(cells, 0)
    starts = ivf_offsets[safe]
    sizes = jnp.where(cells >= 0, ivf_offsets[safe + 1] - starts, 0)
    ends = jnp.cumsum(sizes, axis=1)  # [B, E]
    slot = jnp.arange(entries, dtype=ends.dtype)
    which = jax.vmap(lambda e: jnp.searchsorted(e, slot, side="right"))(ends)  # [B, entries]
    which = jnp.minimum(which, cells.shape[1] - 1)
    before = jnp.take_along_axis(ends - sizes, which, axis=1)
    entry = jnp.take_along_axis(starts, which, axis=1) + slot[None, :] - before
    docs = ivf_pids[jnp.clip(entry, 0, ivf_pids.shape[0] - 1)]
    docs = jnp.where(slot[None, :] < ends[:, -1:], docs, num_docs)  # spare slots -> sentinel
    rows = jnp.arange(cells.shape[0])[:, None]
    bitmap = jnp.zeros((cells.shape[0], num_docs + 1), bool).at[rows, docs].set(True)
    return bitmap[:, :num_docs]


def centroid_interaction(
    table: jax.Array, doc_codes: jax.Array, docs: jax.Array, query_mask: jax.Array
) -> jax.Array:
    """Approximate MaxSim from centroid scores alone.

    table [B, C + 1, Q] (row C = pad), doc_codes [T, N] int32, docs [B, n] local doc numbers,
    query_mask [B, Q] -> [B, n] = sum over real q of max over tokens t of table[code_t, q].
    """
    codes = doc_codes[:, docs]  # [T, B, n]

    def step(best, codes_t):
        return jnp.maximum(best, jnp.take_along_axis(table, codes_t[..., None], axis=1)), None

    start = jnp.full((*docs.shape, table.shape[2]), PRUNED, jnp.float32)
    best, _ = jax.lax.scan(step, start, codes, unroll=4)  # [B, n, Q]
    return jnp.where(query_mask[:, None, :], best, 0.0).sum(-1)


def score_table(scores: jax.Array, threshold=None) -> jax.Array:
    """S [B, Q, C] -> [B, C + 1, Q] lookup table with a pad row; with a threshold, centroids
    whose best query-token score is below it are pruned to -9999 (colbert-ai's `idx`)."""
    table = jnp.swapaxes(scores, 1, 2)
    if threshold is not None:
        keep = table.max(axis=2, keepdims=True) >= threshold
        table = jnp.where(keep, table, PRUNED)
    pad = jnp.full((table.shape[0], 1, table.shape[2]), PRUNED, table.dtype)
    return jnp.concatenate([table, pad], axis=1)


def exact_scores(queries, query_mask, docs, doc_arrays, nbits: int):
    """Decompress docs [B, n] (local numbers) and score them with MaxSim -> [B, n].

    doc_arrays = (centroids [C, D], bucket_weights, doc_codes [T, N], doc_residuals [N, T, R],
    doc_lengths [N]) of this shard."""
    centroids, weights, doc_codes, doc_residuals, doc_lengths = doc_arrays
    (b, n), tokens = docs.shape, doc_codes.shape[0]
    codes = jnp.minimum(doc_codes[:, docs], centroids.shape[0] - 1)  # [T, B, n]; pads masked
    codes = jnp.moveaxis(codes, 0, -1).reshape(-1)
    packed = doc_residuals[docs].reshape(codes.shape[0], -1)
    vectors = decompress(centroids, weights, codes, packed, nbits).reshape(b, n, tokens, -1)
    token_mask = jnp.arange(tokens)[None, None, :] < doc_lengths[docs][..., None]
    return maxsim_paired(queries, vectors, token_mask, query_mask)


# ----------------------------------------------------------------------- jitted entry points


def candidate_entries(shards: PlaidShards, query_tokens: int, ncells: int) -> int:
    """Static inverted-list slots for E = Q * ncells probes: the most any shard could need."""
    probes = min(query_tokens * ncells, shards.list_sizes.shape[1])
    return bucket(int(shards.list_sizes[:, probes - 1].max()), 64)


@functools.partial(jax.jit, static_argnames=("shards_static", "ncells", "entries", "use_ivf"))
def _candidates(
    queries, query_mask, allowed, centroids, ivf_pids, ivf_offsets, *,
    shards_static, ncells, entries, use_ivf,
):  # fmt: skip
    mesh, per_shard = shards_static
    TRACE_COUNTS["candidates"] += 1

    def per_shard_fn(queries, query_mask, allowed, centroids, ivf_pids, ivf_offsets):
        scores = centroid_scores(queries, centroids)
        if use_ivf:
            cells = probe_cells(scores, query_mask, ncells)
            bitmap = candidate_bitmap(cells, ivf_pids[0], ivf_offsets[0], per_shard, entries)
            bitmap = bitmap & allowed[None, :]
        else:  # an explicit subset: every allowed document is a candidate, as in colbert-ai
            bitmap = jnp.broadcast_to(allowed[None, :], (queries.shape[0], per_shard))
        counts = bitmap.sum(axis=1, dtype=jnp.int32)
        data = sharding.DATA_AXIS
        return scores, bitmap, jax.lax.pmax(counts, data), jax.lax.psum(counts, data)

    data = sharding.DATA_AXIS
    return jax.shard_map(
        per_shard_fn,
        mesh=mesh,
        in_specs=(P(), P(), P(data), P(), P(data), P(data)),
        out_specs=(P(), P(None, data), P(), P()),
        check_vma=False,
    )(queries, query_mask, allowed, centroids, ivf_pids, ivf_offsets)


def candidates(shards: PlaidShards, queries, query_mask, allowed, params: PlaidParams, k: int,
               use_ivf: bool = True):  # fmt: skip
    """Stages 1-2 -> (S [B, Q, C], bitmap [B, N] sharded, most candidates in a shard [B]).

    When some query finds fewer than k candidates (tiny corpora, few query tokens), its batch
    probes 4x more cells until it has k or probes them all, so k results always come back.
    """
    ncells = min(params.ncells, shards.num_centroids)
    while True:
        entries = candidate_entries(shards, queries.shape[1], ncells)
        scores, bitmap, most, total = _candidates(
            queries, query_mask, allowed, shards.centroids, shards.ivf_pids, shards.ivf_offsets,
            shards_static=(shards.mesh, shards.docs_per_shard), ncells=ncells, entries=entries,
            use_ivf=use_ivf,
        )  # fmt: skip
        real = np.asarray(query_mask).any(axis=1)
        if not use_ivf or ncells >= shards.num_centroids or np.all(np.asarray(total)[real] >= k):
            return scores, bitmap, most
        ncells = min(ncells * 4, shards.num_centroids)


@functools.partial(jax.jit, static_argnames=("statics", "width", "ndocs", "survivors", "k"))
def _rank(queries, query_mask, scores, bitmap, threshold, arrays, *, statics, width, ndocs,
          survivors, k):  # fmt: skip
    shards_meta = statics
    TRACE_COUNTS["rank"] += 1
    per_shard = shards_meta.docs_per_shard

    def per_shard_fn(queries, query_mask, scores, bitmap, threshold, arrays):
        doc_codes = arrays[2]
        offset = sharding.shard_offset(per_shard)
        # stage 3: pruned centroid interaction over this shard's candidates
        found = jax.vmap(lambda row: jnp.nonzero(row, size=width, fill_value=per_shard)[0])
        docs = found(bitmap)  # [B, width]
        is_doc = docs < per_shard
        docs = jnp.minimum(docs, per_shard - 1).astype(jnp.int32)
        approx = centroid_interaction(score_table(scores, threshold), doc_codes, docs, query_mask)
        approx = jnp.where(is_doc, approx, -jnp.inf)
        best, ids = sharding.merge_top_k(*sharding.local_top_k(approx, docs, ndocs, offset), ndocs)
        # stage 4: unpruned centroid interaction on the global best `ndocs`
        mine, local = sharding.owned(ids, offset, per_shard)
        full = centroid_interaction(score_table(scores), doc_codes, local, query_mask)
        full = sharding.combine_owned(full, mine, ids >= 0)
        best, where = jax.lax.top_k(full, min(survivors, full.shape[1]))
        ids = jnp.where(jnp.isfinite(best), jnp.take_along_axis(ids, where, axis=1), -1)
        # stage 5: decompress and score exactly
        mine, local = sharding.owned(ids, offset, per_shard)
        exact = exact_scores(queries, query_mask, local, arrays, shards_meta.nbits)
        exact = sharding.combine_owned(exact, mine, ids >= 0)
        best, where = jax.lax.top_k(exact, min(k, exact.shape[1]))
        ids = jnp.where(jnp.isfinite(best), jnp.take_along_axis(ids, where, axis=1), -1)
        return best, ids

    data = sharding.DATA_AXIS
    array_specs = (P(), P(), P(None, data), P(data), P(data))
    return jax.shard_map(
        per_shard_fn,
        mesh=shards_meta.mesh,
        in_specs=(P(), P(), P(), P(None, data), P(), array_specs),
        out_specs=(P(), P()),
        check_vma=False,
    )(queries, query_mask, scores, bitmap, threshold, arrays)


@dataclass(frozen=True)
class _Statics:
    """The hashable, static part of PlaidShards (a jit static argument)."""

    mesh: Mesh
    nbits: int
    docs_per_shard: int
    num_centroids: int
    doc_tokens: int


def rank(shards: PlaidShards, queries, query_mask, scores, bitmap, most, params, k: int):
    """Stages 3-5 -> (scores [B, k], global doc numbers [B, k], -1 where fewer were found)."""
    width = min(bucket(int(np.max(most, initial=1)), 128), shards.docs_per_shard)
    statics = _Statics(
        shards.mesh, shards.nbits, shards.docs_per_shard, shards.num_centroids, shards.doc_tokens
    )
    arrays = (
        shards.centroids, shards.bucket_weights, shards.doc_codes, shards.doc_residuals,
        shards.doc_lengths,
    )  # fmt: skip
    survivors = max(params.ndocs // 4, k)
    return _rank(
        queries, query_mask, scores, bitmap, jnp.float32(params.centroid_score_threshold),
        arrays, statics=statics, width=width, ndocs=max(params.ndocs, survivors),
        survivors=survivors, k=k,
    )  # fmt: skip
