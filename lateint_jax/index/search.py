"""The user-facing compressed index: load, search (PLAID or exact), add, delete, save.

    index = Index.load("indexes/scifact")                 # split by document over all devices
    hits = index.search(colbert.encode_queries(["..."]), k=10)   # [[(doc_id, score), ...]]

Queries go through in batches of at most MAX_BATCH, padded to power-of-two buckets (batch size,
query length, candidate count), so repeated searches reuse compiled code.

Shapes: B queries, Q query tokens, D dim, T document tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from lateint_jax import sharding
from lateint_jax.errors import InputError
from lateint_jax.index import exact, plaid
from lateint_jax.index.layout import IndexArrays

MAX_BATCH = 32


def check_k(k, available: int, what: str = "live documents") -> int:
    """k must be an int in [1, available]."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InputError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise InputError(f"k must be positive, got {k}")
    if k > available:
        raise InputError(f"k={k} is larger than the {available} {what} in the index")
    return int(k)


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


def batches(count: int):
    """(start, stop, bucketed size) for each batch of at most MAX_BATCH queries."""
    for start in range(0, count, MAX_BATCH):
        stop = min(count, start + MAX_BATCH)
        yield start, stop, plaid.bucket(stop - start)


def subset_mask(doc_ids: Sequence[str], deleted: np.ndarray, subset_ids) -> np.ndarray:
    """[N] bool of the live documents, restricted to `subset_ids` when given."""
    live = ~np.asarray(deleted, bool)
    if subset_ids is None:
        return live
    if isinstance(subset_ids, str):
        raise InputError("subset_ids must be a list of document ids, not one string")
    wanted = set(subset_ids)
    mask = np.fromiter((i in wanted for i in doc_ids), bool, len(doc_ids)) & live
    if int(mask.sum()) != len(wanted):
        known = {i for i, ok in zip(doc_ids, live) if ok}
        missing = sorted(wanted - known)
        raise InputError(f"subset_ids not in the index: {', '.join(map(repr, missing[:5]))}")
    return mask


class ArraysView:
    """The read-only facts every loaded index answers from its `arrays` and live-document mask."""

    @property
    def doc_ids(self) -> list[str]:
        return self.arrays.doc_ids

    @property
    def metadata(self) -> dict:
        return self.arrays.metadata

    @property
    def dim(self) -> int:
        return self.arrays.dim

    @property
    def num_live(self) -> int:
        return int(self._live.sum())


