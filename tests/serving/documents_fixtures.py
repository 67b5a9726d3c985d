"""A tiny served corpus with metadata for the live-writes and filter tests: the tests' tiny random
model (tests/tiny_models.py) as ColBERT, a corpus.jsonl whose records carry extra fields, and
its index, loaded by `server.build_engine` as `serve.py` loads it."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from lateint_jax.encoders import ColBERT
from lateint_jax.serving.demo import build_corpus_index
from lateint_jax.serving.encoding import CompiledColBERT
from lateint_jax.serving.server import build_engine, configure
from tests.tiny_models import save_tiny_model

WORDS = [
    "tide",
    "moon",
    "ocean",
    "bee",
    "flower",
    "honey",
    "glacier",
    "ice",
    "river",
    "bread",
    "yeast",
    "oven",
    "star",
    "planet",
    "orbit",
    "virus",
    "cell",
    "immune",
    "coral",
    "reef",
    "fish",
    "volcano",
    "lava",
    "rock",
]
LANGS = ("en", "fr", "de")
MAX_BATCH = 4
MAX_K = 10


def corpus_records(count: int = 24) -> list[dict]:
    """Records with metadata: year (a number; a string "2010" for one; absent for every 7th),
    lang, a nested venue, and a boolean."""
    records = []
    for n in range(count):
        words = [WORDS[(n * 5 + j * 3) % len(WORDS)] for j in range(6 + n % 5)]
        record = {"_id": f"doc-{n:02d}", "title": f"Title {n}", "text": " ".join(words)}
        if n % 7 != 3:
            record["year"] = 2000 + n
        record["lang"] = LANGS[n % 3]
        record["metadata"] = {"venue": {"country": "ch" if n % 2 else "us"}, "open": n % 4 == 0}
        records.append(record)
    records[5]["year"] = "2010"
    return records


def flat_metadata(record: dict) -> dict:
    """What the server should store for a record (extra fields, "metadata" merged in)."""
    extra = {k: v for k, v in record.items() if k not in ("_id", "title", "text", "metadata")}
    return {**record.get("metadata", {}), **extra}


def write_corpus(folder: Path) -> Path:
    path = folder / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in corpus_records())
    return path


def build_tiny_index(folder: Path, seed: int = 0) -> dict:
    """A model folder, corpus and index under `folder`; returns their paths."""
    from lateint_jax.data.beir import load_corpus

    model_dir = folder / "model"
    save_tiny_model(model_dir, seed=seed, tokenizer=True)
    corpus_path = write_corpus(folder)
    encoder = CompiledColBERT(ColBERT.from_pretrained(str(model_dir)), max_batch=MAX_BATCH)
    index_dir = folder / "index"
    build_corpus_index(encoder, load_corpus(corpus_path), index_dir)
    return {"model": model_dir, "corpus": corpus_path, "index": index_dir}


API_KEY = "writes-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def fresh_copy(built: dict, folder: Path) -> dict:
    """`built` with its index copied into `folder` (writes change an index; the model and
    corpus stay shared)."""
    index = folder / "index"
    shutil.copytree(built["index"], index)
    return {**built, "index": index}


def key_file(paths: dict) -> str:
    """A file holding API_KEY beside the index (a writable server needs a key)."""
    path = paths["index"].parent / "api.key"
    path.write_text(API_KEY)
    return str(path)


def serve_args(paths: dict, *extra: str, compile_cache: bool = False) -> list[str]:
    if "--writable" in extra and "--api-key-file" not in extra:
        extra = (*extra, "--api-key-file", key_file(paths))
    return [
        "--index",
        str(paths["index"]),
        "--corpus",
        str(paths["corpus"]),
        "--max-batch",
        str(MAX_BATCH),
        "--max-k",
        str(MAX_K),
        *([] if compile_cache else ["--no-compile-cache"]),
        *extra,
    ]


def engine_for(paths: dict, *extra: str):
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(serve_args(paths, *extra))
    return build_engine(args, log=lambda message: None)
