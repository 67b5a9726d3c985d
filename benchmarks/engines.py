"""SciFact search engines side by side: ours, colbert-ai's PLAID, fast-plaid, WARP (xtr-warp-rs)
and numpy exact MaxSim, in one run, on the same token vectors, cores and thread count.

    bash benchmarks/setup_reference_engines.sh          # once: the reference engines' venvs
    python benchmarks/engines.py [--queries 300] [--single-queries 50] [--skip ENGINE ...]
        [--ours-settings '{"defaults": {}, "wide": {"nprobe": 8}}'] [--rebuild | --rebuild-ours]
        [--device cpu|gpu] [--build-only] [--nbits 2|4]

Token vectors come from the packaged all-MiniLM-L6-v2 under colbert-ai's conventions
(`ColBERT.from_pretrained(None, config=ColBERTConfig())`: markers, [MASK] queries, the seeded
128-d projection, 180 tokens: 128-d as ColBERT checkpoints are, and the default before issue 13),
encoded once into the git-ignored `.bench-cache/scifact/` (doc_vectors.npy, doc_lengths.npy,
queries.npy, meta.json). Every engine reads that cache; none encodes text.

Method. Each engine builds its 2-bit index (`--nbits N`: N-bit, in `<engine>-nbitsN/`) once
into `.bench-cache/scifact/indexes/<engine>/`
(build wall and CPU seconds and the child's peak RSS kept in `<engine>.build.json` beside it;
`--rebuild` rebuilds every index, `--rebuild-ours` ours only). Then every row (an engine at one
setting) is timed in its own child process, interleaved (A, B, C, ..., then again) for
`--reps` repetitions; the table gives medians and `/proc/loadavg` beside each figure. colbert-ai
runs in `.bench-venvs/colbert`, fast-plaid and WARP in `.bench-venvs/warp` (each needs its own
torch), ours and numpy in this interpreter. Every child gets OMP_WAIT_POLICY=PASSIVE and
THREADS threads (OMP/MKL/OpenBLAS/rayon variables, torch.set_num_threads, XLA_FLAGS).

Metrics. recall@10 / recall@100: overlap of an engine's top-k with exact MaxSim over the raw
float32 vectors (numpy, computed once here); nDCG@10 with pytrec_eval against the qrels in
$LATEINT_DATA/scifact/qrels/test.tsv; ms per query one query at a time (the first
`--single-queries`) and batched (every query in one call, or the engine's natural batch), QPS;
bytes per token vector on disk (every file of the index folder) and in memory (the engine's own
figure where it has one, else the child's RSS growth from loading and warming up); the child's
peak RSS (VmHWM, read in the child). Writes benchmarks/results/engines.json
(engines_nbits<N>.json for another --nbits).

`--device gpu` times ours with the index on the GPU and fast-plaid on cuda (same indexes), and
stops at once when no GPU is visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np  # the only non-stdlib import at the top: every venv runs this file

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LATEINT_DATA", REPO.parent / "shared" / "data")) / "scifact"
CACHE = Path(os.environ.get("LATEINT_BENCH_CACHE", REPO / ".bench-cache" / "scifact"))
INDEXES = CACHE / "indexes"
RESULTS = REPO / "benchmarks" / "results" / "engines.json"
VENVS = REPO / ".bench-venvs"
K_VALUES = (10, 100)
NBITS = 2  # every engine compresses its residuals to 2 bits per dimension unless --nbits says
THREADS = 2
CHILD_TIMEOUT_S = 3 * 3600


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _cpu_model() -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), None)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# ----------------------------------------------------------------------------- token vectors


def ensure_cache_dir() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")  # the cache must never reach git


def encode_scifact() -> dict:
    """Encode SciFact once (documents and judged test queries) into CACHE; return its meta."""
    ensure_cache_dir()
    paths = {name: CACHE / f"{name}.npy" for name in ("doc_vectors", "doc_lengths", "queries")}
    meta_path = CACHE / "meta.json"
    if meta_path.exists() and all(p.exists() for p in paths.values()):
        return json.loads(meta_path.read_text())
    from lateint_jax.data.beir import load_beir  # only to fill the cache
    from lateint_jax.encoders import ColBERT
    from lateint_jax.models.colbert import ColBERTConfig

    dataset = load_beir(DATA, "test")
    model = ColBERT.from_pretrained(None, config=ColBERTConfig())
    start = time.perf_counter()
    docs = model.encode_documents(dataset.corpus.texts, batch_size=32, progress=True)
    doc_seconds = time.perf_counter() - start
    query_ids = list(dataset.queries)
    queries = model.encode_queries([dataset.queries[q] for q in query_ids])
    np.save(paths["doc_vectors"], np.concatenate(docs).astype(np.float32))
    np.save(paths["doc_lengths"], np.array([len(d) for d in docs], np.int64))
    np.save(paths["queries"], queries.astype(np.float32))
    meta = {
        "model": model.model_name,
        "doc_ids": dataset.corpus.ids,
        "query_ids": query_ids,
        "qrels": dataset.qrels,
        "encode_seconds": doc_seconds,
    }
    meta_path.write_text(json.dumps(meta))
    return meta


def load_flat() -> tuple[np.ndarray, np.ndarray]:
    """-> (every token vector [M, 128] float32, the start row of each document [N])."""
    lengths = np.load(CACHE / "doc_lengths.npy")
    return np.load(CACHE / "doc_vectors.npy"), np.concatenate([[0], np.cumsum(lengths)[:-1]])


def load_vectors():
    """-> (docs: list of [T_i, 128] float32 views, queries [B, 32, 128], meta)."""
    meta = json.loads((CACHE / "meta.json").read_text())
    flat, starts = load_flat()
    ends = np.append(starts[1:], len(flat))
    docs = [flat[s:e] for s, e in zip(starts, ends)]
    return docs, np.load(CACHE / "queries.npy"), meta


def load_queries(count: int | None) -> np.ndarray:
    queries = np.load(CACHE / "queries.npy")
    return queries if count is None else queries[:count]


def token_count() -> int:
    return int(np.load(CACHE / "doc_lengths.npy").sum())


# ----------------------------------------------------------------------------- measuring


def timed_per_query(search, queries, batch: bool) -> float:
    """Milliseconds per query: one call per query, or one call for the whole set."""
    start = time.perf_counter()
    if batch:
        search(queries)
    else:
        for query in queries:
            search(query[None])
    return (time.perf_counter() - start) * 1e3 / len(queries)


def write_report(path: Path, report: dict) -> None:
    """Write a benchmark's JSON atomically (aside, then rename) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


