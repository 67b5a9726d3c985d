"""Live writes: upserts and deletes applied to the served index, durable before they are
acknowledged, and replayed after a crash.

A request (one or many documents) is one item of a `Batcher`; its worker thread takes a few
requests at a time and
1. encodes the texts to upsert (outside any lock: searches go on);
2. checks each request against the current documents (a delete of an unknown id fails that
   request alone) and works out the batch's final state of every id it touches;
3. makes the next snapshot of the served index. A late-interaction index is served as a
   `SegmentedIndex` (`Index.writable()`): the deleted and replaced ids become tombstones in the
   main index's live mask and the new documents are coded with its codec and appended to a
   small write segment scored exactly beside it (milliseconds, nothing compiled unless the
   segment crosses a size step, and that compile happens here, before the swap). A kind
   without a writable form (single-vector) is copied with `Index.delete` / `Index.add`, a full
   re-layout, and warmed up for the engine's request shapes;
4. under the engine's index lock: commits the log rows and the metadata to SQLite (the
   durability point), then swaps the new snapshot in; the next search sees the write;
5. acknowledges the requests.
Every `compact_every` writes, whenever the write segment holds more than `compact_tokens`
tokens (by default `SegmentedIndex.segment_token_bound`: about one main-index search's work),
and at shutdown, a compaction merges the write segment into the main index (one at a time):
a background thread lays the merged index out, warms it up and saves it
(atomically, recording the last write it holds as metadata["applied_write_seq"]) while
searches and writes go on, then swaps it in with the writes made meanwhile carried over
(`SegmentedIndex.rebased`) and drops the log through that seq. At start-up, `replay` applies
the log rows newer than that seq (rebuilding the write segment). A POST of an existing id
replaces it (delete + add): the last write of an id wins.

Einsum letters: T document tokens, D dim.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from lateint_jax.data.beir import passage_text
from lateint_jax.errors import InputError
from lateint_jax.serving.batching import Batcher
from lateint_jax.serving.document_store import DocumentStore, StoredDocument

APPLIED_SEQ = "applied_write_seq"
STORE_ID = "write_store_id"


class UnknownDocument(InputError):
    """A delete names an id that is not live (the API answers 404)."""


@dataclass(frozen=True)
class WriteOp:
    op: str  # "upsert" or "delete"
    doc_id: str
    title: str = ""
    text: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass
class WriteResult:
    ids: list[str]
    seqs: list[int]
    ms: float


def _as_added(index, vectors: list[np.ndarray]):
    """Vectors as `index.add` takes them: [T_i, D] each, or one [N, H] block (single-vector)."""
    return np.concatenate(vectors) if index.query_rank == 2 else vectors


def next_index(index, removed: list[str], added: dict[str, np.ndarray]):
    """A copy of `index` with `removed` deleted then `added` added; `index` stays as it was
    (add/delete replace the copy's arrays and placement, they do not modify the old ones)."""
    if not removed and not added:
        return index
    updated = copy.copy(index)
    if removed:
        updated.delete(removed)
    if added:
        updated.add(_as_added(index, list(added.values())), list(added))
    return updated


def _final_writes(rows) -> dict[str, np.ndarray | None]:
    """Log rows -> each id's last write (its vectors, None for a delete), in last-write order."""
    final: dict[str, np.ndarray | None] = {}
    for row in rows:
        final.pop(row.doc_id, None)
        final[row.doc_id] = row.vectors
    return final


def replay(index, store: DocumentStore, log=print):
    """The index to serve, with the logged writes it does not hold applied: its writable form
    (the writes in its write segment) where it has one, else a re-laid-out copy (its applied
    seq recorded in memory; the next save writes it)."""
    applied = int(index.metadata.get(APPLIED_SEQ, 0))
    served = index.writable()
    if served is not None:
        served.write_seq = applied
    rows = store.logged_after(applied, index.dim)
    if not rows:
        return index if served is None else served
    final = _final_writes(rows)
    current = index if served is None else served
    removed = [i for i in final if i in current]
    added = {i: v for i, v in final.items() if v is not None}
    log(f"replaying {len(rows)} logged writes ({len(added)} upserts, seq {rows[-1].seq})")
    if served is not None:
        served = served.with_writes(removed, added)
        served.write_seq = rows[-1].seq
        return served
    index = next_index(index, removed, added)
    index.metadata[APPLIED_SEQ] = rows[-1].seq
    return index


class Writer:
    """Applies write requests to `engine` (its `index`, `documents` and index lock)."""

    def __init__(
        self,
        engine,
        store: DocumentStore,
        *,
        compact_every: int = 1000,
        compact_tokens: int | None = None,
        max_batch: int = 16,
        max_wait_s: float = 0.002,
        log=print,
    ):
        if compact_every < 1:
            raise InputError(f"--compact-every must be >= 1, got {compact_every}")
        if compact_tokens is not None and compact_tokens < 1:
            raise InputError(f"--compact-tokens must be >= 1, got {compact_tokens}")
        self.engine = engine
        self.store = store
        self.compact_every = compact_every
        self.compact_tokens = compact_tokens  # None: the index's own bound
        self.log = log
        self.unsaved = store.log_size()
        # a segmented index (the engine serves its writable form) or a re-laid-out copy each time
        self.segmented = engine.index.writable() is engine.index
        self._swap_lock = threading.Lock()  # one batch's swap, or a compaction's, at a time
        self._compaction: threading.Thread | None = None
        self._warming: threading.Thread | None = None
        self.compactions = 0
        self.batcher = Batcher(
            self._apply, max_batch=max_batch, max_wait_s=max_wait_s, name="writes"
        )

    async def submit(self, ops: list[WriteOp]) -> WriteResult:
        outcome = await asyncio.wrap_future(self.batcher.submit(list(ops)))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def close(self) -> None:
        """Serve queued writes, finish a running compaction, then merge and save what remains
        so the next start replays nothing."""
        self.batcher.close()
        self.wait_for_background()
        if self.unsaved:
            if self.segmented:
                self._compact(warm=False)
            else:
                self._save()

    @property
    def compacting(self) -> bool:
        return self._compaction is not None and self._compaction.is_alive()

    def wait_for_background(self) -> None:
        """Wait for a running compaction and step warm-up (tests, shutdown)."""
        for thread in (self._compaction, self._warming):
            if thread is not None:
                thread.join()

    # ---------------------------------------------------------------- the batch function
    def _encode(self, requests: list[list[WriteOp]]) -> dict[int, np.ndarray]:
        """id(op) -> its document vectors [T, D], for every upsert of the batch."""
        upserts = [op for ops in requests for op in ops if op.op == "upsert"]
        encoder = self.engine.encoder
        step = max(1, getattr(encoder, "max_batch", 32))
        vectors: dict[int, np.ndarray] = {}
        for start in range(0, len(upserts), step):
            part = upserts[start : start + step]
            encoded = encoder.encode_documents([passage_text(o.title, o.text) for o in part])
            vectors.update({id(o): np.asarray(v, np.float32) for o, v in zip(part, encoded)})
        return vectors

    def _plan(self, requests, vectors):
        """Check each request in order against the documents as the earlier ones leave them.
        -> (per request: None or its error, the ops kept in order, final state per id)."""
        index = self.engine.index
        final: dict[str, WriteOp | None] = {}
        errors: list[Exception | None] = []
        kept: list[WriteOp] = []
        for ops in requests:
            tentative = dict(final)
            error = None
            for number, op in enumerate(ops):
                present = (
                    tentative[op.doc_id] is not None
                    if op.doc_id in tentative
                    else (op.doc_id in index)
                )
                if op.op == "delete" and not present:
                    error = UnknownDocument(f"id: no document {op.doc_id!r} to delete")
                    break
                if op.op == "upsert" and vectors[id(op)].shape[0] == 0:
                    error = InputError(f"documents[{number}].text: no tokens to index")
                    break
                tentative.pop(op.doc_id, None)
                tentative[op.doc_id] = op if op.op == "upsert" else None
            errors.append(error)
            if error is None:
                final = tentative
                kept.extend(ops)
        return errors, kept, final

    def _next(self, index, removed: list[str], added: dict[str, np.ndarray]):
        """The snapshot to serve after these writes (the served one is left as it is)."""
        if self.segmented:
            return index.with_writes(removed, added)
        updated = next_index(index, removed, added)
        # A changed layout can need programs of new static sizes: compile them here, so
        # that no search compiles (they all run on the served index meanwhile).
        updated.warmup(self.engine.request_shapes())
        return updated

    def _apply(self, requests: list[list[WriteOp]]) -> list:
        started = time.perf_counter()
        try:
            vectors = self._encode(requests)
        except Exception as err:  # noqa: BLE001 - every request of the batch hears it
            return [err] * len(requests)
        errors, kept, final = self._plan(requests, vectors)
        if not kept:
            return errors
        writes = [(op.op, op.doc_id, vectors.get(id(op))) for op in kept]
        documents = [
            StoredDocument(i, op.title, op.text, op.metadata)
            for i, op in final.items()
            if op is not None
        ]
        with self._swap_lock:
            index = self.engine.index
            removed = [i for i in final if i in index]
            added = {i: vectors[id(op)] for i, op in final.items() if op is not None}
            try:
                updated = self._next(index, removed, added)
            except Exception as err:  # noqa: BLE001
                return [err if e is None else e for e in errors]
            with self.engine.index_lock:
                try:
                    seqs = self.store.commit_writes(writes, documents)
                except Exception as err:  # noqa: BLE001 - nothing written: the served index stays
                    return [err if e is None else e for e in errors]
                if self.segmented:
                    updated.write_seq = seqs[-1]
                else:
                    updated.metadata[APPLIED_SEQ] = seqs[-1]
                self.engine.replace_index(updated)
        ms = (time.perf_counter() - started) * 1000.0
        self.unsaved += len(seqs)
        results, position = [], 0
        for ops, error in zip(requests, errors):
            if error is not None:
                results.append(error)
                continue
            results.append(
                WriteResult([o.doc_id for o in ops], seqs[position : position + len(ops)], ms)
            )
            position += len(ops)
        if not self.segmented:
            if self.unsaved >= self.compact_every:
                self._save()
            return results
        if not self.compacting and (
            self.unsaved >= self.compact_every or self._segment_too_big(updated)
        ):
            self._start_compaction()
        if updated.next_step_due():  # a compaction can take long: the segment grows meanwhile
            self._warming = self._start(self._warming, updated.warm_next_step, "segment-warmup")
        return results

    def _segment_too_big(self, index) -> bool:
        bound = self.compact_tokens or index.segment_token_bound()
        if index.delta.num_tokens <= bound:
            return False
        self.log(f"compacting: the write segment holds {index.delta.num_tokens} tokens (> {bound})")
        return True

    # ---------------------------------------------------------------- compaction and saves
    def _start(self, running: threading.Thread | None, target, name: str) -> threading.Thread:
        if running is not None and running.is_alive():
            return running
        thread = threading.Thread(target=self._logged(target), name=name, daemon=True)
        thread.start()
        return thread

    def _logged(self, target):
        def run():
            try:
                target()
            except Exception as err:  # noqa: BLE001 - a background failure must not pass silently
                self.log(f"{threading.current_thread().name} failed: {err!r}")

        return run

    def _start_compaction(self) -> None:
        self._compaction = self._start(self._compaction, self._compact, "compaction")

    def _compact(self, warm: bool = True) -> None:
        """Merge the write segment into the main index and save it, while searches and writes
        go on; then swap it in with the writes made meanwhile carried over."""
        started = time.perf_counter()
        snapshot = self.engine.index
        merged = snapshot.merge()
        if warm:
            merged.warmup(self.engine.request_shapes())
        merged.metadata[APPLIED_SEQ] = snapshot.write_seq
        merged.save()
        with self._swap_lock:
            rebased = self.engine.index.rebased(merged, snapshot)
            with self.engine.index_lock:
                self.engine.replace_index(rebased)
        self.store.drop_log_through(snapshot.write_seq)
        self.unsaved = self.store.log_size()
        self.compactions += 1
        self.log(
            f"compacted and saved the index through write {snapshot.write_seq} in "
            f"{time.perf_counter() - started:.1f} s"
        )

    def _save(self) -> None:
        index = self.engine.index
        seq = int(index.metadata.get(APPLIED_SEQ, 0))
        started = time.perf_counter()
        index.save()
        self.store.drop_log_through(seq)
        self.unsaved = self.store.log_size()
        self.log(f"saved the index through write {seq} in {time.perf_counter() - started:.1f} s")
