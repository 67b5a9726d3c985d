"""Our HTTP server (serve.py) beside colbert-ai 0.2.22's Flask server.py, on the same vectors.

    PYTHONPATH=. python benchmarks/serve_reference.py --colbert-server /tmp/colbert-server/server.py
        [--clients 1 8 32] [--duration 10] [--repeats 3] [--work /tmp/lateint-serve-reference]
        [--cache .bench-cache/scifact] [--colbert-python .bench-venvs/colbert/bin/python]
        [--max-batch 32] [--queries N] [--prepare-only]

colbert-ai's `server.py` sits at the top of the stanford-futuredata/ColBERT repository (tag
v0.2.22), not in the pip package: fetch it yourself, run it as shipped from the path given, in
the colbert-ai venv (plus flask and python-dotenv). Without `--colbert-server`, or when it
cannot start, ours runs alone and the JSON says why colbert-ai did not.

Same model, same vectors. The engines cache (benchmarks/engines.py) holds SciFact encoded by
`ColBERT.from_pretrained(None, config=ColBERTConfig())` and both engines' 2-bit indexes of those
vectors. Everything derived from them goes to --work (the cache is only read):
  * checkpoint/: that model as a colbert-ai checkpoint (`export_colbert`, stanford layout);
  * colbert-ai/scifact/: a copy of the cache's colbert-ai index whose metadata names that
    checkpoint and collection.tsv (SciFact by document number), which colbert-ai's Searcher
    loads and its server answers with.
serve.py serves the cache's lateint index as it is, with `--model` that same checkpoint (the
index, built from vectors, records no model), so both servers encode queries with one model.
A child in the colbert-ai venv encodes the 300 test queries with colbert-ai's Searcher on that
index and compares each token vector with the cache's (cosine).

Load. Both servers run at once, each with OMP_WAIT_POLICY=PASSIVE and THREADS threads
(OMP/MKL/OpenBLAS for torch, XLA for ours). For each repetition and client level, interleaved
(ours, then colbert-ai), N concurrent clients (aiohttp, one asyncio loop, this process) send the
SciFact test queries in turn for --duration seconds at k=10: requests/s, p50 and p99 latency of
the answered requests, errors (non-200 or transport errors), the CPU seconds of each server
process and of the client meanwhile (server CPU ms per answered request), /proc/loadavg before
and after.
colbert-ai's server memoises its answers per (query, k) string and always searches at k=100,
then keeps k: each request spells k=10 with as many leading zeros as the query was sent before,
so every request misses that memo and does the work of a new query.

Quality. Before the load each server answers the 300 test queries once (k=10, 4 clients):
nDCG@10 (pytrec_eval, test qrels) and the agreement of the two top 10s.

Writes benchmarks/results/serve_reference.json (after every repetition) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np  # with the stdlib, all that the colbert-ai venv's child imports at the top

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines import loadavg, machine, ndcg10, overlap

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LATEINT_DATA", REPO.parent / "shared" / "data")) / "scifact"
CACHE = Path(os.environ.get("LATEINT_BENCH_CACHE", REPO / ".bench-cache" / "scifact"))
COLBERT_PYTHON = REPO / ".bench-venvs" / "colbert" / "bin" / "python"
WORK = Path("/tmp/lateint-serve-reference")
RESULTS = REPO / "benchmarks" / "results" / "serve_reference.json"
THREADS = 2
K = 10
QUALITY_CLIENTS = 4
INDEX_NAME = "scifact"
START_TIMEOUT_S = 1200
SERVERS = ("ours", "colbert-ai")


def test_queries(meta: dict) -> list[tuple[str, str]]:
    """(id, text) of the test queries, in the order of the cache's queries.npy."""
    with (DATA / "queries.jsonl").open() as lines:
        texts = {row["_id"]: row["text"] for row in map(json.loads, lines)}
    return [(query_id, texts[query_id]) for query_id in meta["query_ids"]]


def child_env(extra: dict) -> dict:
    threads = str(THREADS)
    return {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}",
        "JAX_PLATFORMS": "cpu",
        "HF_HUB_OFFLINE": "1",
        **extra,
    }


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)


# ---------------------------------------------------------------------------------- setup
def default_model():
    from lateint_jax.encoders import ColBERT
    from lateint_jax.models.colbert import ColBERTConfig

    return ColBERT.from_pretrained(None, config=ColBERTConfig())


