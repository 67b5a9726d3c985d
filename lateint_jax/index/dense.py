"""Exhaustive single-vector search for bi-encoder (SBERT-style) indexes, sharded by document
like the ColBERT index, so `lateint search` / `lateint evaluate` run the dense baseline too.

Scores are dot products (cosine when the vectors are normalised, as the bi-encoder's are).

Shapes: B queries, H vector size, N documents (padded).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from lateint_jax import sharding
from lateint_jax.errors import InputError
from lateint_jax.index.layout import DenseArrays
from lateint_jax.index.plaid import DOC_MULTIPLE, TRACE_COUNTS
from lateint_jax.index.search import ArraysView, batches, check_k, check_queries, subset_mask


@functools.partial(jax.jit, static_argnames=("mesh", "k"))
def dense_top_k(queries, vectors, allowed, *, mesh, k):
    """queries [B, H], vectors [N, H] and allowed [N] split by document -> (scores [B, k],
    global doc numbers [B, k], -1 where fewer exist)."""
    TRACE_COUNTS["dense"] += 1

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


class DenseIndex(ArraysView):
    """A bi-encoder index ([N, H] vectors) in device memory, split by document over `devices`."""

    def __init__(self, arrays: DenseArrays, index_dir=None, devices=None):
        self.arrays = arrays
        self.index_dir = None if index_dir is None else Path(index_dir)
        self.mesh = sharding.data_mesh(devices)
        self._place()

    @classmethod
    def load(cls, index_dir, devices=None, *, verify_checksums: bool = True) -> DenseIndex:
        from lateint_jax.index.storage import load_dense_index

        return cls(
            load_dense_index(index_dir, verify_checksums=verify_checksums), index_dir, devices
        )

    def _place(self) -> None:
        shards = sharding.num_shards(self.mesh)
        self._total = sharding.padded_size(self.arrays.num_docs, shards, DOC_MULTIPLE)
        vectors = sharding.pad_axis(np.asarray(self.arrays.vectors, np.float32), self._total)
        self._vectors = sharding.shard_along(vectors, self.mesh)
        self._live = subset_mask(self.arrays.doc_ids, self.arrays.deleted, None)
        self._live_device = self._place_mask(self._live)

    def _place_mask(self, mask: np.ndarray) -> jax.Array:
        return sharding.shard_along(sharding.pad_axis(mask, self._total, value=False), self.mesh)

    def search(
        self, query_vectors, k: int = 10, *, subset_ids: Sequence[str] | None = None
    ) -> list[list[tuple[str, float]]]:
        """query_vectors [B, H] (or one [H]) -> for each query its best k (doc_id, score)."""
        queries = check_queries(query_vectors, self.dim, rank=2)
        if subset_ids is None:
            allowed, available = self._live_device, self.num_live
        else:
            mask = subset_mask(self.doc_ids, self.arrays.deleted, subset_ids)
            allowed, available = self._place_mask(mask), int(mask.sum())
        k = check_k(k, available)
        results = []
        for start, stop, size in batches(queries.shape[0]):
            q = sharding.pad_axis(queries[start:stop], size)
            scores, ids = jax.device_get(
                dense_top_k(q, self._vectors, allowed, mesh=self.mesh, k=k)
            )
            for row_scores, row_ids in zip(scores[: stop - start], ids[: stop - start]):
                results.append(
                    [(self.doc_ids[i], float(s)) for s, i in zip(row_scores, row_ids) if i >= 0]
                )
        return results

    def add(self, vectors, doc_ids: Sequence[str]) -> None:
        """Append documents' vectors [N', H]; searchable at once (save() to persist)."""
        from lateint_jax.index.build import check_doc_ids

        vectors = check_queries(vectors, self.dim, rank=2)
        live = [i for i, gone in zip(self.doc_ids, self.arrays.deleted) if not gone]
        ids = check_doc_ids(doc_ids, vectors.shape[0], existing=live)
        keep = ~np.isin(np.asarray(self.doc_ids, dtype=object), ids)  # re-added ids replace
        self.arrays = dataclasses.replace(
            self.arrays,
            vectors=np.concatenate([np.asarray(self.arrays.vectors)[keep], vectors]),
            doc_ids=[i for i, k in zip(self.doc_ids, keep) if k] + ids,
            deleted=np.concatenate([self.arrays.deleted[keep], np.zeros(len(ids), bool)]),
        )
        self._place()

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Delete documents by id (every id must be live); save() to persist."""
        if isinstance(doc_ids, str) or not doc_ids:
            raise InputError("delete takes a non-empty list of document ids")
        position = {i: n for n, i in enumerate(self.doc_ids) if self._live[n]}
        missing = [i for i in doc_ids if i not in position]
        if missing:
            raise InputError(f"ids not in the index: {', '.join(map(repr, missing[:5]))}")
        deleted = self.arrays.deleted.copy()
        deleted[[position[i] for i in doc_ids]] = True
        self.arrays = dataclasses.replace(self.arrays, deleted=deleted)
        self._place()

    def save(self, index_dir=None) -> Path:
        """Write the index atomically to index_dir (default: where it was loaded from)."""
        from lateint_jax.index.storage import save_dense_index

        target = Path(index_dir) if index_dir is not None else self.index_dir
        if target is None:
            raise InputError("this index was not loaded from disk: pass index_dir to save()")
        save_dense_index(self.arrays, target, overwrite=True)
        self.index_dir = target
        return target
