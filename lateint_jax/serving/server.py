"""Flags, loading and the uvicorn loop behind `serve.py` and `lateint serve`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import jax
import uvicorn

from lateint_jax.data.beir import load_corpus
from lateint_jax.encoders import ColBERT, CrossEncoder
from lateint_jax.errors import InputError
from lateint_jax.index.open import open_index
from lateint_jax.index.storage import index_size_bytes, read_metadata
from lateint_jax.index_model import encoder_for_index
from lateint_jax.serving import documents_api
from lateint_jax.serving.app import create_app
from lateint_jax.serving.auth import (
    API_KEY_ENV,
    AccessPolicy,
    check_origin,
    load_api_key,
    startup_check,
)
from lateint_jax.serving.demo import DEMO_CORPUS, cache_dir, ensure_demo_index
from lateint_jax.serving.encoding import CompiledBiEncoder, CompiledColBERT
from lateint_jax.serving.engine import SearchEngine
from lateint_jax.serving.multihost import serve_multihost
from lateint_jax.serving.rerank import CompiledReranker

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index",
        help="index folder (from `lateint index`, ColBERT or bi-encoder); default: the demo "
        "index of the corpus the package ships, built with the default model on first use",
    )
    parser.add_argument(
        "--corpus",
        help="corpus.jsonl (or a BEIR folder) with the indexed texts, for titles/texts in "
        "results, reranking and explanations (default: none, ids and scores only)",
    )
    parser.add_argument(
        "--model",
        help="query encoder checkpoint (local path or hub name): ColBERT for a ColBERT index, "
        "the bi-encoder for a dense one; must be the one the index records (default: that one; "
        "for the demo, the packaged all-MiniLM-L6-v2 as ColBERT); an index built from vectors "
        "records none and needs it",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument(
        "--reranker",
        help="cross-encoder checkpoint (local path or hub name) for the rerank stage; default: "
        "none (no pretrained cross-encoder ships offline)",
    )
    parser.add_argument(
        "--rerank-depth",
        type=int,
        default=None,
        help="rerank every search to this depth unless the request says otherwise",
    )
    parser.add_argument("--max-batch", type=int, default=32, help="queries per device batch")
    parser.add_argument(
        "--max-k",
        type=int,
        default=None,
        help="largest k (and rerank depth) served, default 1000; smaller = faster warm-up",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="longest wait to fill a device batch (none right after a batch of one request: a "
        "lone client does not wait)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="seconds in-flight requests get to finish after SIGTERM/SIGINT",
    )
    parser.add_argument(
        "--keep-alive",
        type=int,
        default=65,
        help="seconds an idle HTTP connection stays open; longer than clients keep idle "
        "pooled connections (httpx 5 s), so none sends on a connection being closed",
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs in $LATEINT_CACHE/xla (restarts then compile again)",
    )
    parser.add_argument(
        "--coordinator",
        help="multi-host: HOST:PORT of process 0 for jax.distributed (all processes)",
    )
    parser.add_argument("--num-processes", type=int, default=1, help="multi-host: process count")
    parser.add_argument("--process-id", type=int, default=0, help="multi-host: this process")
    parser.add_argument(
        "--api-key-file",
        help=f"file holding the API key (else ${API_KEY_ENV}); when set, every endpoint but "
        "/health and the pages needs 'Authorization: Bearer <key>'; writes always need it",
    )
    parser.add_argument(
        "--insecure-writes",
        action="store_true",
        help="let a writable server without an API key accept unauthenticated writes",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from this origin (e.g. https://app.example.com; repeatable; "
        "default: none, CORS off)",
    )
    documents_api.configure(parser)


def access_policy(args, log=None) -> AccessPolicy:
    """The key (from --api-key-file or the environment), CORS origins and the writes rule of
    these flags; an InputError before anything loads when they do not fit together.

    `args.writable` (default False) is set by the flag that enables write endpoints."""
    key, source = load_api_key(getattr(args, "api_key_file", None))
    policy = AccessPolicy(
        api_key=key,
        insecure_writes=getattr(args, "insecure_writes", False),
        cors_origins=tuple(check_origin(o) for o in getattr(args, "cors_origin", None) or ()),
    )
    writable = getattr(args, "writable", False)
    startup_check(policy, writable)
    if log is not None:
        if key is not None:
            log(f"API key from {source}: required on every endpoint but /health and the pages")
        else:
            log("no API key: reads are open to anyone who can reach the port")
        if writable and key is None:
            log("--insecure-writes: anyone who can reach the port may change the index")
        if policy.cors_origins:
            log(f"CORS allowed for {', '.join(policy.cors_origins)}")
    return policy


def build_engine(args, log=print, wrap_index=None):
    """Load encoder, index, corpus and reranker as the flags say; warm up every shape.

    Returns (engine, info) where info feeds /stats."""
    if args.rerank_depth is not None and args.rerank_depth < 1:
        raise InputError(f"--rerank-depth must be >= 1, got {args.rerank_depth}")
    for flag, value in (("--max-batch", args.max_batch), ("--max-k", args.max_k)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if args.max_wait_ms < 0:
        raise InputError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    if args.rerank_depth is not None and not args.reranker:
        raise InputError("--rerank-depth needs --reranker")
    started = time.perf_counter()
    if args.index:
        index_dir = Path(args.index)
        log(f"loading the encoder recorded in {index_dir} ...")
        model = encoder_for_index(read_metadata(index_dir), args.model)
        corpus = load_corpus(args.corpus) if args.corpus else None
        if corpus is None:
            log("no --corpus: results carry ids and scores only (no texts, rerank, or tokens)")
    else:
        log("loading the encoder ...")
        model = ColBERT.from_pretrained(args.model)
        corpus = load_corpus(args.corpus or DEMO_CORPUS)
    compiled = CompiledColBERT if isinstance(model, ColBERT) else CompiledBiEncoder
    encoder = compiled(model, max_batch=args.max_batch)
    if not args.index:
        index_dir = ensure_demo_index(encoder, corpus, model.model_name, log=log)
    model_name = model.model_name
    log(f"loading index {index_dir} onto {jax.device_count()} device(s) ...")
    index = open_index(index_dir, devices=jax.devices())
    if wrap_index is not None:
        index = wrap_index(index)
    corpus_path = args.corpus or (None if args.index else DEMO_CORPUS)
    index, documents = documents_api.open_documents(
        args, index_dir, index, corpus, corpus_path, log
    )
    if corpus is not None and not args.writable:  # a writable store checked it when seeded
        missing = [i for i in index.live_ids if i not in corpus]
        if missing:
            raise InputError(
                f"--corpus {args.corpus} lacks {len(missing)} of the index's document ids "
                f"(e.g. {missing[0]!r}): is it the corpus this index was built from?"
            )
    reranker = None
    if args.reranker:
        log(f"loading reranker {args.reranker} ...")
        reranker = CompiledReranker(CrossEncoder.from_pretrained(args.reranker), name=args.reranker)
    engine = SearchEngine(
        index,
        encoder,
        documents.corpus_view() if args.writable else corpus,
        reranker,
        max_batch=args.max_batch,
        max_wait_s=args.max_wait_ms / 1000.0,
        default_depth=args.rerank_depth,
        max_k=args.max_k,
        documents=documents,
    )
    if args.writable:
        documents_api.attach_writer(engine, documents, args, log)
    log("compiling every request shape (warm-up) ...")
    engine.warmup(log)
    info = {
        "index_dir": str(index_dir),
        "index_bytes": int(sum(index_size_bytes(index_dir).values())),
        "model": model_name,
        "load_and_warmup_s": round(time.perf_counter() - started, 3),
    }
    log(f"ready in {info['load_and_warmup_s']:.1f} s")
    return engine, info


def banner(host: str, port: int, has_reranker: bool, needs_key: bool = False) -> str:
    url = f"http://{host}:{port}"
    body = '{"query": "how do bees find flowers", "k": 3}'
    key = ' -H "Authorization: Bearer $KEY"' if needs_key else ""
    lines = [
        f"lateint-jax is serving at {url}  (search page: {url}/ , API docs: {url}/docs)",
        "try:",
        f"  curl -s -X POST {url}/search -H 'Content-Type: application/json'{key} -d '{body}'",
    ]
    if not has_reranker:
        lines.append("no reranker loaded (pass --reranker PATH to enable the rerank stage)")
    return "\n".join(lines)


def enable_compile_cache() -> None:
    """Keep compiled programs on disk so a restart's warm-up reads them instead of compiling."""
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def serve(args) -> int:
    access_policy(args)  # bad access flags fail before anything loads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Queries past query_maxlen tokens are cut, as ColBERT does: not worth a log line per batch.
    logging.getLogger("lateint_jax.data.tokenize").setLevel(logging.ERROR)
    if not args.no_compile_cache and args.num_processes == 1:
        enable_compile_cache()
    if args.num_processes > 1:
        return serve_multihost(args, run_uvicorn)
    log = lambda message: print(message, file=sys.stderr, flush=True)
    return run_uvicorn(args, log)


def run_uvicorn(args, log, wrap_index=None) -> int:
    """Build the engine, then serve until SIGTERM/SIGINT (in-flight requests finish first)."""
    access = access_policy(args, log)
    engine, info = build_engine(args, log=log, wrap_index=wrap_index)
    app = create_app(engine, index_info=info, access=access)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=args.graceful_timeout,
        timeout_keep_alive=args.keep_alive,
    )
    print(banner(args.host, args.port, engine.reranker is not None, access.has_key), flush=True)
    GracefulServer(config).run()
    log("stopped")
    return 0


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which kills the process
    before the caller's cleanup (a multi-host server must release its peers); here the signal
    only starts the shutdown, and run() returns."""

    @contextlib.contextmanager
    def capture_signals(self):
        with super().capture_signals():
            yield
            self._captured_signals.clear()
