"""Encoding throughput: our JAX bi-encoder vs sentence-transformers (PyTorch) on SciFact.

    python benchmarks/encode.py [--limit N] [--batch-size 32] [--max-length 256] [--bf16]

Both engines encode the same SciFact corpus texts (title + " " + text) with all-MiniLM-L6-v2 at
the same max length and batch size, each in its own subprocess so peak memory (RSS high-water
mark, `resource.getrusage`) is per engine. Each engine runs a cold pass (JAX: includes compiling
one shape per length bucket) and then a warm pass; passages/s is from the warm pass. The two
engines' embeddings are compared (max abs difference). Writes benchmarks/results/encode.json
naming the machine. On a GPU, --bf16 runs JAX in bfloat16 and PyTorch in float16.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "encode.json"
DATA = Path(os.environ.get("LATEINT_DATA", REPO.parent / "shared" / "data")) / "scifact"


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


def worker_jax(texts, args) -> tuple[np.ndarray, dict]:
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(REPO))
    from lateint_jax.encoders import BiEncoder

    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    model = BiEncoder.from_pretrained(None, max_length=args.max_length, compute_dtype=dtype)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        emb = model.encode(texts, batch_size=args.batch_size)
        times.append(time.perf_counter() - start)
    return emb, {
        "device": str(jax.devices()[0]),
        "version": f"jax {jax.__version__}",
        "times": times,
    }


def worker_torch(texts, args) -> tuple[np.ndarray, dict]:
    import torch
    from sentence_transformers import SentenceTransformer

    sys.path.insert(0, str(REPO))
    from lateint_jax.convert.files import default_model_dir

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(str(default_model_dir()), device=device)
    model.max_seq_length = args.max_length
    if args.bf16 and device == "cuda":
        model = model.half()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        with torch.inference_mode():
            emb = model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
        times.append(time.perf_counter() - start)
    info = {
        "device": device,
        "version": f"torch {torch.__version__}",
        "threads": torch.get_num_threads(),
    }
    return emb.astype(np.float32), {**info, "times": times}


def run_worker(engine: str, args) -> dict:
    """Runs one engine in a subprocess; returns its timings, peak RSS and embeddings."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            engine,
            "--out",
            str(out),
            "--batch-size",
            str(args.batch_size),
            "--max-length",
            str(args.max_length),
        ]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if args.bf16:
            cmd.append("--bf16")
        subprocess.run(cmd, check=True)
        result = json.loads((out.with_suffix(".json")).read_text())
        result["embeddings"] = np.load(out.with_suffix(".npy"))
    return result


def worker_main(args) -> None:
    texts = read_corpus(args.limit)
    fn = worker_jax if args.worker == "jax" else worker_torch
    emb, info = fn(texts, args)
    info.update(passages=len(texts), peak_rss_mib=round(peak_rss_mib(), 1))
    np.save(Path(args.out).with_suffix(".npy"), emb)
    Path(args.out).with_suffix(".json").write_text(json.dumps(info))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N docs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--bf16", action="store_true", help="JAX bf16 / torch fp16 (on a GPU)")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return
    if not (DATA / "corpus.jsonl").exists():
        sys.exit(f"SciFact not found at {DATA} (set LATEINT_DATA)")
    results = {name: run_worker(name, args) for name in ("torch", "jax")}
    diff = float(
        np.abs(results["jax"].pop("embeddings") - results["torch"].pop("embeddings")).max()
    )
    rows = {}
    for name, r in results.items():
        cold, warm = r["times"]
        rows[name] = {
            **r,
            "cold_s": round(cold, 2),
            "warm_s": round(warm, 2),
            "passages_per_s": round(r["passages"] / warm, 1),
        }
    ratio = rows["jax"]["passages_per_s"] / rows["torch"]["passages_per_s"]
    print(
        f"{'engine':8} {'device':10} {'cold s':>8} {'warm s':>8} {'passages/s':>11} {'peak RSS MiB':>13}"
    )
    for name, r in rows.items():
        print(
            f"{name:8} {r['device']:10} {r['cold_s']:8.2f} {r['warm_s']:8.2f} "
            f"{r['passages_per_s']:11.1f} {r['peak_rss_mib']:13.1f}"
        )
    print(
        f"JAX / PyTorch throughput ratio: {ratio:.2f}x (target >= 1.0 on CPU); "
        f"max |embedding difference| = {diff:.2e}"
    )
    report = {
        "benchmark": "encode",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "model": "all-MiniLM-L6-v2 (packaged)",
        "dataset": f"SciFact corpus ({rows['jax']['passages']} passages)",
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "compute": "bf16 (JAX) / fp16 (torch, GPU only)" if args.bf16 else "float32",
        "engines": rows,
        "ratio_jax_over_torch": round(ratio, 3),
        "max_abs_embedding_diff": diff,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
