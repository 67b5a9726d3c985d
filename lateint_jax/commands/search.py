"""`lateint search INDEX_DIR "query" [...] [-k 10] [--corpus C]`: search an index, print JSON.

Each query is encoded with the model the index was built with (ColBERT for a compressed index,
the bi-encoder for a dense one) and printed as one JSON object per line:
    {"query": "...", "results": [{"id": "...", "score": 12.3}, ...]}
With --corpus (the corpus the index was built from), each result also has "title" and "text".
A k larger than the index returns every document, with a note on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from lateint_jax.data.beir import load_corpus
from lateint_jax.errors import InputError
from lateint_jax.index.open import open_index
from lateint_jax.index.warp import exact_depth, probe_depth
from lateint_jax.index_model import encoder_for_index


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index_dir", help="an index built by `lateint index`")
    parser.add_argument("queries", nargs="+", metavar="query", help="query text(s)")
    parser.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument(
        "--model",
        default=None,
        help="must name the index's model (default: the index's); for an index built from "
        "vectors, which records none, the checkpoint that encoded them",
    )
    parser.add_argument(
        "--corpus",
        help="the indexed corpus (BEIR folder, corpus.jsonl or text file): print each result's "
        "title and text too",
    )
    parser.add_argument("--exact", action="store_true", help="brute-force MaxSim")
    parser.add_argument(
        "--nprobe",
        type=int,
        default=None,
        help="WARP (the default search): centroids per query token (default "
        f"{probe_depth(10)} up to k=10, {probe_depth(100)} up to k=100, {probe_depth(101)} "
        "beyond; --nprobe 8 --rerank 48 is faster at k=10, docs/SEARCH.md)",
    )
    parser.add_argument(
        "--rerank",
        type=int,
        default=None,
        help=f"WARP: documents rescored exactly (0: none; default {exact_depth(10)} up to "
        f"k=10, {exact_depth(100)} up to k=100, then max(k, {exact_depth(101)}))",
    )
    parser.add_argument(
        "--ncells", type=int, default=None, help="PLAID (instead of WARP): centroids per token"
    )
    parser.add_argument("--ndocs", type=int, default=None, help="PLAID: docs kept by stage 3")
    parser.add_argument(
        "--centroid-score-threshold", type=float, default=None, help="PLAID: pruning threshold"
    )


def run(args) -> int:
    texts = list(args.queries)
    if any(not text.strip() for text in texts):
        raise InputError("queries must not be empty")
    if args.k <= 0:
        raise InputError(f"-k must be positive, got {args.k}")
    index = open_index(args.index_dir)
    corpus = load_corpus(args.corpus) if args.corpus else None
    if args.k > index.num_live:
        print(
            f"lateint search: note: k={args.k} is more than the {index.num_live} documents of "
            f"the index: returning all of them",
            file=sys.stderr,
        )
    knobs = {
        name: value
        for name, value in (
            ("nprobe", args.nprobe),
            ("rerank", args.rerank),
            ("ncells", args.ncells),
            ("ndocs", args.ndocs),
            ("centroid_score_threshold", args.centroid_score_threshold),
        )
        if value is not None
    }
    if knobs and args.exact:
        raise InputError("--exact takes no search options (--nprobe, --ncells, ...)")
    if set(knobs) - set(index.search_knobs):
        raise InputError(f"a {index.kind} index takes no search options (--nprobe, --ncells, ...)")
    encoder = encoder_for_index(index.metadata, args.model)
    queries = encoder.encode_queries(texts)
    if args.exact:
        hits = index.exact_search(queries, k=args.k)
    else:
        hits = index.search(queries, k=args.k, **knobs)
    for text, found in zip(texts, hits):
        results = [{"id": doc_id, "score": round(score, 6)} for doc_id, score in found]
        if corpus is not None:
            results = [{**hit, **corpus.get(hit["id"])} for hit in results]
        print(json.dumps({"query": text, "results": results}, ensure_ascii=False))
    return 0
