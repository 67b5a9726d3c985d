"""The one interface every kind of index implements, and the request checks they share.

    index = open_index("indexes/scifact")        # the only place that reads an index's kind
    index.warmup([SearchShape(batch=32, k=10, query_tokens=32)])
    hits = index.search(queries, k=10)           # [[(doc_id, score), ...] per query]

The CLI, evaluation and the server use only what `Index` declares here: they never test the
kind or reach into the arrays. Two kinds exist: the late-interaction index (ColBERT token
vectors, residual-compressed, PLAID search; `colbert_index.ColBERTIndex`) and the single-vector
index (bi-encoder vectors, exhaustive dot products; `dense_index.DenseIndex`).

Shapes: B queries, Q query tokens, D dim (the vector size H for single-vector indexes).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np

from lateint_jax import shapes, sharding
from lateint_jax.errors import InputError

MAX_BATCH = 32  # queries per compiled call; larger batches are split

Hits = list[list[tuple[str, float]]]


@dataclass(frozen=True)
class SearchShape:
    """A kind of request a caller will send: up to `batch` queries of `query_tokens` tokens
    (ignored by single-vector indexes), the best `k` each, over the whole index or, with
    `subset`, over an explicit list of documents."""

    batch: int
    k: int
    query_tokens: int = 0
    subset: bool = False


def check_k(k, available: int) -> int:
    """k must be a positive int; a k larger than the `available` live documents means all of
    them (the result lists are then shorter than k)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InputError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise InputError(f"k must be positive, got {k}")
    if available <= 0:
        raise InputError("the index has no live documents")
    return min(int(k), available)


def check_queries(queries, dim: int, rank: int) -> np.ndarray:
    """Queries as float32 with the given rank (one rank lower = a single query) and last dim."""
    array = np.asarray(queries, np.float32)
    if array.ndim == rank - 1:
        array = array[None]
    if array.ndim != rank or array.shape[0] == 0 or 0 in array.shape:
        expected = "[B, Q, D]" if rank == 3 else "[B, H]"
        raise InputError(f"queries must be a non-empty {expected} array, got shape {array.shape}")
    if array.shape[-1] != dim:
        raise InputError(f"queries have dim {array.shape[-1]} but the index has dim {dim}")
    if not np.isfinite(array).all():
        raise InputError("queries contain NaN or infinite values")
    return array


def check_ids(doc_ids, what: str) -> list[str]:
    """A non-empty list of ids (one bare string is refused: it is almost always a mistake)."""
    if isinstance(doc_ids, str):
        raise InputError(f"{what} takes a list of document ids, not one string")
    ids = list(doc_ids)
    if not ids:
        raise InputError(f"{what}: no document ids given")
    return ids


def batches(count: int):
    """(start, stop, bucketed size) for each batch of at most MAX_BATCH queries."""
    for start, stop in shapes.chunks(count, MAX_BATCH):
        yield start, stop, shapes.power_of_two(stop - start)


def batch_buckets(largest: int) -> tuple[int, ...]:
    """The padded batch sizes that calls of 1 to `largest` queries compile for."""
    return tuple(sorted({shapes.power_of_two(min(n, MAX_BATCH)) for n in range(1, largest + 1)}))


