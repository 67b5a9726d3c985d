"""PLAID knobs against quality and latency on SciFact: top-10 overlap with exact MaxSim (over the
same compressed index, and over the raw vectors), nDCG@10 and latency per query for a grid of
(ncells, centroid_score_threshold, ndocs) at k=10 and k=100.

    python benchmarks/plaid_settings.py [--queries 300] [--single 60]

Reuses engines.py's vector cache and its 2-bit index (building either when missing), so it
answers "what do the defaults cost and what would other settings buy" without the references.
Writes benchmarks/results/plaid_settings.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engines as bench

RESULTS = bench.REPO / "benchmarks" / "results" / "plaid_settings.json"
GRID = {
    10: [(1, 0.5, 256), (2, 0.45, 512), (4, 0.4, 1024), (1, 0.5, 1024), (1, 0.5, 2048),
         (1, 0.45, 2048), (2, 0.45, 2048), (1, 0.5, 4096)],
    100: [(2, 0.45, 1024), (4, 0.4, 4096), (1, 0.5, 4096), (2, 0.45, 4096), (2, 0.45, 8192)],
}  # fmt: skip


def open_index(docs, meta):
    import jax

    from lateint_jax.index.build import build_index
    from lateint_jax.index.colbert_index import ColBERTIndex

    index_dir = bench.CACHE / "indexes" / "lateint"
    if not (index_dir / "metadata.json").exists():
        build_index(docs, meta["doc_ids"], index_dir, nbits=2, overwrite=True, progress=True)
    return ColBERTIndex.load(index_dir, devices=jax.devices()[:1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=None, help="use the first N test queries")
    parser.add_argument("--single", type=int, default=60, help="queries timed one at a time")
    args = parser.parse_args()
    bench.encode_scifact()
    docs, queries, meta = bench.load_vectors()
    if args.queries:
        queries = queries[: args.queries]
        meta["query_ids"] = meta["query_ids"][: args.queries]
    raw = bench.exact_runs(queries)  # exact MaxSim over the raw vectors (numpy, cached)
    index = open_index(docs, meta)
    position = {doc_id: n for n, doc_id in enumerate(meta["doc_ids"])}

    def positions(hits):
        return [[position[d] for d, _ in row] for row in hits]

    same = positions(index.exact_search(queries, k=100))
    rows = []
    print(f"{'k':>4}{'ncells':>7}{'thresh':>7}{'ndocs':>6}{'ov same':>9}{'ov raw':>8}"
          f"{'nDCG@10':>9}{'1q ms':>8}{'batch ms':>9}")  # fmt: skip
    for k, grid in GRID.items():
        for ncells, threshold, ndocs in grid:
            knobs = {"k": k, "ncells": ncells, "centroid_score_threshold": threshold}

            def search(q, knobs=knobs, ndocs=ndocs):
                return index.search(q, ndocs=ndocs, **knobs)

            found = positions(search(queries))  # compiles the batch buckets
            for query in queries[: args.single]:
                search(query[None])  # compiles the single-query buckets
            single = bench.timed_per_query(search, queries[: args.single], False)
            batched = bench.timed_per_query(search, queries, True)
            row = {
                "k": k, "ncells": ncells, "centroid_score_threshold": threshold, "ndocs": ndocs,
                "overlap_same_index": bench.overlap(found, [r[:k] for r in same], k),
                "overlap_raw": bench.overlap(found, raw[f"k{k}"], k),
                "ndcg@10": bench.ndcg10([r[:10] for r in found], meta),
                "latency_ms_single": single, "latency_ms_batched": batched,
            }  # fmt: skip
            rows.append(row)
            print(f"{k:>4}{ncells:>7}{threshold:>7.2f}{ndocs:>6}{row['overlap_same_index']:>9.3f}"
                  f"{row['overlap_raw']:>8.3f}{row['ndcg@10']:>9.4f}{single:>8.1f}{batched:>9.1f}")  # fmt: skip
    report = {
        "machine": bench.machine(),
        "queries": len(queries),
        "exact_same_index": {
            "overlap_raw@10": bench.overlap([r[:10] for r in same], raw["k10"], 10),
            "overlap_raw@100": bench.overlap(same, raw["k100"], 100),
            "ndcg@10": bench.ndcg10([r[:10] for r in same], meta),
        },
        "exact_raw_ndcg@10": bench.ndcg10(raw["k10"], meta),
        "settings": rows,
    }
    bench.write_report(RESULTS, report)
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"{time.perf_counter() - start:.0f} s")
    sys.exit(code)
