"""SciFact search benchmark: exact MaxSim, our PLAID, colbert-ai's PLAID and fast-plaid side by
side in one run, on the same token vectors and the same cores.

    python benchmarks/index_search.py [--queries 300] [--skip-references]

Token vectors come from the packaged all-MiniLM-L6-v2 under colbert-ai's conventions
(`ColBERT.from_pretrained(None, config=ColBERTConfig())`: markers, [MASK] queries, the seeded
128-d projection; the default before issue 13), encoded once and cached under the git-ignored
`.bench-cache/scifact/`. Every engine reads that cache. colbert-ai and fast-plaid need their own
torch builds, so they run as subprocesses of this same file in venvs under `.bench-venvs/`
(`--engine colbert-ai|fast-plaid`); when one cannot run, the table says why.

Reported per engine: build time, index bytes per token vector (every file on disk), latency per
query one at a time and batched, top-10/top-100 overlap with exact search on the raw vectors,
nDCG@10 (pytrec_eval); for our PLAID also the overlap with exact MaxSim over the same compressed
index. Both PLAIDs run at their own default knobs and at each other's (same-settings rows), so
speed is compared at equal settings too. Writes benchmarks/results/index_search.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LATEINT_DATA", REPO.parent / "shared" / "data")) / "scifact"
CACHE = Path(os.environ.get("LATEINT_BENCH_CACHE", REPO / ".bench-cache" / "scifact"))
RESULTS = REPO / "benchmarks" / "results" / "index_search.json"
VENVS = REPO / ".bench-venvs"
K_VALUES = (10, 100)


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


# ----------------------------------------------------------------------------- token vectors


def ensure_cache_dir() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")  # the cache must never reach git


def encode_scifact() -> dict:
    """Encode SciFact once (documents and judged test queries) into CACHE; return its paths."""
    ensure_cache_dir()
    paths = {name: CACHE / f"{name}.npy" for name in ("doc_vectors", "doc_lengths", "queries")}
    meta_path = CACHE / "meta.json"
    if meta_path.exists() and all(p.exists() for p in paths.values()):
        return json.loads(meta_path.read_text())
    from lateint_jax.data.beir import load_beir
    from lateint_jax.encoders import ColBERT
    from lateint_jax.models.colbert import ColBERTConfig

    dataset = load_beir(DATA, "test")
    # colbert-ai's conventions (markers, [MASK], 128-d seeded projection, 180 tokens): the
    # figures in results/ were measured with these, the default before issue 13.
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


def load_vectors():
    """-> (docs: list of [T_i, 128] float32 views, queries [B, 32, 128], meta)."""
    meta = json.loads((CACHE / "meta.json").read_text())
    flat = np.load(CACHE / "doc_vectors.npy")
    lengths = np.load(CACHE / "doc_lengths.npy")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    docs = [flat[offsets[n] : offsets[n + 1]] for n in range(len(lengths))]
    return docs, np.load(CACHE / "queries.npy"), meta


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
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, reference)]))


def ndcg10(found: list[list[int]], meta: dict) -> float:
    from lateint_jax.eval import evaluate_run

    ids = meta["doc_ids"]
    run = {
        q: {ids[d]: float(len(row) - rank) for rank, d in enumerate(row)}
        for q, row in zip(meta["query_ids"], found)
    }
    return evaluate_run(run, meta["qrels"])["ndcg@10"]


def folder_bytes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- engines


def run_exact(docs, queries, single_queries: int = 30) -> dict:
    """Exact MaxSim on the raw (uncompressed) vectors: the reference every engine is scored
    against (its top-10 is the head of its top-100). Latency one query at a time is measured
    on the first `single_queries`; also reports the achieved GFLOP/s."""
    import jax

    from lateint_jax import sharding
    from lateint_jax.index import exact

    mesh = sharding.data_mesh(jax.devices()[:1])
    vectors, lengths, live = exact.place_documents(docs, mesh)
    mask = np.ones(queries.shape[:2], bool)

    def search(q, k):
        _, ids = exact.search_vectors(vectors, lengths, q, mask[: len(q)], live, k, mesh)
        return np.asarray(ids)

    def batched(q, k=100):
        return np.concatenate([search(q[i : i + 32], k) for i in range(0, len(q), 32)])

    batched(queries[:64])  # compile the full batch and the tail shapes
    batched(queries[len(queries) // 32 * 32 :])
    search(queries[:1], 10)
    start = time.perf_counter()
    top100 = batched(queries)
    batched_ms = (time.perf_counter() - start) * 1e3 / len(queries)
    single_ms = timed_per_query(lambda q: search(q, 10), queries[:single_queries], False)
    out = {
        "runs": {"k10": top100[:, :10].tolist(), "k100": top100.tolist()},
        "latency_ms": {"k10_single": single_ms, "k100_batched": batched_ms},
    }
    tokens = int(vectors.shape[0] * vectors.shape[1])
    flops = 2 * queries.shape[1] * queries.shape[2] * tokens
    out["gflops_batched"] = flops / (batched_ms * 1e-3) / 1e9
    out["gflops_single"] = flops / (single_ms * 1e-3) / 1e9
    out["padded_token_vectors"] = tokens
    return out


def run_numpy(docs, queries, count: int = 10) -> dict:
    """numpy brute force, one query at a time (the issue's 95 ms/query reference)."""
    flat = np.concatenate(docs)
    starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])[:-1]])
    start = time.perf_counter()
    for query in queries[:count]:
        sims = query @ flat.T  # [Q, M]
        np.maximum.reduceat(sims, starts, axis=1).sum(0).argsort()[::-1][:10]
    ms = (time.perf_counter() - start) * 1e3 / count
    flops = 2 * queries.shape[1] * queries.shape[2] * flat.shape[0]
    return {"latency_ms": {"k10_single": ms}, "gflops_single": flops / (ms * 1e-3) / 1e9}