class Index(abc.ABC):
    """A searchable collection of documents held in device memory, split by document over
    the devices of a `("data",)` mesh. Subclasses hold `arrays` (numpy, with `doc_ids`,
    `deleted` and `metadata`) and place them on `mesh` in `_place`."""

    kind: ClassVar[str]  # metadata["kind"]: "colbert" or "dense"
    query_rank: ClassVar[int]  # 3: token matrices [B, Q, D]; 2: single vectors [B, H]
    search_knobs: ClassVar[tuple[str, ...]] = ()  # keyword arguments `search` takes beyond k

    def __init__(self, arrays, index_dir=None, devices=None):
        self.arrays = arrays
        self.index_dir = None if index_dir is None else Path(index_dir)
        self.mesh = sharding.data_mesh(devices)
        self._set_up()

    def _set_up(self) -> None:
        """Everything derived from `arrays` that requests read, computed once per change: the
        placement, the id -> row map (built on first use), then the live mask and count and the
        live mask on the devices."""
        self._place()
        self._id_rows: dict[str, int] | None = None
        self._set_live()

    def _set_live(self) -> None:
        """What follows from `arrays.deleted` alone (a tombstone changes only this)."""
        self._live = ~np.asarray(self.arrays.deleted, bool)
        self._live_count = int(self._live.sum())
        self._live_device = self._sharded_mask(self._live)

    # ------------------------------------------------------------------ facts
    @property
    def doc_ids(self) -> list[str]:
        """Every stored document's id, deleted ones included (row order)."""
        return self.arrays.doc_ids

    @property
    def live_ids(self) -> list[str]:
        """The ids a search can return, in row order."""
        return [i for i, live in zip(self.arrays.doc_ids, self._live) if live]

    @property
    def metadata(self) -> dict:
        return self.arrays.metadata

    @property
    def dim(self) -> int:
        return self.arrays.dim

    @property
    def num_live(self) -> int:
        return self._live_count

    def __contains__(self, doc_id: str) -> bool:
        """Whether `doc_id` is live: one dict lookup and one mask read, however many documents
        the index holds (a tombstoned copy shares the map, `_id_to_row`)."""
        return self._live_row(doc_id) is not None

    def stats(self) -> dict:
        """What /stats and `lateint` report about the index."""
        return {
            "kind": self.kind,
            "dim": self.dim,
            "documents": self.num_live,
            "deleted": len(self.doc_ids) - self.num_live,
            "devices": int(self.mesh.size),
            "index_dir": None if self.index_dir is None else str(self.index_dir),
        }

    # ------------------------------------------------------------------ shared helpers
    def _id_to_row(self) -> dict[str, int]:
        """id -> row of every stored document, deleted ones included (ids are unique among
        the rows: re-adding a deleted id compacts first). It depends on the rows alone, so
        copies that differ only in tombstones share it."""
        if self._id_rows is None:
            self._id_rows = {i: n for n, i in enumerate(self.arrays.doc_ids)}
        return self._id_rows

    def _live_row(self, doc_id: str) -> int | None:
        """The row of a live document, None for an id not live."""
        row = self._id_to_row().get(doc_id)
        return row if row is not None and self._live[row] else None

    def _subset_mask(self, subset_ids) -> np.ndarray:
        """[N] bool of the live documents, restricted to `subset_ids` when given."""
        if subset_ids is None:
            return self._live
        ids = set(check_ids(subset_ids, "subset_ids"))
        rows = {i: self._live_row(i) for i in ids}
        missing = sorted(i for i, row in rows.items() if row is None)
        if missing:
            raise InputError(f"subset_ids not in the index: {', '.join(map(repr, missing[:5]))}")
        mask = np.zeros(self._live.shape[0], bool)
        mask[list(rows.values())] = True
        return mask

    def _allowed_on_devices(self, allowed: np.ndarray, subset_ids) -> jax.Array:
        """The allowed-documents mask split over the devices (the live one is kept placed)."""
        return self._live_device if subset_ids is None else self._sharded_mask(allowed)

    def _check_request(self, queries, k, subset_ids) -> tuple[np.ndarray, int, np.ndarray]:
        """-> (queries as float32 of this index's rank, k, allowed-documents mask [N])."""
        queries = check_queries(queries, self.dim, rank=self.query_rank)
        allowed = self._subset_mask(subset_ids)
        return queries, check_k(k, self.num_live), allowed

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> Hits:
        """scores [B, k], row numbers [B, k] (-1 = none) -> [(doc_id, score), ...] per query."""
        doc_ids = self.arrays.doc_ids
        return [
            [(doc_ids[i], float(s)) for s, i in zip(row_scores, row_ids) if i >= 0]
            for row_scores, row_ids in zip(scores, ids)
        ]

    def _changed(self, arrays) -> None:
        self.arrays = arrays
        self._set_up()

    # ------------------------------------------------------------------ the interface
    @abc.abstractmethod
    def _place(self) -> None:
        """Put `arrays` on the mesh (called at start and after every change)."""

    @abc.abstractmethod
    def _sharded_mask(self, mask: np.ndarray) -> jax.Array:
        """A per-document [N] mask, padded and split over the devices as the documents are."""

    @abc.abstractmethod
    def search(self, queries, k: int = 10, *, subset_ids: Sequence[str] | None = None) -> Hits:
        """The best k live documents (doc_id, score), best first, for each query; with
        subset_ids, only among those documents. Fewer than k come back when fewer exist."""

    @abc.abstractmethod
    def exact_search(
        self, queries, k: int = 10, *, subset_ids: Sequence[str] | None = None
    ) -> Hits:
        """As search, scoring every allowed document exactly (no candidate generation)."""

    def writable(self) -> Index | None:
        """This index as one that takes live writes as small appends (a write segment searched
        beside it, deletes as tombstones, merged in by a compaction: `index/segmented.py`),
        or None for a kind whose writes go through `add` / `delete` (a full re-layout)."""
        return None

    @abc.abstractmethod
    def add(self, embeddings, doc_ids: Sequence[str]) -> None:
        """Add documents (re-added ids replace); searchable at once, durable after save()."""

    @abc.abstractmethod
    def delete(self, doc_ids: Sequence[str]) -> None:
        """Delete live documents by id; never returned again, durable after save()."""

    @abc.abstractmethod
    def document_vectors(self, doc_id: str) -> np.ndarray:
        """The stored vectors of one live document: [T, D] (single-vector: [1, H])."""

    @abc.abstractmethod
    def warmup(self, request_shapes: Iterable[SearchShape]) -> int:
        """Compile every program a request of these shapes can reach, so none compiles on
        the request path; returns how many calls it made."""

    @abc.abstractmethod
    def _write(self, target: Path) -> None:
        """Write the arrays atomically as an index folder at target."""

    def save(self, index_dir=None) -> Path:
        """Write the index atomically to index_dir (default: where it was loaded from)."""
        target = Path(index_dir) if index_dir is not None else self.index_dir
        if target is None:
            raise InputError("this index was not loaded from disk: pass index_dir to save()")
        self._write(target)
        self.index_dir = target
        return target
