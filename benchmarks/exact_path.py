"""The exact path's arithmetic rate against the machine's float32 GEMM ceiling (issue #12 (d)).

    python benchmarks/exact_path.py [--index DIR] [--queries N] [--reps 3]

`index.exact_search` (MaxSim of every query token against every decompressed document token,
the [N, T, D] float32 copy kept on the device after the first call) on the SciFact index of
`benchmarks/engines.py` (its cache: `LATEINT_BENCH_CACHE`, default .bench-cache/scifact; run
engines.py first, or pass --index and --query-vectors), one query at a time and in batches of
32. GFLOP/s counts the useful multiply-adds: 2 x query tokens x real document tokens x D per
query (the padding to the longest document is shown apart). The ceilings are jitted XLA
float32 products in the same process: a square 2048^3 one (compute-bound) and one of the exact
path's own shape (1024 query tokens against 22,528 document tokens). Every row is timed in each
of --reps interleaved repetitions; the report gives medians and /proc/loadavg beside each.
With the engines cache's query vectors (all 300), it also reports the quality of exact MaxSim
over the 2-bit index, the ceiling of any search of that index: recall@10 against exact MaxSim
over the raw float32 vectors and nDCG@10 (pytrec_eval). Writes benchmarks/results/exact_path.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines import CACHE, REPO, exact_runs, loadavg, machine, ndcg10, overlap, write_report

RESULTS = REPO / "benchmarks" / "results" / "exact_path.json"
BATCH = 32


def product_rate(rows: int, inner: int, cols: int, seconds_each: float = 1.0):
    """A jitted [rows, inner] x [inner, cols] float32 product -> a timer returning
    (None: no ms per query, GFLOP/s)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((rows, inner), dtype=np.float32))
    b = jnp.asarray(rng.standard_normal((inner, cols), dtype=np.float32))
    product = jax.jit(lambda x, y: x @ y)
    product(a, b).block_until_ready()

    def rate() -> tuple[None, float]:
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds_each:
            product(a, b).block_until_ready()
            calls += 1
        return None, 2 * rows * inner * cols * calls / (time.perf_counter() - start) / 1e9

    return rate


def exact_rate(index, queries: np.ndarray, batch: int, flops_per_query: float):
    """A timer of index.exact_search over `queries` in batches -> (ms per query, GFLOP/s)."""

    def run() -> tuple[float, float]:
        start = time.perf_counter()
        for first in range(0, len(queries), batch):
            index.exact_search(queries[first : first + batch], k=10)
        seconds = (time.perf_counter() - start) / len(queries)
        return seconds * 1e3, flops_per_query / seconds / 1e9

    run()  # compile, and keep the decompressed copy
    return run


def index_quality(index, queries: np.ndarray) -> dict:
    """recall@10 against exact MaxSim over the raw vectors and nDCG@10 of exact MaxSim over
    the compressed index (the engines cache's document numbering)."""
    meta = json.loads((CACHE / "meta.json").read_text())
    position = {doc_id: n for n, doc_id in enumerate(meta["doc_ids"])}
    found = []
    for first in range(0, len(queries), BATCH):
        hits = index.exact_search(queries[first : first + BATCH], k=10)
        found.extend([position[doc_id] for doc_id, _ in row] for row in hits)
    reference = exact_runs(queries)["k10"]
    return {"queries": len(queries), "recall@10": overlap(found, reference, 10),
            "ndcg@10": ndcg10(found, meta)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=CACHE / "indexes" / "lateint")
    parser.add_argument("--query-vectors", type=Path, default=CACHE / "queries.npy")
    parser.add_argument("--queries", type=int, default=64, help="queries timed per row")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    for path in (args.index, args.query_vectors):
        if not path.exists():
            sys.exit(f"exact_path: {path} does not exist (run benchmarks/engines.py first)")

    from lateint_jax import open_index

    index = open_index(args.index)
    queries = np.load(args.query_vectors)[: args.queries].astype(np.float32)
    lengths = np.asarray(index.arrays.doc_lengths)
    query_tokens, dim = queries.shape[1:]
    real = 2.0 * query_tokens * float(lengths.sum()) * dim
    padded = 2.0 * query_tokens * len(lengths) * float(lengths.max()) * dim
    rows = {
        "exact_search, one query at a time": exact_rate(index, queries, 1, real),
        f"exact_search, batches of {BATCH}": exact_rate(index, queries, BATCH, real),
        "XLA float32 GEMM 2048 x 2048 x 2048": product_rate(2048, 2048, 2048),
        "XLA float32 GEMM 1024 x 128 x 22528 (MaxSim block)": product_rate(1024, dim, 22528),
    }
    quality = index_quality(index, np.load(args.query_vectors).astype(np.float32))
    print(f"exact MaxSim over the 2-bit index: {quality}", flush=True)
    runs: dict[str, list] = {name: [] for name in rows}
    for rep in range(args.reps):
        for name, timer in rows.items():
            before = loadavg()
            value = timer()
            runs[name].append({"value": value, "load": [before, loadavg()]})
            print(f"rep {rep + 1}/{args.reps} {name}: {value} (load {before})", flush=True)

    table = ["| row | ms/query | GFLOP/s | load 1-min |", "|---|---|---|---|"]
    summary = {}
    for name, reps in runs.items():
        values = [r["value"] for r in reps]
        loads = [float(r["load"][0].split()[0]) for r in reps]
        ms = None if values[0][0] is None else statistics.median(v[0] for v in values)
        rate = statistics.median(v[1] for v in values)
        summary[name] = {"ms_per_query": ms, "gflops": rate, "load": statistics.median(loads)}
        ms_text = f"{ms:.2f}" if ms is not None else "-"
        table.append(f"| {name} | {ms_text} | {rate:.1f} | {statistics.median(loads):.2f} |")
    ceiling = max(v["gflops"] for k, v in summary.items() if k.startswith("XLA"))
    best = max(v["gflops"] for k, v in summary.items() if k.startswith("exact_search"))
    note = (
        f"{len(queries)} queries x {query_tokens} tokens, {len(lengths)} documents, "
        f"{int(lengths.sum())} tokens (padded to {int(lengths.max())}: useful share "
        f"{real / padded:.2f}), D = {dim}; threads: XLA's, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; best exact / best GEMM = "
        f"{best / ceiling:.2f}; {machine()['cpu_model']}; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print("\n".join(table) + "\n\n" + note)
    write_report(
        args.out,
        {
            "machine": machine(),
            "index": str(args.index),
            "summary": summary,
            "runs": runs,
            "exact_over_ceiling": best / ceiling,
            "quality_of_exact_over_the_index": quality,
            "table": "\n".join(table),
            "note": note,
        },
    )


if __name__ == "__main__":
    main()
