"""Encoding throughput, ours against the PyTorch libraries users would pick, on SciFact.

    python benchmarks/encode.py [--limit N] [--batch-size 32] [--repeats 3] [--bf16]

Two comparisons, each on the same texts (title + " " + text), model, lengths and batch size:
  bi-encoder: our `BiEncoder` against sentence-transformers, all-MiniLM-L6-v2 (packaged), 256 tokens;
  ColBERT documents: our `ColBERT.encode_documents` against PyLate 1.6's `encode(is_query=False)`,
    on the packaged default ColBERT written in PyLate's layout (so both load the same weights),
    at its document length (180).
Every run is its own subprocess (peak RSS per engine; PyLate in its own venv,
.bench-venvs/pylate or $LATEINT_PYLATE_PYTHON) and makes a cold pass (JAX: compiling) then a warm
pass; passages/s is the warm pass. Engines run interleaved (A, B, A, B, ...) `--repeats` times
with OMP_WAIT_POLICY=PASSIVE and the same thread count, /proc/loadavg recorded before and after
each run; the table gives medians and the ratio of medians. Each pass also records the worker's
CPU seconds (all its threads): on a shared machine, passages per CPU-second is the figure other
jobs disturb least, and CPU seconds over wall seconds shows how much of the cores a run got. Outputs of each pair are compared (max abs
difference). Writes benchmarks/results/encode.json naming the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "encode.json"
DATA = Path(os.environ.get("LATEINT_DATA", REPO.parent / "shared" / "data")) / "scifact"
PYLATE_PYTHON = Path(
    os.environ.get("LATEINT_PYLATE_PYTHON", REPO / ".bench-venvs" / "pylate" / "bin" / "python")
)
PAIRS = {"bi-encoder": ("jax-bi", "st-bi"), "colbert-docs": ("jax-colbert", "pylate-colbert")}


def read_corpus(limit: int | None) -> list[str]:
    texts = []
    with open(DATA / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            title = row.get("title") or ""
            texts.append((f"{title} {row['text']}" if title else row["text"]).strip())
            if limit and len(texts) >= limit:
                break
    return texts


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(encode, texts) -> tuple[object, list[float], list[float]]:
    """encode(texts) cold, then warm: (output, wall seconds, CPU seconds of this process)."""
    times, cpu_times = [], []
    for _ in range(2):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = encode(texts)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return out, times, cpu_times


# ---------------------------------------------------------------------------- workers
def worker_jax_bi(texts, args):
    import jax
    import jax.numpy as jnp

    from lateint_jax.encoders import BiEncoder

    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    model = BiEncoder.from_pretrained(args.model, max_length=args.max_length, compute_dtype=dtype)
    emb, *timing = timed(lambda t: model.encode(t, batch_size=args.batch_size), texts)
    return emb, {"device": str(jax.devices()[0]), "version": f"jax {jax.__version__}"}, timing


def worker_jax_colbert(texts, args):
    import jax
    import jax.numpy as jnp

    from lateint_jax.encoders import ColBERT

    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    model = ColBERT.from_pretrained(args.model, compute_dtype=dtype)
    docs, *timing = timed(lambda t: model.encode_documents(t, batch_size=args.batch_size), texts)
    return docs, {"device": str(jax.devices()[0]), "version": f"jax {jax.__version__}"}, timing


def _torch_run(load, encode, texts, args):
    """Time a PyTorch library's encoder, loaded by load(device), through encode(model, texts)."""
    import torch

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load(device)
    if args.bf16 and device == "cuda":
        model = model.half()

    def run(t):
        with torch.inference_mode():
            return encode(model, t)

    out, *timing = timed(run, texts)
    return out, {"device": device, "version": f"torch {torch.__version__}"}, timing


def worker_st_bi(texts, args):
    from sentence_transformers import SentenceTransformer

    def load(device):
        model = SentenceTransformer(args.model, device=device)
        model.max_seq_length = args.max_length
        return model

    def encode(model, t):
        return model.encode(t, batch_size=args.batch_size, convert_to_numpy=True)

    emb, info, timing = _torch_run(load, encode, texts, args)
    return emb.astype(np.float32), info, timing


def worker_pylate_colbert(texts, args):
    from pylate import models

    def load(device):
        return models.ColBERT(model_name_or_path=args.model, device=device)

    def encode(model, t):
        return model.encode(t, batch_size=args.batch_size, is_query=False)

    docs, info, timing = _torch_run(load, encode, texts, args)
    return [np.asarray(d, np.float32) for d in docs], info, timing


WORKERS = {
    "jax-bi": worker_jax_bi,
    "st-bi": worker_st_bi,
    "jax-colbert": worker_jax_colbert,
    "pylate-colbert": worker_pylate_colbert,
}


def worker_main(args) -> None:
    sys.path.insert(0, str(REPO))
    texts = read_corpus(args.limit)
    out, info, (times, cpu_times) = WORKERS[args.worker](texts, args)
    info.update(
        passages=len(texts),
        times=times,
        cpu_times=cpu_times,
        peak_rss_mib=round(peak_rss_mib(), 1),
    )
    if isinstance(out, list):  # one [T_i, D] array per document
        np.savez(Path(args.out).with_suffix(".npz"), *out)
    else:
        np.savez(Path(args.out).with_suffix(".npz"), out)
    Path(args.out).with_suffix(".json").write_text(json.dumps(info))