def run_ours(docs, queries, meta) -> dict:
    import jax

    from lateint_jax.index.build import build_index
    from lateint_jax.index.colbert_index import ColBERTIndex

    index_dir = CACHE / "indexes" / "lateint"
    start = time.perf_counter()
    build_index(docs, meta["doc_ids"], index_dir, nbits=2, overwrite=True, progress=False)
    out = {"build_seconds": time.perf_counter() - start, "runs": {}, "latency_ms": {}}
    files = folder_bytes(index_dir)
    vectors = sum(len(d) for d in docs)
    out["bytes_per_vector"] = sum(files.values()) / vectors
    out["bytes_per_vector_by_file"] = {n: b / vectors for n, b in sorted(files.items())}
    index = ColBERTIndex.load(index_dir, devices=jax.devices()[:1])
    out["num_centroids"] = index.arrays.num_centroids
    position = {doc_id: n for n, doc_id in enumerate(meta["doc_ids"])}
    from lateint_jax.index.plaid import PlaidParams

    at_colbert_ai = {"runs": {}, "latency_ms": {}, "settings": {}}
    for result, params in ((out, PlaidParams.defaults), (at_colbert_ai, PlaidParams.colbert_ai)):
        for k in K_VALUES:
            knobs = dataclasses.asdict(params(k))
            result.setdefault("settings", {})[k] = knobs

            def search(q, k=k, knobs=knobs):
                return index.search(q, k=k, **knobs)

            hits = search(queries)  # also compiles the batch buckets
            for query in queries:  # compile every candidate-count bucket the queries reach
                search(query[None])
            result["runs"][f"k{k}"] = [[position[d] for d, _ in row] for row in hits]
            result["latency_ms"][f"k{k}_single"] = timed_per_query(search, queries, False)
            result["latency_ms"][f"k{k}_batched"] = timed_per_query(search, queries, True)
    out["at_colbert_ai_settings"] = at_colbert_ai
    start = time.perf_counter()
    exact_hits = index.exact_search(queries, k=100)  # exact MaxSim over the same index
    out["exact_same_index_seconds"] = time.perf_counter() - start
    same = [[position[d] for d, _ in row] for row in exact_hits]
    for result in (out, at_colbert_ai):
        result["overlap_with_exact_on_same_index"] = {
            "top10": overlap(result["runs"]["k10"], [row[:10] for row in same], 10),
            "top100": overlap(result["runs"]["k100"], same, 100),
        }
    out["same_index_exact_runs"] = same
    return out


