"""The documents side of the server: its flags, opening the document store at start-up, and the
`/documents` routes (an APIRouter whose writes need `auth.write_access`, reads `read_access`).

    POST   /documents          {"id", "text", "title"?, "metadata"?} or {"documents": [...]}
    DELETE /documents/{id}
    GET    /documents/{id}     title, text, metadata, and whether the index holds it

Rules and guarantees: docs/SERVING.md, "Live writes" and "Metadata filters".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lateint_jax.data.beir import Corpus
from lateint_jax.errors import InputError
from lateint_jax.serving.auth import read_access, write_access
from lateint_jax.serving.document_store import DocumentStore, corpus_metadata
from lateint_jax.serving.live_writes import STORE_ID, UnknownDocument, WriteOp, Writer, replay
from lateint_jax.serving.schemas import LIMITS

MAX_DOCUMENTS = 64  # per POST
MAX_ID_CHARS = 256
MAX_METADATA_CHARS = 16_384  # the metadata object as JSON


# ---------------------------------------------------------------- flags and start-up
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--writable",
        action="store_true",
        help="accept POST /documents and DELETE /documents/{id}, logged durably in --documents-db "
        "and applied to the served index",
    )
    parser.add_argument(
        "--documents-db",
        help="SQLite file of document texts, metadata and the write log (default: "
        "INDEX_DIR.documents.sqlite beside the index folder)",
    )
    parser.add_argument(
        "--compact-every",
        type=int,
        default=1000,
        help="save the index and empty the write log after this many writes (and at shutdown)",
    )
    parser.add_argument(
        "--compact-tokens",
        type=int,
        default=None,
        help="also compact (merge the write segment into the index and save it) when the "
        "segment holds more than this many tokens (default: about one main-index search's "
        "work, the index's centroids + 64 x its mean document length; docs/SERVING.md)",
    )


def default_db_path(index_dir: Path) -> Path:
    return index_dir.with_name(index_dir.name + ".documents.sqlite")


def _seed_rows(index, corpus: Corpus | None, corpus_path):
    metadata = dict(corpus_metadata(corpus_path)) if corpus_path is not None else {}
    for doc_id in index.live_ids:
        fields = corpus.get(doc_id) if corpus is not None else {}
        yield doc_id, fields.get("title", ""), fields.get("text"), metadata.get(doc_id, {})


def open_documents(args, index_dir: Path, index, corpus: Corpus | None, corpus_path, log):
    """-> (index, store or None). Read-only with a corpus: an in-memory store of its texts and
    metadata (for filters). --writable: the store file, tied to this index folder on first
    use, and the index with the logged writes it lacks replayed."""
    if not args.writable:
        if corpus is None:
            return index, None
        store = DocumentStore.in_memory()
        store.seed(_seed_rows(index, corpus, corpus_path), "read-only")
        return index, store
    if getattr(args, "num_processes", 1) > 1 and index.writable() is None:
        raise InputError(
            f"--writable with --num-processes > 1 needs a late-interaction index ({index_dir} "
            f"is a {index.kind} index, re-laid out on every write): serve it from one process"
        )
    path = Path(args.documents_db) if args.documents_db else default_db_path(index_dir)
    log(f"documents and write log: {path}")
    store = DocumentStore(path)
    tied_to = index.metadata.get(STORE_ID)
    if not store.seeded:
        missing = [i for i in index.live_ids if corpus is not None and i not in corpus]
        if missing:
            raise InputError(
                f"--corpus lacks {len(missing)} of the index's document ids (e.g. "
                f"{missing[0]!r}): is it the corpus this index was built from?"
            )
        store_id = tied_to or DocumentStore.new_store_id()
        if tied_to is None:  # the index records its store before the store exists
            index.metadata[STORE_ID] = store_id
            index.save()
        count = store.seed(_seed_rows(index, corpus, corpus_path), store_id)
        log(f"recorded {count} documents in {path}")
    elif store.setting("store_id") != tied_to:
        raise InputError(
            f"--documents-db {path} belongs to another index than {index_dir} (store "
            f"{store.setting('store_id')}, index {tied_to}); point --documents-db elsewhere"
        )
    return replay(index, store, log), store


def attach_writer(engine, store: DocumentStore, args, log) -> None:
    """Let `engine` take writes (`engine.close()` then saves the index)."""
    engine.writer = Writer(
        engine,
        store,
        compact_every=args.compact_every,
        compact_tokens=args.compact_tokens,
        log=log,
    )


# ---------------------------------------------------------------- request bodies
class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    text: str = Field(min_length=1, max_length=LIMITS.max_passage_chars)
    title: str = Field(default="", max_length=LIMITS.max_passage_chars)
    metadata: dict = Field(default_factory=dict, description="Any JSON object (filterable).")

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value):
        if not value.strip():
            raise ValueError("text must not be empty or only whitespace")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value):
        if len(json.dumps(value, ensure_ascii=False)) > MAX_METADATA_CHARS:
            raise ValueError(f"metadata is longer than {MAX_METADATA_CHARS} characters as JSON")
        return value


class WriteRequest(BaseModel):
    """One document (`id`, `text`, optional `title` and `metadata`) or `documents`: many,
    applied together (all or none)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"id": "doc-1", "text": "Bees find flowers by scent.", "metadata": {}}]
        },
    )
    id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    text: str | None = None
    title: str | None = None
    metadata: dict | None = None
    documents: list[DocumentIn] | None = Field(default=None, min_length=1, max_length=MAX_DOCUMENTS)

    @model_validator(mode="after")
    def _one_form(self):
        single = {"id": self.id, "text": self.text, "title": self.title, "metadata": self.metadata}
        given = [name for name, value in single.items() if value is not None]
        if self.documents is not None:
            if given:
                raise ValueError(f"give 'documents' or one document, not both (also got {given})")
            seen = set()
            for number, document in enumerate(self.documents):
                if document.id in seen:
                    raise ValueError(f"documents[{number}].id {document.id!r} appears twice")
                seen.add(document.id)
        elif self.id is None or self.text is None:
            raise ValueError("give 'id' and 'text' (one document) or 'documents'")
        return self

    def items(self) -> list[DocumentIn]:
        if self.documents is not None:
            return list(self.documents)
        single = {"id": self.id, "text": self.text, "title": self.title or ""}
        return [DocumentIn(**single, metadata=self.metadata or {})]


