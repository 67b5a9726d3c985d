"""How search latency (the default, WARP-style) and memory grow with the corpus: synthetic clustered token vectors
at 1e5, 1e6, 1e7 (and with --max-size 1e8, 1e8) vectors (dim 128, nbits 2).

    python benchmarks/index_scaling.py [--max-size 10000000] [--queries 64]

Each size gets colbert-ai's centroid count (2**floor(log2(16 sqrt(M)))) as random unit
centroids. A document (60-140 tokens) picks a few "topic" centroids and draws each token around
one of them (noise of norm about 0.35), so the codec's nearest-centroid step is replaced by the
generating centroid: the vectors are generated and compressed chunk by chunk with the codec's own
bucketize/pack_bits, and 1e7 vectors (5 GB as float32) never sit in memory at once. Queries are
noisy tokens of random documents. Exact search runs where its [N, T, D] float32 copy fits
(--exact-max, default 1e6).

--build build_index builds through the real lateint_jax.build_index instead (k-means, compress,
save path included): the documents come from a generator, so the build streams within
--memory-budget (its spill goes to the system temporary folder), and the report
(benchmarks/results/index_scaling_build_index.json) gives its seconds and peak RSS.

Reports per size: build seconds, the seconds to open the saved index (`open_index` on one
device, checksums verified: the "open s" column), bytes per token vector on disk and in device
memory, process peak RSS, search latency per query (k=10, one at a time and batched) and exact
latency, and the growth exponent of search latency between sizes (1.0 = linear). Writes
benchmarks/results/index_scaling.json. --open-only skips the searches (a quick look at open
time and bytes; written to index_scaling_open.json).
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines import loadavg, machine, timed_per_query, write_report

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "index_scaling.json"
DIM, NBITS, QUERY_TOKENS = 128, 2, 32
CHUNK_VECTORS = 1 << 20


def synthetic_index(size: int, seed: int = 0):
    """-> (IndexArrays of about `size` token vectors, sample documents to draw queries from)."""
    import jax.numpy as jnp

    from lateint_jax.codec.bitpack import pack_bits
    from lateint_jax.codec.kmeans import default_num_centroids
    from lateint_jax.codec.residual import bucketize, fit_buckets
    from lateint_jax.index.layout import IndexArrays, sort_tokens_by_code

    rng = np.random.default_rng(seed)
    num_centroids = default_num_centroids(size)
    centroids = rng.standard_normal((num_centroids, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    lengths = rng.integers(60, 141, size=max(1, size // 100))
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), size) + 1]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total = int(offsets[-1])
    # every document draws its tokens around 6 topic centroids
    topics = rng.integers(0, num_centroids, size=(len(lengths), 6))
    doc_of_token = np.repeat(np.arange(len(lengths)), lengths)
    codes = topics[doc_of_token, rng.integers(0, 6, size=total)].astype(np.int32)
    residuals = np.empty((total, DIM * NBITS // 8), np.uint8)
    cutoffs = weights = None
    samples = []
    for start in range(0, total, CHUNK_VECTORS):
        stop = min(total, start + CHUNK_VECTORS)
        noise = rng.standard_normal((stop - start, DIM)).astype(np.float32) * (0.35 / DIM**0.5)
        points = centroids[codes[start:stop]] + noise
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        delta = points - centroids[codes[start:stop]]
        if cutoffs is None:
            cutoffs, weights = fit_buckets(delta[:50_000], NBITS)
        packed = pack_bits(bucketize(jnp.asarray(delta), jnp.asarray(cutoffs)), NBITS)
        residuals[start:stop] = np.asarray(packed)
        if len(samples) < 64:  # a few whole documents inside this chunk, for queries
            first = np.searchsorted(offsets, start, "left")
            for n in range(first, min(first + 64, len(lengths))):
                if offsets[n + 1] <= stop and len(samples) < 64:
                    samples.append(points[offsets[n] - start : offsets[n + 1] - start])
    order = sort_tokens_by_code(codes, offsets)
    codes, residuals = codes[order], residuals[order]
    arrays = IndexArrays(
        centroids=centroids,
        bucket_cutoffs=cutoffs,
        bucket_weights=weights,
        codes=codes,
        residuals=residuals,
        doc_offsets=offsets.astype(np.int64),
        doc_ids=[str(n) for n in range(len(lengths))],
        deleted=np.zeros(len(lengths), bool),
        nbits=NBITS,
    )
    return arrays, samples


def streamed_index(size: int, memory_budget: int, seed: int = 0):
    """The same kind of corpus, made a document at a time and fed to build_index as a generator
    -> (IndexArrays, sample documents to draw queries from)."""
    from lateint_jax.codec.kmeans import default_num_centroids
    from lateint_jax.index.build import build_index

    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((default_num_centroids(size), DIM)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    lengths = rng.integers(60, 141, size=max(1, size // 100))
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), size) + 1]
    samples = []

    def documents():
        for length in lengths:
            chosen = topics[rng.integers(0, len(topics), 6)][rng.integers(0, 6, length)]
            noise = rng.standard_normal((length, DIM)).astype(np.float32) * (0.35 / DIM**0.5)
            doc = chosen + noise
            doc /= np.linalg.norm(doc, axis=1, keepdims=True)
            if len(samples) < 64:
                samples.append(doc)
            yield doc

    ids = (str(n) for n in range(len(lengths)))
    arrays = build_index(documents(), ids, None, memory_budget_bytes=memory_budget, progress=True)
    return arrays, samples


def make_queries(samples, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((count, QUERY_TOKENS, DIM), np.float32)
    for b in range(count):
        doc = samples[rng.integers(len(samples))]
        tokens = doc[rng.integers(0, len(doc), QUERY_TOKENS)]
        tokens = tokens + rng.standard_normal(tokens.shape) * (0.35 / DIM**0.5)
        out[b] = tokens / np.linalg.norm(tokens, axis=1, keepdims=True)
    return out


def per_query_ms(search, queries, batch: bool) -> float:
    search(queries if batch else queries[:1])  # compile this shape first
    return timed_per_query(search, queries, batch)


def measure(size: int, queries_count: int, exact_max: int, memory_budget: int | None,
            open_only: bool = False) -> dict:  # fmt: skip
    """memory_budget None: the synthetic codec (synthetic_index); else build_index, streamed."""
    import jax

    from lateint_jax.index.open import open_index
    from lateint_jax.index.storage import save_index

    start = time.perf_counter()
    if memory_budget is None:
        arrays, samples = synthetic_index(size)
    else:
        arrays, samples = streamed_index(size, memory_budget)
    build = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="index_scaling-") as folder:
        save_index(arrays, Path(folder) / "index")
        del arrays
        start = time.perf_counter()  # read, verify, lay out and place on the device
        index = open_index(Path(folder) / "index", devices=jax.devices()[:1])
        jax.block_until_ready(index.warp.token_arrays)
        open_seconds = time.perf_counter() - start
        stats = index.stats()
        arrays = index.arrays
        row = {
            "token_vectors": arrays.num_embeddings,
            "documents": arrays.num_docs,
            "centroids": arrays.num_centroids,
            "generate_and_compress_seconds": build,
            "open_seconds": open_seconds,
            "disk_bytes_per_token": stats["disk_bytes_per_token"],
            "device_bytes_per_token": stats["device_bytes_per_token"],
            "device_bytes": index.warp.device_bytes(),
        }
        if not open_only:
            row.update(_search_figures(index, samples, queries_count, exact_max))
    row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row["loadavg"] = loadavg()
    return row


def _search_figures(index, samples, queries_count: int, exact_max: int) -> dict:
    from lateint_jax.index.base import SearchShape

    arrays = index.arrays
    queries = make_queries(samples, queries_count)
    start = time.perf_counter()  # every program a one-query request can reach, compiled first
    index.warmup([SearchShape(batch=1, k=10, query_tokens=queries.shape[1])])
    warmup_seconds = time.perf_counter() - start
    row = {
        "warmup_seconds": warmup_seconds,
        "search_ms_single": per_query_ms(lambda q: index.search(q, k=10), queries, False),
        "search_ms_batched": per_query_ms(lambda q: index.search(q, k=10), queries, True),
    }
    if arrays.num_embeddings <= exact_max:
        row["exact_ms_batched"] = per_query_ms(lambda q: index.exact_search(q, k=10), queries, True)
        found, exact_hits = index.search(queries, k=10), index.exact_search(queries, k=10)
        shared = [{d for d, _ in a} & {d for d, _ in b} for a, b in zip(found, exact_hits)]
        row["top10_overlap"] = float(np.mean([len(s) / 10 for s in shared]))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-size", type=float, default=1e7, help="largest corpus (vectors)")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--exact-max", type=float, default=1e6, help="largest exact-search size")
    parser.add_argument("--build", choices=("synthetic", "build_index"), default="synthetic")
    parser.add_argument(
        "--memory-budget", type=float, default=2**30, help="bytes (--build build_index)"
    )
    parser.add_argument("--min-size", type=float, default=1e5, help="smallest corpus (vectors)")
    parser.add_argument("--open-only", action="store_true", help="open time and bytes only")
    args = parser.parse_args()
    budget = int(args.memory_budget) if args.build == "build_index" else None
    sizes = [
        s
        for s in (100_000, 1_000_000, 10_000_000, 100_000_000)
        if args.min_size <= s <= args.max_size
    ]
    rows = []
    print(f"{'vectors':>10}{'docs':>8}{'C':>7}{'build s':>9}{'open s':>8}{'disk B/v':>9}"
          f"{'dev B/v':>8}{'dev MB':>8}{'search 1q':>10}{'search bat':>10}{'exact bat':>10}"
          f"{'ov@10':>7}{'RSS MB':>8}   (ms per query)")  # fmt: skip
    nan = float("nan")
    for size in sizes:
        row = measure(size, args.queries, int(args.exact_max), budget, args.open_only)
        rows.append(row)
        print(
            f"{row['token_vectors']:>10}{row['documents']:>8}{row['centroids']:>7}"
            f"{row['generate_and_compress_seconds']:>9.1f}{row['open_seconds']:>8.2f}"
            f"{row['disk_bytes_per_token']:>9.2f}{row['device_bytes_per_token']:>8.2f}"
            f"{row['device_bytes'] / 2**20:>8.0f}"
            f"{row.get('search_ms_single', nan):>10.2f}{row.get('search_ms_batched', nan):>10.2f}"
            f"{row.get('exact_ms_batched', float('nan')):>10.2f}"
            f"{row.get('top10_overlap', float('nan')):>7.3f}{row['peak_rss_bytes'] / 2**20:>8.0f}",
            flush=True,
        )
    for before, after in itertools.pairwise([] if args.open_only else rows):
        growth = np.log(after["token_vectors"] / before["token_vectors"])
        for key in ("search_ms_single", "search_ms_batched"):
            after[f"{key}_growth_exponent"] = float(np.log(after[key] / before[key]) / growth)
        print(
            f"{before['token_vectors']:.0e} -> {after['token_vectors']:.0e}: search latency grows "
            f"as size^{after['search_ms_single_growth_exponent']:.2f} (one query), "
            f"size^{after['search_ms_batched_growth_exponent']:.2f} (batched)"
        )
    report = {
        "machine": machine(),
        "settings": {
            "dim": DIM,
            "nbits": NBITS,
            "k": 10,
            "query_tokens": QUERY_TOKENS,
            "build": args.build,
            "memory_budget_bytes": budget,
        },
        "sizes": rows,
    }
    results = RESULTS if budget is None else RESULTS.with_name("index_scaling_build_index.json")
    if args.open_only:  # not a full run: kept apart from the search figures
        results = results.with_name(results.stem + "_open.json")
    write_report(results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
