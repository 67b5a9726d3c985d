"""Exact evaluation of a ColBERT checkpoint on a BEIR split: exhaustive MaxSim over the whole
corpus (no index, no compression), metrics by pytrec_eval. The reference point for
`lateint evaluate`, which searches a compressed PLAID index.

    python -m lateint_jax.training.exact_eval MODEL_DIR BEIR_FOLDER [--split test]
        [--doc-maxlen 180] [--rerank-bm25 K] [--json OUT]     (MODEL_DIR "default" = untrained all-MiniLM-L6-v2)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lateint_jax.data import beir, mining
from lateint_jax.encoders import ColBERT
from lateint_jax.errors import UserError
from lateint_jax.eval import evaluate_run


def evaluate_exact(
    model, beir_folder, split: str = "test", depth: int = 100, rerank_bm25: int | None = None
) -> dict:
    """{"ndcg@10", "mrr@10", "recall@100"} of `model` (a lateint_jax.encoders.ColBERT).

    rerank_bm25=K scores only each query's BM25 top K (MaxSim re-ranking of a BM25 first
    stage): the corpus encoded shrinks to the union of those candidates.
    """
    corpus = beir.load_corpus(beir_folder).passages_by_id()
    queries = beir.load_queries(beir_folder)
    qrels = beir.load_qrels(beir_folder, split)
    judged = {q: queries[q] for q in qrels if q in queries}
    if rerank_bm25 is None:
        return evaluate_run(mining.colbert_run(model, corpus, judged, depth), qrels)
    candidates = mining.bm25_rankings(corpus, judged, rerank_bm25)
    pool = sorted({d for docs in candidates.values() for d in docs})
    scores = mining.colbert_run(model, {d: corpus[d] for d in pool}, judged, len(pool))
    run = {q: {d: scores[q][d] for d in candidates[q]} for q in judged}
    return evaluate_run(run, qrels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help='ColBERT checkpoint dir, hub name, or "default"')
    parser.add_argument("beir_folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--doc-maxlen", type=int, default=180)
    parser.add_argument(
        "--rerank-bm25",
        type=int,
        default=None,
        metavar="K",
        help="re-rank each query's BM25 top K instead of searching the corpus",
    )
    parser.add_argument("--json", default=None, help="also write the metrics here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        model = ColBERT.from_pretrained(
            None if args.model == "default" else args.model, doc_maxlen=args.doc_maxlen
        )
        metrics = evaluate_exact(model, args.beir_folder, args.split, rerank_bm25=args.rerank_bm25)
    except UserError as err:
        print(f"exact_eval: error: {err}", file=sys.stderr)
        return 2
    metrics.update(
        model=args.model,
        split=args.split,
        doc_maxlen=args.doc_maxlen,
        seconds=round(time.perf_counter() - start, 1),
    )
    print(json.dumps(metrics))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