class WriteResponse(BaseModel):
    ids: list[str]
    seqs: list[int] = Field(description="Each write's position in the log (grows by write).")
    write_ms: float


class DocumentOut(BaseModel):
    id: str
    title: str | None
    text: str | None
    metadata: dict
    indexed: bool


def _error(status: int, field: str, message: str) -> JSONResponse:
    detail = [{"field": field, "message": message}]
    return JSONResponse(status_code=status, content={"error": message, "detail": detail})


# ---------------------------------------------------------------- routes
def documents_router(engine) -> APIRouter:
    """The /documents routes over `engine` (its `documents` store, and `writer` if writable)."""
    router = APIRouter(tags=["documents"])
    read_only = (
        "this server does not take writes (start it with --writable)",
        {403: {"description": "The server was started without --writable."}},
    )

    write = [Depends(write_access)]

    @router.post(
        "/documents", response_model=WriteResponse, responses=read_only[1], dependencies=write
    )
    async def write_documents(body: WriteRequest):
        """Add documents, or replace those whose id exists (text, title and metadata all
        replaced). Answered once the write is durable and searchable."""
        if engine.writer is None:
            return _error(403, "body", read_only[0])
        ops = [
            WriteOp("upsert", d.id, d.title, d.text, d.metadata) for d in body.items()
        ]  # fmt: skip
        result = await engine.writer.submit(ops)
        return {"ids": result.ids, "seqs": result.seqs, "write_ms": round(result.ms, 3)}

    @router.delete(
        "/documents/{doc_id:path}",
        response_model=WriteResponse,
        responses=read_only[1],
        dependencies=write,
    )
    async def delete_document(doc_id: str):
        """Delete one document; 404 when no live document has this id."""
        if engine.writer is None:
            return _error(403, "id", read_only[0])
        try:
            result = await engine.writer.submit([WriteOp("delete", doc_id)])
        except UnknownDocument as err:
            return _error(404, "id", str(err))
        return {"ids": result.ids, "seqs": result.seqs, "write_ms": round(result.ms, 3)}

    @router.get(
        "/documents/{doc_id:path}",
        response_model=DocumentOut,
        dependencies=[Depends(read_access)],
    )
    async def get_document(doc_id: str):
        """A document's stored title, text and metadata, and whether searches can return it."""
        with engine.index_lock:
            stored = engine.documents.get(doc_id)
            indexed = engine.is_live(doc_id)
        if stored is None and not indexed:
            return _error(404, "id", f"id: no document {doc_id!r}")
        return {
            "id": doc_id,
            "title": None if stored is None else stored.title,
            "text": None if stored is None else stored.text,
            "metadata": {} if stored is None else stored.metadata,
            "indexed": indexed,
        }

    return router
