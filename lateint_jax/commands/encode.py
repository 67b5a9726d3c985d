"""`lateint encode INPUT OUTPUT.npz --model M --kind colbert|biencoder [--queries]`.

INPUT is a text file (one text per line) or a BEIR .jsonl (`_id`, optional `title`, `text`;
title and text joined by a space, as BEIR's sentence-transformers wrapper does), both read by
lateint_jax.data.beir (lines end at "\n" only). OUTPUT is an
.npz with float32 `embeddings` (ColBERT: every token vector concatenated [sum T_i, D] plus int64
`lengths` [N]; bi-encoder: [N, H]) and `ids` when the input has them. Written atomically.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from lateint_jax.data import beir
from lateint_jax.encoders import BiEncoder, ColBERT
from lateint_jax.errors import InputError


def configure(parser) -> None:
    parser.add_argument("input", help="text file (one text per line) or BEIR corpus/queries .jsonl")
    parser.add_argument("output", help="the .npz to write")
    parser.add_argument(
        "--model", default=None, help="checkpoint dir or hub name (default: MiniLM)"
    )
    parser.add_argument(
        "--kind",
        choices=["colbert", "biencoder"],
        default="colbert",
        help="token vectors (ColBERT) or one vector per text (bi-encoder)",
    )
    parser.add_argument("--queries", action="store_true", help="encode as ColBERT queries")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per encoder call")
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="tokens per text (ColBERT: doc_maxlen, or query_maxlen with --queries)",
    )
    parser.add_argument("--bf16", action="store_true", help="bfloat16 matmuls (float32 output)")


def read_texts(path) -> tuple[list[str], list[str] | None]:
    """(texts [N], ids [N] or None) of a text file (no ids) or a BEIR .jsonl; may be empty."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file {path} does not exist")
    if path.suffix != ".jsonl":
        return beir.read_text_lines(path).texts, None
    corpus = beir.read_corpus_jsonl(path)
    return corpus.texts, corpus.ids


def save_npz(path, **arrays) -> None:
    """np.savez to a temporary file beside `path`, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def run(args) -> int:
    if not str(args.output).endswith(".npz"):
        raise InputError(f"OUTPUT must end in .npz, got {args.output}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.queries and args.kind != "colbert":
        raise InputError("--queries only applies to --kind colbert")
    texts, ids = read_texts(args.input)
    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    start = time.perf_counter()
    progress = sys.stderr.isatty()
    if args.kind == "biencoder":
        model = BiEncoder.from_pretrained(
            args.model, max_length=args.max_length, compute_dtype=dtype
        )
        arrays = {"embeddings": model.encode(texts, args.batch_size, progress=progress)}
    else:
        override = {}
        if args.max_length:
            override["query_maxlen" if args.queries else "doc_maxlen"] = args.max_length
        model = ColBERT.from_pretrained(args.model, compute_dtype=dtype, **override)
        if args.queries:
            q = model.encode_queries(texts, args.batch_size)
            vectors = list(q)
        else:
            vectors = model.encode_documents(texts, args.batch_size, progress=progress)
        dim = model.config.dim
        arrays = {
            "embeddings": np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32),
            "lengths": np.array([len(v) for v in vectors], np.int64),
        }
    if ids is not None:
        arrays["ids"] = np.array(ids, dtype=str)
    save_npz(args.output, **arrays)
    elapsed = time.perf_counter() - start
    print(
        f"encoded {len(texts)} texts into {arrays['embeddings'].shape} in {elapsed:.1f}s "
        f"-> {args.output}"
    )
    return 0
