"""The offline demo: an index of the small corpus the package ships, built once and reused.

`serve.py` with no `--index` serves it. The index is cached under `$LATEINT_CACHE` (default
`~/.cache/lateint-jax`) in a folder named after a hash of the corpus, the model and its ColBERT
settings, so changing any of them builds a fresh one; the index writer builds aside and renames, so an interrupted build
never leaves a half index behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lateint_jax.errors import IndexFormatError
from lateint_jax.index.build import build_index
from lateint_jax.index.storage import read_metadata

DEMO_CORPUS = Path(__file__).resolve().parents[1] / "assets" / "demo_corpus.jsonl"


def cache_dir() -> Path:
    return Path(os.environ.get("LATEINT_CACHE", Path.home() / ".cache" / "lateint-jax"))


def demo_index_dir(model_name: str, settings: dict, corpus_path: Path = DEMO_CORPUS) -> Path:
    """The cache folder for this corpus, model and ColBERT settings (a change of the default's
    settings, as in issue 13, must not reuse an index its query encoder no longer matches)."""
    key = model_name.encode() + json.dumps(settings, sort_keys=True).encode()
    digest = hashlib.sha256(corpus_path.read_bytes() + key).hexdigest()[:12]
    return cache_dir() / f"demo-index-{digest}"


def build_corpus_index(encoder, corpus, index_dir: Path) -> None:
    """Encode every passage of `corpus` with `encoder` (a `CompiledColBERT`) and write the index
    (recording the model, as `lateint index` does)."""
    ids = corpus.ids
    embeddings = []
    batch = encoder.batch_buckets[-1]
    for start in range(0, len(ids), batch):
        part = ids[start : start + batch]
        embeddings.extend(encoder.encode_documents([corpus.passage(i) for i in part]))
    build_index(embeddings, ids, index_dir, encoder=encoder.colbert, overwrite=True)


def ensure_demo_index(encoder, corpus, model_name: str, log=print) -> Path:
    """The demo index folder, built on first use."""
    index_dir = demo_index_dir(model_name, encoder.colbert.config.to_dict())
    try:
        read_metadata(index_dir)
        return index_dir
    except IndexFormatError as err:  # absent or unreadable: (re)build it
        if index_dir.exists():
            log(f"rebuilding the demo index: {err}")
    log(f"building the demo index of {len(corpus)} passages at {index_dir} (once) ...")
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    build_corpus_index(encoder, corpus, index_dir)
    return index_dir
