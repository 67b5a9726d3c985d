"""The single-vector index: one bi-encoder (SBERT-style) vector per document, in device memory
split by document like the late-interaction index, searched exhaustively, so `lateint search`,
`lateint evaluate` and the server run the dense baseline through the same `Index` interface.

Scores are dot products (cosine when the vectors are normalised, as the bi-encoder's are).

Shapes: B queries, H vector size, N documents (padded).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from lateint_jax import shapes, sharding
from lateint_jax.errors import InputError
from lateint_jax.index.base import (
    Hits,
    Index,
    SearchShape,
    batch_buckets,
    batches,
    check_ids,
    check_queries,
)
from lateint_jax.index.build import check_doc_ids
from lateint_jax.index.plaid import DOC_MULTIPLE
from lateint_jax.index.storage import load_dense_index, save_dense_index
from lateint_jax.index.update import tombstone


@functools.partial(jax.jit, static_argnames=("mesh", "k"))
def dense_top_k(queries, vectors, allowed, *, mesh, k):
    """queries [B, H], vectors [N, H] and allowed [N] split by document -> (scores [B, k],
    global doc numbers [B, k], -1 where fewer exist)."""

    def per_shard(queries, vectors, allowed):
        scores = jnp.einsum("BH,NH->BN", queries, vectors, preferred_element_type=jnp.float32)
        scores = jnp.where(allowed[None, :], scores, -jnp.inf)
        local = jnp.broadcast_to(jnp.arange(vectors.shape[0], dtype=jnp.int32), scores.shape)
        offset = sharding.shard_offset(vectors.shape[0])
        return sharding.merge_top_k(*sharding.local_top_k(scores, local, k, offset), k)

    data = sharding.DATA_AXIS
    return jax.shard_map(
        per_shard,
        mesh=mesh,
        in_specs=(P(), P(data), P(data)),
        out_specs=(P(), P()),
        check_vma=False,
    )(queries, vectors, allowed)


class DenseIndex(Index):
    """A bi-encoder index ([N, H] vectors, `DenseArrays`) placed on the devices."""

    kind = "dense"
    query_rank = 2

    @classmethod
    def load(cls, index_dir, devices=None, *, verify_checksums: bool = True) -> DenseIndex:
        arrays = load_dense_index(index_dir, verify_checksums=verify_checksums)
        return cls(arrays, index_dir, devices)

    def _place(self) -> None:
        shards = sharding.num_shards(self.mesh)
        self._total = shapes.padded_size(self.arrays.num_docs, shards, DOC_MULTIPLE)
        vectors = shapes.pad_axis(np.asarray(self.arrays.vectors, np.float32), self._total)
        self._vectors = sharding.shard_along(vectors, self.mesh)

    def _sharded_mask(self, mask: np.ndarray) -> jax.Array:
        return sharding.shard_along(shapes.pad_axis(mask, self._total, value=False), self.mesh)

    def search(self, queries, k: int = 10, *, subset_ids: Sequence[str] | None = None) -> Hits:
        """queries [B, H] (or one [H]) -> for each query its best k (doc_id, score)."""
        queries, k, allowed = self._check_request(queries, k, subset_ids)
        allowed = self._allowed_on_devices(allowed, subset_ids)
        results = []
        for start, stop, size in batches(queries.shape[0]):
            q = shapes.pad_axis(queries[start:stop], size)
            scores, ids = jax.device_get(
                dense_top_k(q, self._vectors, allowed, mesh=self.mesh, k=k)
            )
            results.extend(self._hits(scores[: stop - start], ids[: stop - start]))
        return results

    def exact_search(
        self, queries, k: int = 10, *, subset_ids: Sequence[str] | None = None
    ) -> Hits:
        """The same as search: a single-vector search is already exhaustive and exact."""
        return self.search(queries, k, subset_ids=subset_ids)

    def warmup(self, request_shapes: Iterable[SearchShape]) -> int:
        """Compile each (batch bucket, k) of the shapes; subsets reuse the same programs."""
        calls = 0
        live = self._live_device
        for shape in request_shapes:
            k = min(shape.k, self.num_live)
            for size in batch_buckets(shape.batch):
                q = np.zeros((size, self.dim), np.float32)
                jax.block_until_ready(dense_top_k(q, self._vectors, live, mesh=self.mesh, k=k))
                calls += 1
        return calls

    def document_vectors(self, doc_id: str) -> np.ndarray:
        """The stored vector of one live document, as [1, H]."""
        row = self._live_row(doc_id)
        if row is None:
            raise InputError(f"document id {doc_id!r} is not in the index")
        return np.asarray(self.arrays.vectors[row : row + 1], np.float32)

    def add(self, vectors, doc_ids: Sequence[str]) -> None:
        """Append documents' vectors [N', H]; re-added ids replace (save() to persist)."""
        vectors = check_queries(vectors, self.dim, rank=2)
        ids = check_doc_ids(doc_ids, vectors.shape[0], existing=self.live_ids)
        keep = ~np.isin(np.asarray(self.doc_ids, dtype=object), ids)
        self._changed(
            dataclasses.replace(
                self.arrays,
                vectors=np.concatenate([np.asarray(self.arrays.vectors)[keep], vectors]),
                doc_ids=[i for i, kept in zip(self.doc_ids, keep) if kept] + ids,
                deleted=np.concatenate([self.arrays.deleted[keep], np.zeros(len(ids), bool)]),
            )
        )

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Delete documents by id (every id must be live); save() to persist."""
        deleted = tombstone(
            self.arrays.doc_ids, self.arrays.deleted, check_ids(doc_ids, "delete"), self._live_row
        )
        self._changed(dataclasses.replace(self.arrays, deleted=deleted))

    def _write(self, target: Path) -> None:
        save_dense_index(self.arrays, target, overwrite=True)