def export_checkpoint(model, work: Path) -> Path:
    from lateint_jax.convert.export import export_colbert

    path = work / "checkpoint"
    if not (path / "artifact.metadata").exists():
        export_colbert(model, path, layout="stanford")
    return path


def write_collection(meta: dict, path: Path) -> None:
    """colbert-ai's collection TSV: document number, text, title (it answers "title | text")."""
    from lateint_jax.data.beir import read_corpus_jsonl

    corpus = read_corpus_jsonl(DATA / "corpus.jsonl")
    if corpus.ids != meta["doc_ids"]:
        raise SystemExit(f"{DATA} is not the corpus the cache was encoded from")
    rows = (
        f"{n}\t{one_line(body)}\t{one_line(title)}\n"
        for n, (title, body) in enumerate(zip(corpus.titles, corpus.bodies))
    )
    path.write_text("".join(rows))


def one_line(text: str) -> str:
    return " ".join(text.split())


def prepare_colbert(meta: dict, cache: Path, work: Path, checkpoint: Path) -> dict:
    """A copy of the cache's colbert-ai index whose metadata names our checkpoint and the
    collection (the build recorded a placeholder checkpoint and no collection)."""
    root = work / "colbert-ai"
    index = root / INDEX_NAME
    if not index.exists():
        shutil.copytree(cache / "indexes" / "colbert-ai", index)
    collection = work / "collection.tsv"
    write_collection(meta, collection)
    metadata = json.loads((index / "metadata.json").read_text())
    metadata["config"].update(
        checkpoint=str(checkpoint),
        collection=str(collection),
        index_path=str(index),
        index_root=str(root),
        index_name=INDEX_NAME,
    )
    write_json(index / "metadata.json", metadata)
    return {"index_root": str(root), "index_name": INDEX_NAME, "checkpoint": str(checkpoint)}


def encode_check(args) -> dict:
    """In the colbert-ai venv: its Searcher (as the server makes it) encodes the test queries;
    cosine of each token vector with the cache's."""
    import torch
    from colbert import Searcher

    meta = json.loads((args.cache / "meta.json").read_text())
    texts = [text for _, text in test_queries(meta)][: args.check_queries]
    threads = torch.get_num_threads()  # from OMP_NUM_THREADS, as in the server
    searcher = Searcher(index=INDEX_NAME, index_root=str(args.work / "colbert-ai"), verbose=0)
    with torch.inference_mode():
        theirs = searcher.encode(texts).float().numpy()
    ours = np.load(args.cache / "queries.npy")[: len(texts)]
    norms = np.linalg.norm(theirs, axis=-1) * np.linalg.norm(ours, axis=-1)
    cosine = (theirs * ours).sum(-1) / np.maximum(norms, 1e-12)
    return {
        "queries": len(texts),
        "shape": list(theirs.shape),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "cosine_p01": float(np.percentile(cosine, 1)),
        "max_abs_diff": float(np.abs(theirs - ours).max()),
        "torch_threads": threads,
    }


def run_encode_check(args) -> dict:
    out = args.work / "encode_check.json"
    out.unlink(missing_ok=True)
    command = [str(args.colbert_python), str(Path(__file__).resolve()), "--child-encode-check",
               "--work", str(args.work), "--cache", str(args.cache),
               "--check-queries", str(args.check_queries), "--out", str(out)]  # fmt: skip
    log = args.work / "logs" / "encode_check.log"
    with log.open("w") as handle:
        status = subprocess.run(
            command, check=False, stdout=handle, stderr=subprocess.STDOUT, env=child_env({})
        )
    if status.returncode != 0 or not out.exists():
        return {"error": f"exit status {status.returncode}: {tail(log)}"}
    return json.loads(out.read_text())


# -------------------------------------------------------------------------------- servers
def tail(log: Path, chars: int = 800) -> str:
    return log.read_text(errors="replace")[-chars:].strip().replace("\n", " | ")


def launch(command: list[str], log: Path, cwd: Path, env: dict) -> subprocess.Popen:
    with log.open("w") as handle:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)


def start_ours(args) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "serve.py"),
               "--index", str(args.cache / "indexes" / "lateint"),
               "--model", str(args.work / "checkpoint"),
               "--corpus", str(DATA), "--port", str(args.ours_port), "--max-k", str(K),
               "--max-batch", str(args.max_batch)]  # fmt: skip
    env = child_env({"PYTHONPATH": str(REPO), "LATEINT_CACHE": str(args.work / "lateint-cache")})
    return launch(command, args.work / "logs" / "ours.log", REPO, env)


