"""Pass 1 of build_index: read the documents once, check them and their ids, and cut them into
chunks of about `chunk_bytes` of float32 token vectors (a chunk closes at the first document
that brings it to chunk_bytes; a longer document is a chunk of its own).

A Sequence stays where it is: chunks are read back from it by index. A one-shot iterable (a
generator) is spilled chunk by chunk to the build state (build_state.py) as float32, so later
passes read the vectors back from disk and never hold more than a chunk. Resuming, the chunks the
manifest already records are counted off the input and their ids compared with the record; their
vectors are not read again (the spill or the Sequence has them).

Shapes: N documents, T_i tokens of document i, M_k token vectors of chunk k, D embedding dim.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from lateint_jax.errors import InputError
from lateint_jax.index.build_state import BuildState, ids_digest

_END = object()


@dataclass
class Corpus:
    """What pass 1 learnt: the ids [N], lengths [N] int64, D, chunk_starts [K + 1] (chunk k holds
    documents chunk_starts[k]:chunk_starts[k + 1]), and where the vectors are read back from
    (`documents` for a Sequence, else the spill files of `state`)."""

    ids: list[str]
    lengths: np.ndarray
    dim: int
    chunk_starts: np.ndarray
    state: BuildState
    documents: Sequence | None

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_starts) - 1

    def chunk_tokens(self, chunk: int) -> int:
        lo, hi = self.chunk_starts[chunk], self.chunk_starts[chunk + 1]
        return int(self.lengths[lo:hi].sum())

    def token_offsets(self, chunk: int) -> np.ndarray:
        """Where chunk `chunk`'s documents start inside the chunk: [N_k + 1] int64."""
        lo, hi = self.chunk_starts[chunk], self.chunk_starts[chunk + 1]
        return np.concatenate([[0], np.cumsum(self.lengths[lo:hi])]).astype(np.int64)

    def read_chunk(self, chunk: int) -> np.ndarray:
        """Chunk `chunk`'s token vectors, documents end to end: [M_k, D] float32."""
        if self.documents is None:
            return np.asarray(self.state.read_spill(chunk), np.float32)
        lo, hi = self.chunk_starts[chunk], self.chunk_starts[chunk + 1]
        return np.concatenate([np.asarray(self.documents[i], np.float32) for i in range(lo, hi)])

    def read_documents(self, indices: np.ndarray) -> list[np.ndarray]:
        """The documents at sorted `indices`, float32 [T_i, D] each; a spilled chunk is opened
        once for all of its documents."""
        if self.documents is not None:
            return [np.asarray(self.documents[i], np.float32) for i in indices]
        out = []
        chunk_of = np.searchsorted(self.chunk_starts, indices, "right") - 1
        for chunk in np.unique(chunk_of):
            spill = self.state.read_spill(int(chunk))
            lo, offsets = self.chunk_starts[chunk], self.token_offsets(int(chunk))
            for i in indices[chunk_of == chunk]:
                out.append(np.array(spill[offsets[i - lo] : offsets[i - lo + 1]], np.float32))
        return out


def check_document(embeddings, doc_id: str, dim: int | None) -> int:
    """A document must be [T, D] with T >= 1, D = dim (when given) and finite values; -> D."""
    shape = getattr(embeddings, "shape", None)
    if shape is None or len(shape) != 2:
        raise InputError(f"document {doc_id!r}: embeddings must be [T, D], got shape {shape}")
    if shape[0] == 0:
        raise InputError(f"document {doc_id!r} has zero token vectors")
    if dim is not None and shape[1] != dim:
        raise InputError(f"document {doc_id!r} has dim {shape[1]}, expected {dim}")
    if not np.isfinite(embeddings).all():
        raise InputError(f"document {doc_id!r} has NaN or infinite values")
    return int(shape[1])


class _IdChecker:
    """Ids must be non-empty strings and unique across the whole input."""

    def __init__(self):
        self.seen: set[str] = set()

    def __call__(self, doc_id) -> str:
        if not isinstance(doc_id, str) or not doc_id:
            raise InputError(f"document ids must be non-empty strings, got {doc_id!r}")
        if doc_id in self.seen:
            raise InputError(f"duplicate document ids: {doc_id!r}")
        self.seen.add(doc_id)
        return doc_id


