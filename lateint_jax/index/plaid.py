"""PLAID search over a residual-compressed index, as pure jitted stages sharded by document.

Stages (ColBERTv2/PLAID, as colbert-ai's IndexScorer runs them):
  1. query-to-centroid scores [C, Q] per query; the top `ncells` centroids of every query token;
  2. candidates: the union of those centroids' inverted lists (a per-query bitmap over the
     shard's documents, so duplicates vanish), compacted to a bucketed static size;
  3. centroid interaction with pruning: each candidate scores sum_q max_t S[q, code_t] over its
     tokens whose centroid has max_q S >= `centroid_score_threshold` (-9999 when none); the best
     `ndocs` over all shards survive;
  4. the same without pruning on those, keeping `ndocs // 4` (at least k);
  5. decompression of the survivors (`codec.residual.decompress`) and exact MaxSim
     (`scoring.maxsim`); top-k.

Layout for speed on CPU: every document's centroid ids are stored padded and transposed,
`doc_codes` [T, N] (pad id C points at a score row of -9999), so stage 3 is a `lax.scan` over
token positions whose step gathers one [n, Q] block of centroid scores and keeps a running
max: about 10 G elements/s on one core, where gathering [n, T, Q] at once runs 20x slower.
Queries of a batch go through `lax.map` one at a time, so a query's tables stay in cache.

Stages 1-2 (`candidates`) and 3-5 (`rank`) are two jitted calls: the first returns the candidate
count, which picks the static compaction size bucket for the second. Inside `shard_map`, each
shard scores only its own documents; global selections all-gather the per-shard lists, and
later stages are summed from the owning shard, so any device count ranks identically.

Shapes: B queries, Q query tokens, D dim, C centroids, N documents (padded, all shards),
T tokens per document (padded), R = D * nbits / 8 bytes, n candidates per shard.
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
from lateint_jax.codec.residual import decompress
from lateint_jax.index.layout import IndexArrays
from lateint_jax.scoring import maxsim

PRUNED = -9999.0  # colbert-ai's score for a query token with no unpruned document token
DOC_MULTIPLE = 16  # documents per shard are a multiple of this (exact search chunks evenly)


@dataclass(frozen=True)
class PlaidParams:
    """Search knobs. `defaults(k)` are this project's (chosen on SciFact for a top-10 overlap of
    at least 0.98 with exact MaxSim over the same index, benchmarks/plaid_settings.py);
    `colbert_ai(k)` are colbert-ai's (`Searcher.dense_search`), faster and less faithful."""

    ncells: int
    centroid_score_threshold: float
    ndocs: int

    @classmethod
    def defaults(cls, k: int, ncells=None, centroid_score_threshold=None, ndocs=None):
        base = (2, 0.45, 2048) if k <= 10 else cls._wide(k)
        return cls._with(base, ncells, centroid_score_threshold, ndocs)

    @classmethod
    def colbert_ai(cls, k: int, ncells=None, centroid_score_threshold=None, ndocs=None):
        base = (1, 0.5, 256) if k <= 10 else (2, 0.45, 1024) if k <= 100 else cls._wide(k)
        return cls._with(base, ncells, centroid_score_threshold, ndocs)

    @staticmethod
    def _wide(k: int) -> tuple:
        return (4, 0.4, max(k * 4, 4096))

    @classmethod
    def _with(cls, base, ncells, centroid_score_threshold, ndocs):
        return cls(
            ncells=int(base[0] if ncells is None else ncells),
            centroid_score_threshold=float(
                base[1] if centroid_score_threshold is None else centroid_score_threshold
            ),
            ndocs=int(base[2] if ndocs is None else ndocs),
        )


