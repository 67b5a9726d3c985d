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
     kept, then summed over query tokens (two-stage reduction, missing ones imputed);
  3. rerank: the `rerank` best documents over all shards are decompressed (their tokens found
     through `doc_positions`) and scored with exact MaxSim; with rerank=0 the stage-2 scores
     are final.

Layout (`WarpShards`), per shard of documents: the shard's tokens sorted by centroid, so a
centroid's tokens are one slice; nothing is padded to the longest document. Stages 1 and 2-3
are two jitted calls: the first returns how many tokens the probed lists hold, which picks the
static size of the second (a bucket, so a few programs cover every request).

Shapes: B queries, Q query tokens, D dim, C centroids, S shards, n documents per shard,
M' tokens per shard (padded to the fullest shard), R = D * nbits / 8 bytes, E probed tokens.
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
from lateint_jax.codec.residual import decompress_with_table, residual_table
from lateint_jax.errors import InputError
from lateint_jax.index.layout import IndexArrays

DOC_MULTIPLE = 16  # documents per shard are a multiple of this, as in plaid
MIN_ENTRIES = 1024
MIN_TOKENS = 256
CHUNK = 4096  # slots per step of stages 2 and 3 (see in_chunks)


def take(array: jax.Array, index: jax.Array) -> jax.Array:
    """array[index] along axis 0 for indices in range by construction: XLA's CPU gather runs
    several times faster without the out-of-bounds fill of plain indexing."""
    return jnp.take(array, index, axis=0, mode="clip")