def overlap(found: list[list[int]], reference: list[list[int]], k: int) -> float:
    """recall@k against the reference's top k (both lists of document numbers, best first)."""
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, reference)]))


def read_qrels(path: Path = DATA / "qrels" / "test.tsv") -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path) as f:
        next(f)  # query-id corpus-id score
        for line in f:
            query, doc, score = line.rstrip("\n").split("\t")
            qrels.setdefault(query, {})[doc] = int(score)
    return qrels


def ndcg10(found: list[list[int]], meta: dict) -> float:
    """Mean nDCG@10 (pytrec_eval) over the judged queries among meta["query_ids"][:len(found)];
    found holds document numbers, best first."""
    import pytrec_eval  # the project venv has it; the reference engines' venvs do not

    qrels = read_qrels()
    ids = meta["doc_ids"]
    query_ids = [q for q in meta["query_ids"][: len(found)] if q in qrels]
    run = {
        q: {ids[d]: float(len(row) - rank) for rank, d in enumerate(row[:10])}
        for q, row in zip(meta["query_ids"], found)
        if q in qrels
    }
    evaluator = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in query_ids}, {"ndcg_cut.10"})
    scores = evaluator.evaluate(run)
    return float(np.mean([scores.get(q, {}).get("ndcg_cut_10", 0.0) for q in query_ids]))


def folder_bytes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set now (VmRSS) or its peak (VmHWM). The peak is read here, in
    the child, not from the parent's wait4 ru_maxrss: Linux carries ru_maxrss over fork and
    exec, so every child would report at least the parent's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its waited-for children so far."""
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ----------------------------------------------------------------------------- exact MaxSim


