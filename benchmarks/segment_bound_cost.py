"""What a write segment at its default compaction bound costs a search, against the main index.

    python benchmarks/segment_bound_cost.py [--docs 1000] [--tokens 200] [--repeats 3]

On the synthetic index of benchmarks/write_latency.py (--docs documents of about --tokens
vectors, D=128, 2-bit, 4096 centroids), new documents are written into the segment up to
`SegmentedIndex.segment_token_bound()`. Then, interleaved for --repeats rounds, the time of one
search (4 queries of 32 tokens, k=10) on the main index alone, on the index with the full
segment, and of scoring the segment alone (`DeltaSegment.scores`), each the mean of 10 calls
after one untimed call, with /proc/loadavg. Prints; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from write_latency import DIM, SHAPES, clustered_docs, loadavg

from lateint_jax.index.build import build_index
from lateint_jax.index.colbert_index import ColBERTIndex

CALLS = 10


def mean_ms(call) -> float:
    call()
    started = time.perf_counter()
    for _ in range(CALLS):
        call()
    return (time.perf_counter() - started) / CALLS * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    docs = clustered_docs(args.docs, args.tokens, seed=1)
    ids = [f"d{n}" for n in range(len(docs))]
    arrays = build_index(docs, ids, None, num_centroids=4096, progress=False)
    main_only = ColBERTIndex(arrays).writable()
    bound = main_only.segment_token_bound()
    added, tokens = {}, 0
    for n, doc in enumerate(clustered_docs(args.docs, args.tokens, seed=2)):
        if tokens + len(doc) > bound:
            break
        added[f"w{n}"], tokens = doc, tokens + len(doc)
    with_segment = main_only.with_writes([], added)
    segment = with_segment.delta
    print(
        f"main: {arrays.num_embeddings} tokens, {arrays.num_centroids} centroids; bound {bound}; "
        f"segment: {segment.num_tokens} tokens of {len(added)} documents, capacity "
        f"{segment.capacity}"
    )
    main_only.warmup(SHAPES)
    with_segment.warmup(SHAPES)
    queries = np.random.default_rng(3).normal(size=(4, 32, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=-1, keepdims=True)
    _, _, padded, mask = next(iter(main_only.main.query_batches(queries)))
    for round_ in range(args.repeats):
        alone = mean_ms(lambda: main_only.search(queries, k=10))
        both = mean_ms(lambda: with_segment.search(queries, k=10))
        scoring = mean_ms(lambda: segment.scores(padded, mask))
        print(
            f"round {round_}: main only {alone:.1f} ms, with the segment {both:.1f} ms "
            f"({both / alone:.2f}x), segment scoring alone {scoring:.1f} ms "
            f"({scoring / alone:.2f} of main only); loadavg {loadavg()}"
        )


if __name__ == "__main__":
    main()