def engine_colbert_ai(out_path: Path) -> None:
    """Runs inside .bench-venvs/colbert: colbert-ai's own indexer (faiss k-means, ResidualCodec,
    IVF) and IndexScorer (its C++ candidate filter and decompression), fed the cached vectors
    instead of its encoder."""
    import torch

    torch.set_num_threads(2)
    from colbert.indexing import collection_indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig
    from colbert.search.index_storage import IndexScorer

    docs, queries, _ = load_vectors()
    tensors = [torch.from_numpy(np.ascontiguousarray(d)) for d in docs]

    class CachedVectors:  # stands in for CollectionEncoder: passages are document numbers
        def __init__(self, config, checkpoint):
            pass

        def encode_passages(self, passages):
            rows = [tensors[int(p)] for p in passages]
            return torch.cat(rows), [len(r) for r in rows]

    collection_indexer.Checkpoint = lambda *args, **kwargs: None
    collection_indexer.CollectionEncoder = CachedVectors
    index_dir = CACHE / "indexes" / "colbert-ai"
    shutil.rmtree(index_dir, ignore_errors=True)
    index_dir.mkdir(parents=True)
    out = {"runs": {}, "latency_ms": {}}
    with Run().context(RunConfig(nranks=1, experiment="bench", root=str(CACHE / "colbert-runs"))):
        config = ColBERTConfig.from_existing(
            ColBERTConfig(nbits=2, dim=128, checkpoint="cached", index_path=str(index_dir)),
            Run().config,
        )
        start = time.perf_counter()
        collection_indexer.encode(config, [str(n) for n in range(len(docs))], [[None]], None, 0)
        out["build_seconds"] = time.perf_counter() - start
        files = folder_bytes(index_dir)
        vectors = sum(len(d) for d in docs)
        out["bytes_per_vector"] = sum(files.values()) / vectors
        out["bytes_per_vector_by_file"] = {n: b / vectors for n, b in sorted(files.items())}
        scorer = IndexScorer(str(index_dir), use_gpu=False)
        from colbert.modeling.colbert import ColBERT

        ColBERT.try_load_torch_extensions(use_gpu=False)  # segmented_maxsim, built on first use
        q = torch.from_numpy(queries)
        ours = json.loads(os.environ["LATEINT_PLAID_DEFAULTS"])
        runs = {"colbert-ai": {10: (1, 0.5, 256), 100: (2, 0.45, 1024)}}  # Searcher.dense_search's
        runs["colbert-ai at lateint's settings"] = {int(k): tuple(v) for k, v in ours.items()}
        for name, settings_by_k in runs.items():
            result = out if name == "colbert-ai" else {"runs": {}, "latency_ms": {}}
            for k in K_VALUES:
                ncells, threshold, ndocs = settings_by_k[k]
                search_config = ColBERTConfig.from_existing(config)
                search_config.configure(
                    ncells=ncells, centroid_score_threshold=threshold, ndocs=ndocs
                )

                def search(batch, config=search_config, k=k):
                    return [scorer.rank(config, row[None])[0][:k] for row in batch]

                search(q[:2])
                result["runs"][f"k{k}"] = [list(map(int, r)) for r in search(q)]
                result["latency_ms"][f"k{k}_single"] = timed_per_query(search, q, False)
                result["latency_ms"][f"k{k}_batched"] = timed_per_query(search, q, True)
            result["settings"] = {k: list(v) for k, v in settings_by_k.items()}
            if result is not out:
                out["at_lateint_settings"] = result
        out["same_index_exact_runs"] = colbert_ai_exact(scorer, len(docs), q)
        out["notes"] = "no batched search on CPU: Searcher.search_all loops over queries"
    out_path.write_text(json.dumps(out))


def colbert_ai_exact(scorer, num_docs: int, queries) -> list[list[int]]:
    """Exact MaxSim over colbert-ai's own decompressed index (its codec, every document):
    the top-100 document numbers per query, the reference its PLAID's overlap is measured on."""
    import torch

    flat, lengths = scorer.lookup_pids(torch.arange(num_docs), out_device="cpu")
    lengths = lengths.tolist()
    longest = max(lengths)
    docs = torch.zeros(num_docs, longest, flat.shape[1])
    mask = torch.zeros(num_docs, longest, dtype=torch.bool)
    start = 0
    for n, length in enumerate(lengths):
        docs[n, :length] = flat[start : start + length]
        mask[n, :length] = True
        start += length
    top = []
    with torch.no_grad():
        for query in queries:
            sims = (docs.view(-1, docs.shape[-1]) @ query.T).view(num_docs, longest, -1)
            scores = sims.masked_fill(~mask[..., None], -1e4).amax(1).sum(-1)
            top.append(torch.topk(scores, 100).indices.tolist())
    return top