def start_colbert(args) -> subprocess.Popen:
    env = child_env(
        {
            "INDEX_ROOT": str(args.work / "colbert-ai"),
            "INDEX_NAME": INDEX_NAME,
            "PORT": str(args.colbert_port),
        }
    )
    command = [str(args.colbert_python), str(args.colbert_server)]
    return launch(command, args.work / "logs" / "colbert-ai.log", args.colbert_server.parent, env)


def answers(url: str) -> bool:
    import httpx

    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.HTTPError:
        return False


def wait_ready(started: dict, logs: Path, launched: float) -> tuple[dict, dict]:
    """Poll the servers {name: (process, url)} until each answers at all, dies, or
    START_TIMEOUT_S passes: ({name: seconds from `launched` to ready}, {name: why not})."""
    pending, ready, failed = dict(started), {}, {}
    while pending and time.monotonic() - launched < START_TIMEOUT_S:
        for name, (process, url) in list(pending.items()):
            if process.poll() is not None:
                log = tail(logs / f"{name}.log")
                failed[name] = f"exited with status {process.returncode}: {log}"
            elif answers(url):
                ready[name] = round(time.monotonic() - launched, 1)
            else:
                continue
            del pending[name]
        time.sleep(0.5)
    for name in pending:
        failed[name] = f"no answer in {START_TIMEOUT_S} s: {tail(logs / f'{name}.log')}"
    return ready, failed


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------------------- requests
class Client:
    """One server's search request and the document numbers of its answer."""

    def __init__(self, name: str, url: str, position: dict[str, int]):
        self.name, self.url, self.position = name, url, position
        self.sent: dict[int, int] = {}  # query number -> times sent (colbert-ai's memo key)

    async def search(self, http, query: int, text: str) -> tuple[int, bytes]:
        """The HTTP status and body of one search (`http`: an aiohttp session)."""
        times = self.sent.get(query, 0)
        self.sent[query] = times + 1
        if self.name == "ours":
            request = http.post(f"{self.url}/search", json={"query": text, "k": K})
        else:
            params = {"query": text, "k": "0" * times + str(K)}
            request = http.get(f"{self.url}/api/search", params=params)
        async with request as response:
            return response.status, await response.read()

    async def open_connection(self, http) -> None:
        """A cheap request, so the level starts with its connections open."""
        url = f"{self.url}/health" if self.name == "ours" else f"{self.url}/"
        async with http.get(url) as response:
            await response.read()

    def numbers(self, body: dict) -> list[int]:
        if self.name == "ours":
            return [self.position[hit["id"]] for hit in body["results"]]
        return [int(hit["pid"]) for hit in body["topk"]]


