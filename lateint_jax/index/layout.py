"""The in-memory layout of a compressed late-interaction index, shared by build, storage,
update and search. Everything is numpy; `load_index` returns this whatever the disk format is.

An index holds its tokens in one of two orders, each derived from the other on first use:
document order (`codes`, `residuals`: what build, update, PLAID and exact search use) and
centroid order (`CentroidOrder`: what WARP-style search and format version 2 use).

Shapes: C centroids, D embedding dim, M token vectors (all documents, contiguous), N documents,
P inverted-list entries (centroid, document) pairs, R = D * nbits / 8 bytes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from lateint_jax.errors import IndexFormatError

SUPPORTED_NBITS = (1, 2, 4)


def doc_dtype(num_docs: int) -> np.dtype:
    """The narrowest unsigned dtype that numbers `num_docs` documents (0 .. num_docs - 1)."""
    return np.dtype(np.uint16 if num_docs <= 1 << 16 else np.uint32)


def stable_argsort(values: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integers below 2**32 in O(M): numpy sorts 16-bit keys
    by radix; wider keys take two such passes (low half, then high half)."""
    values = np.asarray(values)
    if values.dtype.itemsize <= 2:
        return np.argsort(values, kind="stable")
    wide = values.astype(np.uint32, copy=False)
    order = np.argsort((wide & 0xFFFF).astype(np.uint16), kind="stable")
    high = (wide[order] >> 16).astype(np.uint16)
    return order[np.argsort(high, kind="stable")]


@dataclass
class CentroidOrder:
    """Every token of the index in centroid order: centroid c's tokens are rows
    cell_offsets[c]:cell_offsets[c + 1], ordered by document, then as the document stores them.

    cell_offsets [C + 1] int64
    token_docs   [M] uint16 or uint32 (doc_dtype(N)): the document of each row
    residuals    [M, R] uint8, bit-packed residuals of each row (memory-mapped when loaded)
    """

    cell_offsets: np.ndarray
    token_docs: np.ndarray
    residuals: np.ndarray

    @property
    def num_tokens(self) -> int:
        return int(self.token_docs.shape[0])

    @functools.cached_property
    def document_rows(self) -> np.ndarray:
        """[M] the row of each token in document order (documents contiguous, each one's
        tokens by centroid): a stable counting sort of token_docs."""
        return stable_argsort(self.token_docs)

    @functools.cached_property
    def cells(self) -> np.ndarray:
        """[M] int32 centroid id of each row."""
        sizes = np.diff(self.cell_offsets)
        return np.repeat(np.arange(sizes.shape[0], dtype=np.int32), sizes)

    def document_codes(self) -> np.ndarray:
        """[M] int32 centroid ids in document order."""
        return self.cells[self.document_rows]

    def document_residuals(self) -> np.ndarray:
        """[M, R] residuals in document order (a copy)."""
        return np.asarray(self.residuals)[self.document_rows]

    def ivf(self, num_docs: int, deleted: np.ndarray | None = None):
        """Inverted lists (as build_ivf) read off the order without sorting: rows are sorted by
        (centroid, document), so each new pair starts an entry."""
        docs = self.token_docs
        starts = np.ones(docs.shape[0], bool)
        starts[1:] = docs[1:] != docs[:-1]
        starts[self.cell_offsets[:-1][np.diff(self.cell_offsets) > 0]] = True
        if deleted is not None and deleted.any():
            starts &= ~deleted[docs]
        before = np.zeros(docs.shape[0] + 1, np.int64)  # entries before each row
        np.cumsum(starts, out=before[1:])
        return docs[starts].astype(np.int32), before[self.cell_offsets]

    @classmethod
    def from_documents(cls, codes, residuals, doc_offsets, num_centroids: int) -> CentroidOrder:
        """Reorder document-ordered tokens (one stable sort by centroid id)."""
        rows, cell_offsets, token_docs = centroid_permutation(codes, doc_offsets, num_centroids)
        return cls(cell_offsets, token_docs, np.asarray(residuals)[rows])