def exact_top(flat: np.ndarray, starts: np.ndarray, queries: np.ndarray, k: int, batch: int = 8):
    """Exact MaxSim over the raw float32 vectors (numpy, BLAS): queries [B, Q, D] -> the top-k
    document numbers [B, k], best first, `batch` queries per matrix product."""
    top = []
    for i in range(0, len(queries), batch):
        q = queries[i : i + batch]
        sims = q.reshape(-1, q.shape[-1]) @ flat.T  # [b*Q, M]
        scores = np.maximum.reduceat(sims, starts, axis=1).reshape(len(q), q.shape[1], -1).sum(1)
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, best, 1), axis=1, kind="stable")
        top.append(np.take_along_axis(best, order, 1))
    return np.concatenate(top)


def exact_runs(queries: np.ndarray) -> dict[str, list[list[int]]]:
    """{"k10", "k100"}: exact top-k document numbers of every query, cached in CACHE by the
    queries' bytes (the reference every engine's recall is measured against)."""
    key = hashlib.sha1(queries.tobytes()).hexdigest()[:12]
    path = CACHE / f"exact_top100_{len(queries)}_{key}.npy"
    if not path.exists():
        flat, starts = load_flat()
        start = time.perf_counter()
        np.save(path, exact_top(flat, starts, queries, 100))
        print(f"exact MaxSim reference: {time.perf_counter() - start:.0f} s")
    top = np.load(path).tolist()
    return {"k10": [row[:10] for row in top], "k100": top}


# ----------------------------------------------------------------------------- engines
# Each engine is run inside a child process: build(index_dir, docs, doc_ids) writes its index;
# open(index_dir, device, settings) -> (search(queries [B, Q, D] float32, k) -> document numbers
# best first per query, memory_bytes() -> the engine's own in-memory figure or None).


def set_torch_threads() -> None:
    import torch  # the reference engines' venvs: heavy, and absent from this project's

    torch.set_num_threads(THREADS)


def build_ours(index_dir: Path, docs, doc_ids, nbits: int) -> None:
    from lateint_jax import build_index

    build_index(list(docs), doc_ids, index_dir, nbits=nbits)


def open_ours(index_dir: Path, device: str, settings: dict):
    import jax

    from lateint_jax import open_index

    if device == "gpu" and jax.default_backend() != "gpu":
        raise RuntimeError(f"--device gpu: jax has no GPU backend ({jax.devices()})")
    doc_ids = json.loads((CACHE / "meta.json").read_text())["doc_ids"]
    position = {doc_id: n for n, doc_id in enumerate(doc_ids)}
    index = open_index(index_dir)

    def search(queries, k):
        return [[position[d] for d, _ in row] for row in index.search(queries, k=k, **settings)]

    def memory_bytes():  # every live device buffer once: the index as placed on the device
        buffers = {}  # a view of another array's buffer (a shard's .data) is the same memory
        for a in jax.live_arrays():
            for shard in a.addressable_shards:
                buffers[shard.data.unsafe_buffer_pointer()] = shard.data.nbytes
        return sum(buffers.values())

    return search, memory_bytes


def build_colbert_ai(index_dir: Path, docs, doc_ids, nbits: int) -> None:
    """colbert-ai's own indexer (faiss k-means, ResidualCodec, IVF), fed the cached vectors in
    place of its encoder (the one part that needs a checkpoint)."""
    import torch
    from colbert.indexing import collection_indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    set_torch_threads()
    tensors = [torch.from_numpy(np.ascontiguousarray(d)) for d in docs]

    class CachedVectors:  # stands in for CollectionEncoder: passages are document numbers
        def __init__(self, config, checkpoint):
            pass

        def encode_passages(self, passages):
            rows = [tensors[int(p)] for p in passages]
            return torch.cat(rows), [len(r) for r in rows]

    collection_indexer.Checkpoint = lambda *args, **kwargs: None
    collection_indexer.CollectionEncoder = CachedVectors
    index_dir.mkdir(parents=True)
    with Run().context(RunConfig(nranks=1, experiment="bench", root=str(CACHE / "colbert-runs"))):
        config = ColBERTConfig.from_existing(
            ColBERTConfig(
                nbits=nbits, dim=docs[0].shape[1], checkpoint="cached", index_path=str(index_dir)
            ),
            Run().config,
        )
        collection_indexer.encode(config, [str(n) for n in range(len(docs))], [[None]], None, 0)