@dataclass(frozen=True)
class WarpParams:
    """Search knobs: `nprobe` centroids per query token, `rerank` documents rescored exactly
    (0: none). The defaults (`defaults(k)`) are set from first principles, not tuned to one
    dataset: WARP's paper probes 32 centroids per token at its largest setting and 8-16 at
    its fast ones; rescoring a few hundred documents exactly costs about as much as stage 2."""

    nprobe: int
    rerank: int

    @classmethod
    def defaults(cls, k: int, nprobe=None, rerank=None) -> WarpParams:
        params = cls(
            nprobe=int(16 if nprobe is None else nprobe),
            rerank=int(max(256, 2 * k) if rerank is None else rerank),
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

    centroids [C, D], residual_table [R, 256, 8/nbits]: replicated.
    cell_offsets [S, C + 1] int32: shard s's tokens under centroid c are
        cell_offsets[s, c]:cell_offsets[s, c + 1].
    token_docs [S, M'] int32 local document number of each token (n for padding).
    token_residuals [S, M', R] uint8.
    doc_offsets [S, n + 1] int32, doc_positions [S, M'] int32: document d's tokens are at
        positions doc_positions[doc_offsets[d]:doc_offsets[d + 1]] of the centroid order.
    Host side: list_sizes [S, C] (each shard's list lengths sorted descending, cumulated) and
    longest_docs [S, n] (document lengths sorted descending, cumulated) bound the static sizes;
    doc_lengths [S * n] sizes stage 3.
    """

    mesh: Mesh
    nbits: int
    num_docs: int
    docs_per_shard: int
    centroids: jax.Array
    residual_table: jax.Array
    cell_offsets: jax.Array
    token_docs: jax.Array
    token_residuals: jax.Array
    doc_offsets: jax.Array
    doc_positions: jax.Array
    list_sizes: np.ndarray
    longest_docs: np.ndarray
    doc_lengths: np.ndarray

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
        return (self.doc_offsets, self.doc_positions)

    def device_bytes(self) -> int:
        arrays = (self.centroids, self.residual_table, *self.token_arrays, *self.doc_arrays)
        return int(sum(a.nbytes for a in arrays))


def _shard_tokens(arrays: IndexArrays, first: int, stop: int, per_shard: int):
    """One shard's documents [first, stop) -> (cell counts [C], token docs, residuals,
    doc offsets [per_shard + 1], doc positions), tokens in centroid order."""
    lo, hi = int(arrays.doc_offsets[first]), int(arrays.doc_offsets[stop])
    codes = np.asarray(arrays.codes[lo:hi])
    order = np.argsort(codes, kind="stable")
    lengths = np.zeros(per_shard, np.int64)
    lengths[: stop - first] = np.diff(arrays.doc_offsets[first : stop + 1])
    docs = np.repeat(np.arange(per_shard, dtype=np.int32), lengths)
    positions = np.empty(hi - lo, np.int32)
    positions[order] = np.arange(hi - lo, dtype=np.int32)
    offsets = np.zeros(per_shard + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    counts = np.bincount(codes, minlength=arrays.num_centroids)
    residuals = np.asarray(arrays.residuals[lo:hi])[order]
    return counts, docs[order], residuals, offsets, positions, lengths


def place(arrays: IndexArrays, mesh: Mesh) -> WarpShards:
    """Reorder each shard's tokens by centroid and put the index on the mesh (`WarpShards`)."""
    shards = sharding.num_shards(mesh)
    per_shard = shapes.padded_size(arrays.num_docs, shards, DOC_MULTIPLE) // shards
    parts = []
    for s in range(shards):
        first = min(s * per_shard, arrays.num_docs)
        stop = min(first + per_shard, arrays.num_docs)
        parts.append(_shard_tokens(arrays, first, stop, per_shard))
    width = max(1, max(p[1].shape[0] for p in parts))
    c, r = arrays.num_centroids, arrays.residuals.shape[1]
    cell_offsets = np.zeros((shards, c + 1), np.int32)
    token_docs = np.full((shards, width), per_shard, np.int32)
    token_residuals = np.zeros((shards, width, r), np.uint8)
    doc_offsets = np.zeros((shards, per_shard + 1), np.int32)
    doc_positions = np.zeros((shards, width), np.int32)
    list_sizes = np.zeros((shards, c), np.int64)
    longest = np.zeros((shards, per_shard), np.int64)
    for s, (counts, docs, residuals, offsets, positions, lengths) in enumerate(parts):
        m = docs.shape[0]
        np.cumsum(counts, out=cell_offsets[s, 1:])
        token_docs[s, :m], token_residuals[s, :m] = docs, residuals
        doc_offsets[s], doc_positions[s, :m] = offsets, positions
        list_sizes[s] = np.cumsum(-np.sort(-counts))
        longest[s] = np.cumsum(-np.sort(-lengths))
    weights = np.asarray(arrays.bucket_weights, np.float32)
    return WarpShards(
        mesh=mesh,
        nbits=arrays.nbits,
        num_docs=arrays.num_docs,
        docs_per_shard=per_shard,
        centroids=sharding.replicate(np.asarray(arrays.centroids, np.float32), mesh),
        residual_table=sharding.replicate(np.asarray(residual_table(weights, arrays.nbits)), mesh),
        cell_offsets=sharding.shard_along(cell_offsets, mesh),
        token_docs=sharding.shard_along(token_docs, mesh),
        token_residuals=sharding.shard_along(token_residuals, mesh),
        doc_offsets=sharding.shard_along(doc_offsets, mesh),
        doc_positions=sharding.shard_along(doc_positions, mesh),
        list_sizes=list_sizes,
        longest_docs=longest,
        doc_lengths=shapes.pad_axis(arrays.doc_lengths.astype(np.int64), per_shard * shards),
    )


# ---------------------------------------------------------- per-query stages (pure jnp)


def best_cells(queries: jax.Array, centroids: jax.Array, nprobe: int):
    """queries [B, Q, D], centroids [C, D] -> (cells [B, Q, nprobe] int32, their scores
    [B, Q, nprobe], imputation [B, Q]: the score of the best centroid not probed, or the worst
    probed one when every centroid is)."""
    batch, tokens, dim = queries.shape
    flat = queries.reshape(batch * tokens, dim)
    scores = jnp.einsum("TD,CD->TC", flat, centroids, preferred_element_type=jnp.float32)
    best, cells = jax.lax.top_k(scores, min(nprobe + 1, scores.shape[-1]))
    best, cells = best.reshape(batch, tokens, -1), cells.reshape(batch, tokens, -1)
    probed = min(nprobe, scores.shape[-1])
    return cells[..., :probed].astype(jnp.int32), best[..., :probed], best[..., -1]


def ragged_slots(starts: jax.Array, sizes: jax.Array, slots: int):
    """Concatenate the ranges [starts[i], starts[i] + sizes[i]) into `slots` static slots.
    -> (position [slots], range index [slots], real [slots] bool)."""
    ends = jnp.cumsum(sizes)
    slot = jnp.arange(slots, dtype=ends.dtype)
    which = jnp.minimum(jnp.searchsorted(ends, slot, side="right"), sizes.shape[0] - 1)
    real = slot < ends[-1]
    position = jnp.where(real, take(starts, which) + slot - take(ends - sizes, which), 0)
    return position, which, real


def residual_lookup(query: jax.Array, table: jax.Array) -> jax.Array:
    """query [Q, D], residual table [R, 256, 8/nbits] -> [Q, R, 256]: the dot product of each
    query token with the residual values a byte value encodes at each byte position."""
    per_byte = table.shape[2]
    q = query.reshape(query.shape[0], -1, per_byte)
    return jnp.einsum("QRI,RBI->QRB", q, table, preferred_element_type=jnp.float32)


def in_chunks(slots: int) -> int:
    """Slots per step when `slots` static slots are processed in cache-sized steps: the
    largest power of two dividing `slots` (every `fine_bucket` has one of at least a third of
    it), at most CHUNK. Work done in one piece past that size ran several times slower per
    slot on CPU (its intermediates fall out of cache)."""
    return min(slots & -slots, CHUNK)


def best_per_token(query, cells, cell_scores, query_mask, token_arrays, table, entries: int,
                   num_docs: int) -> jax.Array:  # fmt: skip
    """Stage 2's gather and first reduction: score every token under the probed cells of
    this shard (centroid score + residual lookups) and keep, per (query token, document), the
    best -> [Q, num_docs] (-inf where the token found nothing in that document)."""
    cell_offsets, token_docs, token_residuals = token_arrays
    num_tokens, nprobe = cells.shape
    starts = cell_offsets[cells].reshape(-1)
    sizes = jnp.where(query_mask[:, None], cell_offsets[cells + 1] - cell_offsets[cells], 0)
    position, which, real = ragged_slots(starts, sizes.reshape(-1), entries)
    lookup = residual_lookup(query, table).reshape(-1)
    centroid_part = cell_scores.reshape(-1)
    width = token_residuals.shape[1]

    def step(best, chunk):
        position, which, real = chunk
        docs = jnp.where(real, take(token_docs, position), num_docs)
        packed = take(token_residuals, position).astype(jnp.int32)  # [chunk, R]
        token_of = which // nprobe
        index = (token_of[:, None] * width + jnp.arange(width)[None, :]) * 256 + packed
        scores = take(centroid_part, which) + take(lookup, index).sum(-1)
        flat = token_of * (num_docs + 1) + jnp.minimum(docs, num_docs)  # 1-d: faster scatter
        return best.at[flat].max(scores), None

    chunk = in_chunks(entries)
    start = jnp.full((num_tokens * (num_docs + 1),), -jnp.inf)
    steps = tuple(a.reshape(-1, chunk) for a in (position, which, real))
    best, _ = jax.lax.scan(step, start, steps)
    return best.reshape(num_tokens, num_docs + 1)[:, :num_docs]


def document_scores(best, imputed, query_mask, allowed) -> jax.Array:
    """Stage 2's second reduction: best [Q, n] per (query token, document) -> per document
    the sum over real query tokens, imputing where a token found nothing (a document with no
    probed token at all scores the sum of the imputations). -> [n] (-inf where not allowed)."""
    per_token = jnp.where(jnp.isfinite(best), best, imputed[:, None])
    total = jnp.where(query_mask[:, None], per_token, 0.0).sum(0)
    return jnp.where(allowed, total, -jnp.inf)


def exact_scores(query, query_mask, docs, mine, centroids, table, token_arrays, doc_arrays,
                 budget: int):  # fmt: skip
    """Stage 3: decompress this shard's documents `docs` [r] (where `mine`) and score them with
    exact MaxSim -> [r]. Their tokens are gathered ragged into `budget` static slots, scored
    a cache-sized chunk at a time."""
    cell_offsets, _, token_residuals = token_arrays
    doc_offsets, doc_positions = doc_arrays
    starts = doc_offsets[docs]
    lengths = jnp.where(mine, doc_offsets[docs + 1] - starts, 0)
    slot_token, which, real = ragged_slots(starts, lengths, budget)

    def step(best, chunk):
        slot_token, which, real = chunk
        position = take(doc_positions, slot_token)
        codes = jnp.searchsorted(cell_offsets, position, side="right") - 1
        codes = jnp.clip(codes, 0, centroids.shape[0] - 1).astype(jnp.int32)
        vectors = decompress_with_table(centroids, table, codes, take(token_residuals, position))
        sims = jnp.einsum("TD,QD->TQ", vectors, query, preferred_element_type=jnp.float32)
        return best.at[jnp.where(real, which, docs.shape[0])].max(sims), None

    chunk = in_chunks(budget)
    start = jnp.full((docs.shape[0] + 1, query.shape[0]), -jnp.inf)
    steps = tuple(a.reshape(-1, chunk) for a in (slot_token, which, real))
    best, _ = jax.lax.scan(step, start, steps)
    return jnp.where(query_mask[None, :], best[:-1], 0.0).sum(-1)


# ----------------------------------------------------------------------- jitted entry points


@functools.partial(jax.jit, static_argnames=("statics", "nprobe"))
def _probe(queries, query_mask, centroids, cell_offsets, *, statics, nprobe):
    def per_shard_fn(queries, query_mask, centroids, cell_offsets):
        cells, scores, imputed = best_cells(queries, centroids, nprobe)  # [B, Q, ...]
        sizes = cell_offsets[0][cells + 1] - cell_offsets[0][cells]
        totals = jnp.where(query_mask[..., None], sizes, 0).sum((1, 2))
        return (cells, scores, imputed), jax.lax.pmax(totals, sharding.DATA_AXIS)

    data = sharding.DATA_AXIS
    return jax.shard_map(
        per_shard_fn,
        mesh=statics.mesh,
        in_specs=(P(), P(), P(), P(data)),
        out_specs=((P(), P(), P()), P()),
        check_vma=False,
    )(queries, query_mask, centroids, cell_offsets)


def _skip_padding_rows(stage, fill):
    """Wrap a per-query stage for `lax.map` so a padded batch row (no real token, args[1] is
    its token mask) costs nothing: XLA runs only the taken branch of a `cond`."""

    def run(args):
        return jax.lax.cond(args[1].any(), stage, lambda _: fill, args)

    return run


@functools.partial(jax.jit, static_argnames=("statics", "entries", "keep"))
def _approximate(queries, query_mask, probes, allowed, table, token_arrays, *, statics, entries,
                 keep):  # fmt: skip
    """Stage 2 -> the best `keep` documents over all shards: (scores [B, keep], global
    document numbers [B, keep], -1 where fewer)."""
    per_shard = statics.docs_per_shard

    def per_shard_fn(queries, query_mask, probes, allowed, table, token_arrays):
        token_arrays = tuple(a[0] for a in token_arrays)

        def stage2(args):
            query, mask, cells, cell_scores, imputed = args
            best = best_per_token(
                query, cells, cell_scores, mask, token_arrays, table, entries, per_shard
            )
            return document_scores(best, imputed, mask, allowed)

        nothing = jnp.full((per_shard,), -jnp.inf)
        approx = jax.lax.map(_skip_padding_rows(stage2, nothing), (queries, query_mask, *probes))
        local = jnp.broadcast_to(jnp.arange(per_shard, dtype=jnp.int32), approx.shape)
        best, ids = sharding.local_top_k(approx, local, keep, sharding.shard_offset(per_shard))
        return sharding.merge_top_k(best, ids, keep)

    data = sharding.DATA_AXIS
    return jax.shard_map(
        per_shard_fn,
        mesh=statics.mesh,
        in_specs=(P(), P(), P(), P(data), P(), P(data)),
        out_specs=(P(), P()),
        check_vma=False,
    )(queries, query_mask, probes, allowed, table, token_arrays)


@functools.partial(jax.jit, static_argnames=("statics", "budget", "k"))
def _rerank(queries, query_mask, ids, codec, token_arrays, doc_arrays, *, statics, budget, k):
    """Stage 3: exact MaxSim of the documents `ids` [B, r] (global, -1 = none), each scored
    on the shard that holds it -> (scores [B, k], ids [B, k])."""
    per_shard = statics.docs_per_shard

    def per_shard_fn(queries, query_mask, ids, codec, token_arrays, doc_arrays):
        token_arrays = tuple(a[0] for a in token_arrays)
        doc_arrays = tuple(a[0] for a in doc_arrays)
        centroids, table = codec

        def stage3(args):
            query, mask, docs, mine = args
            return exact_scores(query, mask, docs, mine, centroids, table, token_arrays,
                                doc_arrays, budget)  # fmt: skip

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


def entry_slots(total: int) -> int:
    """Static slots for a batch whose fullest (query, shard) probes `total` tokens."""
    return shapes.fine_bucket(total, MIN_ENTRIES)


def most_entries(shards: WarpShards, query_tokens: int, nprobe: int) -> int:
    """The most tokens one query of `query_tokens` tokens can probe in any shard: each token
    may probe the same `nprobe` largest lists (a query of repeated tokens does)."""
    probes = min(nprobe, shards.list_sizes.shape[1])
    return query_tokens * int(shards.list_sizes[:, probes - 1].max())


def token_slots(total: int) -> int:
    """Static slots for rescoring documents whose fullest (query, shard) holds `total` tokens."""
    return shapes.fine_bucket(total, MIN_TOKENS)


def most_tokens(shards: WarpShards, documents: int) -> int:
    """The most tokens `documents` documents of one shard can hold."""
    count = min(documents, shards.longest_docs.shape[1])
    return int(shards.longest_docs[:, count - 1].max())


def rerank_tokens(shards: WarpShards, ids: np.ndarray) -> int:
    """Global document numbers [B, r] (-1 = none) -> the most tokens one shard holds for one
    query's documents."""
    valid = ids >= 0
    lengths = np.where(valid, shards.doc_lengths[np.maximum(ids, 0)], 0)
    shard = np.where(valid, ids // shards.docs_per_shard, 0)
    totals = np.zeros((ids.shape[0], sharding.num_shards(shards.mesh)), np.int64)
    np.add.at(totals, (np.arange(ids.shape[0])[:, None], shard), lengths)
    return int(totals.max(initial=1))


def _depth(shards: WarpShards, params: WarpParams, k: int) -> int:
    """How many documents stage 2 hands on: `rerank` (at least k) or, without rerank, k."""
    total = shards.docs_per_shard * sharding.num_shards(shards.mesh)
    return min(max(params.rerank, k), total) if params.rerank else k


def search(shards: WarpShards, queries, query_mask, allowed, params: WarpParams, k: int):
    """queries [B, Q, D], query_mask [B, Q], allowed [N] sharded -> (scores [B, k], global
    document numbers [B, k], -1 where fewer were found)."""
    probes, totals = _probe(
        queries, query_mask, shards.centroids, shards.cell_offsets,
        statics=shards.statics, nprobe=min(params.nprobe, shards.num_centroids),
    )  # fmt: skip
    entries = entry_slots(int(np.max(jax.device_get(totals), initial=1)))
    best, ids = _stage2(shards, queries, query_mask, probes, allowed, params, k, entries)
    if not params.rerank:
        return best[:, :k], ids[:, :k]
    budget = token_slots(rerank_tokens(shards, np.asarray(jax.device_get(ids))))
    return _stage3(shards, queries, query_mask, ids, k, budget)


def _stage2(shards, queries, query_mask, probes, allowed, params, k: int, entries: int):
    return _approximate(
        queries, query_mask, probes, allowed, shards.residual_table, shards.token_arrays,
        statics=shards.statics, entries=entries, keep=_depth(shards, params, k),
    )  # fmt: skip


def _stage3(shards, queries, query_mask, ids, k: int, budget: int):
    return _rerank(
        queries, query_mask, ids, (shards.centroids, shards.residual_table), shards.token_arrays,
        shards.doc_arrays, statics=shards.statics, budget=budget, k=k,
    )  # fmt: skip


def warmup(shards: WarpShards, queries, query_mask, allowed, params: WarpParams, k: int) -> int:
    """Compile every program a search of this batch shape can reach: the probe, stage 2 at
    every entry bucket up to the most a query can probe, stage 3 at every token bucket up to
    the most the reranked documents can hold. Returns the calls made."""
    nprobe = min(params.nprobe, shards.num_centroids)
    probes, _ = _probe(
        queries, query_mask, shards.centroids, shards.cell_offsets,
        statics=shards.statics, nprobe=nprobe,
    )  # fmt: skip
    calls = 1
    limit = entry_slots(most_entries(shards, queries.shape[1], nprobe))
    for entries in shapes.fine_buckets_up_to(limit, MIN_ENTRIES):
        _, ids = _stage2(shards, queries, query_mask, probes, allowed, params, k, entries)
        jax.block_until_ready(ids)
        calls += 1
    if params.rerank:
        limit = token_slots(most_tokens(shards, _depth(shards, params, k)))
        for budget in shapes.fine_buckets_up_to(limit, MIN_TOKENS):
            jax.block_until_ready(_stage3(shards, queries, query_mask, ids, k, budget))
            calls += 1
    return calls
