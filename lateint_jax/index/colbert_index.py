"""The late-interaction index: ColBERT token vectors, residual-compressed, in device memory
split by document, searched WARP-style (`index.warp`), with PLAID (`index.plaid`) on request or
for large explicit subsets, or exactly.

    index = open_index("indexes/scifact")                        # a ColBERTIndex
    hits = index.search(colbert.encode_queries(["..."]), k=10)   # [[(doc_id, score), ...]]

Queries go through in batches of at most MAX_BATCH, padded to power-of-two buckets (batch size,
query length, candidate count), so repeated searches reuse compiled code. Queries of different
lengths go in one call as a list of [Q_i, D] arrays (or with `query_lengths`); padded tokens
and padded batch rows probe nothing. An explicit subset of at most SMALL_SUBSET documents is
scored exactly (its documents decompressed, MaxSim); larger subsets go through PLAID's stages
3-5 with every listed document a candidate. The PLAID layout (documents padded to the longest)
is only built when a search needs it.

Shapes: B queries, Q query tokens, D dim, T document tokens, n subset documents.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

import jax
import numpy as np

from lateint_jax import shapes, sharding
from lateint_jax.codec.residual import decompress_jit
from lateint_jax.errors import InputError
from lateint_jax.index import exact, plaid, warp
from lateint_jax.index.base import (
    Hits,
    Index,
    SearchShape,
    batch_buckets,
    batches,
    check_ids,
    check_queries,
)
from lateint_jax.index.layout import IndexArrays
from lateint_jax.index.segmented import SegmentedIndex
from lateint_jax.index.storage import index_size_bytes, load_index, read_metadata, save_index
from lateint_jax.index.update import (
    CODE_BLOCK,
    add_documents,
    append_coded,
    code_documents,
    compact,
    delete_documents,
    tombstone,
)

SMALL_SUBSET = 1024  # subsets up to this size are scored exactly
SUBSET_BUCKETS = tuple(b for b in shapes.powers_of_four_up_to(SMALL_SUBSET) if b >= 16)
QUERY_TOKEN_MULTIPLE = 8


class ColBERTIndex(Index):
    """A residual-compressed ColBERT index (`IndexArrays`) placed on the devices."""

    kind = "colbert"
    query_rank = 3
    search_knobs = ("nprobe", "rerank", "ncells", "centroid_score_threshold", "ndocs")
    plaid_knobs = ("ncells", "centroid_score_threshold", "ndocs")

    def __init__(self, arrays: IndexArrays, index_dir=None, devices=None):
        arrays.validate()
        self._written = False  # set by add/delete (see _place)
        super().__init__(arrays, index_dir, devices)

    @classmethod
    def load(cls, index_dir, devices=None, *, verify_checksums: bool = True) -> ColBERTIndex:
        """Read INDEX_DIR (IndexFormatError if missing or damaged) and place it on `devices`
        (default: every local device)."""
        return cls(load_index(index_dir, verify_checksums=verify_checksums), index_dir, devices)

    def _place(self) -> None:
        # An index that has taken writes keeps slack in its token width, so further writes
        # recompile nothing until a step is crossed; one only read holds its tokens exactly.
        self.warp = warp.place(self.arrays, self.mesh, slack=self._written)
        self._plaid = None
        self._exact_vectors = None
        lengths = self.arrays.doc_lengths
        self._doc_width = max(8, -(-int(lengths.max(initial=1)) // 8) * 8)
        here = jax.process_index()  # on a multi-host mesh, this process's first device
        self._local_device = next(d for d in self.mesh.devices.flat if d.process_index == here)
        # the local copy of WARP's centroids (int8 rows and scales), not a second one
        centroids = tuple(
            next(s.data for s in a.addressable_shards if s.device == self._local_device)
            for a in (self.warp.centroids, self.warp.centroid_scales)
        )
        self._codec = (centroids, jax.device_put(self.arrays.bucket_weights, self._local_device))

    @property
    def shards(self) -> plaid.PlaidShards:
        """The PLAID layout (documents padded to the longest), placed on first use."""
        if self._plaid is None:
            self._plaid = plaid.place(self.arrays, self.mesh)
        return self._plaid

    def _sharded_mask(self, mask: np.ndarray) -> jax.Array:
        total = self.warp.docs_per_shard * sharding.num_shards(self.mesh)
        return sharding.shard_along(shapes.pad_axis(mask, total, value=False), self.mesh)

    def stats(self) -> dict:
        return {
            **super().stats(),
            "nbits": self.arrays.nbits,
            "centroids": self.arrays.num_centroids,
            "token_vectors": self.arrays.num_embeddings,
            "max_doc_tokens": int(self.arrays.doc_lengths.max(initial=0)),
            "device_bytes_per_token": self.warp.device_bytes() / max(self.arrays.num_embeddings, 1),
            **self._disk_stats(),
        }

    def _disk_stats(self) -> dict:
        """Bytes per token vector of the folder the index was loaded from or saved to (as it is
        on disk: changes not saved yet are not counted)."""
        if self.index_dir is None or not self.index_dir.is_dir():
            return {}
        sizes = index_size_bytes(self.index_dir)
        tokens = read_metadata(self.index_dir).get("num_embeddings", 0)
        return {"disk_bytes_per_token": sum(sizes.values()) / max(int(tokens), 1)}

    # ------------------------------------------------------------------ search
    def _padded(self, queries: np.ndarray, lengths: np.ndarray):
        """Each batch of queries [B, Q, D] (query i's first lengths[i] tokens are real) padded
        to its buckets -> (start, stop, q, mask)."""
        count, tokens, dim = queries.shape
        padded_tokens = shapes.power_of_two(tokens, QUERY_TOKEN_MULTIPLE)
        for start, stop, size in batches(count):
            q = np.zeros((size, padded_tokens, dim), np.float32)
            q[: stop - start, :tokens] = queries[start:stop]
            mask = np.zeros((size, padded_tokens), bool)
            mask[: stop - start] = np.arange(padded_tokens) < lengths[start:stop, None]
            yield start, stop, q, mask

    def query_batches(self, queries, query_lengths: Sequence[int] | None = None):
        """The padded batches every search of these queries runs (as `search` reads them) ->
        (start, stop, q [B', Q', D], mask [B', Q'])."""
        return self._padded(*self._queries(queries, query_lengths))

    def _run(self, queries: np.ndarray, lengths: np.ndarray, score_batch) -> Hits:
        """score_batch(q, mask) -> (scores [B', k], rows [B', k]) over each padded batch."""
        results = []
        for start, stop, q, mask in self._padded(queries, lengths):
            scores, ids = jax.device_get(score_batch(q, mask))
            results.extend(self._hits(scores[: stop - start], ids[: stop - start]))
        return results

    def _queries(self, queries, query_lengths) -> tuple:
        """Queries as [B, Q, D] float32 plus each one's real token count [B]: a list of
        [Q_i, D] arrays of different lengths is packed, or `query_lengths` says how many
        leading tokens of each row are real (the rest are padding and count for nothing).
        Without either, trailing all-zero token vectors (what an encoder without query
        augmentation returns for padding) are padding: they add exactly 0 to any MaxSim."""
        ragged = isinstance(queries, list | tuple) and len(queries) > 0
        if ragged and all(np.ndim(q) == 2 for q in queries):
            if query_lengths is not None:
                raise InputError("pass a list of [Q_i, D] queries or query_lengths, not both")
            query_lengths = [np.shape(q)[0] for q in queries]
            width = max(query_lengths)
            queries = np.stack([
                np.pad(np.asarray(q, np.float32), ((0, width - np.shape(q)[0]), (0, 0)))
                for q in queries
            ])  # fmt: skip
        array = check_queries(queries, self.dim, rank=self.query_rank)
        if query_lengths is None:  # trailing all-zero vectors (unaugmented padding) add nothing
            nonzero = array.any(axis=2)
            last = array.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
            return array, np.maximum(np.where(nonzero.any(axis=1), last, 1), 1).astype(np.int64)
        lengths = np.asarray(query_lengths)
        if lengths.shape != (array.shape[0],) or not np.issubdtype(lengths.dtype, np.integer):
            raise InputError(
                f"query_lengths must be {array.shape[0]} integers, one per query, got "
                f"{lengths.shape} {lengths.dtype}"
            )
        if lengths.min() < 1 or lengths.max() > array.shape[1]:
            raise InputError(
                f"query_lengths must be between 1 and the {array.shape[1]} tokens given, got "
                f"{lengths.min()}..{lengths.max()}"
            )
        return array, lengths.astype(np.int64)

    def search(
        self,
        queries,
        k: int = 10,
        *,
        subset_ids: Sequence[str] | None = None,
        query_lengths: Sequence[int] | None = None,
        nprobe: int | None = None,
        rerank: int | None = None,
        ncells: int | None = None,
        centroid_score_threshold: float | None = None,
        ndocs: int | None = None,
    ) -> Hits:
        """Search: queries [B, Q, D] (one query [Q, D], or a list of [Q_i, D] of different
        lengths) -> for each query its best k (doc_id, score), best first.

        WARP-style by default (`index.warp`): `nprobe` centroids per query token, the best
        `rerank` documents rescored exactly (None: `WarpParams.defaults(k)`). Passing any
        PLAID knob (`ncells`, `centroid_score_threshold`, `ndocs`) runs PLAID instead, the
        others taking `PlaidParams.defaults(k)` (`PlaidParams.colbert_ai(k)` gives
        colbert-ai's). With subset_ids, every listed live document is a candidate
        (colbert-ai's `pids`): up to SMALL_SUBSET of them are scored exactly; more are searched
        with the others masked out (WARP: every listed document gets a stage-2 score, from its
        probed tokens or imputed, and the best `rerank` are rescored exactly; PLAID, when its
        knobs are given: stages 3-5 over all of them)."""
        queries, lengths = self._queries(queries, query_lengths)
        _, k, allowed = self._check_request(queries, k, subset_ids)
        plaid_knobs = (ncells, centroid_score_threshold, ndocs)
        use_plaid = any(v is not None for v in plaid_knobs)
        if use_plaid and (nprobe is not None or rerank is not None):
            raise InputError("nprobe/rerank (WARP) and ncells/ndocs/... (PLAID) do not mix")
        if subset_ids is not None and allowed.sum() <= SMALL_SUBSET:
            return self._score_rows(queries, lengths, k, np.flatnonzero(allowed))
        mask_device = self._allowed_on_devices(allowed, subset_ids)
        if not use_plaid:
            params = warp.WarpParams.defaults(k, nprobe, rerank)
            return self._run(
                queries,
                lengths,
                lambda q, mask: warp.search(self.warp, q, mask, mask_device, params, k),
            )
        params = plaid.PlaidParams.defaults(k, *plaid_knobs)
        if params.ncells < 1 or params.ndocs < 1:
            raise InputError(f"ncells and ndocs must be positive, got {params}")
        use_ivf = subset_ids is None

        def score_batch(q, mask):
            scores, bitmap, most = plaid.candidates(
                self.shards, q, mask, mask_device, params, k, use_ivf
            )
            return plaid.rank(self.shards, q, mask, scores, bitmap, most, params, k)

        return self._run(queries, lengths, score_batch)

    def exact_search(
        self,
        queries,
        k: int = 10,
        *,
        subset_ids: Sequence[str] | None = None,
        query_lengths: Sequence[int] | None = None,
    ) -> Hits:
        """Brute-force MaxSim against every allowed (decompressed) document; same output as
        search. Without a small subset the decompressed corpus is kept after the first call
        ([N, T, D] float32)."""
        queries, lengths = self._queries(queries, query_lengths)
        _, k, allowed = self._check_request(queries, k, subset_ids)
        if subset_ids is not None and allowed.sum() <= SMALL_SUBSET:
            return self._score_rows(queries, lengths, k, np.flatnonzero(allowed))
        if self._exact_vectors is None:
            self._exact_vectors = exact.decompress_docs(self.shards)
        mask_device = self._allowed_on_devices(allowed, subset_ids)

        def score_batch(q, mask):
            return exact.exact_search(self.shards, self._exact_vectors, q, mask, mask_device, k)

        return self._run(queries, lengths, score_batch)

    def _subset_block(self, rows: np.ndarray):
        """Rows [n] -> codes [n', T], residuals [n', T, R], lengths [n'] with n' the subset
        bucket (padding documents have length 0)."""
        n = shapes.bucket_for(len(rows), SUBSET_BUCKETS)
        width = self._doc_width
        lengths = np.zeros(n, np.int32)
        lengths[: len(rows)] = self.arrays.doc_lengths[rows]
        starts = np.zeros(n, np.int64)
        starts[: len(rows)] = self.arrays.doc_offsets[rows]
        position = np.arange(width)
        real = position[None, :] < lengths[:, None]
        token_rows = np.where(real, starts[:, None] + position[None, :], 0)
        codes, residuals = self.arrays.tokens_at(token_rows)
        codes = np.where(real, codes, 0).astype(np.int32)
        residuals = residuals * real[..., None]
        return codes, residuals, lengths

    def _score_rows(self, queries: np.ndarray, lengths, k: int, rows: np.ndarray) -> Hits:
        """Exact MaxSim of queries against the documents at `rows` (a small subset)."""
        block = jax.device_put(self._subset_block(rows), self._local_device)
        results = []
        for start, stop, q, mask in self._padded(queries, lengths):
            scores = np.asarray(
                exact.score_documents(q, mask, *self._codec, *block, nbits=self.arrays.nbits)
            )[: stop - start, : len(rows)]
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            results.extend(self._hits(np.take_along_axis(scores, order, axis=1), rows[order]))
        return results

    # ------------------------------------------------------------------ warm-up
    def warmup(self, request_shapes: Iterable[SearchShape]) -> int:
        """Compile, for each shape, every (batch bucket, query-token bucket) program: WARP's
        one program at the default knobs for k; with `subset`, also the exact scoring of small
        subsets at each subset bucket."""
        calls = 0
        for shape in request_shapes:
            tokens = max(1, shape.query_tokens)
            for size in batch_buckets(shape.batch):
                queries = self._warmup_queries(size, tokens)
                lengths = np.full(size, tokens)
                for _, _, q, mask in self._padded(queries, lengths):
                    calls += self._warm_batch(q, mask, shape)
        return calls

    def _warm_batch(self, q: np.ndarray, mask: np.ndarray, shape: SearchShape) -> int:
        k = min(shape.k, self.num_live)
        live = self._live_device
        calls = warp.warmup(self.warp, q, mask, live, warp.WarpParams.defaults(k), k)
        if shape.subset:  # a large subset runs the WARP program above; small ones score exactly
            rows = np.flatnonzero(self._live)
            for n in SUBSET_BUCKETS:
                block = jax.device_put(self._subset_block(rows[:n]), self._local_device)
                jax.block_until_ready(
                    exact.score_documents(q, mask, *self._codec, *block, nbits=self.arrays.nbits)
                )
                calls += 1
        return calls

    def _warmup_queries(self, count: int, tokens: int) -> np.ndarray:
        """[count, tokens, D] queries made of stored document vectors, so warm-up probes what
        real queries probe."""
        rows = np.flatnonzero(self._live)[:count]
        vectors = [self.document_vectors(self.arrays.doc_ids[r]) for r in rows]
        return np.stack([np.resize(vectors[i % len(vectors)], (tokens, self.dim))
                         for i in range(count)])  # fmt: skip

    # ------------------------------------------------------------------ contents
    def document_vectors(self, doc_id: str) -> np.ndarray:
        """The stored (decompressed, L2-normalised) token vectors of one document: [T, D]."""
        n = self._live_row(doc_id)
        if n is None:
            raise InputError(f"document id {doc_id!r} is not in the index")
        start, stop = self.arrays.doc_offsets[n], self.arrays.doc_offsets[n + 1]
        return self.decompress_tokens(*self.arrays.tokens_at(np.arange(start, stop)))

    def code(self, embeddings: Sequence[np.ndarray]):
        """Documents ([T_i, D] float32 each) coded with this index's codec, as `add` would store
        them, and their decompressed vectors -> (codes [M], residuals [M, R], doc_offsets
        [N + 1], vectors [M, D] float32). Fixed block sizes: compiles nothing after warm-up."""
        codes, residuals, offsets = code_documents(self.arrays, embeddings)
        return codes, residuals, offsets, self.decompress_tokens(codes, residuals)

    def decompress_tokens(self, codes: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """codes [M], residuals [M, R] -> [M, D] float32, as `document_vectors` decompresses
        (CODE_BLOCK tokens per call, one compiled shape)."""
        out = np.empty((codes.shape[0], self.dim), np.float32)
        for start in range(0, codes.shape[0], CODE_BLOCK):
            block = slice(start, start + CODE_BLOCK)
            n = codes[block].shape[0]
            padded = (
                shapes.pad_axis(codes[block], CODE_BLOCK),
                shapes.pad_axis(residuals[block], CODE_BLOCK),
            )
            out[block] = np.asarray(decompress_jit(*self._codec, *padded, self.arrays.nbits))[:n]
        return out

    def tombstoned(self, doc_ids: Sequence[str]) -> ColBERTIndex:
        """A copy with these live documents deleted that shares this index's placement: only
        the live mask changes (no re-layout). Their tokens stay on the devices, masked out of
        every search, until the next re-layout."""
        ids = check_ids(doc_ids, "delete")
        deleted = tombstone(self.arrays.doc_ids, self.arrays.deleted, ids, self._live_row)
        marked = copy.copy(self)  # after the lookups: the copy shares the id -> row map
        marked.arrays = self.arrays.replace(deleted=deleted)
        marked._set_live()
        return marked

    def merged(self, codes, residuals, doc_offsets, doc_ids: Sequence[str]) -> ColBERTIndex:
        """A new index, laid out afresh: this one's live documents, then the coded documents
        appended (as `code` returns them; none: only the deleted rows dropped)."""
        arrays = compact(self.arrays)
        if len(doc_ids):
            arrays = append_coded(arrays, codes, residuals, doc_offsets, doc_ids)
        if arrays is self.arrays:  # the copy gets metadata of its own
            arrays = arrays.replace()
        merged = copy.copy(self)
        merged._written = True
        merged._changed(arrays)
        return merged

    def writable(self) -> SegmentedIndex:
        return SegmentedIndex(self)

    def add(self, embeddings: Sequence[np.ndarray], doc_ids: Sequence[str]) -> None:
        """Add documents ([T_i, D] each), coded with the index's centroids; searchable at once.
        Call save() to write them to disk."""
        self._written = True
        self._changed(add_documents(self.arrays, embeddings, doc_ids))

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Delete documents by id; they are never returned again. Call save() to persist."""
        self._written = True
        self._changed(delete_documents(self.arrays, check_ids(doc_ids, "delete")))

    def _write(self, target: Path) -> None:
        save_index(self.arrays, target, overwrite=True)