def open_colbert_ai(index_dir: Path, device: str, settings: dict):
    """colbert-ai's IndexScorer (C++ candidate generation and decompression) behind its own
    Searcher.dense_search, which picks ncells / centroid_score_threshold / ndocs from k. A
    Searcher is made without __init__ (that would load a query encoder we do not use), one per
    k because dense_search writes its choice into the config it is given."""
    import torch
    from colbert.infra import ColBERTConfig
    from colbert.modeling.colbert import ColBERT
    from colbert.search.index_storage import IndexScorer
    from colbert.searcher import Searcher

    set_torch_threads()
    scorer = IndexScorer(str(index_dir), use_gpu=False)
    ColBERT.try_load_torch_extensions(use_gpu=False)  # segmented_maxsim, built on first use
    searchers = {}

    def searcher(k):
        if k not in searchers:
            searchers[k] = Searcher.__new__(Searcher)
            searchers[k].config = ColBERTConfig.load_from_index(str(index_dir))
            searchers[k].config.configure(**settings)
            searchers[k].ranker = scorer
        return searchers[k]

    def search(queries, k):  # no batched search on CPU: Searcher.search_all loops too
        with torch.inference_mode():
            found = [searcher(k).dense_search(torch.from_numpy(q[None]), k)[0] for q in queries]
        return [list(map(int, row)) for row in found]

    return search, lambda: None


def build_fast_plaid(index_dir: Path, docs, doc_ids, nbits: int) -> None:
    import torch
    from fast_plaid.search import FastPlaid

    set_torch_threads()
    tensors = [torch.from_numpy(np.ascontiguousarray(d)) for d in docs]
    FastPlaid(index=str(index_dir), device="cpu").create(documents_embeddings=tensors, nbits=nbits)


def open_fast_plaid(index_dir: Path, device: str, settings: dict):
    import torch
    from fast_plaid.search import FastPlaid

    set_torch_threads()
    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("--device gpu: torch sees no CUDA device")
    index = FastPlaid(index=str(index_dir), device="cuda" if device == "gpu" else "cpu")

    def search(queries, k):
        hits = index.search(torch.from_numpy(queries), top_k=k, show_progress=False, **settings)
        return [[int(d) for d, _ in row] for row in hits]

    return search, lambda: None


def build_warp(index_dir: Path, docs, doc_ids, nbits: int) -> None:
    import torch
    from xtr_warp import XTRWarp

    set_torch_threads()
    tensors = [torch.from_numpy(np.ascontiguousarray(d)) for d in docs]
    XTRWarp(str(index_dir)).create(tensors, device="cpu", nbits=nbits, show_progress=False)


def open_warp(index_dir: Path, device: str, settings: dict):
    """XTRWarp at its own search defaults (hyperparams.optimize picks them from k and the
    index's density) unless settings name some; num_threads=THREADS (its default is 1)."""
    import torch
    from xtr_warp import XTRWarp

    set_torch_threads()
    index = XTRWarp(str(index_dir)).load(device="cuda" if device == "gpu" else "cpu")
    knobs = {"num_threads": THREADS, **settings}

    def search(queries, k):
        hits = index.search(torch.from_numpy(queries), top_k=k, show_progress=False, **knobs)
        return [[int(d) for d, _ in row] for row in hits]

    return search, lambda: int(index.estimate_index_memory()["total"])


def open_numpy(index_dir: Path, device: str, settings: dict):
    """Exact MaxSim over the raw float32 vectors (OpenBLAS), one query per matrix product (on
    2 cores 8 per product was slower: the [8*Q, M] similarity matrix alone is 0.8 GB)."""
    flat, starts = load_flat()
    batch = settings.get("batch", 1)

    def search(queries, k):
        return exact_top(flat, starts, queries, k, batch).tolist()

    return search, lambda: int(flat.nbytes + starts.nbytes)


