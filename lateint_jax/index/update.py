"""Add documents to and delete documents from an index held in memory (IndexArrays).

New documents are assigned to the existing centroids and coded with the existing bucket
cutoffs (no retraining, as colbert-ai's IndexUpdater). `code_documents` codes a few documents
in blocks of one fixed size (a live write compiles nothing) and `append_coded` appends coded
documents, so documents coded once (a served index's write segment, `index/segmented.py`) are
appended later with exactly those codes. Deletion marks tombstones in `deleted`
and drops the documents from the inverted lists; their rows stay until `compact` (called by
add_documents when a deleted id is added again) rewrites the arrays without them. Save the
result with storage.save_index(arrays, index_dir, overwrite=True).

Shapes: N documents, T_i tokens, M token vectors, D embedding dim, C centroids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lateint_jax.codec.residual import compress
from lateint_jax.errors import InputError
from lateint_jax.index.build import check_doc_embeddings, check_doc_ids, compress_documents
from lateint_jax.index.layout import IndexArrays, sort_tokens_by_code

CODE_BLOCK = 256  # tokens per `code_documents` call of the codec: one compiled shape


def _with_rows(arrays: IndexArrays, codes, residuals, doc_offsets, doc_ids, deleted) -> IndexArrays:
    """New rows in document order; the centroid order and inverted lists follow on first use."""
    return arrays.replace(
        codes=codes, residuals=residuals, doc_offsets=doc_offsets, doc_ids=doc_ids, deleted=deleted
    )


def compact(arrays: IndexArrays) -> IndexArrays:
    """Drop the rows of deleted documents for good (document numbers of the others shift)."""
    if not arrays.deleted.any():
        return arrays
    keep_docs = ~arrays.deleted
    lengths = arrays.doc_lengths
    keep_rows = np.repeat(keep_docs, lengths)
    doc_offsets = np.zeros(int(keep_docs.sum()) + 1, np.int64)
    np.cumsum(lengths[keep_docs], out=doc_offsets[1:])
    doc_ids = [i for i, keep in zip(arrays.doc_ids, keep_docs) if keep]
    return _with_rows(
        arrays,
        arrays.codes[keep_rows],
        np.asarray(arrays.residuals)[keep_rows],
        doc_offsets,
        doc_ids,
        np.zeros(len(doc_ids), bool),
    )


def code_documents(arrays: IndexArrays, doc_embeddings: Sequence[np.ndarray]):
    """Code documents ([T_i, D] float32 each) with the index's centroids and bucket cutoffs,
    CODE_BLOCK tokens per codec call, each document's tokens sorted by code as the build sorts
    them -> (codes [M] int32, residuals [M, R] uint8, doc_offsets [N + 1] int64)."""
    lengths = np.array([e.shape[0] for e in doc_embeddings], np.int64)
    doc_offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=doc_offsets[1:])
    tokens = np.concatenate([np.asarray(e, np.float32) for e in doc_embeddings])
    pieces = [
        compress(tokens[start : start + CODE_BLOCK], arrays.centroids, arrays.bucket_cutoffs,
                 arrays.nbits)
        for start in range(0, tokens.shape[0], CODE_BLOCK)
    ]  # fmt: skip
    codes = np.concatenate([p[0] for p in pieces])
    residuals = np.concatenate([p[1] for p in pieces])
    order = sort_tokens_by_code(codes, doc_offsets)
    return codes[order], residuals[order], doc_offsets


def append_coded(
    arrays: IndexArrays, codes, residuals, doc_offsets, doc_ids: Sequence[str]
) -> IndexArrays:
    """Append coded documents (codes [M], residuals [M, R], doc_offsets [N + 1] from
    `code_documents` or `compress_documents`). Ids must be new among the live documents;
    re-adding a deleted id compacts first."""
    live = [i for i, gone in zip(arrays.doc_ids, arrays.deleted) if not gone]
    ids = check_doc_ids(doc_ids, len(doc_offsets) - 1, existing=live)
    if arrays.deleted.any() and set(ids).intersection(arrays.doc_ids):
        arrays = compact(arrays)
    return _with_rows(
        arrays,
        np.concatenate([arrays.codes, codes]),
        np.concatenate([np.asarray(arrays.residuals), residuals]),
        np.concatenate([arrays.doc_offsets, arrays.doc_offsets[-1] + doc_offsets[1:]]),
        list(arrays.doc_ids) + ids,
        np.concatenate([arrays.deleted, np.zeros(len(ids), bool)]),
    )


def add_documents(
    arrays: IndexArrays,
    doc_embeddings: Sequence[np.ndarray],
    doc_ids: Sequence[str],
    *,
    progress: bool = False,
) -> IndexArrays:
    """Append documents ([T_i, D] each) coded against the index's centroids and buckets.
    Ids must be new among the live documents; re-adding a deleted id compacts first."""
    if len(doc_embeddings) == 0:
        raise InputError("no documents to add")
    live = [i for i, gone in zip(arrays.doc_ids, arrays.deleted) if not gone]
    ids = check_doc_ids(doc_ids, len(doc_embeddings), existing=live)
    check_doc_embeddings(doc_embeddings, ids, dim=arrays.dim)
    coded = compress_documents(
        doc_embeddings, arrays.centroids, arrays.bucket_cutoffs, arrays.nbits, progress=progress
    )
    return append_coded(arrays, *coded, ids)


def tombstone(
    doc_ids: Sequence[str], deleted: np.ndarray, ids: Sequence[str], live_row=None
) -> np.ndarray:
    """A new [N] deleted mask with `ids` marked; every id must name a distinct live document.
    `live_row(id)` -> row or None (an index's own lookup) spares building an id map of all N
    rows."""
    ids = list(ids)
    if not ids:
        raise InputError("no document ids to delete")
    if live_row is None:
        position = {doc_id: n for n, doc_id in enumerate(doc_ids) if not deleted[n]}
        live_row = position.get
    rows = [live_row(i) for i in ids]
    missing = [i for i, row in zip(ids, rows) if row is None]
    if missing:
        raise InputError(f"ids not in the index: {', '.join(map(repr, missing[:5]))}")
    if len(set(ids)) != len(ids):
        raise InputError("duplicate ids in the delete request")
    marked = np.array(deleted, bool)
    marked[rows] = True
    return marked


def delete_documents(arrays: IndexArrays, doc_ids: Sequence[str]) -> IndexArrays:
    """Mark documents deleted by id; every id must name a live document."""
    deleted = tombstone(arrays.doc_ids, arrays.deleted, doc_ids)
    # the rows stay: either token order is kept as it is, only the inverted lists change
    return arrays.replace(doc_ids=list(arrays.doc_ids), deleted=deleted)
