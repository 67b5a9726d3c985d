"""SciFact index build benchmark: build time, bytes per token vector (every file on disk, with a
breakdown and the alternatives we did not pick), load time, and reconstruction quality.

    python benchmarks/index_build.py [--nbits 2] [--docs N]

Token vectors come from the default model, read from the cache that benchmarks/engines.py
fills (`.bench-cache/scifact/`, encoded on first use). Writes benchmarks/results/index_build.json
naming the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
RESULTS = REPO / "benchmarks" / "results" / "index_build.json"


def scifact_vectors():
    """(docs [T_i, 128] list, doc ids) from engines.py's cache (filled if missing)."""
    spec = importlib.util.spec_from_file_location("engines", REPO / "benchmarks" / "engines.py")
    engines = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(engines)
    engines.encode_scifact()
    docs, _, meta = engines.load_vectors()
    return docs, meta["doc_ids"]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def cosine_stats(docs, arrays, sample: int = 200_000) -> dict:
    from lateint_jax.codec.residual import decompress_jit

    rows = np.arange(min(sample, arrays.num_embeddings))
    decoded = np.asarray(
        decompress_jit(
            arrays.centroids,
            arrays.bucket_weights,
            arrays.codes[rows],
            np.asarray(arrays.residuals[rows]),
            nbits=arrays.nbits,
        )
    )
    # tokens are stored sorted by centroid within a document: match each original token with
    # its best decoded twin inside the same document
    cos = []
    for n in range(arrays.num_docs):
        lo, hi = arrays.doc_offsets[n], arrays.doc_offsets[n + 1]
        if hi > rows.size:
            break
        cos.append((docs[n] @ decoded[lo:hi].T).max(axis=1))
    cos = np.concatenate(cos)
    return {"mean_cosine": float(cos.mean()), "p01_cosine": float(np.quantile(cos, 0.01))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nbits", type=int, nargs="+", default=[2])
    parser.add_argument("--docs", type=int, default=None, help="use the first N documents")
    parser.add_argument(
        "--keep", type=Path, default=None, help="copy each built index to KEEP/nbitsN (for search)"
    )
    args = parser.parse_args()

    from lateint_jax.index.build import build_index
    from lateint_jax.index.storage import index_size_bytes, load_index

    docs, ids = scifact_vectors()
    if args.docs:
        docs, ids = docs[: args.docs], ids[: args.docs]
    total_tokens = int(sum(len(d) for d in docs))
    results = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "num_docs": len(docs),
        "num_embeddings": total_tokens,
        "runs": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="index_build_"))
    try:
        for nbits in args.nbits:
            folder = workdir / f"nbits{nbits}"
            arrays, build_s = timed(build_index, docs, ids, folder, nbits=nbits, progress=False)
            loaded, load_s = timed(load_index, folder)
            _, load_fast_s = timed(load_index, folder, verify_checksums=False)
            files = index_size_bytes(folder)
            total = sum(files.values())
            uint16_codes = 128 + 2 * total_tokens
            float16_centroids = 128 + 2 * arrays.centroids.size
            stored_centroids = files["centroids.npy"] + files.get("centroid_exponents.npy", 0)
            int8_centroids = 128 + arrays.centroids.size + files.get("centroid_exponents.npy", 0)
            zlib_centroids = len(zlib.compress(np.load(folder / "centroids.npy").tobytes(), 9))
            code_files = sum(v for k, v in files.items() if k.startswith("codes."))
            run = {
                "build_seconds": build_s,
                "load_seconds": load_s,
                "load_seconds_no_checksums": load_fast_s,
                "num_centroids": arrays.num_centroids,
                "codes_encoding": loaded.metadata.get("codes_encoding"),  # format 1 only
                "bytes_per_vector": total / total_tokens,
                "bits_per_centroid_id": 8 * code_files / total_tokens,
                "file_bytes": files,
                "file_bytes_per_vector": {k: v / total_tokens for k, v in files.items()},
                "bytes_per_vector_with_uint16_codes": (total - code_files + uint16_codes)
                / total_tokens,
                "centroids_encoding": loaded.metadata["centroids_encoding"],
                "bytes_per_vector_with_zlib_centroids": (
                    total - files["centroids.npy"] + zlib_centroids
                )
                / total_tokens,
                "bytes_per_vector_with_int8_centroids": (total - stored_centroids + int8_centroids)
                / total_tokens,
                "bytes_per_vector_with_float16_centroids": (
                    total - stored_centroids + float16_centroids
                )
                / total_tokens,
                **cosine_stats(docs, arrays),
            }
            results["runs"][f"nbits={nbits}"] = run
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(args.keep / folder.name, ignore_errors=True)
                shutil.move(folder, args.keep / folder.name)
            else:
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"SciFact: {len(docs)} documents, {total_tokens} token vectors; "
        f"{results['machine']['processor']} x{results['machine']['cpu_count']}"
    )
    print(
        f"{'nbits':>5} {'C':>6} {'build s':>8} {'load s':>7} {'B/vec':>6} {'id bits':>7} "
        f"{'uint16 ids':>10} {'f16 cent':>8} {'cos':>6}"
    )
    for name, run in results["runs"].items():
        print(
            f"{name[6:]:>5} {run['num_centroids']:>6} {run['build_seconds']:>8.1f} "
            f"{run['load_seconds']:>7.2f} {run['bytes_per_vector']:>6.2f} "
            f"{run['bits_per_centroid_id']:>7.2f} {run['bytes_per_vector_with_uint16_codes']:>10.2f} "
            f"{run['bytes_per_vector_with_float16_centroids']:>8.2f} {run['mean_cosine']:>6.4f}"
        )
        for file, per_vector in sorted(run["file_bytes_per_vector"].items(), key=lambda kv: -kv[1]):
            print(f"        {file:<24} {run['file_bytes'][file]:>10} B  {per_vector:7.3f} B/vec")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