def http_client(clients: int):
    """aiohttp: httpx's pool cost this process's loop seconds per level at 128 clients
    (serve_load.py's docstring)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients + 1)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300))


async def answer_all(client: Client, texts: list[str], clients: int) -> list[list[int]]:
    """Each query once, `clients` at a time: the top-k document numbers, in query order."""
    found: list[list[int]] = [[] for _ in texts]
    queue = iter(range(len(texts)))

    async def worker(http):
        for n in queue:
            status, body = await client.search(http, n, texts[n])
            if status != 200:
                raise RuntimeError(f"{client.name}: query {n} answered {status}: {body[:200]!r}")
            found[n] = client.numbers(json.loads(body))

    async with http_client(clients) as http:
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    return found


async def load(
    client: Client, texts: list[str], clients: int, duration: float, pids: dict[str, int]
) -> dict:
    """`clients` concurrent loops sending the queries in turn for `duration` seconds; the CPU
    seconds each server process (`pids`) and this client process used meanwhile."""
    import aiohttp

    latencies, statuses = [], {}

    async def worker(first: int, http, stop_at: float):
        n = first
        while time.monotonic() < stop_at:
            query = n % len(texts)
            started = time.perf_counter()
            try:
                status, _ = await client.search(http, query, texts[query])
            except (TimeoutError, aiohttp.ClientError) as err:
                status = type(err).__name__
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(time.perf_counter() - started)
            n += clients

    async with http_client(clients) as http:
        await asyncio.gather(*(client.open_connection(http) for _ in range(clients)))
        before = loadavg()
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        client_before = time.process_time()
        started = time.perf_counter()
        stop_at = time.monotonic() + duration
        await asyncio.gather(*(worker(w, http, stop_at) for w in range(clients)))
        elapsed = time.perf_counter() - started
        cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 2) for name, pid in pids.items()}
        cpu["client"] = round(time.process_time() - client_before, 2)
    ms = np.asarray(latencies or [0.0]) * 1000.0
    requests = sum(statuses.values())
    return {
        "requests": requests,
        "errors": requests - len(latencies),
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "cpu_s": cpu,
        "server_cpu_ms_per_request": round(cpu[client.name] * 1000 / max(len(latencies), 1), 1),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }


# --------------------------------------------------------------------------------- report
def quality(found: dict[str, list[list[int]]], meta: dict) -> dict:
    out = {name: {"ndcg@10": round(ndcg10(rows, meta), 4)} for name, rows in found.items()}
    if len(found) == 2:
        ours, theirs = found["ours"], found["colbert-ai"]
        out["top10_overlap_mean"] = round(overlap(ours, theirs, K), 4)
        out["identical_top10_sets"] = sum(set(a) == set(b) for a, b in zip(ours, theirs))
        out["same_first_hit"] = sum(a[:1] == b[:1] for a, b in zip(ours, theirs))
        out["queries"] = len(ours)
    return out


def summarise(runs: list[dict]) -> dict:
    table = {}
    for key in runs[0]:
        rows = [run[key] for run in runs]
        loads = [
            float(r[f"loadavg_{edge}"].split()[0]) for r in rows for edge in ("before", "after")
        ]
        table[key] = {
            "requests_per_s": round(float(np.median([r["requests_per_s"] for r in rows])), 2),
            "p50_ms": round(float(np.median([r["p50_ms"] for r in rows])), 1),
            "p99_ms": round(float(np.median([r["p99_ms"] for r in rows])), 1),
            "errors": int(sum(r["errors"] for r in rows)),
            "server_cpu_ms_per_request": round(
                float(np.median([r["server_cpu_ms_per_request"] for r in rows])), 1
            ),
            "loadavg_1min": f"{min(loads):.2f}-{max(loads):.2f}",
        }
    return table


def print_table(table: dict, repeats: int, duration: float) -> None:
    print(f"\nserve_reference: medians of {repeats} repetition(s), {duration:g} s per level, k={K}")
    header = ("clients", "server", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms/req")
    print("{:>7} {:<11} {:>8} {:>9} {:>9} {:>6} {:>10}  loadavg".format(*header))
    for key, row in table.items():
        server, clients = key.split("/")
        print(
            f"{clients:>7} {server:<11} {row['requests_per_s']:>8} {row['p50_ms']:>9} "
            f"{row['p99_ms']:>9} {row['errors']:>6} {row['server_cpu_ms_per_request']:>10}  "
            f"{row['loadavg_1min']}"
        )


def colbert_reason(args) -> str | None:
    """Why colbert-ai's server cannot run here, or None."""
    if args.colbert_server is None:
        return "no --colbert-server given (server.py is not in the colbert-ai package)"
    if not args.colbert_server.is_file():
        return f"--colbert-server {args.colbert_server} does not exist"
    if not args.colbert_python.exists():
        return f"{args.colbert_python} is missing (benchmarks/setup_reference_engines.sh)"
    check = [str(args.colbert_python), "-c", "import flask, dotenv, colbert"]
    failed = subprocess.run(check, check=False, capture_output=True, text=True)
    if failed.returncode != 0:
        return f"the colbert-ai venv lacks a module: {failed.stderr.strip().splitlines()[-1]}"
    return None


def base_report(args) -> dict:
    return {
        "benchmark": "serve_reference",
        "date_utc": utc_now(),
        "machine": machine(),
        "threads": THREADS,
        "clients": args.clients,
        "duration_s": args.duration,
        "repeats_asked": args.repeats,
        "k": K,
        "queries": args.queries or "all",
        "cache": str(args.cache),
        "colbert_server": {
            "path": str(args.colbert_server) if args.colbert_server else None,
            "sha256": hashlib.sha256(args.colbert_server.read_bytes()).hexdigest()
            if args.colbert_server and args.colbert_server.is_file()
            else None,
        },
    }