def engine_fast_plaid(out_path: Path) -> None:
    """Runs inside .bench-venvs/fastplaid (see the module docstring)."""
    import torch

    torch.set_num_threads(2)
    from fast_plaid import search as fast_plaid_search

    docs, queries, _ = load_vectors()
    index_dir = CACHE / "indexes" / "fast-plaid"
    shutil.rmtree(index_dir, ignore_errors=True)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    out = {"runs": {}, "latency_ms": {}}
    index = fast_plaid_search.FastPlaid(index=str(index_dir), device="cpu")
    start = time.perf_counter()
    index.create(documents_embeddings=[torch.from_numpy(np.ascontiguousarray(d)) for d in docs])
    out["build_seconds"] = time.perf_counter() - start
    files = folder_bytes(index_dir)
    out["bytes_per_vector"] = sum(files.values()) / sum(len(d) for d in docs)
    q = torch.from_numpy(queries)
    for k in K_VALUES:

        def search(batch, k=k):
            return index.search(queries_embeddings=batch, top_k=k)

        search(q[:1])
        out["runs"][f"k{k}"] = [[int(d) for d, _ in row] for row in search(q)]
        out["latency_ms"][f"k{k}_single"] = timed_per_query(search, q, False)
        out["latency_ms"][f"k{k}_batched"] = timed_per_query(search, q, True)
    out_path.write_text(json.dumps(out))


REFERENCE_ENGINES = {"colbert-ai": "colbert", "fast-plaid": "fastplaid"}
WHY_NOT = {
    "fast-plaid": (
        "fast-plaid 1.7.0.2110 (every fast-plaid wheel pins one torch: 2.6-2.11) requires "
        "torch==2.11.0; the only local torch is 2.13.0+cpu and the registry's torch 2.11.0 "
        "Linux wheel is the CUDA build the project rules forbid. Installed --no-deps beside "
        "torch 2.13.0+cpu, its compiled extension crashes (SIGSEGV) in FastPlaid.create "
        "(C++ ABI mismatch)."
    ),
}