@dataclasses.dataclass(frozen=True)
class Engine:
    venv: str | None  # a folder under .bench-venvs, or None: this interpreter
    open: object
    build: object = None  # None: no index to build (numpy reads the vector cache itself)
    devices: tuple[str, ...] = ("cpu",)
    k_independent: bool = False  # timed at the largest k only, its top-k cut for the others
    modules: tuple[str, ...] = ()  # imported before the RSS baseline: libraries are not index


COLBERT_MODULES = ("torch", "colbert.searcher", "colbert.modeling.colbert")
ENGINES = {
    "lateint": Engine(None, open_ours, build_ours, ("cpu", "gpu"), modules=("jax", "lateint_jax")),
    "colbert-ai": Engine("colbert", open_colbert_ai, build_colbert_ai, modules=COLBERT_MODULES),
    "fast-plaid": Engine(
        "warp", open_fast_plaid, build_fast_plaid, ("cpu", "gpu"), modules=("fast_plaid.search",)
    ),
    "warp": Engine("warp", open_warp, build_warp, modules=("xtr_warp",)),
    "numpy": Engine(None, open_numpy, k_independent=True),  # scores every document for any k
}
REFERENCE_ROWS = {  # row name -> (engine, settings); ours come from --ours-settings
    "colbert-ai defaults": ("colbert-ai", {}),
    "fast-plaid defaults": ("fast-plaid", {}),
    "WARP defaults": ("warp", {}),
    "WARP nprobe=32": ("warp", {"nprobe": 32}),
    "numpy exact MaxSim": ("numpy", {}),
}


# ----------------------------------------------------------------------------- child side


def index_folder(engine: str, nbits: int) -> Path:
    """Where an engine's index of the cached vectors lives (the 2-bit ones keep their old names)."""
    return INDEXES / (engine if nbits == NBITS else f"{engine}-nbits{nbits}")


def child_build(engine: str, nbits: int) -> dict:
    docs, _, meta = load_vectors()
    index_dir = index_folder(engine, nbits)
    shutil.rmtree(index_dir, ignore_errors=True)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    cpu, start = cpu_seconds(), time.perf_counter()
    ENGINES[engine].build(index_dir, docs, meta["doc_ids"], nbits)
    return {"wall_s": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu}


def child_search(engine: str, settings: dict, device: str, count, single: int, nbits: int) -> dict:
    """Open the index, warm up, then time every k one query at a time and batched."""
    queries = load_queries(count)
    for module in ENGINES[engine].modules:
        importlib.import_module(module)
    rss = rss_bytes()
    search, memory_bytes = ENGINES[engine].open(index_folder(engine, nbits), device, settings)
    out = {"runs": {}, "latency_ms": {}}
    timed_k = K_VALUES[-1:] if ENGINES[engine].k_independent else K_VALUES
    for k in timed_k:
        warm = queries if engine == "lateint" else queries[:2]
        search(warm, k)  # ours compiles one program per shape bucket: reach them all first
        for query in queries[:single] if engine == "lateint" else queries[:2]:
            search(query[None], k)
        start = time.perf_counter()
        out["runs"][f"k{k}"] = search(queries, k)
        out["latency_ms"][f"k{k}_batched"] = (time.perf_counter() - start) * 1e3 / len(queries)
        if single:
            out["latency_ms"][f"k{k}_single"] = timed_per_query(
                lambda q, k=k: search(q, k), queries[:single], False
            )
    for k in K_VALUES:  # an engine whose cost does not depend on k: its top-100 serves all
        if k not in timed_k:
            out["runs"][f"k{k}"] = [row[:k] for row in out["runs"][f"k{timed_k[0]}"]]
            for kind in ("batched", "single"):
                if f"k{timed_k[0]}_{kind}" in out["latency_ms"]:
                    out["latency_ms"][f"k{k}_{kind}"] = out["latency_ms"][f"k{timed_k[0]}_{kind}"]
    out["memory_bytes"] = memory_bytes()
    out["rss_growth_bytes"] = rss_bytes() - rss
    return out