class Index(ArraysView):
    """A residual-compressed ColBERT index in device memory, split by document over `devices`."""

    def __init__(self, arrays: IndexArrays, index_dir=None, devices=None):
        arrays.validate()
        self.arrays = arrays
        self.index_dir = None if index_dir is None else Path(index_dir)
        self.mesh = sharding.data_mesh(devices)
        self._place()

    @classmethod
    def load(cls, index_dir, devices=None, *, verify_checksums: bool = True) -> Index:
        """Read INDEX_DIR (IndexFormatError if missing or damaged) and place it on `devices`
        (default: every local device)."""
        from lateint_jax.index.storage import load_index

        return cls(load_index(index_dir, verify_checksums=verify_checksums), index_dir, devices)

    def _place(self) -> None:
        self.shards = plaid.place(self.arrays, self.mesh)
        self._exact_vectors = None
        self._live = subset_mask(self.arrays.doc_ids, self.arrays.deleted, None)
        self._live_device = sharding.shard_along(self._padded(self._live), self.mesh)
        self._row = {}

    def _padded(self, mask: np.ndarray) -> np.ndarray:
        total = self.shards.docs_per_shard * sharding.num_shards(self.mesh)
        return sharding.pad_axis(mask, total, value=False)

    # ------------------------------------------------------------------ search

    def _allowed(self, subset_ids):
        if subset_ids is None:
            return self._live_device, self.num_live
        mask = subset_mask(self.arrays.doc_ids, self.arrays.deleted, subset_ids)
        return sharding.shard_along(self._padded(mask), self.mesh), int(mask.sum())

    def _run(self, queries, k: int, score_batch) -> list[list[tuple[str, float]]]:
        """Pad each batch to its buckets, run score_batch(q, mask) -> (scores, ids), map ids."""
        count, tokens, dim = queries.shape
        padded_tokens = plaid.bucket(tokens, 8)
        results = []
        for start, stop, size in batches(count):
            q = np.zeros((size, padded_tokens, dim), np.float32)
            q[: stop - start, :tokens] = queries[start:stop]
            mask = np.zeros((size, padded_tokens), bool)
            mask[: stop - start, :tokens] = True
            scores, ids = jax.device_get(score_batch(q, mask))
            for row_scores, row_ids in zip(scores[: stop - start], ids[: stop - start]):
                results.append(
                    [(self.doc_ids[i], float(s)) for s, i in zip(row_scores, row_ids) if i >= 0]
                )
        return results

    def search(
        self,
        query_embeddings,
        k: int = 10,
        *,
        subset_ids: Sequence[str] | None = None,
        ncells: int | None = None,
        centroid_score_threshold: float | None = None,
        ndocs: int | None = None,
    ) -> list[list[tuple[str, float]]]:
        """PLAID search: query_embeddings [B, Q, D] (or one query [Q, D]) -> for each query its
        best k (doc_id, score), best first. Knobs left None take
        `PlaidParams.defaults(k)` (`PlaidParams.colbert_ai(k)` gives colbert-ai's).
        With subset_ids, every listed live document is a candidate (colbert-ai's `pids`)."""
        queries = check_queries(query_embeddings, self.dim, rank=3)
        allowed, available = self._allowed(subset_ids)
        k = check_k(k, available, "live documents" if subset_ids is None else "allowed documents")
        params = plaid.PlaidParams.defaults(k, ncells, centroid_score_threshold, ndocs)
        if params.ncells < 1 or params.ndocs < 1:
            raise InputError(f"ncells and ndocs must be positive, got {params}")
        use_ivf = subset_ids is None

        def score_batch(q, mask):
            scores, bitmap, most = plaid.candidates(
                self.shards, q, mask, allowed, params, k, use_ivf
            )
            return plaid.rank(self.shards, q, mask, scores, bitmap, most, params, k)

        return self._run(queries, k, score_batch)

    def exact_search(
        self, query_embeddings, k: int = 10, subset_ids: Sequence[str] | None = None
    ) -> list[list[tuple[str, float]]]:
        """Brute-force MaxSim against every live (decompressed) document; same output as
        search. The decompressed corpus is kept after the first call ([N, T, D] float32)."""
        queries = check_queries(query_embeddings, self.dim, rank=3)
        allowed, available = self._allowed(subset_ids)
        k = check_k(k, available, "live documents" if subset_ids is None else "allowed documents")
        if self._exact_vectors is None:
            self._exact_vectors = exact.decompress_docs(self.shards)

        def score_batch(q, mask):
            return exact.exact_search(self.shards, self._exact_vectors, q, mask, allowed, k)

        return self._run(queries, k, score_batch)

    # ------------------------------------------------------------------ contents

    def _position(self, doc_id: str) -> int:
        if not self._row:
            self._row = {i: n for n, i in enumerate(self.doc_ids) if self._live[n]}
        if doc_id not in self._row:
            raise InputError(f"document id {doc_id!r} is not in the index")
        return self._row[doc_id]

    def decompress(self, doc_id: str) -> np.ndarray:
        """The stored (decompressed, L2-normalised) token vectors of one document: [T, D]."""
        from lateint_jax.codec.residual import decompress_jit

        n = self._position(doc_id)
        start, stop = self.arrays.doc_offsets[n], self.arrays.doc_offsets[n + 1]
        width = self.shards.doc_tokens  # one padded length, so any document reuses one compile
        codes = sharding.pad_axis(self.arrays.codes[start:stop], width)
        packed = sharding.pad_axis(np.asarray(self.arrays.residuals[start:stop]), width)
        vectors = decompress_jit(
            self.arrays.centroids, self.arrays.bucket_weights, codes, packed, self.arrays.nbits
        )
        return np.asarray(vectors)[: stop - start]

    def add(self, doc_embeddings: Sequence[np.ndarray], doc_ids: Sequence[str]) -> None:
        """Add documents ([T_i, D] each), coded with the index's centroids; searchable at once.
        Call save() to write them to disk."""
        from lateint_jax.index.update import add_documents

        self.arrays = add_documents(self.arrays, doc_embeddings, doc_ids)
        self._place()

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Delete documents by id; they are never returned again. Call save() to persist."""
        from lateint_jax.index.update import delete_documents

        if isinstance(doc_ids, str):
            raise InputError("delete takes a list of document ids, not one string")
        self.arrays = delete_documents(self.arrays, doc_ids)
        self._place()

    def save(self, index_dir=None) -> Path:
        """Write the index atomically to index_dir (default: where it was loaded from)."""
        from lateint_jax.index.storage import save_index

        target = Path(index_dir) if index_dir is not None else self.index_dir
        if target is None:
            raise InputError("this index was not loaded from disk: pass index_dir to save()")
        save_index(self.arrays, target, overwrite=True)
        self.index_dir = target
        return target


def load_any(index_dir, devices=None):
    """Open INDEX_DIR as an Index or a DenseIndex according to its metadata `kind`."""
    from lateint_jax.index.storage import read_metadata

    if read_metadata(index_dir).get("kind") == "dense":
        from lateint_jax.index.dense import DenseIndex

        return DenseIndex.load(index_dir, devices)
    return Index.load(index_dir, devices)