# ---------------------------------------------------------------------------- driver
def run_worker(engine: str, model: str, args, tmp: Path) -> dict:
    out = tmp / engine
    python = str(PYLATE_PYTHON) if engine == "pylate-colbert" else sys.executable
    cmd = [
        python, __file__, "--worker", engine, "--out", str(out), "--model", model,
        "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
        "--threads", str(args.threads),
    ]  # fmt: skip
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.bf16:
        cmd.append("--bf16")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(args.threads)}
    env.pop("XLA_FLAGS", None)
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    result = json.loads(out.with_suffix(".json").read_text())
    with np.load(out.with_suffix(".npz")) as arrays:
        result["outputs"] = [arrays[k] for k in sorted(arrays.files, key=lambda k: int(k[4:]))]
    result["loadavg"] = loadavg
    result["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    return result


def max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("nan")
    return float(max(np.abs(x - y).max() for x, y in zip(a, b)))


def models_for(tmp: Path) -> dict[str, str]:
    """The checkpoint each engine loads: the packaged MiniLM for the bi-encoders, and the
    default ColBERT written in PyLate's layout for both ColBERT engines."""
    sys.path.insert(0, str(REPO))
    from lateint_jax.convert.files import default_model_dir
    from lateint_jax.encoders import ColBERT
    from lateint_jax.models.colbert import ColBERTConfig

    colbert = tmp / "default-colbert-pylate"
    # colbert-ai's conventions (128-d seeded head, 180 tokens), as measured in results/.
    ColBERT.from_pretrained(None, config=ColBERTConfig()).save_pretrained(colbert, layout="pylate")
    minilm = str(default_model_dir())
    return {"jax-bi": minilm, "st-bi": minilm, "jax-colbert": str(colbert),
            "pylate-colbert": str(colbert)}  # fmt: skip


def cpu_model() -> str | None:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N docs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256, help="bi-encoder tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--bf16", action="store_true", help="JAX bf16 / torch fp16 (on a GPU)")
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=sorted(PAIRS))
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return
    if not (DATA / "corpus.jsonl").exists():
        sys.exit(f"SciFact not found at {DATA} (set LATEINT_DATA)")
    pairs = {name: PAIRS[name] for name in args.pairs}
    if "colbert-docs" in pairs and not PYLATE_PYTHON.exists():
        sys.exit(f"PyLate venv not found at {PYLATE_PYTHON} (see docs/ENCODERS.md)")
    runs: dict[str, list[dict]] = {e: [] for pair in pairs.values() for e in pair}
    with tempfile.TemporaryDirectory() as tmp:
        models = models_for(Path(tmp))
        for _ in range(args.repeats):
            for ours, theirs in pairs.values():
                for engine in (ours, theirs):  # interleaved: A, B, A, B, ...
                    runs[engine].append(run_worker(engine, models[engine], args, Path(tmp)))
    rows, comparisons = {}, {}
    for engine, results in runs.items():
        rates = [r["passages"] / r["times"][1] for r in results]
        cpu_rates = [r["passages"] / r["cpu_times"][1] for r in results]
        first = results[0]
        rows[engine] = {
            "device": first["device"],
            "version": first["version"],
            "passages": first["passages"],
            "passages_per_s": [round(x, 1) for x in rates],
            "median_passages_per_s": round(statistics.median(rates), 1),
            "cold_s": [round(r["times"][0], 2) for r in results],
            "warm_s": [round(r["times"][1], 2) for r in results],
            "warm_cpu_s": [round(r["cpu_times"][1], 2) for r in results],
            "passages_per_cpu_s": [round(x, 2) for x in cpu_rates],
            "median_passages_per_cpu_s": round(statistics.median(cpu_rates), 2),
            "peak_rss_mib": [r["peak_rss_mib"] for r in results],
            "loadavg": [r["loadavg"] for r in results],
            "loadavg_after": [r["loadavg_after"] for r in results],
        }
    for name, (ours, theirs) in pairs.items():
        comparisons[name] = {
            "ratio_ours_over_theirs": round(
                rows[ours]["median_passages_per_s"] / rows[theirs]["median_passages_per_s"], 3
            ),
            "ratio_per_cpu_s": round(
                rows[ours]["median_passages_per_cpu_s"] / rows[theirs]["median_passages_per_cpu_s"],
                3,
            ),
            "max_abs_output_diff": max_difference(
                runs[ours][0]["outputs"], runs[theirs][0]["outputs"]
            ),
        }
    print(
        f"{'engine':15} {'device':8} {'passages/s (each run)':>28} {'median':>8} "
        f"{'per CPU-s':>10} {'peak RSS MiB':>13}"
    )
    for engine, r in rows.items():
        each = " ".join(f"{x:.1f}" for x in r["passages_per_s"])
        print(
            f"{engine:15} {r['device'][:8]:8} {each:>28} {r['median_passages_per_s']:8.1f} "
            f"{r['median_passages_per_cpu_s']:10.2f} {max(r['peak_rss_mib']):13.1f}"
        )
    for name, c in comparisons.items():
        print(
            f"{name}: ours / theirs = {c['ratio_ours_over_theirs']:.2f}x "
            f"({c['ratio_per_cpu_s']:.2f}x per CPU-second); "
            f"max |output difference| = {c['max_abs_output_diff']:.2e}"
        )
    report = {
        "benchmark": "encode",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "dataset": f"SciFact corpus (first {rows[next(iter(rows))]['passages']} passages)",
        "batch_size": args.batch_size,
        "bi_encoder_max_length": args.max_length,
        "threads": args.threads,
        "repeats": args.repeats,
        "compute": "bf16 (JAX) / fp16 (torch, GPU only)" if args.bf16 else "float32",
        "engines": rows,
        "comparisons": comparisons,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(args.output).with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp_out, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
