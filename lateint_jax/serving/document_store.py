"""The server's documents in SQLite (stdlib sqlite3): texts, JSON metadata, and the write log.

Tables:
    documents(id, title, text, metadata)   one row per live document; metadata is a JSON object
                                           (text is NULL for a document whose text is unknown)
    write_log(seq, op, doc_id, vectors, rows)
                                           each acknowledged write not yet in the saved index:
                                           op "upsert" with its encoded vectors (float32 [rows,
                                           D] as bytes) or "delete"; seq only ever grows
    settings(key, value)                   store_id (ties the file to one index folder), seeded

A write commits its log rows and its `documents` changes in one transaction (WAL journal,
synchronous=FULL), so after a crash either all of a write is on disk or none of it. The file is
a sibling of the index folder by default (`INDEX_DIR.documents.sqlite`): the index folder is
replaced as a whole when saved (index/storage.py), which would take a file inside it along.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lateint_jax.data.beir import passage_text, read_json_lines
from lateint_jax.errors import InputError
from lateint_jax.serving.filters import CompiledFilter

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    text TEXT,
    metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata))
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS write_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    doc_id TEXT NOT NULL,
    vectors BLOB,
    rows INTEGER
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
CORPUS_FIELDS = ("_id", "title", "text")


@dataclass(frozen=True)
class StoredDocument:
    id: str
    title: str
    text: str | None
    metadata: dict


@dataclass(frozen=True)
class LoggedWrite:
    """One row of the write log: an upsert carries the document's vectors, a delete none."""

    seq: int
    op: str
    doc_id: str
    vectors: np.ndarray | None


def corpus_metadata(path) -> Iterator[tuple[str, dict]]:
    """(id, metadata) for each record of a BEIR corpus .jsonl (or a BEIR folder's): every field
    but _id, title and text; a "metadata" object is merged into the top level (BEIR's
    convention). A plain text corpus has no metadata (nothing is yielded)."""
    path = Path(path)
    if path.is_dir():
        path = path / "corpus.jsonl"
    if path.suffix != ".jsonl":
        return
    for _, record in read_json_lines(path):
        extra = {k: v for k, v in record.items() if k not in CORPUS_FIELDS}
        nested = extra.pop("metadata", None)
        if isinstance(nested, dict):
            extra = {**nested, **extra}
        elif nested is not None:
            extra["metadata"] = nested
        yield str(record["_id"]), extra


class DocumentStore:
    """One SQLite database, safe to share between threads (one connection behind a lock)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            if self.path != ":memory:":
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise InputError(f"{self.path}: SQLite could not use a WAL journal ({mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    @classmethod
    def in_memory(cls) -> DocumentStore:
        return cls(":memory:")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ settings
    def setting(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @property
    def seeded(self) -> bool:
        return self.setting("seeded") == "1"

    def seed(self, rows: Iterable[tuple[str, str, str | None, dict]], store_id: str) -> int:
        """Fill `documents` once (id, title, text, metadata) and record store_id; one
        transaction, so a crash leaves the store unseeded."""
        count = 0

        def encoded():
            nonlocal count
            for doc_id, title, text, metadata in rows:
                count += 1
                yield doc_id, title, text, json.dumps(metadata, ensure_ascii=False)

        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM documents")
                self._db.executemany(
                    "INSERT INTO documents (id, title, text, metadata) VALUES (?, ?, ?, ?)",
                    encoded(),
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                    [("store_id", store_id), ("seeded", "1")],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return count

    @staticmethod
    def new_store_id() -> str:
        return uuid.uuid4().hex

    # ------------------------------------------------------------------ writes
    def commit_writes(
        self, writes: list[tuple[str, str, np.ndarray | None]], upserts: list[StoredDocument]
    ) -> list[int]:
        """In one transaction: append (op, doc_id, vectors) to the log in order, and bring
        `documents` to the batch's final state (`upserts` replace rows; ids deleted by the
        log rows and not upserted afterwards lose theirs). Returns each log row's seq."""
        final = {d.id: d for d in upserts}
        deleted = {doc_id for op, doc_id, _ in writes if op == "delete"} - set(final)
        seqs = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for op, doc_id, vectors in writes:
                    blob = None if vectors is None else np.ascontiguousarray(vectors, "<f4")
                    cursor = self._db.execute(
                        "INSERT INTO write_log (op, doc_id, vectors, rows) VALUES (?, ?, ?, ?)",
                        (
                            op,
                            doc_id,
                            None if blob is None else blob.tobytes(),
                            None if blob is None else blob.shape[0],
                        ),
                    )
                    seqs.append(int(cursor.lastrowid))
                self._db.executemany("DELETE FROM documents WHERE id = ?", [(i,) for i in deleted])
                self._db.executemany(
                    "INSERT OR REPLACE INTO documents (id, title, text, metadata) "
                    "VALUES (?, ?, ?, ?)",
                    [
                        (d.id, d.title, d.text, json.dumps(d.metadata, ensure_ascii=False))
                        for d in final.values()
                    ],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return seqs

    def logged_after(self, seq: int, dim: int) -> list[LoggedWrite]:
        """Log rows with a seq above `seq`, oldest first (what a saved index does not hold)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, op, doc_id, vectors, rows FROM write_log WHERE seq > ? ORDER BY seq",
                (seq,),
            ).fetchall()
        return [
            LoggedWrite(
                s,
                op,
                doc_id,
                None if blob is None else np.frombuffer(blob, "<f4").reshape(n, dim).copy(),
            )
            for s, op, doc_id, blob, n in rows
        ]

    def last_seq(self) -> int:
        """The highest seq ever given (0 before the first write)."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'write_log'"
            ).fetchone()
        return 0 if row is None else int(row[0])

    def drop_log_through(self, seq: int) -> None:
        """Forget log rows up to `seq` (the saved index holds them)."""
        with self._lock:
            self._db.execute("DELETE FROM write_log WHERE seq <= ?", (seq,))

    def log_size(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM write_log").fetchone()[0])

    # ------------------------------------------------------------------ reads
    def get(self, doc_id: str) -> StoredDocument | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, title, text, metadata FROM documents WHERE id = ?", (doc_id,)
            ).fetchone()
        if row is None:
            return None
        return StoredDocument(row[0], row[1], row[2], json.loads(row[3]))

    def ids(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT id FROM documents")]

    def matching_ids(self, where: CompiledFilter) -> set[str]:
        """Ids of the documents whose metadata satisfies the compiled filter."""
        with self._lock:
            rows = self._db.execute(f"SELECT id FROM documents WHERE {where.sql}", where.params)
            return {row[0] for row in rows}

    def corpus_view(self) -> StoredCorpus:
        return StoredCorpus(self)


class StoredCorpus:
    """The store as the engine's corpus (`Corpus`'s get / passage / in), always current."""

    def __init__(self, store: DocumentStore):
        self.store = store

    def _text(self, doc_id: str) -> StoredDocument | None:
        document = self.store.get(doc_id)
        return None if document is None or document.text is None else document

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self._text(doc_id) is not None

    def get(self, doc_id: str) -> dict[str, str]:
        document = self._text(doc_id)
        return {} if document is None else {"title": document.title, "text": document.text}

    def passage(self, doc_id: str) -> str:
        document = self._text(doc_id)
        if document is None:
            raise InputError(f"rerank: the server has no text for document {doc_id!r}")
        return passage_text(document.title, document.text)