def run_reference(name: str) -> dict:
    """Run a reference engine in its own venv; on failure return why."""
    python = VENVS / REFERENCE_ENGINES[name] / "bin" / "python"
    if not python.exists():
        return {"error": f"{python} is missing (see the module docstring to create it)"}
    out_path = CACHE / f"{name}.json"
    out_path.unlink(missing_ok=True)
    from lateint_jax.index.plaid import PlaidParams

    ours = {k: list(dataclasses.astuple(PlaidParams.defaults(k))) for k in K_VALUES}
    done = subprocess.run(
        [str(python), __file__, "--engine", name],
        env={**os.environ, "LATEINT_PLAID_DEFAULTS": json.dumps(ours)},
        check=False,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0 or not out_path.exists():
        tail = (done.stderr or done.stdout)[-600:].strip().replace("\n", " | ")
        reason = WHY_NOT.get(name, "")
        return {"error": f"exit status {done.returncode}. {reason} Last output: {tail}"}
    return json.loads(out_path.read_text())


# ----------------------------------------------------------------------------- report


def summarise(engines: dict, reference: dict, meta: dict) -> None:
    for result in engines.values():
        if "runs" not in result:
            continue
        result["top10_overlap"] = overlap(result["runs"]["k10"], reference["runs"]["k10"], 10)
        result["top100_overlap"] = overlap(result["runs"]["k100"], reference["runs"]["k100"], 100)
        result["ndcg@10"] = ndcg10(result["runs"]["k10"], meta)
        result["ndcg@10_from_k100"] = ndcg10(result["runs"]["k100"], meta)
    ours = engines["lateint PLAID"]["latency_ms"]
    for name, result in engines.items():
        if "latency_ms" in result and name != "lateint PLAID":
            result["ours_speedup"] = {
                key: value / ours[key] for key, value in result["latency_ms"].items() if key in ours
            }
    same_settings = {
        "colbert-ai": "lateint PLAID at colbert-ai's settings",
        "colbert-ai at lateint's settings": "lateint PLAID",
    }
    for reference_name, ours_name in same_settings.items():
        if "latency_ms" in engines.get(reference_name, {}):
            mine = engines[ours_name]["latency_ms"]
            engines[reference_name]["ours_speedup_same_settings"] = {
                key: value / mine[key]
                for key, value in engines[reference_name]["latency_ms"].items()
                if key in mine
            }


def print_table(engines: dict) -> None:
    head = f"{'engine':<40}{'build s':>9}{'B/vec':>7}{'k10 1q':>9}{'k10 bat':>9}"
    head += f"{'k100 1q':>9}{'k100 bat':>9}{'ov@10':>7}{'ov@100':>7}{'nDCG@10':>8}"
    print(head + "   (latency in ms per query)")
    for name, r in engines.items():
        if "error" in r:
            print(f"{name:<40}cannot run: {r['error'][:300]}")
            continue
        lat = r.get("latency_ms", {})
        cells = [r.get("build_seconds"), r.get("bytes_per_vector")]
        cells += [lat.get(k) for k in ("k10_single", "k10_batched", "k100_single", "k100_batched")]
        cells += [r.get("top10_overlap"), r.get("top100_overlap"), r.get("ndcg@10")]
        widths = (9, 7, 9, 9, 9, 9, 7, 7, 8)
        digits = (1, 1, 2, 2, 2, 2, 3, 3, 4)
        text = "".join(
            f"{'-':>{w}}" if v is None else f"{v:>{w}.{d}f}"
            for v, w, d in zip(cells, widths, digits)
        )
        print(f"{name:<40}{text}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encode-only", action="store_true", help="only fill the vector cache")
    parser.add_argument("--skip-references", action="store_true", help="no colbert-ai/fast-plaid")
    parser.add_argument("--queries", type=int, default=None, help="use the first N test queries")
    parser.add_argument("--engine", choices=sorted(REFERENCE_ENGINES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:  # a reference engine inside its own venv
        {"colbert-ai": engine_colbert_ai, "fast-plaid": engine_fast_plaid}[args.engine](
            CACHE / f"{args.engine}.json"
        )
        return 0
    meta = encode_scifact()
    print(f"encoded {len(meta['doc_ids'])} documents in {meta['encode_seconds']:.0f} s")
    if args.encode_only:
        return 0
    docs, queries, meta = load_vectors()
    if args.queries:
        queries = queries[: args.queries]
        meta["query_ids"] = meta["query_ids"][: args.queries]
    engines = {}
    reference = run_exact(docs, queries)
    engines["exact MaxSim"] = reference
    engines["numpy brute"] = run_numpy(docs, queries)
    engines["lateint PLAID"] = run_ours(docs, queries, meta)
    engines["lateint PLAID at colbert-ai's settings"] = engines["lateint PLAID"].pop(
        "at_colbert_ai_settings"
    )
    if not args.skip_references:
        for name in REFERENCE_ENGINES:
            engines[name] = run_reference(name)
            if "at_lateint_settings" in engines[name]:
                engines[f"{name} at lateint's settings"] = engines[name].pop("at_lateint_settings")
    summarise(engines, reference, meta)
    colbert_ai_same = engines.get("colbert-ai", {}).pop("same_index_exact_runs", None)
    if colbert_ai_same is not None:
        for name in ("colbert-ai", "colbert-ai at lateint's settings"):
            runs = engines[name]["runs"]
            engines[name]["overlap_with_exact_on_same_index"] = {
                "top10": overlap(runs["k10"], [r[:10] for r in colbert_ai_same], 10),
                "top100": overlap(runs["k100"], colbert_ai_same, 100),
            }
        engines["colbert-ai exact (same index)"] = {
            "top10_overlap": overlap(
                [r[:10] for r in colbert_ai_same], reference["runs"]["k10"], 10
            ),
            "top100_overlap": overlap(colbert_ai_same, reference["runs"]["k100"], 100),
            "ndcg@10": ndcg10([r[:10] for r in colbert_ai_same], meta),
            "notes": "exact MaxSim over colbert-ai's decompressed 2-bit index",
        }
    same = engines["lateint PLAID"].pop("same_index_exact_runs")
    engines["lateint exact (same index)"] = {
        "top10_overlap": overlap([r[:10] for r in same], reference["runs"]["k10"], 10),
        "top100_overlap": overlap(same, reference["runs"]["k100"], 100),
        "ndcg@10": ndcg10([r[:10] for r in same], meta),
        "notes": "exact MaxSim over our decompressed 2-bit index: the ceiling for any search of it",
    }
    print_table(engines)
    for name, result in engines.items():
        if "overlap_with_exact_on_same_index" not in result:
            continue
        same = result["overlap_with_exact_on_same_index"]
        print(f"{name} vs exact MaxSim on the same index: top-10 overlap {same['top10']:.3f}, "
              f"top-100 {same['top100']:.3f}")  # fmt: skip
    print(f"exact MaxSim: {reference['gflops_batched']:.0f} GFLOP/s batched, "
          f"{reference['gflops_single']:.0f} one query at a time; numpy "
          f"{engines['numpy brute']['gflops_single']:.0f}")  # fmt: skip
    for result in engines.values():
        result.pop("runs", None)
    report = {
        "machine": machine(),
        "dataset": "BEIR SciFact test (300 queries, 5183 documents)",
        "vectors": {"model": meta["model"], "count": int(sum(len(d) for d in docs)), "dim": 128},
        "queries": len(queries),
        "engines": engines,
    }
    write_report(RESULTS, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
