"""Quality through the service: SciFact test queries over HTTP give `lateint evaluate`'s nDCG@10.

    python benchmarks/serve_quality.py [--reranker PATH] [--rerank-depth 10] [--rerank-queries 50]

Runs `lateint evaluate INDEX SCIFACT --k 10` and the same queries through `POST /search` (k=10,
batches of `--batch` queries per request) on the same index, scores both runs with the same
pytrec_eval code, and reports the two nDCG@10 (they must agree) and, with a reranker, the
nDCG@10 of the two-stage results and its change. Writes benchmarks/results/serve_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import DATA, REPO, ensure_index, machine, start_server

RESULTS = REPO / "benchmarks" / "results" / "serve_quality.json"


def evaluate_cli(index: Path, data: Path, k: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "metrics.json"
        command = [
            sys.executable, "-m", "lateint_jax.cli", "evaluate", str(index), str(data),
            "--k", str(k), "--json", str(out),
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        metrics = json.loads(out.read_text())
        metrics["seconds"] = round(time.perf_counter() - started, 2)
        return metrics


def run_through_api(url: str, query_ids, texts, k: int, batch: int, extra: dict) -> dict:
    """{qid: {doc_id: score}} from POST /search with `queries` batches."""
    run = {}
    with httpx.Client(timeout=600) as http:
        for start in range(0, len(texts), batch):
            body = {"queries": texts[start : start + batch], "k": k, **extra}
            response = http.post(f"{url}/search", json=body)
            response.raise_for_status()
            for qid, hits in zip(query_ids[start : start + batch], response.json()["results"]):
                run[qid] = {h["id"]: float(h["score"]) for h in hits}
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--index", type=Path, default=REPO / "indexes" / "scifact")
    parser.add_argument("--reranker", help="cross-encoder checkpoint for the two-stage run")
    parser.add_argument("--rerank-depth", type=int, default=10)
    parser.add_argument(
        "--rerank-queries",
        type=int,
        default=None,
        help="compare with/without rerank on the first N test queries only (CPU time)",
    )
    parser.add_argument("--batch", type=int, default=16, help="queries per HTTP request")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-k", type=int, default=10, help="server's --max-k (warm-up time)")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from lateint_jax.data.beir import load_beir
    from lateint_jax.eval import evaluate_run

    ensure_index(args.index, args.data)
    dataset = load_beir(args.data, "test", with_corpus=False)
    query_ids = list(dataset.queries)
    texts = [dataset.queries[q] for q in query_ids]

    cli = evaluate_cli(args.index, args.data, k=10)
    process = start_server(
        args.index,
        args.data,
        args.port,
        max_batch=args.max_batch,
        max_k=args.max_k,
        reranker=args.reranker,
    )
    url = f"http://127.0.0.1:{args.port}"
    try:
        started = time.perf_counter()
        first = evaluate_run(
            run_through_api(url, query_ids, texts, 10, args.batch, {}), dataset.qrels
        )
        first["seconds"] = round(time.perf_counter() - started, 2)
        two_stage = first_on_subset = None
        if args.reranker:
            n = args.rerank_queries or len(query_ids)
            ids, subset_texts = query_ids[:n], texts[:n]
            qrels = {q: dataset.qrels[q] for q in ids}
            first_on_subset = evaluate_run(
                run_through_api(url, ids, subset_texts, 10, args.batch, {}), qrels
            )
            started = time.perf_counter()
            extra = {"rerank": {"depth": args.rerank_depth}}
            two_stage = evaluate_run(
                run_through_api(url, ids, subset_texts, 10, args.batch, extra), qrels
            )
            two_stage["seconds"] = round(time.perf_counter() - started, 2)
            two_stage["queries"] = n
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)

    key = "ndcg@10"
    print(f"\nserve_quality on SciFact test ({len(query_ids)} queries), {machine()}")
    print(f"  lateint evaluate (k=10)     nDCG@10 {cli[key]:.4f}")
    print(
        f"  HTTP /search (k=10)         nDCG@10 {first[key]:.4f}  (diff {first[key] - cli[key]:+.5f})"
    )
    if two_stage:
        change = two_stage[key] - first_on_subset[key]
        print(
            f"  on {two_stage['queries']} queries: first stage nDCG@10 {first_on_subset[key]:.4f}, "
            f"+ rerank@{args.rerank_depth} {two_stage[key]:.4f} (change {change:+.4f})"
        )
    result = {
        "benchmark": "serve_quality",
        "machine": machine(),
        "index": str(args.index),
        "queries": len(query_ids),
        "evaluate_cli": cli,
        "http_first_stage": first,
        "http_matches_cli": abs(first[key] - cli[key]) < 1e-6,
        "reranker": args.reranker,
        "rerank_depth": args.rerank_depth if args.reranker else None,
        "http_first_stage_on_rerank_queries": first_on_subset,
        "http_two_stage": two_stage,
        "ndcg10_change_with_rerank": None
        if not two_stage
        else two_stage[key] - first_on_subset[key],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")
    return 0 if result["http_matches_cli"] else 1


if __name__ == "__main__":
    sys.exit(main())