def child_main(args) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.child == "build":
            result = child_build(args.engine, args.nbits)
        else:
            settings = json.loads(args.settings)
            result = child_search(
                args.engine, settings, args.device, args.queries, args.single_queries, args.nbits
            )
    except Exception as error:  # noqa: BLE001 (any failure: the parent's table says why)
        traceback.print_exc()
        Path(args.out).write_text(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 1
    result["peak_rss_bytes"] = rss_bytes("VmHWM")
    Path(args.out).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- parent side


def child_env(device: str) -> dict:
    threads = str(THREADS)
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "RAYON_NUM_THREADS": threads,
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}",
        "JAX_COMPILATION_CACHE_DIR": str(CACHE.parent / "jax-cache"),  # fewer recompiles per rep
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "PYTHONUNBUFFERED": "1",
    }
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def python_for(engine: str) -> Path:
    venv = ENGINES[engine].venv
    return Path(sys.executable) if venv is None else VENVS / venv / "bin" / "python"


def run_child(engine: str, phase: str, args, tag: str, settings: dict | None = None) -> dict:
    """Run this file as a child (`--child phase`) in the engine's interpreter; returns its JSON
    (with its peak RSS) plus its CPU seconds and the load average around it, or {"error": why}."""
    python = python_for(engine)
    if not python.exists():
        return {"error": f"{python} is missing: run benchmarks/setup_reference_engines.sh"}
    logs = CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out_path, log_path = logs / f"{tag}.json", logs / f"{tag}.log"
    out_path.unlink(missing_ok=True)
    command = [str(python), str(Path(__file__).resolve()), "--child", phase, "--engine", engine]
    command += ["--out", str(out_path), "--device", args.device, "--nbits", str(args.nbits)]
    command += [
        "--settings",
        json.dumps(settings or {}),
        "--single-queries",
        str(args.single_queries),
    ]
    if args.queries:
        command += ["--queries", str(args.queries)]
    before = loadavg()
    with open(log_path, "w") as log:
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=child_env(args.device), cwd=REPO
        )
        timer = threading.Timer(CHILD_TIMEOUT_S, child.kill)
        timer.start()
        _, status, usage = os.wait4(child.pid, 0)
        timer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    if child.returncode != 0 and "error" not in result:
        tail = log_path.read_text()[-600:].strip().replace("\n", " | ")
        result["error"] = f"exit status {child.returncode}; last output: {tail}"
    result.update(loadavg_before=before, loadavg_after=loadavg())
    result["child_cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def ensure_index(engine: str, args) -> dict:
    """The engine's build record (building when missing or asked to); {"error": ...} if it fails."""
    folder = index_folder(engine, args.nbits)
    record_path = folder.with_name(f"{folder.name}.build.json")
    rebuild = args.rebuild or (args.rebuild_ours and engine == "lateint")
    if ENGINES[engine].build is None:
        files = {
            n: p.stat().st_size
            for n, p in (
                ("doc_vectors.npy", CACHE / "doc_vectors.npy"),
                ("doc_lengths.npy", CACHE / "doc_lengths.npy"),
            )
        }
        return {"files": files, "note": "no index: the raw float32 vectors"}
    if not rebuild and record_path.exists() and folder.exists():
        return json.loads(record_path.read_text())
    print(
        f"building {folder.name} ... (log: {CACHE / 'logs' / f'build-{folder.name}.log'})",
        flush=True,
    )
    record_path.unlink(missing_ok=True)
    result = run_child(engine, "build", args, f"build-{folder.name}")
    if "error" in result:
        return result
    result["files"] = folder_bytes(folder)
    result["built_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result["machine"] = machine()
    record_path.write_text(json.dumps(result, indent=2))
    print(
        f"built {folder.name}: {result['wall_s']:.0f} s wall, {result['cpu_s']:.0f} s CPU",
        flush=True,
    )
    return result


def plan_rows(args) -> dict[str, tuple[str, dict]]:
    rows = {
        f"lateint {name}": ("lateint", knobs)
        for name, knobs in json.loads(args.ours_settings).items()
    }
    rows.update(REFERENCE_ROWS)
    return {
        name: (engine, knobs)
        for name, (engine, knobs) in rows.items()
        if engine not in args.skip and args.device in ENGINES[engine].devices
    }


def summarise(
    row: dict, reps: list[dict], build: dict, exact: dict, meta: dict, tokens: int
) -> None:
    """Fill `row` from its repetitions: medians, recall and nDCG from the first good one."""
    good = [r for r in reps if "error" not in r]
    row["repetitions"] = [
        {
            key: r.get(key)
            for key in ("latency_ms", "loadavg_before", "loadavg_after", "peak_rss_bytes", "error")
        }
        for r in reps
    ]
    if not good:
        row["error"] = reps[0]["error"] if reps else "not run"
        return
    keys = good[0]["latency_ms"]
    row["latency_ms"] = {key: statistics.median(r["latency_ms"][key] for r in good) for key in keys}
    row["qps"] = {f"k{k}": 1e3 / row["latency_ms"][f"k{k}_batched"] for k in K_VALUES}
    runs = good[0]["runs"]
    row["recall@10"] = overlap(runs["k10"], exact["k10"], 10)
    row["recall@100"] = overlap(runs["k100"], exact["k100"], 100)
    row["ndcg@10"] = ndcg10(runs["k10"], meta)
    row["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in good)
    memory = good[0].get("memory_bytes")
    row["memory_bytes_per_vector"] = (memory or good[0]["rss_growth_bytes"]) / tokens
    row["memory_measure"] = "engine's own figure" if memory else "RSS growth from load and warm-up"
    row["loadavg_1min_median"] = statistics.median(
        float(r[key].split()[0]) for r in good for key in ("loadavg_before", "loadavg_after")
    )
    if "files" in build:
        row["disk_bytes_per_vector"] = sum(build["files"].values()) / tokens
    for key in ("wall_s", "cpu_s", "peak_rss_bytes", "loadavg_before", "loadavg_after", "built_at"):
        if key in build:
            row.setdefault("build", {})[key] = build[key]


def add_ratios(rows: dict) -> str | None:
    """Each row's latency divided by ours (the first lateint row): > 1 means ours is faster."""
    ours = next((n for n, r in rows.items() if n.startswith("lateint") and "latency_ms" in r), None)
    if ours is None:
        return None
    for row in rows.values():
        if "latency_ms" in row:
            row["latency_vs_ours"] = {
                key: value / rows[ours]["latency_ms"][key]
                for key, value in row["latency_ms"].items()
                if key in rows[ours]["latency_ms"]
            }
    return ours


def table(rows: dict, ours: str | None) -> str:
    head = ["row", "build s wall/CPU", "disk B/vec", "mem B/vec", "peak RSS MB", "k10 1q ms",
            "k10 batch ms", "QPS k10", "k100 1q ms", "k100 batch ms", "R@10", "R@100",
            "nDCG@10", f"1q k10 ÷ {ours or 'ours'}", "load 1-min"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}"

    for name, r in rows.items():
        if "error" in r:
            lines.append(
                f"| {name} | cannot run: {r['error'][:400].replace('|', '/')} |"
                + " |" * (len(head) - 2)
            )
            continue
        lat, build = r["latency_ms"], r.get("build", {})
        cells = [
            name,
            f"{f(build.get('wall_s'), 0)}/{f(build.get('cpu_s'), 0)}" if build else "-",
            f(r.get("disk_bytes_per_vector")),
            f(r.get("memory_bytes_per_vector")),
            f(r["peak_rss_bytes"] / 2**20, 0),
            f(lat.get("k10_single")), f(lat.get("k10_batched")), f(r["qps"]["k10"]),
            f(lat.get("k100_single")), f(lat.get("k100_batched")),
            f(r["recall@10"], 3), f(r["recall@100"], 3), f(r["ndcg@10"], 4),
            f(r.get("latency_vs_ours", {}).get("k10_single"), 2),
            f(r["loadavg_1min_median"], 2),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def require_gpu() -> None:
    try:
        listed = subprocess.run(
            ["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        sys.exit(f"--device gpu: no GPU on this machine (nvidia-smi: {error})")
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        sys.exit(
            f"--device gpu: no GPU on this machine (nvidia-smi -L: {listed.stderr.strip() or listed.stdout.strip()})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--queries", type=int, default=None, help="use the first N test queries (default: all 300)"
    )
    parser.add_argument(
        "--single-queries", type=int, default=50, help="queries timed one at a time"
    )
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions of every row")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=sorted(ENGINES),
        help="leave an engine out (repeatable)",
    )
    parser.add_argument(
        "--ours-settings", default='{"defaults": {}}', help="JSON: row name -> our search knobs"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild every index")
    parser.add_argument("--rebuild-ours", action="store_true", help="rebuild our index only")
    parser.add_argument(
        "--build-only", action="store_true", help="build the missing indexes, time nothing"
    )
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--nbits", type=int, choices=(1, 2, 4), default=NBITS,
        help="residual bits per dimension of every engine's index (fast-plaid's, PyLate's and "
        "xtr-warp-rs's own default is 4)",
    )  # fmt: skip
    parser.add_argument(
        "--results", type=Path, default=None,
        help="where to write the JSON (default: results/engines.json, or engines_nbits<N>.json)",
    )  # fmt: skip
    parser.add_argument("--encode-only", action="store_true", help="only fill the vector cache")
    parser.add_argument("--child", choices=("build", "search"), help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=sorted(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    if args.results is None:
        args.results = (
            RESULTS if args.nbits == NBITS else RESULTS.with_name(f"engines_nbits{args.nbits}.json")
        )
    if args.device == "gpu":
        require_gpu()
    meta = encode_scifact()
    if args.encode_only:
        return 0
    rows = plan_rows(args)
    builds = {
        engine: ensure_index(engine, args) for engine in dict.fromkeys(e for e, _ in rows.values())
    }
    if args.build_only:
        print(
            json.dumps(
                {e: b.get("error", f"{b.get('wall_s', 0):.0f} s") for e, b in builds.items()},
                indent=2,
            )
        )
        return 0
    queries = load_queries(args.queries)
    exact = exact_runs(queries)
    reps: dict[str, list[dict]] = {name: [] for name in rows}
    for rep in range(args.reps):
        for name, (engine, settings) in rows.items():
            if "error" in builds[engine] or any("error" in r for r in reps[name]):
                continue  # a row that failed once is not retried
            tag = f"search-{name.replace(' ', '_').replace('/', '_')}-{rep}"
            result = run_child(engine, "search", args, tag, settings)
            reps[name].append(result)
            took = result.get("latency_ms", {}).get("k10_single")
            print(f"rep {rep + 1}/{args.reps} {name}: "
                  f"{result.get('error') or f'k10 one query {took:.1f} ms'} (load {result['loadavg_after']})", flush=True)  # fmt: skip
    tokens = token_count()
    report_rows = {}
    for name, (engine, settings) in rows.items():
        row = report_rows[name] = {"engine": engine, "settings": settings}
        if ENGINES[engine].build is not None:
            row["nbits"] = args.nbits
        if "error" in builds[engine]:
            row["error"] = f"build failed: {builds[engine]['error']}"
            continue
        summarise(row, reps[name], builds[engine], exact, meta, tokens)
    ours = add_ratios(report_rows)
    box = machine()
    text = table(report_rows, ours) + (
        f"\n\n{len(queries)} queries ({min(args.single_queries, len(queries))} timed one at a "
        f"time), medians of {args.reps} interleaved repetitions, {THREADS} threads, {args.nbits}-bit "
        f"indexes; {box['cpu_model']} x{box['cpu_count']}, {box['platform']}; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; 'load 1-min': median "
        "/proc/loadavg around the row's children (this run's own child counts too)."
    )
    print(text)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": box,
        "device": args.device,
        "dataset": f"BEIR SciFact test ({len(queries)} queries, {len(meta['doc_ids'])} documents)",
        "vectors": {"model": meta["model"], "count": tokens, "dim": int(queries.shape[-1])},
        "method": {
            "repetitions": args.reps,
            "threads": THREADS,
            "single_queries": min(args.single_queries, len(queries)),
            "reference": "exact MaxSim over the raw float32 vectors (numpy)",
            "latency_vs_ours": "row latency / ours (the first lateint row): > 1 means ours is faster",
        },
        "rows": report_rows,
        "table": text,
    }
    write_report(args.results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
