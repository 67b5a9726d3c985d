"""Hierarchical token pooling at index time (`lateint index --pool-factor N`): its effect on
quality and size, SciFact test, the default ColBERT, exact MaxSim (no index), pytrec_eval.

    python benchmarks/token_pooling.py [--factors 1 2 3 4] [--cache DIR]

Documents are encoded once as the default encodes them (no markers, 256 tokens, 384-d, the
punctuation skiplist), cached by benchmarks/default_colbert.py's `encode_corpus`; each factor
pools every document with `lateint_jax.pooling.pool_document` (what `--pool-factor` runs) and
scores the 300 test queries exactly. Writes benchmarks/results/token_pooling.json with the
machine and /proc/loadavg.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from default_colbert import DATA, REPO, encode_corpus, exact_scores, model_for

from lateint_jax.data.beir import load_beir
from lateint_jax.data.tokenize import punctuation_ids
from lateint_jax.eval import evaluate_run
from lateint_jax.pooling import pool_document

RESULTS = REPO / "benchmarks" / "results" / "token_pooling.json"


def pooled_corpus(vectors, lengths, keep, factor: int):
    """The kept token vectors of every document, pooled -> (vectors [M', D], lengths [N])."""
    starts = np.concatenate([[0], np.cumsum(lengths)])
    docs, out_lengths = [], []
    for n in range(len(lengths)):
        doc = vectors[starts[n] : starts[n + 1]][keep[starts[n] : starts[n + 1]]]
        doc = pool_document(doc.astype(np.float32), factor) if factor > 1 else doc
        docs.append(np.asarray(doc, np.float32))
        out_lengths.append(len(doc))
    return np.concatenate(docs), np.array(out_lengths, np.int64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--cache", default=str(REPO / ".bench-cache" / "default_colbert"))
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    loadavg_start = Path("/proc/loadavg").read_text().split()[:3]
    dataset = load_beir(DATA, "test")
    query_ids = [q for q in dataset.qrels if q in dataset.queries]
    texts = [dataset.queries[q] for q in query_ids]
    vectors, ids, lengths = encode_corpus(dataset.corpus.texts, "plain", 256, Path(args.cache))
    model = model_for("plain", 256, query="plain")
    keep = ~np.isin(ids, punctuation_ids(model.tokenizer))
    queries = model.encode_queries(texts)
    mask = model.tokenize_queries(texts)["token_mask"]
    rows = []
    for factor in args.factors:
        start = time.perf_counter()
        docs, doc_lengths = pooled_corpus(vectors, lengths, keep, factor)
        pooled_seconds = time.perf_counter() - start
        scores = exact_scores(docs, doc_lengths, queries, mask)
        top = np.argsort(-scores, axis=1)[:, :100]
        run = {
            q: {dataset.corpus.ids[d]: float(scores[i, d]) for d in top[i]}
            for i, q in enumerate(query_ids)
        }
        metrics = evaluate_run(run, dataset.qrels)
        rows.append({
            "pool_factor": factor,
            **{k: round(v, 4) for k, v in metrics.items()},
            "token_vectors": int(doc_lengths.sum()),
            "index_mb_2bit_estimate": round(int(doc_lengths.sum()) * (384 // 4 + 4) / 1e6, 1),
            "pooling_seconds": round(pooled_seconds, 1),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "benchmark": "token_pooling",
        "dataset": "SciFact test (300 queries, 5183 passages), the default ColBERT, exact MaxSim",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "loadavg_start": loadavg_start,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
        "rows": rows,
    }
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'pool factor':>12} {'nDCG@10':>8} {'R@100':>7} {'vectors':>9} {'2-bit MB':>9}")
    for r in rows:
        print(
            f"{r['pool_factor']:>12} {r['ndcg@10']:>8.4f} {r['recall@100']:>7.3f} "
            f"{r['token_vectors']:>9} {r['index_mb_2bit_estimate']:>9}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
