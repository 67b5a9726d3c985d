"""The in-memory layout of a compressed late-interaction index, shared by build, storage,
update and search. Everything is numpy; `load_index` returns this whatever the disk format is.

Shapes: C centroids, D embedding dim, M token vectors (all documents, contiguous), N documents,
P inverted-list entries (centroid, document) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lateint_jax.errors import IndexFormatError

SUPPORTED_NBITS = (1, 2, 4)


@dataclass
class IndexArrays:
    """A ColBERTv2/PLAID residual-compressed index held as numpy arrays.

    centroids       [C, D] float32, unit-normalised
    bucket_cutoffs  [D, 2**nbits - 1] float32, per-dimension residual quantile cutoffs
    bucket_weights  [D, 2**nbits] float32, per-dimension value of each residual bucket
    codes           [M] int32, centroid id of each token vector; documents are contiguous
    residuals       [M, D * nbits // 8] uint8, bit-packed bucket indices (see codec.bitpack)
    doc_offsets     [N + 1] int64, document n owns token rows doc_offsets[n]:doc_offsets[n + 1]
    ivf_pids        [P] int32, per centroid the ascending unique document numbers with a token there
    ivf_offsets     [C + 1] int64, centroid c's list is ivf_pids[ivf_offsets[c]:ivf_offsets[c + 1]]
    doc_ids         [N] external string ids
    deleted         [N] bool, tombstones (deleted documents keep their rows until a rebuild)
    """

    centroids: np.ndarray
    bucket_cutoffs: np.ndarray
    bucket_weights: np.ndarray
    codes: np.ndarray
    residuals: np.ndarray
    doc_offsets: np.ndarray
    ivf_pids: np.ndarray
    ivf_offsets: np.ndarray
    doc_ids: list[str]
    deleted: np.ndarray
    nbits: int
    metadata: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def num_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def num_embeddings(self) -> int:
        return int(self.codes.shape[0])

    @property
    def doc_lengths(self) -> np.ndarray:
        """[N] int32 token count of each document."""
        return np.diff(self.doc_offsets).astype(np.int32)

    def validate(self) -> None:
        """Check that the arrays agree with each other; raise IndexFormatError naming the first
        inconsistency."""
        c, d, m, n = self.num_centroids, self.dim, self.num_embeddings, self.num_docs
        expect = {
            "centroids": ((c, d), self.centroids),
            "bucket_cutoffs": ((d, 2**self.nbits - 1), self.bucket_cutoffs),
            "bucket_weights": ((d, 2**self.nbits), self.bucket_weights),
            "codes": ((m,), self.codes),
            "residuals": ((m, d * self.nbits // 8), self.residuals),
            "doc_offsets": ((n + 1,), self.doc_offsets),
            "ivf_offsets": ((c + 1,), self.ivf_offsets),
            "deleted": ((n,), self.deleted),
        }
        if self.nbits not in SUPPORTED_NBITS:
            raise IndexFormatError(f"nbits={self.nbits} is not one of {SUPPORTED_NBITS}")
        for name, (shape, array) in expect.items():
            if tuple(array.shape) != shape:
                raise IndexFormatError(f"{name} has shape {tuple(array.shape)}, expected {shape}")
        if n and (self.doc_offsets[0] != 0 or self.doc_offsets[-1] != m):
            raise IndexFormatError("doc_offsets must start at 0 and end at the token count")
        if self.ivf_offsets[-1] != self.ivf_pids.shape[0]:
            raise IndexFormatError("ivf_offsets must end at the length of ivf_pids")


@dataclass
class DenseArrays:
    """A single-vector (bi-encoder) index: vectors [N, H] float32, one per document."""

    vectors: np.ndarray
    doc_ids: list[str]
    deleted: np.ndarray
    metadata: dict = field(default_factory=dict)

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def build_ivf(
    codes: np.ndarray,
    doc_offsets: np.ndarray,
    num_centroids: int,
    deleted: np.ndarray | None = None,
):
    """Inverted lists from the token codes, leaving out deleted documents.

    codes [M] int, doc_offsets [N + 1], deleted [N] bool or None
    -> (ivf_pids [P] int32, ivf_offsets [C + 1] int64), each centroid's documents ascending, unique.
    """
    num_docs = doc_offsets.shape[0] - 1
    lengths = np.diff(doc_offsets)
    pids = np.repeat(np.arange(num_docs, dtype=np.int64), lengths)
    cells = codes.astype(np.int64)
    if deleted is not None and deleted.any():
        keep = ~np.repeat(deleted, lengths)
        pids, cells = pids[keep], cells[keep]
    # One key per (centroid, doc) pair; unique() sorts by centroid, then document.
    stride = max(num_docs, 1)
    keys = np.unique(cells * stride + pids)
    ivf_pids = (keys % stride).astype(np.int32)
    counts = np.bincount(keys // stride, minlength=num_centroids)
    ivf_offsets = np.zeros(num_centroids + 1, np.int64)
    np.cumsum(counts, out=ivf_offsets[1:])
    return ivf_pids, ivf_offsets


def sort_tokens_by_code(codes: np.ndarray, doc_offsets: np.ndarray) -> np.ndarray:
    """Row order [M] that sorts each document's tokens by centroid id, documents kept in place
    (MaxSim ignores token order; sorted ids compress well, see codec.codes_io)."""
    doc_of_row = np.repeat(np.arange(doc_offsets.shape[0] - 1), np.diff(doc_offsets))
    return np.lexsort((codes, doc_of_row))