def centroid_permutation(codes: np.ndarray, doc_offsets: np.ndarray, num_centroids: int):
    """Document-ordered codes [M] -> (rows [M]: the document-order row of each token in
    centroid order, cell_offsets [C + 1], token_docs [M] in centroid order)."""
    num_docs = doc_offsets.shape[0] - 1
    rows = np.argsort(codes, kind="stable")
    docs = np.repeat(np.arange(num_docs, dtype=doc_dtype(num_docs)), np.diff(doc_offsets))
    cell_offsets = np.zeros(num_centroids + 1, np.int64)
    np.cumsum(np.bincount(codes, minlength=num_centroids), out=cell_offsets[1:])
    return rows, cell_offsets, docs[rows]


class IndexArrays:
    """A ColBERTv2/PLAID residual-compressed index held as numpy arrays.

    centroids       [C, D] float32
    bucket_cutoffs  [D, 2**nbits - 1] float32, per-dimension residual quantile cutoffs
    bucket_weights  [D, 2**nbits] float32, per-dimension value of each residual bucket
    codes           [M] int32, centroid id of each token vector; documents are contiguous
    residuals       [M, D * nbits // 8] uint8, bit-packed bucket indices (see codec.bitpack)
    order           CentroidOrder: the same tokens in centroid order
    doc_offsets     [N + 1] int64, document n owns token rows doc_offsets[n]:doc_offsets[n + 1]
    ivf_pids        [P] int32, per centroid the ascending unique document numbers with a token there
    ivf_offsets     [C + 1] int64, centroid c's list is ivf_pids[ivf_offsets[c]:ivf_offsets[c + 1]]
    doc_ids         [N] external string ids
    deleted         [N] bool, tombstones (deleted documents keep their rows until a rebuild)

    Give codes and residuals, or order (or both): the missing side, and the inverted lists, are
    derived on first use, so an index loaded in centroid order costs no sort until PLAID,
    exact search or an update asks for document order.
    """

    def __init__(
        self,
        *,
        centroids: np.ndarray,
        bucket_cutoffs: np.ndarray,
        bucket_weights: np.ndarray,
        doc_offsets: np.ndarray,
        doc_ids: list[str],
        deleted: np.ndarray,
        nbits: int,
        codes: np.ndarray | None = None,
        residuals: np.ndarray | None = None,
        order: CentroidOrder | None = None,
        ivf_pids: np.ndarray | None = None,
        ivf_offsets: np.ndarray | None = None,
        metadata: dict | None = None,
    ):
        if order is None and (codes is None or residuals is None):
            raise ValueError("IndexArrays needs codes and residuals, or a CentroidOrder")
        self.centroids, self.bucket_cutoffs = centroids, bucket_cutoffs
        self.bucket_weights, self.doc_offsets = bucket_weights, doc_offsets
        self.doc_ids, self.deleted, self.nbits = doc_ids, deleted, nbits
        self._codes, self._residuals, self._order = codes, residuals, order
        self._ivf = None if ivf_pids is None else (ivf_pids, ivf_offsets)
        self.metadata = {} if metadata is None else metadata

    @property
    def codes(self) -> np.ndarray:
        if self._codes is None:
            self._codes = self._order.document_codes()
        return self._codes

    @property
    def residuals(self) -> np.ndarray:
        if self._residuals is None:
            self._residuals = self._order.document_residuals()
        return self._residuals

    @property
    def order(self) -> CentroidOrder:
        if self._order is None:
            self._order = CentroidOrder.from_documents(
                self._codes, self._residuals, self.doc_offsets, self.num_centroids
            )
        return self._order

    @property
    def has_order(self) -> bool:
        """Whether the centroid order is at hand (loaded, or already derived)."""
        return self._order is not None

    @property
    def ivf_pids(self) -> np.ndarray:
        return self._inverted_lists()[0]

    @property
    def ivf_offsets(self) -> np.ndarray:
        return self._inverted_lists()[1]

    def _inverted_lists(self):
        if self._ivf is None:
            if self._order is not None:
                self._ivf = self._order.ivf(self.num_docs, self.deleted)
            else:
                self._ivf = build_ivf(
                    self.codes, self.doc_offsets, self.num_centroids, self.deleted
                )
        return self._ivf

    def tokens_at(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes [...] int32 and residuals [..., R] of token rows in document order, read from
        whichever order is at hand (no whole-index copy for a few rows)."""
        if self._codes is not None:
            return self._codes[rows], np.asarray(self._residuals[rows.reshape(-1)]).reshape(
                *rows.shape, -1
            )
        order = self._order
        at = order.document_rows[rows]
        codes = (np.searchsorted(order.cell_offsets, at, side="right") - 1).astype(np.int32)
        return codes, np.asarray(order.residuals[at.reshape(-1)]).reshape(*rows.shape, -1)

    def replace(self, **changes) -> IndexArrays:
        """A copy with some arrays replaced; changing rows or tombstones drops what was derived
        from the old ones (the other token order, the inverted lists)."""
        fields = {
            "centroids": self.centroids, "bucket_cutoffs": self.bucket_cutoffs,
            "bucket_weights": self.bucket_weights, "doc_offsets": self.doc_offsets,
            "doc_ids": self.doc_ids, "deleted": self.deleted, "nbits": self.nbits,
            "metadata": dict(self.metadata),
        }  # fmt: skip
        rows_changed = {"codes", "residuals", "doc_offsets"} & set(changes)
        if rows_changed:
            if not {"codes", "residuals", "doc_offsets"} <= set(changes):
                raise ValueError("codes, residuals and doc_offsets change together")
        else:
            fields.update(codes=self._codes, residuals=self._residuals, order=self._order)
            if "deleted" not in changes and self._ivf is not None:
                fields.update(ivf_pids=self._ivf[0], ivf_offsets=self._ivf[1])
        fields.update(changes)
        return IndexArrays(**fields)

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
        return int(self.doc_offsets[-1]) if self.doc_offsets.shape[0] else 0

    @property
    def residual_bytes(self) -> int:
        """R: bytes of one token's packed residual."""
        source = self._residuals if self._residuals is not None else self._order.residuals
        return int(source.shape[1])

    @property
    def doc_lengths(self) -> np.ndarray:
        """[N] int32 token count of each document."""
        return np.diff(self.doc_offsets).astype(np.int32)

    def validate(self) -> None:
        """Check that the arrays agree with each other; raise IndexFormatError naming the first
        inconsistency."""
        c, d, n = self.num_centroids, self.dim, self.num_docs
        m = int(self.doc_offsets[-1]) if self.doc_offsets.shape[0] else -1
        r = d * self.nbits // 8
        expect = {
            "centroids": ((c, d), self.centroids),
            "bucket_cutoffs": ((d, 2**self.nbits - 1), self.bucket_cutoffs),
            "bucket_weights": ((d, 2**self.nbits), self.bucket_weights),
            "doc_offsets": ((n + 1,), self.doc_offsets),
            "deleted": ((n,), self.deleted),
        }
        if self._codes is not None:
            expect["codes"] = ((m,), self._codes)
            expect["residuals"] = ((m, r), self._residuals)
        if self._order is not None:
            expect["cell_offsets"] = ((c + 1,), self._order.cell_offsets)
            expect["token_docs"] = ((m,), self._order.token_docs)
            expect["residuals (centroid order)"] = ((m, r), self._order.residuals)
        if self._ivf is not None:
            expect["ivf_offsets"] = ((c + 1,), self._ivf[1])
        if self.nbits not in SUPPORTED_NBITS:
            raise IndexFormatError(f"nbits={self.nbits} is not one of {SUPPORTED_NBITS}")
        for name, (shape, array) in expect.items():
            if tuple(array.shape) != shape:
                raise IndexFormatError(f"{name} has shape {tuple(array.shape)}, expected {shape}")
        if n and self.doc_offsets[0] != 0:
            raise IndexFormatError("doc_offsets must start at 0")
        if self._order is not None and (
            self._order.cell_offsets[0] != 0 or self._order.cell_offsets[-1] != m
        ):
            raise IndexFormatError("cell_offsets must start at 0 and end at the token count")
        if self._ivf is not None and self._ivf[1][-1] != self._ivf[0].shape[0]:
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