def setup(args, meta: dict, report: dict) -> bool:
    """Prepare both servers' inputs; whether colbert-ai can run."""
    (args.work / "logs").mkdir(parents=True, exist_ok=True)
    checkpoint = export_checkpoint(default_model(), args.work)
    report["ours_index"] = {
        "index": str(args.cache / "indexes" / "lateint"),
        "model": str(checkpoint),
        "how": "serve.py --index <the cache's index> --model <the checkpoint colbert-ai loads>",
    }
    reason = colbert_reason(args)
    if reason is None:
        report["colbert_index"] = prepare_colbert(meta, args.cache, args.work, checkpoint)
        report["encode_check"] = run_encode_check(args)
        if "error" in report["encode_check"]:
            reason = f"colbert-ai's Searcher failed: {report['encode_check']['error']}"
    report["colbert_server"]["ran"] = reason is None
    report["colbert_server"]["reason_not_run"] = reason
    return reason is None


def start_all(args, report: dict, with_colbert: bool) -> dict:
    """Start the servers together; {name: (process, url)} of those that answered."""
    launched = time.monotonic()
    started = {"ours": (start_ours(args), f"http://127.0.0.1:{args.ours_port}")}
    if with_colbert:
        started["colbert-ai"] = (start_colbert(args), f"http://127.0.0.1:{args.colbert_port}")
    report["startup_s"], failed = wait_ready(started, args.work / "logs", launched)
    if failed:
        report["server_errors"] = failed
    for name in failed:
        stop(started[name][0])
    up = {name: value for name, value in started.items() if name in report["startup_s"]}
    if "colbert-ai" in started and "colbert-ai" not in up:
        reason = report["server_errors"]["colbert-ai"]
        report["colbert_server"].update(ran=False, reason_not_run=reason)
    return up


def measure(args, report: dict, clients: dict[str, Client], texts, meta, pids) -> None:
    found = {}
    for name, client in clients.items():
        started = time.perf_counter()
        found[name] = asyncio.run(answer_all(client, texts, QUALITY_CLIENTS))
        report.setdefault("quality_pass_s", {})[name] = round(time.perf_counter() - started, 1)
    report["quality"] = quality(found, meta)
    print(f"quality: {json.dumps(report['quality'])}", flush=True)
    runs = report["runs"] = []
    for rep in range(args.repeats):
        run = {}
        for level in args.clients:
            for name, client in clients.items():
                row = asyncio.run(load(client, texts, level, args.duration, pids))
                run[f"{name}/{level}"] = row
                print(f"rep {rep} {name}/{level}: {json.dumps(row)}", flush=True)
        runs.append(run)
        report["repeats_done"] = len(runs)
        report["finished_utc"] = utc_now()
        report["table"] = summarise(runs)
        write_json(args.out, report)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--colbert-server", type=Path, default=None, help="colbert-ai's server.py")
    parser.add_argument("--colbert-python", type=Path, default=COLBERT_PYTHON)
    parser.add_argument("--cache", type=Path, default=CACHE, help="benchmarks/engines.py's cache")
    parser.add_argument("--work", type=Path, default=WORK, help="derived checkpoint and indexes")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=None, help="first N test queries only")
    parser.add_argument("--check-queries", type=int, default=300, help="queries encoded by both")
    parser.add_argument("--max-batch", type=int, default=32, help="serve.py's --max-batch")
    parser.add_argument("--ours-port", type=int, default=8781)
    parser.add_argument("--colbert-port", type=int, default=8893)
    parser.add_argument("--prepare-only", action="store_true", help="setup and encode check only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child-encode-check", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.child_encode_check:
        write_json(args.out, encode_check(args))
        return 0
    meta = json.loads((args.cache / "meta.json").read_text())
    texts = [text for _, text in test_queries(meta)][: args.queries]
    report = base_report(args)
    with_colbert = setup(args, meta, report)
    print(f"setup: {json.dumps({k: report.get(k) for k in ('colbert_server', 'encode_check')})}")
    if args.prepare_only:
        write_json(args.out, report)
        return 0
    up = start_all(args, report, with_colbert)
    try:
        if "ours" not in up:
            raise SystemExit(f"serve.py did not start: {report['server_errors']['ours']}")
        position = {doc_id: n for n, doc_id in enumerate(meta["doc_ids"])}
        clients = {name: Client(name, url, position) for name, (_, url) in up.items()}
        pids = {name: process.pid for name, (process, _) in up.items()}
        measure(args, report, clients, texts, meta, pids)
    finally:
        for process, _ in up.values():
            stop(process)
        write_json(args.out, report)
    print_table(report["table"], report["repeats_done"], args.duration)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