def _pairs(documents: Iterable, doc_ids: Iterable) -> Iterator[tuple]:
    """(document, id) pairs; InputError when one input runs out before the other."""
    ids = iter(doc_ids)
    count = 0
    for document in documents:
        doc_id = next(ids, _END)
        if doc_id is _END:
            raise InputError(f"doc_ids ran out after {count} ids: there are more documents")
        yield document, doc_id
        count += 1
    extra = sum(1 for _ in ids)
    if extra:
        raise InputError(f"got {count} documents but {count + extra} ids")


def _take(pairs: Iterator, count: int) -> list[tuple]:
    return [pair for _, pair in zip(range(count), pairs)]


def _replay_chunk(state: BuildState, chunk: int, pairs: Iterator, check_id) -> list[str]:
    """Count a recorded chunk's documents off the input and check their ids; -> the ids."""
    record = state.chunks[chunk]
    ids = [check_id(doc_id) for _, doc_id in _take(pairs, record["docs"])]
    if len(ids) != record["docs"] or ids_digest(ids) != record["ids_sha256"]:
        raise InputError(
            f"the documents differ from the interrupted build in {state.folder}: chunk {chunk} "
            f"(starting at document {record['first_id']!r}) had {record['docs']} documents with "
            f"other ids; resume needs the same documents, in the same order"
        )
    return ids


def _new_chunk(pairs: Iterator, check_id, dim, chunk_bytes: int):
    """Read documents until they hold chunk_bytes of float32: -> (docs, ids, dim); empty lists
    at the end of the input."""
    docs, ids, held = [], [], 0
    for document, doc_id in pairs:
        ids.append(check_id(doc_id))
        dim = check_document(document, doc_id, dim)
        docs.append(document)
        held += document.shape[0] * dim * 4
        if held >= chunk_bytes:
            break
    return docs, ids, dim


def ingest(
    documents: Iterable,
    doc_ids: Iterable,
    state: BuildState,
    chunk_bytes: int,
    *,
    progress: bool = False,
) -> Corpus:
    """Pass 1 (see the module docstring): -> the Corpus; the manifest records every chunk."""
    is_sequence = isinstance(documents, Sequence)
    if is_sequence and isinstance(doc_ids, Sequence) and len(doc_ids) != len(documents):
        raise InputError(f"got {len(documents)} documents but {len(doc_ids)} ids")
    total = len(documents) if hasattr(documents, "__len__") else None
    bar = tqdm(total=total, desc="read", unit="doc", disable=not progress)
    pairs, check_id = _pairs(documents, doc_ids), _IdChecker()
    all_ids, dim, chunk = [], state.manifest["dim"], 0
    while True:
        if chunk < len(state.chunks):
            ids = _replay_chunk(state, chunk, pairs, check_id)
        else:
            docs, ids, dim = _new_chunk(pairs, check_id, dim, chunk_bytes)
            if not docs:
                break
            _save_chunk(state, chunk, docs, ids, dim, spill=not is_sequence)
        all_ids.extend(ids)
        bar.update(len(ids))
        chunk += 1
    bar.close()
    if not all_ids:
        raise InputError("the corpus is empty: no documents to index")
    state.manifest["input_complete"] = True
    state.save_manifest()
    return _corpus(state, all_ids, documents if is_sequence else None)


def _save_chunk(state: BuildState, chunk: int, docs, ids, dim: int, spill: bool) -> None:
    lengths = np.array([d.shape[0] for d in docs], np.int64)
    if state.manifest["input_complete"]:
        raise InputError(
            f"there are more documents than in the interrupted build in {state.folder} "
            f"(from {ids[0]!r} on); resume needs the same documents"
        )
    if spill:
        state.write_spill(chunk, np.concatenate([np.asarray(d, np.float32) for d in docs]))
    state.write_lengths(chunk, lengths)
    state.manifest["dim"] = dim
    state.record_chunk(ids, int(lengths.sum()), spilled=spill)


def _corpus(state: BuildState, ids: list[str], documents: Sequence | None) -> Corpus:
    counts = [record["docs"] for record in state.chunks]
    chunk_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    lengths = np.concatenate([state.read_lengths(k) for k in range(len(counts))])
    return Corpus(ids, lengths, int(state.manifest["dim"]), chunk_starts, state, documents)
