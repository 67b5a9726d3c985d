"""Per-write latency of the served index's write step, before and after the write segment.

    python benchmarks/write_latency.py [--docs 1000] [--tokens 200] [--writes 50] [--repeats 3]

On a synthetic index (--docs documents of about --tokens token vectors, D=128, 2-bit; ~200k
vectors by default), a stream of --writes single-document writes (mostly new ids, every 5th
replaces a main document, every 7th deletes one) is applied, one write at a time, by
  * relayout (main before issue #14): the next index as a copy with `Index.delete` /
    `Index.add` (a full re-layout) then `warmup` for the request shapes, as
    `serving/live_writes.next_index` + `Writer` did for every write;
  * segment: `SegmentedIndex.with_writes` (tombstones plus the write segment), as the
    Writer now does.
Both start from a fresh copy of the same index, warmed up for the same request shapes; the
modes alternate (relayout, segment, relayout, segment, ...) for --repeats rounds. Reported
per mode and round: median, p90, max ms per write, programs compiled during the stream, and
/proc/loadavg before and after. Encoding the text and the SQLite commit (the same in both)
are not part of it. Writes JSON to benchmarks/results/write_latency.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from lateint_jax import compilations
from lateint_jax.index.base import SearchShape
from lateint_jax.index.build import build_index
from lateint_jax.index.colbert_index import ColBERTIndex
from lateint_jax.serving.live_writes import next_index

DIM = 128
SHAPES = [SearchShape(batch=4, k=10, query_tokens=32)]
RESULTS = Path(__file__).parent / "results" / "write_latency.json"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def clustered_docs(count: int, tokens: int, seed: int) -> list[np.ndarray]:
    """Documents of unit vectors around 2048 fixed centres, lengths tokens/2 .. 3*tokens/2."""
    centres = np.random.default_rng(0).normal(size=(2048, DIM))
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(count):
        x = centres[rng.integers(0, 2048, rng.integers(tokens // 2, 3 * tokens // 2))]
        x = x + 0.1 * rng.normal(size=x.shape)
        docs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return docs


def write_stream(count: int, num_docs: int, seed: int) -> list[tuple[list[str], dict]]:
    """(removed ids, {added id: vectors}) per write."""
    new = clustered_docs(count, 200, seed)
    stream, added = [], []
    for n in range(count):
        if n % 7 == 6 and added:
            stream.append(([added.pop(0)], {}))
        elif n % 5 == 4:
            doc_id = f"doc-{(n * 37) % num_docs}"
            stream.append(([doc_id], {doc_id: new[n]}))
        else:
            stream.append(([], {f"new-{n}": new[n]}))
            added.append(f"new-{n}")
    return stream


def run_relayout(arrays, stream) -> list[float]:
    index = ColBERTIndex(copy.copy(arrays))
    index.warmup(SHAPES)
    times = []
    for removed, added in stream:
        started = time.perf_counter()
        index = next_index(index, removed, added)
        index.warmup(SHAPES)
        times.append(time.perf_counter() - started)
    return times


def run_segment(arrays, stream) -> list[float]:
    served = ColBERTIndex(copy.copy(arrays)).writable()
    served.warmup(SHAPES)
    times = []
    for removed, added in stream:
        started = time.perf_counter()
        served = served.with_writes(removed, added)
        times.append(time.perf_counter() - started)
    return times


def summary(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {
        "median_ms": round(float(np.median(ms)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "max_ms": round(float(ms.max()), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--centroids", type=int, default=4096)
    args = parser.parse_args()
    started = time.perf_counter()
    docs = clustered_docs(args.docs, args.tokens, seed=1)
    ids = [f"doc-{n}" for n in range(args.docs)]
    arrays = build_index(docs, ids, None, num_centroids=args.centroids, progress=False)
    print(f"index: {arrays.num_docs} docs, {arrays.num_embeddings} vectors, "
          f"built in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    stream = write_stream(args.writes, args.docs, seed=2)
    runs = []
    for round_number in range(args.repeats):
        for mode, run in (("relayout", run_relayout), ("segment", run_segment)):
            before = loadavg()
            programs = compilations.count()
            seconds = run(arrays, stream)
            entry = {
                "mode": mode,
                "round": round_number,
                **summary(seconds),
                "programs_compiled_incl_warmup": compilations.count() - programs,
                "loadavg_before": before,
                "loadavg_after": loadavg(),
            }
            runs.append(entry)
            print(json.dumps(entry), flush=True)
    ratios = [
        a["median_ms"] / b["median_ms"] for a, b in zip(runs[::2], runs[1::2])
    ]  # fmt: skip
    result = {
        "what": "ms per single-document write, index step only (no encoding, no SQLite)",
        "index": {
            "documents": arrays.num_docs,
            "vectors": int(arrays.num_embeddings),
            "dim": DIM,
            "nbits": arrays.nbits,
            "centroids": arrays.num_centroids,
        },
        "writes_per_stream": args.writes,
        "request_shapes": [vars(s) for s in SHAPES],
        "machine": f"{platform.node()} {os.cpu_count()} cpus",
        "runs": runs,
        "median_ratio_relayout_over_segment": [round(r, 1) for r in ratios],
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
