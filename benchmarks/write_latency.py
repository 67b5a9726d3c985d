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

    python benchmarks/write_latency.py --compare-with OLD_CHECKOUT [--docs 100000 --tokens 8]

compares the served write step of two versions of the library instead: this checkout's and
the `lateint_jax` package under OLD_CHECKOUT (e.g. `git archive COMMIT lateint_jax | tar -x
-C OLD_CHECKOUT`). The index is built once and saved; each run is a child process (old, new,
old, new, ... for --repeats rounds) that loads it, serves it writable behind a `SearchEngine`
warmed for the request shapes with every segment step the stream reaches compiled, and times
per write what the writer does between encoding and SQLite: `with_writes` then
`engine.replace_index` under the index lock. Adds its JSON to write_latency.json's
"version_comparisons".
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
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


def index_description(arrays) -> dict:
    return {
        "documents": arrays.num_docs,
        "vectors": int(arrays.num_embeddings),
        "dim": DIM,
        "nbits": arrays.nbits,
        "centroids": arrays.num_centroids,
    }


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


class _NoEncoder:
    """What `SearchEngine` reads of an encoder when no query is encoded."""

    dim = DIM
    query_maxlen = SHAPES[0].query_tokens
    explains = False


def served_step_worker(index_dir: str, writes: int, num_docs: int) -> None:
    """One child run of --compare-with (the library on PYTHONPATH): prints one JSON line."""
    from lateint_jax import open_index
    from lateint_jax.index.delta import capacity_for
    from lateint_jax.serving.engine import SearchEngine

    stream = write_stream(writes, num_docs, seed=2)
    served = open_index(index_dir).writable()
    engine = SearchEngine(served, _NoEncoder(), max_batch=SHAPES[0].batch, max_k=SHAPES[0].k)
    served.warmup(SHAPES)
    tokens = sum(v.shape[0] for _, added in stream for v in added.values())
    served._warmth.ensure(served.delta, capacity_for(tokens, writes))  # no compile in the stream
    before, programs = loadavg(), compilations.count()
    times = []
    for removed, added in stream:
        started = time.perf_counter()
        served = engine.index.with_writes(removed, added)
        with engine.index_lock:
            engine.replace_index(served)
        times.append(time.perf_counter() - started)
    engine.close()
    entry = {**summary(times), "programs_compiled": compilations.count() - programs,
             "loadavg_before": before, "loadavg_after": loadavg()}  # fmt: skip
    print("RESULT " + json.dumps(entry), flush=True)


def compare_versions(args, arrays) -> None:
    """--compare-with: old and new library, interleaved, in child processes."""
    from lateint_jax.index.storage import save_index

    checkouts = {"old": str(Path(args.compare_with).resolve()),
                 "new": str(Path(__file__).resolve().parents[1])}  # fmt: skip
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        index_dir = Path(folder) / "index"
        save_index(arrays, index_dir)
        for round_number in range(args.repeats):
            for version, checkout in checkouts.items():
                env = {**os.environ, "PYTHONPATH": checkout}
                command = [sys.executable, __file__, "--worker", str(index_dir),
                           "--writes", str(args.writes), "--docs", str(args.docs)]  # fmt: skip
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
                entry = {"version": version, "round": round_number, **json.loads(line[7:])}
                runs.append(entry)
                print(json.dumps(entry), flush=True)
    ratios = [a["median_ms"] / b["median_ms"] for a, b in zip(runs[::2], runs[1::2])]
    result = {
        "what": "ms per single-document write of the served index: with_writes + "
        "engine.replace_index (no encoding, no SQLite); old vs new library, interleaved",
        "old": args.compare_with,
        "index": index_description(arrays),
        "writes_per_stream": args.writes,
        "machine": f"{platform.node()} {os.cpu_count()} cpus",
        "runs": runs,
        "median_ratio_old_over_new": [round(r, 1) for r in ratios],
    }
    # kept beside the re-layout comparison: one entry per (old checkout, index size)
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    comparisons = [c for c in saved.get("version_comparisons", [])
                   if (c["old"], c["index"]) != (result["old"], result["index"])]  # fmt: skip
    saved["version_comparisons"] = [*comparisons, result]
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"wrote {RESULTS} (version_comparisons)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--centroids", type=int, default=4096)
    parser.add_argument("--compare-with", default=None, help="an older checkout (see above)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        served_step_worker(args.worker, args.writes, args.docs)
        return
    started = time.perf_counter()
    docs = clustered_docs(args.docs, args.tokens, seed=1)
    ids = [f"doc-{n}" for n in range(args.docs)]
    arrays = build_index(docs, ids, None, num_centroids=args.centroids, progress=False)
    print(f"index: {arrays.num_docs} docs, {arrays.num_embeddings} vectors, "
          f"built in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    if args.compare_with:
        compare_versions(args, arrays)
        return
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
        "index": index_description(arrays),
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