@dataclass(frozen=True)
class Statics:
    """The hashable part of a placed index: a static argument of the jitted stages."""

    mesh: Mesh
    nbits: int
    docs_per_shard: int


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

    @functools.cached_property
    def statics(self) -> Statics:
        return Statics(self.mesh, self.nbits, self.docs_per_shard)

    @functools.cached_property
    def doc_arrays(self) -> tuple:
        """What stage 5 reads: (centroids, bucket_weights, doc_codes, residuals, lengths)."""
        return (
            self.centroids, self.bucket_weights, self.doc_codes, self.doc_residuals,
            self.doc_lengths,
        )  # fmt: skip


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
    counts = np.bincount(shard_of * c + cell_of, minlength=shards * c).reshape(shards, c)
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
    total = shapes.padded_size(arrays.num_docs, shards, DOC_MULTIPLE)
    per_shard = total // shards
    tokens = max(8, -(-int(arrays.doc_lengths.max(initial=1)) // 8) * 8)
    codes, residuals = _padded_docs(arrays, total, tokens)
    lengths = shapes.pad_axis(arrays.doc_lengths.astype(np.int32), total)
    live = shapes.pad_axis(~arrays.deleted.astype(bool), total, value=False)
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


# ---------------------------------------------------------- per-query stages (pure jnp)
# One query at a time (the batch goes through `lax.map`): a query's [C + 1, Q] score table is
# about 1 MiB and stays in cache, where a [B, C + 1, Q] batch of tables would not.


def score_table(query: jax.Array, centroids: jax.Array) -> jax.Array:
    """query [Q, D], centroids [C, D] -> centroid scores [C + 1, Q] float32; row C (the id
    padding tokens carry) is -9999 so it never wins a max."""
    scores = jnp.einsum("QD,CD->CQ", query, centroids, preferred_element_type=jnp.float32)
    return jnp.concatenate([scores, jnp.full((1, scores.shape[1]), PRUNED, jnp.float32)])


def prune(table: jax.Array, threshold: float) -> jax.Array:
    """Centroids whose best query-token score is below `threshold` -> -9999 (colbert-ai's
    `idx` bitmask): table [C + 1, Q] -> [C + 1, Q]."""
    return jnp.where(table.max(axis=1, keepdims=True) >= threshold, table, PRUNED)


def probe_cells(table: jax.Array, query_mask: jax.Array, ncells: int) -> jax.Array:
    """The `ncells` best centroids of every real query token: table [C + 1, Q], query_mask [Q]
    -> [Q * ncells] centroid ids, -1 for padding tokens. (Repeated argmax: XLA's CPU top_k is
    a full sort, far slower for the 1-4 cells PLAID probes.)"""
    scores = table[:-1]  # [C, Q]; reducing over C in place avoids a 1 MiB transpose
    if ncells > 8:
        cells = jax.lax.top_k(scores.T, ncells)[1]
    else:
        cells = []
        for _ in range(ncells):
            best = jnp.argmax(scores, axis=0)  # [Q]
            cells.append(best)
            scores = scores.at[best, jnp.arange(scores.shape[1])].set(-jnp.inf)
        cells = jnp.stack(cells, axis=1)
    cells = cells.astype(jnp.int32)  # [Q, ncells]
    return jnp.where(query_mask[:, None], cells, -1).reshape(-1)


def candidate_bitmap(
    cells: jax.Array, ivf_pids: jax.Array, ivf_offsets: jax.Array, num_docs: int, entries: int
) -> jax.Array:
    """Union of the cells' inverted lists as a bitmap over the shard's documents.

    cells [E] (-1 = none), ivf_pids [L], ivf_offsets [C + 1] -> [num_docs] bool. The lists are
    concatenated into `entries` static slots (at least the sum of the E largest lists).
    """
    safe = jnp.maximum(cells, 0)
    starts = ivf_offsets[safe]
    sizes = jnp.where(cells >= 0, ivf_offsets[safe + 1] - starts, 0)
    ends = jnp.cumsum(sizes)  # [E]
    slot = jnp.arange(entries, dtype=ends.dtype)
    which = jnp.minimum(jnp.searchsorted(ends, slot, side="right"), cells.shape[0] - 1)
    entry = starts[which] + slot - (ends - sizes)[which]
    docs = ivf_pids[jnp.clip(entry, 0, ivf_pids.shape[0] - 1)]
    docs = jnp.where(slot < ends[-1], docs, num_docs)  # spare slots -> a sentinel column
    return jnp.zeros(num_docs + 1, bool).at[docs].set(True)[:num_docs]


def centroid_interaction(
    table: jax.Array, doc_codes: jax.Array, docs: jax.Array, query_mask: jax.Array
) -> jax.Array:
    """Approximate MaxSim from centroid scores alone.

    table [C + 1, Q], doc_codes [T, N] int32 (pad = C), docs [n] local doc numbers, query_mask
    [Q] -> [n] = sum over real q of max over tokens t of table[code_t, q]. A scan over token
    positions gathers one [n, Q] block per step and keeps a running max.
    """

    def step(best, codes_t):
        return jnp.maximum(best, table[codes_t]), None

    start = jnp.full((docs.shape[0], table.shape[1]), PRUNED, jnp.float32)
    best, _ = jax.lax.scan(step, start, doc_codes[:, docs], unroll=4)  # [n, Q]
    return jnp.where(query_mask[None, :], best, 0.0).sum(-1)


def exact_scores(query, query_mask, docs, doc_arrays, nbits: int):
    """Decompress docs [n] (local numbers) and score them against query [Q, D] -> [n].

    doc_arrays = (centroids [C, D], bucket_weights, doc_codes [T, N], doc_residuals [N, T, R],
    doc_lengths [N]) of this shard."""
    centroids, weights, doc_codes, doc_residuals, doc_lengths = doc_arrays
    n, tokens = docs.shape[0], doc_codes.shape[0]
    codes = jnp.minimum(doc_codes[:, docs].T, centroids.shape[0] - 1).reshape(-1)  # pads masked
    packed = doc_residuals[docs].reshape(codes.shape[0], -1)
    vectors = decompress(centroids, weights, codes, packed, nbits).reshape(n, tokens, -1)
    token_mask = jnp.arange(tokens)[None, :] < doc_lengths[docs][:, None]
    return maxsim(query[None], vectors, token_mask, query_mask[None])[0]


# ----------------------------------------------------------------------- jitted entry points


def candidate_entries(shards: PlaidShards, query_tokens: int, ncells: int) -> int:
    """Static inverted-list slots for E = Q * ncells probes: the most any shard could need."""
    probes = min(query_tokens * ncells, shards.list_sizes.shape[1])
    return shapes.power_of_two(int(shards.list_sizes[:, probes - 1].max()), 64)


@functools.partial(jax.jit, static_argnames=("statics", "ncells", "entries", "use_ivf"))
def _candidates(queries, query_mask, allowed, centroids, ivf_pids, ivf_offsets, *, statics,
                ncells, entries, use_ivf):  # fmt: skip
    per_shard = statics.docs_per_shard

    def per_shard_fn(queries, query_mask, allowed, centroids, ivf_pids, ivf_offsets):
        def one_query(args):
            query, mask = args
            table = score_table(query, centroids)
            if not use_ivf:  # an explicit subset: every allowed document is a candidate
                return table, allowed
            cells = probe_cells(table, mask, ncells)
            bitmap = candidate_bitmap(cells, ivf_pids[0], ivf_offsets[0], per_shard, entries)
            return table, bitmap & allowed

        tables, bitmaps = jax.lax.map(one_query, (queries, query_mask))
        counts = bitmaps.sum(axis=1, dtype=jnp.int32)
        data = sharding.DATA_AXIS
        return tables, bitmaps, jax.lax.pmax(counts, data), jax.lax.psum(counts, data)

    data = sharding.DATA_AXIS
    return jax.shard_map(
        per_shard_fn,
        mesh=statics.mesh,
        in_specs=(P(), P(), P(data), P(), P(data), P(data)),
        out_specs=(P(), P(None, data), P(), P()),
        check_vma=False,
    )(queries, query_mask, allowed, centroids, ivf_pids, ivf_offsets)


def _escalation(shards: PlaidShards, queries, query_mask, allowed, params: PlaidParams,
                use_ivf: bool):  # fmt: skip
    """Stages 1-2 at each number of probed cells a search may need: params.ncells, then 4x more
    each step until every cell is probed (one step without the inverted lists). Yields
    ((tables, bitmap, most, total), last step?); the caller stops when it has enough."""
    ncells = min(params.ncells, shards.num_centroids)
    while True:
        entries = candidate_entries(shards, queries.shape[1], ncells)
        last = not use_ivf or ncells >= shards.num_centroids
        yield _candidates(
            queries, query_mask, allowed, shards.centroids, shards.ivf_pids, shards.ivf_offsets,
            statics=shards.statics, ncells=ncells, entries=entries, use_ivf=use_ivf,
        ), last  # fmt: skip
        if last:
            return
        ncells = min(ncells * 4, shards.num_centroids)


def candidates(shards: PlaidShards, queries, query_mask, allowed, params: PlaidParams, k: int,
               use_ivf: bool = True):  # fmt: skip
    """Stages 1-2 -> (tables [B, C + 1, Q], bitmap [B, N] sharded, most candidates in a shard
    [B]). When some query finds fewer than k candidates (tiny corpora, few query tokens), the
    batch probes 4x more cells until each has k or every cell is probed."""
    real = query_mask.any(axis=1)
    steps = _escalation(shards, queries, query_mask, allowed, params, use_ivf)
    for (tables, bitmap, most, total), last in steps:
        if last or np.all(np.asarray(total)[real] >= k):
            return tables, bitmap, most


def _top(scores: jax.Array, ids: jax.Array, k: int) -> jax.Array:
    """ids [B, n] of the k best scores [B, n], -1 where the score is -inf."""
    best, where = jax.lax.top_k(scores, min(k, scores.shape[1]))
    return jnp.where(jnp.isfinite(best), jnp.take_along_axis(ids, where, axis=1), -1), best


@functools.partial(jax.jit, static_argnames=("statics", "width", "ndocs", "survivors", "k"))
def _rank(queries, query_mask, tables, bitmap, arrays, threshold, *, statics, width, ndocs,
          survivors, k):  # fmt: skip
    per_shard = statics.docs_per_shard

    def per_shard_fn(queries, query_mask, tables, bitmap, arrays, threshold):
        doc_codes = arrays[2]
        offset = sharding.shard_offset(per_shard)

        def stage3(args):  # pruned centroid interaction over this shard's candidates
            table, mask, row = args
            docs = jnp.nonzero(row, size=width, fill_value=per_shard)[0]
            found = docs < per_shard
            docs = jnp.minimum(docs, per_shard - 1).astype(jnp.int32)
            approx = centroid_interaction(prune(table, threshold), doc_codes, docs, mask)
            return jnp.where(found, approx, -jnp.inf), docs

        approx, docs = jax.lax.map(stage3, (tables, query_mask, bitmap))
        best, ids = sharding.local_top_k(approx, docs, ndocs, offset)
        _, ids = sharding.merge_top_k(best, ids, ndocs)  # [B, ndocs], global

        def stage4(args):  # full centroid interaction on the global best ndocs
            table, mask, local = args
            return centroid_interaction(table, doc_codes, local, mask)

        mine, local = sharding.owned(ids, offset, per_shard)
        full = jax.lax.map(stage4, (tables, query_mask, local))
        ids, _ = _top(sharding.combine_owned(full, mine, ids >= 0), ids, survivors)

        def stage5(args):  # decompress and score exactly
            query, mask, local = args
            return exact_scores(query, mask, local, arrays, statics.nbits)

        mine, local = sharding.owned(ids, offset, per_shard)
        exact = jax.lax.map(stage5, (queries, query_mask, local))
        ids, best = _top(sharding.combine_owned(exact, mine, ids >= 0), ids, k)
        return best, ids

    data = sharding.DATA_AXIS
    array_specs = (P(), P(), P(None, data), P(data), P(data))
    return jax.shard_map(
        per_shard_fn,
        mesh=statics.mesh,
        in_specs=(P(), P(), P(), P(None, data), array_specs, P()),
        out_specs=(P(), P()),
        check_vma=False,
    )(queries, query_mask, tables, bitmap, arrays, threshold)


def rank_width(shards: PlaidShards, most: int) -> int:
    """Static candidate slots per shard for a batch whose fullest shard has `most` candidates."""
    return min(shapes.fine_bucket(most, 128), shards.docs_per_shard)


def rank(shards: PlaidShards, queries, query_mask, tables, bitmap, most, params, k: int):
    """Stages 3-5 -> (scores [B, k], global doc numbers [B, k], -1 where fewer were found)."""
    return _rank_at(
        shards, queries, query_mask, tables, bitmap, params, k,
        rank_width(shards, int(np.max(jax.device_get(most), initial=1))),
    )  # fmt: skip


def _rank_at(shards, queries, query_mask, tables, bitmap, params, k: int, width: int):
    survivors = max(params.ndocs // 4, k)
    threshold = np.float32(params.centroid_score_threshold)  # traced: any value, one program
    return _rank(
        queries, query_mask, tables, bitmap, shards.doc_arrays, threshold,
        statics=shards.statics, width=width, ndocs=max(params.ndocs, survivors),
        survivors=survivors, k=k,
    )  # fmt: skip


# ------------------------------------------------------------------------------ warm-up


def warmup(shards: PlaidShards, queries, query_mask, allowed, params: PlaidParams, k: int,
           use_ivf: bool = True) -> int:  # fmt: skip
    """Compile every program a search of this batch shape can reach: stages 1-2 at each
    number of probed cells `candidates` can escalate to, and stages 3-5 at each candidate
    width. Returns the number of calls made."""
    calls = 0
    steps = _escalation(shards, queries, query_mask, allowed, params, use_ivf)
    for (tables, bitmap, _, _), _ in steps:
        calls += 1
    widths = {rank_width(shards, n) for n in shapes.fine_buckets_up_to(shards.docs_per_shard)}
    for width in sorted(widths):
        jax.block_until_ready(
            _rank_at(shards, queries, query_mask, tables, bitmap, params, k, width)
        )
        calls += 1
    return calls
