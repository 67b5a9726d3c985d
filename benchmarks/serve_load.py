"""Load test of the HTTP service: N concurrent clients over loopback for a bounded time.

    python benchmarks/serve_load.py [--clients 8] [--duration 20] [--reranker PATH]

Starts `serve.py` on the SciFact index (builds it once with `lateint index` into the git-ignored
`indexes/scifact` when absent), sends SciFact test queries from N concurrent clients for
`--duration` seconds per mode (first stage only; first stage + rerank when a reranker is
given), and reports requests/s, p50/p99 latency and errors (must be zero). Writes
benchmarks/results/serve_load.json.

No reference server runs beside it here: colbert-ai's server needs faiss and colbert-ai's torch
C++ extensions (built at import with a compiler and CUDA-era pins), and PyLate ships a retriever
library, not a server; see docs/SERVING.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LATEINT_DATA", REPO.parent / "shared" / "data")) / "scifact"
RESULTS = REPO / "benchmarks" / "results" / "serve_load.json"


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def ensure_index(index_dir: Path, data: Path) -> None:
    if (index_dir / "metadata.json").exists():
        return
    print(f"building the SciFact index at {index_dir} (once) ...", flush=True)
    command = [sys.executable, "-m", "lateint_jax.cli", "index", str(data), str(index_dir)]
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def load_queries(data: Path) -> list[str]:
    test_ids = set()
    with (data / "qrels" / "test.tsv").open() as lines:
        next(lines)
        for line in lines:
            test_ids.add(line.split("\t")[0])
    queries = []
    with (data / "queries.jsonl").open() as lines:
        for line in lines:
            row = json.loads(line)
            if row["_id"] in test_ids:
                queries.append(row["text"])
    return queries


def start_server(args, port: int) -> subprocess.Popen:
    command = [
        sys.executable, str(REPO / "serve.py"), "--index", str(args.index),
        "--corpus", str(getattr(args, "corpus", None) or args.data), "--port", str(port),
        "--max-batch", str(args.max_batch), "--max-k", str(args.max_k),
    ]  # fmt: skip
    if args.reranker:
        command += ["--reranker", args.reranker]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve.py exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(1)
    process.kill()
    raise SystemExit("serve.py did not come up in 10 minutes")


async def load(url: str, queries: list[str], clients: int, duration: float, body_extra: dict):
    latencies, errors, statuses = [], 0, {}
    stop_at = time.monotonic() + duration

    async def client(worker: int, http: httpx.AsyncClient):
        nonlocal errors
        i = worker
        while time.monotonic() < stop_at:
            body = {"query": queries[i % len(queries)], "k": 10, **body_extra}
            i += clients
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/search", json=body)
                status = response.status_code
            except httpx.HTTPError as err:
                status = type(err).__name__
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(w, http) for w in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000.0 if latencies else np.zeros(1)
    return {
        "requests": len(latencies) + errors,
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--index", type=Path, default=REPO / "indexes" / "scifact")
    parser.add_argument("--corpus", type=Path, help="texts of the index (default: --data)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per mode")
    parser.add_argument("--reranker", help="cross-encoder checkpoint for the rerank mode")
    parser.add_argument("--rerank-depth", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-k", type=int, default=10, help="server's --max-k (warm-up time)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    ensure_index(args.index, args.data)
    queries = load_queries(args.data)
    process = start_server(args, args.port)
    url = f"http://127.0.0.1:{args.port}"
    modes = {"first_stage": {}}
    if args.reranker:
        modes[f"rerank_depth_{args.rerank_depth}"] = {"rerank": {"depth": args.rerank_depth}}
    rows = {}
    try:
        for name, extra in modes.items():
            asyncio.run(load(url, queries, args.clients, 2.0, extra))  # warm connections
            rows[name] = asyncio.run(load(url, queries, args.clients, args.duration, extra))
        stats = httpx.get(f"{url}/stats", timeout=30).json()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)

    print(f"\nserve_load: {args.clients} clients, {args.duration:.0f} s per mode, {machine()}")
    print(f"{'mode':<20} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'requests':>9} {'errors':>7}")
    for name, row in rows.items():
        print(
            f"{name:<20} {row['requests_per_s']:>8} {row['p50_ms']:>9} {row['p99_ms']:>9} "
            f"{row['requests']:>9} {row['errors']:>7}"
        )
    result = {
        "benchmark": "serve_load",
        "machine": machine(),
        "index": str(args.index),
        "documents": stats["documents"],
        "index_bytes": stats["index_bytes"],
        "devices": stats["device_count"],
        "clients": args.clients,
        "duration_s": args.duration,
        "max_batch": args.max_batch,
        "max_k": args.max_k,
        "reranker": args.reranker,
        "modes": rows,
        "server_batching": stats["batching"],
        "reference": "none ran here (see docs/SERVING.md): colbert-ai server needs faiss + "
        "its torch C++ extensions; PyLate has no server",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")
    return 0 if all(row["errors"] == 0 for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
