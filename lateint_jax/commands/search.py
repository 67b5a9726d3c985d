"""`lateint search INDEX_DIR "query" [...] [-k 10] [--model M]`: search an index, print JSON.

Each query is encoded with the model the index was built with (ColBERT for a compressed index,
the bi-encoder for a dense one) and printed as one JSON object per line:
    {"query": "...", "results": [{"id": "...", "score": 12.3}, ...]}
"""

from __future__ import annotations

import argparse
import json

from lateint_jax.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index_dir", help="an index built by `lateint index`")
    parser.add_argument("queries", nargs="+", metavar="query", help="query text(s)")
    parser.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument(
        "--model", default=None, help="must name the index's model (default: the index's)"
    )
    parser.add_argument("--exact", action="store_true", help="brute-force MaxSim, not PLAID")
    parser.add_argument("--ncells", type=int, default=None, help="PLAID: centroids per token")
    parser.add_argument("--ndocs", type=int, default=None, help="PLAID: docs kept by stage 3")
    parser.add_argument(
        "--centroid-score-threshold", type=float, default=None, help="PLAID: pruning threshold"
    )


def run(args) -> int:
    from lateint_jax.index.search import load_any
    from lateint_jax.index.storage import encoder_for_index, read_metadata

    texts = [text for text in args.queries]
    if any(not text.strip() for text in texts):
        raise InputError("queries must not be empty")
    metadata = read_metadata(args.index_dir)
    encoder = encoder_for_index(metadata, args.model)
    index = load_any(args.index_dir)
    if metadata.get("kind") == "dense":
        if args.exact or args.ncells or args.ndocs or args.centroid_score_threshold is not None:
            raise InputError("--exact and the PLAID options apply to ColBERT indexes only")
        hits = index.search(encoder.encode(texts), k=args.k)
    elif args.exact:
        hits = index.exact_search(encoder.encode_queries(texts), k=args.k)
    else:
        hits = index.search(
            encoder.encode_queries(texts),
            k=args.k,
            ncells=args.ncells,
            ndocs=args.ndocs,
            centroid_score_threshold=args.centroid_score_threshold,
        )
    for text, found in zip(texts, hits):
        results = [{"id": doc_id, "score": round(score, 6)} for doc_id, score in found]
        print(json.dumps({"query": text, "results": results}, ensure_ascii=False))
    return 0
