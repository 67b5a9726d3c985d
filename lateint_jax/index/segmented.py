"""A late-interaction index that takes live writes cheaply: the main index (a `ColBERTIndex`,
laid out once) plus a small write segment (`index/delta.py`) of the documents written since the
last compaction, coded with the main index's own codec. Deletes and replaced ids are tombstones
in the main index's live mask (no re-layout). A search runs on both and merges by score: the
main index's final scores are exact MaxSim over decompressed vectors (WARP's and PLAID's last
stage) and the segment's are the same MaxSim over the same decompressed vectors, so they
compare (with WARP's `rerank=0` the main scores are approximate; the merge then mixes the two).

    served = index.writable()                               # ColBERTIndex -> SegmentedIndex
    served = served.with_writes(["old"], {"new": vectors})  # a new snapshot, milliseconds
    merged = snapshot.merge()                               # off the request path: a re-layout
    served = current.rebased(merged, snapshot)              # the segment's merged prefix dropped

Snapshots are immutable: the serving layer swaps a new one in per write, searches keep the one
they started with. `with_writes` never compiles a scoring program on a request path: a
segment step is compiled before the snapshot that needs it exists (`warmup`, and the writer's
`warm_next_step` ahead of time).

Shapes: B queries, Q query tokens, D dim, T tokens of a document, n segment documents.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np

from lateint_jax.errors import InputError
from lateint_jax.index.base import Hits, SearchShape, batch_buckets, check_ids, check_k
from lateint_jax.index.build import check_doc_embeddings
from lateint_jax.index.delta import MIN_CAPACITY, TOKENS_PER_DOC_SLOT, DeltaSegment, steps_up_to
from lateint_jax.index.warp import WarpParams


class _Warmth:
    """What the snapshots of one served index share: the request shapes they were warmed for
    and the segment steps compiled for them."""

    def __init__(self):
        self.batches: set[tuple[int, int, int]] = set()  # padded (B', Q', D)
        self.capacities: set[int] = set()
        self.lock = threading.Lock()

    def ensure(self, delta: DeltaSegment, capacity: int) -> int:
        """Compile every step up to `capacity` not compiled yet. Returns the calls made."""
        with self.lock:
            missing = [c for c in steps_up_to(capacity) if c not in self.capacities]
            calls = delta.warmup(sorted(self.batches), missing) if self.batches else 0
            if self.batches:
                self.capacities.update(missing)
            return calls


class SegmentedIndex:
    """The main index plus the write segment (see the module docstring). Offers `Index`'s read
    interface (search, exact_search, warmup, stats, document_vectors, ids); writes go through
    `with_writes`, `merge` and `rebased`."""

    kind = "colbert"
    query_rank = 3

    def __init__(self, main, delta: DeltaSegment | None = None, *, write_seq: int = 0,
                 warmth: _Warmth | None = None):  # fmt: skip
        self.main = main
        residual_bytes = main.arrays.dim * main.arrays.nbits // 8
        self.delta = delta if delta is not None else DeltaSegment.empty(main.dim, residual_bytes)
        self.write_seq = write_seq  # the last logged write this snapshot holds (serving's)
        self._warmth = warmth if warmth is not None else _Warmth()

    # ------------------------------------------------------------------ facts
    @property
    def search_knobs(self) -> tuple[str, ...]:
        return self.main.search_knobs

    @property
    def doc_ids(self) -> list[str]:
        return self.main.doc_ids + self.delta.doc_ids

    @property
    def live_ids(self) -> list[str]:
        return self.main.live_ids + self.delta.live_ids

    @property
    def metadata(self) -> dict:
        return self.main.metadata

    @property
    def dim(self) -> int:
        return self.main.dim

    @property
    def index_dir(self):
        return self.main.index_dir

    @property
    def num_live(self) -> int:
        return self.main.num_live + self.delta.num_live

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.main or doc_id in self.delta

    def stats(self) -> dict:
        return {
            **self.main.stats(),
            "documents": self.num_live,
            "deleted": len(self.main.doc_ids) - self.main.num_live,
            "write_segment": {
                "documents": self.delta.num_live,
                "tokens": self.delta.num_tokens,
                "capacity_tokens": self.delta.capacity,
            },
        }

    def segment_token_bound(self, k: int = 10) -> int:
        """The segment size, in tokens, past which compacting it is due: the work of one
        default top-`k` search of the main index (k=10: the API's default), in segment
        tokens.

        Scoring the segment costs Q x D multiply-adds per token it holds, for every query. A
        default WARP search of the main index costs, in the same unit, C (stage 1 scores each
        query token against all C centroids) plus rerank x T (stage 3 decompresses the
        `warp.exact_depth(k)` best documents, 64 for k=10, T tokens each on average, and
        scores them exactly). Stage 2 reads nprobe x M / C tokens per query token at
        R = D * nbits / 8 byte lookups each: counting a lookup as a multiply-add,
        16 x 48 x 1/4 = 193 segment tokens at the size below (2 bits), left out. So a segment
        at the bound adds at most about one main search's multiply-adds to every search (up
        to two once padded to its power-of-two step), and it is placed afresh (CPU) or
        copied on the device (accelerators) at most that big per write; in time it adds less, its scoring being one dense matmul (SERVING.md has
        the measurement). The bound is at least the smallest step (`delta.MIN_CAPACITY`),
        which is scored in full however empty it is.

        1,000 documents of 198 tokens, 4096 centroids: 4096 + 64 x 198 = 16,768 tokens
        (about 85 such documents). The bound follows the main index, so it grows as
        compactions grow it."""
        arrays = self.main.arrays
        mean_tokens = arrays.num_embeddings / max(arrays.num_docs, 1)
        rerank = WarpParams.defaults(k).rerank
        return max(MIN_CAPACITY, int(arrays.num_centroids + rerank * mean_tokens))

    def document_vectors(self, doc_id: str) -> np.ndarray:
        if doc_id in self.delta:
            return self.delta.document_vectors(doc_id)
        return self.main.document_vectors(doc_id)

    def writable(self) -> SegmentedIndex:
        return self

    # ------------------------------------------------------------------ search
    def search(self, queries, k: int = 10, *, subset_ids: Sequence[str] | None = None,
               query_lengths: Sequence[int] | None = None, **knobs) -> Hits:  # fmt: skip
        """As `ColBERTIndex.search` (knobs reach the main index), over both parts."""
        return self._merged(self.main.search, queries, k, subset_ids, query_lengths, knobs)

    def exact_search(self, queries, k: int = 10, *, subset_ids: Sequence[str] | None = None,
                     query_lengths: Sequence[int] | None = None) -> Hits:  # fmt: skip
        return self._merged(self.main.exact_search, queries, k, subset_ids, query_lengths, {})

    def _split(self, subset_ids):
        """subset_ids -> (the main index's share or None for all, the segment's [n] mask or
        None for all)."""
        if subset_ids is None:
            return None, None
        ids = list(dict.fromkeys(check_ids(subset_ids, "subset_ids")))
        missing = [i for i in ids if i not in self]
        if missing:
            raise InputError(f"subset_ids not in the index: {', '.join(map(repr, missing[:5]))}")
        allowed = np.zeros(self.delta.num_docs, bool)
        allowed[[self.delta.row(i) for i in ids if i in self.delta]] = True
        return [i for i in ids if i in self.main], allowed

    def _merged(self, main_search, queries, k, subset_ids, query_lengths, knobs) -> Hits:
        k = check_k(k, self.num_live)
        main_ids, allowed = self._split(subset_ids)
        batches = list(self.main.query_batches(queries, query_lengths))
        count = batches[-1][1]
        hits: Hits = [[] for _ in range(count)]
        if self.main.num_live and (main_ids is None or main_ids):
            hits = main_search(queries, k=k, subset_ids=main_ids, query_lengths=query_lengths,
                               **knobs)  # fmt: skip
        if self.delta.num_live and (allowed is None or allowed.any()):
            ids = self.delta.doc_ids
            for start, stop, q, mask in batches:
                scores = self.delta.scores(q, mask, allowed)[: stop - start]
                best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
                for row, order in enumerate(best):
                    found = [(ids[r], float(scores[row, r])) for r in order
                             if np.isfinite(scores[row, r])]  # fmt: skip
                    merged = sorted(hits[start + row] + found, key=lambda hit: -hit[1])
                    hits[start + row] = merged[:k]
        return hits

    # ------------------------------------------------------------------ warm-up
    def warmup(self, request_shapes: Iterable[SearchShape]) -> int:
        """The main index's programs, the codec's (one block size), and the segment's scoring
        program for each query batch shape at every step up to the current one."""
        request_shapes = list(request_shapes)
        calls = self.main.warmup(request_shapes)
        for shape in request_shapes:
            tokens = max(1, shape.query_tokens)
            for size in batch_buckets(shape.batch):
                dummy = np.ones((size, tokens, self.dim), np.float32)
                for _, _, q, _ in self.main.query_batches(dummy):
                    self._warmth.batches.add(q.shape)
        unit = np.full((1, self.dim), self.dim**-0.5, np.float32)
        self.main.code([unit])
        self._warmth.capacities.clear()  # new shapes: every step again
        return calls + 1 + self._warmth.ensure(self.delta, self.delta.capacity)

    def next_step_due(self) -> bool:
        """Whether the segment is past half its step and the next step is not compiled."""
        delta = self.delta
        filled = max(delta.num_tokens, delta.num_docs * TOKENS_PER_DOC_SLOT)
        return 2 * filled > delta.capacity and 2 * delta.capacity not in self._warmth.capacities

    def warm_next_step(self) -> int:
        """Compile the next segment step (the writer runs this off the request path)."""
        return self._warmth.ensure(self.delta, 2 * self.delta.capacity)

    # ------------------------------------------------------------------ writes
    def with_writes(self, removed: Sequence[str], added: dict[str, np.ndarray]) -> SegmentedIndex:
        """A new snapshot with `removed` (live ids) deleted, then `added` ({id: [T, D]
        float32}, ids not live after the deletes) coded and appended. This one is unchanged."""
        unknown = [i for i in removed if i not in self]
        if unknown:
            raise InputError(f"ids not in the index: {', '.join(map(repr, unknown[:5]))}")
        main, delta = self.main, self.delta
        from_main = [i for i in removed if i in main]
        if from_main:
            main = main.tombstoned(from_main)
        from_delta = [i for i in removed if i in delta]
        if from_delta:
            delta = delta.without(from_delta)
        if added:
            ids = list(added)
            live = [i for i in ids if i in main or i in delta]
            if live:
                raise InputError(f"ids already in the index: {', '.join(map(repr, live[:5]))}")
            vectors = [np.asarray(v, np.float32) for v in added.values()]
            check_doc_embeddings(vectors, ids, dim=self.dim)
            delta = delta.appended(*self.main.code(vectors), ids)
        self._warmth.ensure(delta, delta.capacity)  # compiles only on crossing into a new step
        return SegmentedIndex(main, delta.placed(), write_seq=self.write_seq,
                              warmth=self._warmth)  # fmt: skip

    def merge(self):
        """The main index laid out afresh with this snapshot's segment merged in and its
        tombstoned rows dropped (a `ColBERTIndex`; seconds at SciFact size)."""
        rows = np.flatnonzero(self.delta.live)
        coded = self.delta.coded(rows)
        return self.main.merged(*coded, [self.delta.doc_ids[r] for r in rows])

    def rebased(self, merged, snapshot: SegmentedIndex) -> SegmentedIndex:
        """This snapshot (a descendant of `snapshot` by `with_writes`) on `merged` =
        `snapshot.merge()`: what was deleted since `snapshot` is tombstoned in `merged`, and
        the segment keeps only the documents written since."""
        before, now = snapshot.main.arrays.deleted, self.main.arrays.deleted
        if self.main.doc_ids is not snapshot.main.doc_ids:
            raise ValueError("rebased: this snapshot does not descend from `snapshot`")
        stale = [self.main.doc_ids[r] for r in np.flatnonzero(now & ~before)]
        count = snapshot.delta.num_docs
        gone = snapshot.delta.live & ~self.delta.live[:count]
        stale += [self.delta.doc_ids[r] for r in np.flatnonzero(gone)]
        main = merged.tombstoned(stale) if stale else merged
        delta = self.delta.dropped_first(count)
        self._warmth.ensure(delta, delta.capacity)
        return SegmentedIndex(main, delta.placed(), write_seq=self.write_seq,
                              warmth=self._warmth)  # fmt: skip

    def save(self, index_dir=None):
        """Save the main index; the segment must be empty (merge it in first)."""
        if self.delta.num_docs:
            raise InputError("the index has writes not merged into the main index: merge first")
        return self.main.save(index_dir)

    def add(self, embeddings, doc_ids) -> None:
        raise InputError("a served index takes writes through with_writes (a new snapshot)")

    def delete(self, doc_ids) -> None:
        raise InputError("a served index takes writes through with_writes (a new snapshot)")
