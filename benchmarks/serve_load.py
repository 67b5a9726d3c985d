"""Load test of the HTTP service against the library's own batched search, side by side.

    python benchmarks/serve_load.py [--clients 1 8 32 128] [--duration 10] [--repeats 3]
                                    [--reranker auto|PATH|none] [--depths 10 100]
                                    [--writes-per-s 1] [--min-requests 2]

On the SciFact index of the default model (built once with `lateint index` into the
git-ignored `indexes/scifact`), for each repetition, interleaved:
  * library: a child process loads the same index and encoder and runs, as a user of the
    package would, `encode_queries` + `index.search` over the SciFact test queries in batches
    of --max-batch (queries/s) and one query at a time (ms per query, encode + search); with a
    reranker, `CrossEncoder.score` over the first-stage pairs (pairs/s) and, one query at a
    time, search + `CrossEncoder.score` of its top `depth` (ms per query);
  * server: `serve.py` (started once) under N concurrent closed-loop clients for --duration
    seconds per level, and until each client has had --min-requests answers (a depth-100
    rerank at 32 clients needs minutes for that): requests/s, p50/p99 latency, errors; then the
    same with the cross-encoder stage at each depth.
The clients are aiohttp sessions on one asyncio loop in this process. httpx's pool was the
bottleneck here: at 128 clients it added seconds to the first requests of a level (the server's
own /stats latencies stayed even) and took CPU from the server on these 2 cores.
With --writes-per-s R > 0 the server runs `--writable` on a copy of the index (writes change
it), and a `first_stage_writes` mode repeats the first-stage levels while one writer posts R new
SciFact-like documents per second (`POST /documents`, bearer key): write latency and errors are
reported beside the searches'.
Each process gets OMP_WAIT_POLICY=PASSIVE and the machine's thread count; /proc/loadavg is
recorded beside every figure. The targets of issue #14 are checked and printed:
throughput at 32 clients >= 80% of the library's, p99 <= 3 x p50, one client's latency <=
library latency + 5 ms (with rerank: the library's search + rerank of one query), zero errors.
The one-client first-stage target is checked on a paired run (`paired_one_client`): a library
child and the server take turns on the same queries, so both p50s come from the same moments
(measured minutes apart, the two p50s of one repetition differed by up to 9 ms from machine
noise alone); the unpaired difference (the 1-client level against the library's run) is
printed too.

`--reranker auto` builds a cross-encoder of all-MiniLM-L6-v2's size once (its encoder
weights with a seeded, untrained classification head, via transformers in this venv): its
scores mean nothing, its cost is that of a real MiniLM cross-encoder.

Reference: colbert-ai's Flask `server.py` runs beside ours in benchmarks/serve_reference.py.
Writes JSON to benchmarks/results/serve_load.json.
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

import aiohttp
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LATEINT_DATA", REPO.parent / "shared" / "data")) / "scifact"
RESULTS = REPO / "benchmarks" / "results" / "serve_load.json"
CROSS_ENCODER = REPO / "indexes" / "minilm-cross-encoder"


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def child_env() -> dict:
    threads = str(os.cpu_count())
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": threads,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    }


def ensure_index(index_dir: Path, data: Path) -> None:
    if (index_dir / "metadata.json").exists():
        return
    print(f"building the SciFact index at {index_dir} (once) ...", flush=True)
    command = [sys.executable, "-m", "lateint_jax.cli", "index", str(data), str(index_dir)]
    subprocess.run(command, cwd=REPO, check=True, env=child_env())


def ensure_cross_encoder(path: Path) -> Path:
    """A MiniLM-sized cross-encoder: the packaged encoder weights plus a seeded random head."""
    if (path / "config.json").exists():
        return path
    import torch
    from transformers import BertForSequenceClassification

    from lateint_jax.convert.files import default_model_dir

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(default_model_dir(), num_labels=1)
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(tmp)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        source = default_model_dir() / name
        if source.exists():
            (tmp / name).write_bytes(source.read_bytes())
    tmp.replace(path)
    return path


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


# ----------------------------------------------------------------------------- library side
def load_library(args):
    """-> (test queries, the encoder the index records, the index), as a library user opens them."""
    from lateint_jax import open_index
    from lateint_jax.index.storage import read_metadata
    from lateint_jax.index_model import encoder_for_index

    return (
        load_queries(args.data),
        encoder_for_index(read_metadata(args.index)),
        open_index(args.index),
    )


def paired_child(args) -> None:
    """--paired-child: after `ready`, time encode + search (k=10) of the query whose number
    each stdin line gives, and print the milliseconds."""
    import logging

    logging.getLogger("lateint_jax.data.tokenize").setLevel(logging.ERROR)  # as serve.py does
    queries, encoder, index = load_library(args)
    for query in queries[:3]:
        index.search(encoder.encode_queries([query]), k=10)
    print("ready", flush=True)
    for line in sys.stdin:
        started = time.perf_counter()
        index.search(encoder.encode_queries([queries[int(line)]]), k=10)
        print(f"{(time.perf_counter() - started) * 1000:.3f}", flush=True)


def library_run(args) -> dict:
    """What a library user gets on the same index, encoder and queries (in a child process)."""
    from lateint_jax.data.beir import load_corpus
    from lateint_jax.encoders import CrossEncoder

    queries, encoder, index = load_library(args)
    batch = args.max_batch

    def batched() -> list:
        hits = []
        for start in range(0, len(queries), batch):
            part = queries[start : start + batch]
            hits += index.search(encoder.encode_queries(part, batch_size=batch), k=10)
        return hits

    for size in sorted({batch, len(queries) % batch} - {0}):  # compile each batch shape once
        index.search(encoder.encode_queries(queries[:size], batch_size=batch), k=10)
    for query in queries[:3]:
        index.search(encoder.encode_queries([query]), k=10)
    started = time.perf_counter()
    hits = batched()
    batched_s = time.perf_counter() - started
    single = []
    for query in queries[: args.single_queries]:
        started = time.perf_counter()
        index.search(encoder.encode_queries([query]), k=10)
        single.append(time.perf_counter() - started)
    result = {
        "queries": len(queries),
        "batched_queries_per_s": round(len(queries) / batched_s, 2),
        "single_p50_ms": round(float(np.percentile(single, 50)) * 1000, 2),
        "single_mean_ms": round(float(np.mean(single)) * 1000, 2),
        "loadavg": loadavg(),
    }
    if args.reranker:
        corpus = load_corpus(args.data)
        cross = CrossEncoder.from_pretrained(args.reranker)
        for depth in args.depths:
            pairs = [
                (query, corpus.passage(doc_id))
                for query, row in zip(queries[:32], hits[:32])
                for doc_id, _ in row[:depth]
            ][: args.library_rerank_pairs]
            left, right = zip(*pairs)
            cross.score(list(left), list(right), batch_size=32)  # compile every shape first
            started = time.perf_counter()
            cross.score(list(left), list(right), batch_size=32)
            result[f"cross_encoder_pairs_per_s_depth_{depth}"] = round(
                len(pairs) / (time.perf_counter() - started), 1
            )
            result[f"single_rerank_p50_ms_depth_{depth}"] = single_rerank_ms(
                encoder,
                index,
                cross,
                corpus,
                queries[: max(3, args.single_rerank_pairs // depth)],
                depth,
            )
    return result


def single_rerank_ms(encoder, index, cross, corpus, queries: list[str], depth: int) -> float:
    """p50 ms of encode + search + `CrossEncoder.score` of the top `depth`, one query at a
    time, over two passes (after an untimed one that compiles the shapes these queries reach)."""

    def one(query: str) -> None:
        hits = index.search(encoder.encode_queries([query]), k=depth)[0]
        cross.score([query] * len(hits), [corpus.passage(doc_id) for doc_id, _ in hits])

    for query in queries:
        one(query)
    times = []
    for query in queries + queries:
        started = time.perf_counter()
        one(query)
        times.append(time.perf_counter() - started)
    return round(float(np.percentile(times, 50)) * 1000, 2)


def library_measure(args) -> dict:
    command = [sys.executable, __file__, "--library-child", "--index", str(args.index),
               "--data", str(args.data), "--max-batch", str(args.max_batch),
               "--single-queries", str(args.single_queries), "--depths", *map(str, args.depths),
               "--library-rerank-pairs", str(args.library_rerank_pairs),
               "--single-rerank-pairs", str(args.single_rerank_pairs)]  # fmt: skip
    command += ["--reranker", str(args.reranker) if args.reranker else "none"]
    out = subprocess.run(command, cwd=REPO, env=child_env(), check=True, capture_output=True)
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def paired_one_client(args, url: str, queries: list[str]) -> dict:
    """One query at a time, library and server taking turns on the same query (a library
    child process, then one HTTP request), over the first --single-queries queries: both
    latencies come from the same moments of this shared machine, not minutes apart."""
    command = [sys.executable, __file__, "--paired-child", "--index", str(args.index),
               "--data", str(args.data)]  # fmt: skip
    child = subprocess.Popen(
        command, cwd=REPO, env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def library_ms(number: int) -> float:
        child.stdin.write(f"{number}\n")
        child.stdin.flush()
        return float(child.stdout.readline())

    async def run() -> tuple[list[float], list[float]]:
        lib, served = [], []
        async with aiohttp.ClientSession(headers=AUTH) as http:
            for number in [0, 1, 2, *range(args.single_queries)]:  # three untimed pairs first
                lib.append(library_ms(number))
                started = time.perf_counter()
                body = {"query": queries[number], "k": 10}
                async with http.post(f"{url}/search", json=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"paired one-client request: HTTP {response.status}")
                served.append((time.perf_counter() - started) * 1000)
        return lib[3:], served[3:]

    try:
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("the paired library child did not start")
        lib, served = asyncio.run(run())
    finally:
        child.stdin.close()
        child.wait(60)
    return {
        "queries": len(lib),
        "library_p50_ms": round(float(np.median(lib)), 2),
        "server_p50_ms": round(float(np.median(served)), 2),
        "median_of_differences_ms": round(float(np.median(np.subtract(served, lib))), 2),
        "loadavg": loadavg(),
    }


# ------------------------------------------------------------------------------ server side
API_KEY = "serve-load-benchmark-key"
REQUEST_TIMEOUT_S = 3600  # a deep rerank under many clients waits minutes in the queue
AUTH: dict | None = None  # the bearer header, once a writable (keyed) server runs


def start_server(index: Path, data: Path, port: int, *, max_batch: int, max_k: int,
                 reranker=None, writable: bool = False) -> subprocess.Popen:  # fmt: skip
    """serve.py on `index` (writable: with a bearer key, written next to the index)."""
    command = [
        sys.executable, str(REPO / "serve.py"), "--index", str(index),
        "--corpus", str(data), "--port", str(port),
        "--max-batch", str(max_batch), "--max-k", str(max_k),
    ]  # fmt: skip
    if reranker:
        command += ["--reranker", str(reranker)]
    if writable:
        global AUTH
        AUTH = {"Authorization": f"Bearer {API_KEY}"}
        key_file = index.parent / "api.key"
        key_file.write_text(API_KEY)
        command += ["--writable", "--api-key-file", str(key_file)]
    process = subprocess.Popen(command, cwd=REPO, env=child_env())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve.py exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(1)
    process.kill()
    raise SystemExit("serve.py did not come up in 30 minutes")


async def writer(http: aiohttp.ClientSession, url: str, texts: list[str], rate: float, stop_at,
                 out):  # fmt: skip
    """POST one new document every 1/rate seconds until stop_at; latencies and errors in out."""
    number = 0
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        body = {
            "id": f"load-{os.getpid()}-{time.time_ns()}-{number}",
            "text": texts[number % len(texts)],
        }
        number += 1
        try:
            async with http.post(f"{url}/documents", json=body) as response:
                await response.read()
                ok = response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        out["latencies"].append(time.perf_counter() - started)
        out["errors"] += 0 if ok else 1
        await asyncio.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - started)))


async def load(url: str, queries: list[str], clients: int, duration: float, body_extra: dict,
               writes: tuple[float, list[str]] | None = None, min_requests: int = 1):  # fmt: skip
    """`clients` closed loops, each sending its next query as soon as the last is answered,
    until `duration` seconds have passed and each has had `min_requests` answers."""
    latencies, errors, statuses = [], 0, {}
    written = {"latencies": [], "errors": 0}

    async def client(worker: int, http: aiohttp.ClientSession, stop_at: float):
        nonlocal errors
        i, done = worker, 0
        while time.monotonic() < stop_at or done < min_requests:
            body = {"query": queries[i % len(queries)], "k": 10, **body_extra}
            i += clients
            done += 1
            started = time.perf_counter()
            try:
                async with http.post(f"{url}/search", json=body) as response:
                    await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as err:
                status = type(err).__name__
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    connector = aiohttp.TCPConnector(limit=clients + 1)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=AUTH) as http:

        async def open_connection():
            async with http.get(f"{url}/health") as response:
                await response.read()

        # open every connection first (the pool is the one measured)
        await asyncio.gather(*(open_connection() for _ in range(clients)))
        client_cpu = time.process_time()
        started = time.perf_counter()
        stop_at = time.monotonic() + duration
        tasks = [client(w, http, stop_at) for w in range(clients)]
        if writes:
            tasks.append(writer(http, url, writes[1], writes[0], stop_at, written))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
    ms = np.asarray(latencies) * 1000.0 if latencies else np.zeros(1)
    return {
        "requests": len(latencies) + errors,
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "client_cpu_s": round(client_cpu, 2),
        "loadavg": loadavg(),
        **(
            {
                "writes": len(written["latencies"]),
                "write_errors": written["errors"],
                "write_p50_ms": round(float(np.median(written["latencies"] or [0])) * 1000, 1),
            }
            if writes
            else {}
        ),
    }


def server_measure(args, url: str, queries: list[str], texts: list[str]) -> dict:
    modes = {"first_stage": ({}, None)}
    if args.writes_per_s > 0:
        modes["first_stage_writes"] = ({}, (args.writes_per_s, texts))
    if args.reranker:
        for depth in args.depths:
            modes[f"rerank_depth_{depth}"] = ({"rerank": {"depth": depth}}, None)
    rows = {"paired_one_client": paired_one_client(args, url, queries)} if 1 in args.clients else {}
    for name, (extra, writes) in modes.items():
        for clients in args.clients:
            depth = extra.get("rerank", {}).get("depth", 0)
            if args.max_queued_pairs and clients * depth > args.max_queued_pairs:
                continue  # clients x depth pairs queued at once: too long to drain here
            level = load(
                url, queries, clients, args.duration, extra, writes,
                min_requests=args.min_requests,
            )  # fmt: skip
            rows[f"{name}/{clients}"] = asyncio.run(level)
    return rows


# --------------------------------------------------------------------------------- report
def median(values):
    return round(float(np.median(values)), 2)


def summarise(library: list[dict], server: list[dict], args) -> dict:
    lib_qps = median([r["batched_queries_per_s"] for r in library])
    lib_ms = median([r["single_p50_ms"] for r in library])
    table = {}
    for key in server[0]:
        if key == "paired_one_client":
            continue
        table[key] = {
            field: median([rep[key][field] for rep in server])
            for field in ("requests_per_s", "p50_ms", "p99_ms")
        }
        table[key]["errors"] = int(sum(rep[key]["errors"] for rep in server))
        if "writes" in server[0][key]:
            table[key]["writes"] = int(sum(rep[key]["writes"] for rep in server))
            table[key]["write_errors"] = int(sum(rep[key]["write_errors"] for rep in server))
            table[key]["write_p50_ms"] = median([rep[key]["write_p50_ms"] for rep in server])
    first = {int(k.split("/")[1]): v for k, v in table.items() if k.startswith("first_stage/")}
    targets = {"library_batched_queries_per_s": lib_qps, "library_single_p50_ms": lib_ms}
    if 32 in first:
        targets["throughput_32_clients_vs_library"] = round(
            first[32]["requests_per_s"] / lib_qps, 3
        )
        targets["throughput_target_met"] = targets["throughput_32_clients_vs_library"] >= 0.8
    if "first_stage_writes/32" in table:
        targets["throughput_32_clients_with_writes_vs_library"] = round(
            table["first_stage_writes/32"]["requests_per_s"] / lib_qps, 3
        )
    if 1 in first:
        targets["one_client_minus_library_ms"] = round(first[1]["p50_ms"] - lib_ms, 2)
    paired = [rep["paired_one_client"] for rep in server if "paired_one_client" in rep]
    if paired:
        lib, served = (median([p[f] for p in paired]) for f in ("library_p50_ms", "server_p50_ms"))
        targets["one_client_paired"] = {
            "library_p50_ms": lib,
            "server_p50_ms": served,
            "server_minus_library_ms": round(served - lib, 2),
            "median_of_differences_ms": median([p["median_of_differences_ms"] for p in paired]),
        }
        targets["one_client_target_met"] = served - lib <= 5.0
    targets["p99_over_p50_max"] = round(max(v["p99_ms"] / v["p50_ms"] for v in table.values()), 2)
    targets["p99_target_met"] = targets["p99_over_p50_max"] <= 3.0
    targets["errors"] = int(sum(v["errors"] + v.get("write_errors", 0) for v in table.values()))
    for depth in args.depths if args.reranker else ():
        lib_pairs = median([r[f"cross_encoder_pairs_per_s_depth_{depth}"] for r in library])
        best = max(
            v["requests_per_s"] for k, v in table.items() if k.startswith(f"rerank_depth_{depth}/")
        )
        targets[f"rerank_depth_{depth}"] = {
            "library_pairs_per_s": lib_pairs,
            "server_pairs_per_s_best": round(best * depth, 1),
            "ratio": round(best * depth / lib_pairs, 3),
        }
        at_32 = table.get(f"rerank_depth_{depth}/32")
        if at_32:
            ratio = round(at_32["requests_per_s"] * depth / lib_pairs, 3)
            targets[f"rerank_depth_{depth}"]["ratio_32_clients"] = ratio
            targets[f"rerank_depth_{depth}"]["throughput_target_met"] = ratio >= 0.8
        alone = table.get(f"rerank_depth_{depth}/1")
        if alone:
            lib_alone = median([r[f"single_rerank_p50_ms_depth_{depth}"] for r in library])
            over = round(alone["p50_ms"] - lib_alone, 2)
            targets[f"rerank_depth_{depth}"]["library_single_p50_ms"] = lib_alone
            targets[f"rerank_depth_{depth}"]["one_client_minus_library_ms"] = over
            targets[f"rerank_depth_{depth}"]["one_client_target_met"] = over <= 5.0
    return {"table": table, "targets": targets}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def write_result(args, library: list[dict], server: list[dict], stats: dict) -> dict:
    """Summarise the repetitions done so far and write the JSON atomically."""
    summary = summarise(library, server, args)
    result = {
        "benchmark": "serve_load",
        "machine": {**machine(), "cpu_model": cpu_model()},
        "index": str(args.index),
        "documents": stats["documents"],
        "devices": stats["device_count"],
        "max_batch": args.max_batch,
        "duration_s": args.duration,
        "min_requests_per_client": args.min_requests,
        "load_client": f"aiohttp {aiohttp.__version__}, one asyncio loop, this process",
        "clients": args.clients,
        "depths": args.depths,
        "writes_per_s": args.writes_per_s,
        "max_queued_pairs": args.max_queued_pairs,
        "library_rerank_pairs": args.library_rerank_pairs,
        "repeats_done": len(server),
        "repeats_asked": args.repeats,
        "reranker": str(args.reranker) if args.reranker else None,
        **summary,
        "library_runs": library,
        "server_runs": server,
        "server_batching": stats["batching"],
        "reference": "colbert-ai's Flask server.py runs beside ours in benchmarks/serve_reference.py "
        "(the engines benchmark's vectors; benchmarks/results/serve_reference.json)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--index", type=Path, default=REPO / "indexes" / "scifact")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reranker", default="auto", help="auto, a checkpoint, or none")
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument(
        "--min-requests",
        type=int,
        default=2,
        help="a level lasts until each client has had this many answers (at least --duration)",
    )
    parser.add_argument("--single-queries", type=int, default=50)
    parser.add_argument("--writes-per-s", type=float, default=0.0, help="0: no writes mode")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--max-queued-pairs",
        type=int,
        default=0,
        help="skip rerank levels where clients x depth exceeds this (0: run every level)",
    )
    parser.add_argument(
        "--library-rerank-pairs",
        type=int,
        default=3200,
        help="at most this many pairs in the library's cross-encoder measurement per depth",
    )
    parser.add_argument(
        "--single-rerank-pairs",
        type=int,
        default=200,
        help="the library's search + rerank is timed one query at a time over the first "
        "max(3, this / depth) queries (about what one client sends in a 10 s level)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON result file")
    parser.add_argument("--library-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--paired-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reranker == "none":
        args.reranker = None
    if args.library_child:
        print(json.dumps(library_run(args)))
        return 0
    if args.paired_child:
        paired_child(args)
        return 0

    ensure_index(args.index, args.data)
    if args.reranker == "auto":
        args.reranker = ensure_cross_encoder(CROSS_ENCODER)
    queries = load_queries(args.data)
    texts = [json.loads(line)["text"] for line in (args.data / "corpus.jsonl").open()][:500]
    args.served_index = args.index
    if args.writes_per_s > 0:  # writes change the index: serve a copy
        import shutil
        import tempfile

        args.served_index = Path(tempfile.mkdtemp(prefix="serve_load_")) / "index"
        shutil.copytree(args.index, args.served_index)
    library, server = [], []
    process = start_server(
        args.served_index, args.data, args.port, max_batch=args.max_batch,
        max_k=max(args.depths + [10]), reranker=args.reranker, writable=args.writes_per_s > 0,
    )  # fmt: skip
    url = f"http://127.0.0.1:{args.port}"
    try:
        for rep in range(args.repeats):
            library.append(library_measure(args))
            print(f"rep {rep} library: {library[-1]}", flush=True)
            server.append(server_measure(args, url, queries, texts))
            print(f"rep {rep} server: {json.dumps(server[-1])}", flush=True)
            stats = httpx.get(f"{url}/stats", timeout=30, headers=AUTH).json()
            summary = write_result(args, library, server, stats)  # each repetition: kept if cut
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)

    print(f"\nserve_load: {args.repeats} repetitions (medians), {args.duration:.0f} s per level")
    print(f"machine: {machine()}")
    print(f"{'mode/clients':<24} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
    for name, row in summary["table"].items():
        print(
            f"{name:<24} {row['requests_per_s']:>8} {row['p50_ms']:>9} {row['p99_ms']:>9} "
            f"{row['errors']:>7}"
        )
    print(json.dumps(summary["targets"], indent=1))
    print(f"wrote {args.out}")
    return 0 if summary["targets"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
