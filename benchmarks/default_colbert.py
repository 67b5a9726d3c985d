"""The untrained default ColBERT on SciFact test: which of ColBERT's conventions help a model
that was never trained with them. Exact MaxSim over the whole corpus (no index), pytrec_eval.

    python benchmarks/default_colbert.py [--cli EVALUATE.json] [--cache DIR]

The packaged all-MiniLM-L6-v2 has no ColBERT head. Each row scores one combination of: the
[Q]/[D] markers, [MASK] query augmentation, document length, the punctuation skiplist and the
head (the 384-d identity or the seeded 128-d orthogonal projection of `init_projection`).
Documents are encoded once per (markers, length) with the identity head and every token kept;
the skiplist and the 128-d projection are applied afterwards (a projection of unit vectors,
renormalised, equals the projection of the raw vectors, renormalised). `--cli` adds the
`lateint evaluate --json` output of the default's index (the real path: PLAID, 2-bit codes).
By default only the new default's document framing is encoded (one pass over the corpus on a
2-core machine is 10-30 minutes); `--all` adds the two 180-token framings.
Writes benchmarks/results/default_colbert.json with the machine and /proc/loadavg.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lateint_jax.data.beir import load_beir
from lateint_jax.data.tokenize import punctuation_ids
from lateint_jax.encoders import ColBERT
from lateint_jax.eval import evaluate_run
from lateint_jax.models.colbert import init_projection

DATA = Path(os.environ.get("LATEINT_SCIFACT", REPO.parent / "shared" / "data" / "scifact"))
RESULTS = REPO / "benchmarks" / "results" / "default_colbert.json"
COLBERT_AI = {"query_token": "[unused0]", "doc_token": "[unused1]", "query_augmentation": True}
NO_MARKERS = {"query_token": "", "doc_token": ""}
# (name, document framing, query framing, skiplist, dim); framings are ColBERT overrides.
ROWS = [
    ("before issue 13: markers, [MASK], 180, 128-d", ("markers", 180), "colbert-ai", True, 128),
    ("markers, [MASK], 180, 384-d identity", ("markers", 180), "colbert-ai", True, 384),
    ("no markers, [MASK], 180, 384-d", ("plain", 180), "mask", True, 384),
    ("no markers, no [MASK], 180, 384-d", ("plain", 180), "plain", True, 384),
    ("no markers, no [MASK], 180, 128-d", ("plain", 180), "plain", True, 128),
    ("no markers, no [MASK], 256, 384-d (the new default)", ("plain", 256), "plain", True, 384),
    ("no markers, no [MASK], 256, 128-d", ("plain", 256), "plain", True, 128),
    ("no markers, no [MASK], 256, 384-d, punctuation kept", ("plain", 256), "plain", False, 384),
    ("no markers, [MASK], 256, 384-d", ("plain", 256), "mask", True, 384),
]
# Measured before this script on the same split (exact MaxSim, same corpus): README and
# docs/TRAINING.md; `--all` re-measures the first two.
EARLIER = {
    "markers, [MASK], 180, 128-d (the default before issue 13), exact MaxSim": 0.6135,
    "markers, [MASK], 180, 384-d identity head, exact MaxSim": 0.641,
    "the same default through lateint index + evaluate (PLAID 2-bit)": 0.612,
    "plain MaxSim over the raw token vectors (the issue's figure)": 0.707,
    "BM25 (the issue's figure)": 0.686,
}
QUERY_FRAMINGS = {
    "colbert-ai": COLBERT_AI,
    "mask": {**NO_MARKERS, "query_augmentation": True},
    "plain": {**NO_MARKERS, "query_augmentation": False},
}


def model_for(markers: str, doc_maxlen: int, query: str | None = None) -> ColBERT:
    """The default with the identity head, every document token kept."""
    settings = COLBERT_AI if markers == "markers" else NO_MARKERS
    if query is not None:
        settings = QUERY_FRAMINGS[query]
    return ColBERT.from_pretrained(
        None, dim=384, doc_maxlen=doc_maxlen, mask_punctuation=False, **settings
    )


def encode_corpus(texts, markers: str, doc_maxlen: int, cache: Path):
    """(vectors [M, 384] float16, token ids [M], lengths [N]) for one document framing."""
    path = cache / f"docs_{markers}_{doc_maxlen}.npz"
    if path.exists():
        with np.load(path) as f:
            return f["vectors"], f["ids"], f["lengths"]
    model = model_for(markers, doc_maxlen)
    start = time.perf_counter()
    docs = model.encode_documents(texts, batch_size=32, progress=True)
    print(f"encoded {markers}/{doc_maxlen} in {time.perf_counter() - start:.0f} s", flush=True)
    tokens = model.tokenize_documents(texts, length=doc_maxlen)
    ids = tokens["input_ids"][tokens["attention_mask"].astype(bool)]
    lengths = np.array([len(d) for d in docs], np.int64)
    vectors = np.concatenate(docs).astype(np.float16)
    assert len(ids) == len(vectors), (len(ids), len(vectors))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, vectors=vectors, ids=ids, lengths=lengths)
    return vectors, ids, lengths


def exact_scores(vectors, lengths, queries, query_mask, chunk_tokens: int = 8192) -> np.ndarray:
    """MaxSim of every query [B, Q, D] (query_mask [B, Q]) against every document: [B, N]."""
    q_flat = queries[query_mask.astype(bool)].astype(np.float32)  # [Nq, D]
    q_starts = np.concatenate([[0], np.cumsum(query_mask.sum(1))[:-1]]).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    scores = np.zeros((len(queries), len(lengths)), np.float32)
    first = 0
    while first < len(lengths):
        last = int(np.searchsorted(starts, starts[first] + chunk_tokens, side="right")) - 1
        last = max(last, first + 1)
        a, b = starts[first], starts[last]
        sims = q_flat @ vectors[a:b].astype(np.float32).T  # [Nq, m]
        per_doc = np.maximum.reduceat(sims, starts[first:last] - a, axis=1)  # [Nq, n]
        scores[:, first:last] = np.add.reduceat(per_doc, q_starts, axis=0)
        first = last
    return scores


def project(vectors: np.ndarray, dim: int) -> np.ndarray:
    if dim == vectors.shape[1]:
        return vectors
    kernel = np.asarray(init_projection(vectors.shape[1], dim, seed=0)["kernel"])
    out = vectors.astype(np.float32) @ kernel
    norm = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return (out / norm).astype(np.float16)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cli",
        default=None,
        help="a JSON of the default's `lateint evaluate --json` metrics (add the machine's "
        "loadavg and the commands under keys of your own)",
    )
    parser.add_argument("--cache", default=str(REPO / ".bench-cache" / "default_colbert"))
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument(
        "--all",
        action="store_true",
        help="also encode the corpus with markers at 180 tokens and without at 180 (two more "
        "passes; by default only the new default's framing, 256 tokens without markers)",
    )
    parser.add_argument(
        "--add-cli-only",
        action="store_true",
        help="only add --cli (with its own loadavg) to an existing --output, measuring nothing",
    )
    args = parser.parse_args()
    if args.add_cli_only:
        report = json.loads(Path(args.output).read_text())
        report["cli_default"] = json.loads(Path(args.cli).read_text())
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["cli_default"]))
        return 0
    loadavg_start = Path("/proc/loadavg").read_text().split()[:3]
    dataset = load_beir(DATA, "test")
    query_ids = [q for q in dataset.qrels if q in dataset.queries]
    query_texts = [dataset.queries[q] for q in query_ids]
    doc_ids = dataset.corpus.ids
    rows = []
    framings = list(dict.fromkeys(r[1] for r in ROWS if args.all or r[1] == ("plain", 256)))
    for doc_framing in sorted(framings, key=lambda f: f != ("plain", 256)):  # the default first
        vectors, ids, lengths = encode_corpus(dataset.corpus.texts, *doc_framing, Path(args.cache))
        skip = np.isin(ids, punctuation_ids(model_for(*doc_framing).tokenizer))
        for name, framing, query_framing, skiplist, dim in ROWS:
            if framing != doc_framing:
                continue
            keep = ~skip if skiplist else np.ones(len(ids), bool)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            kept_lengths = np.add.reduceat(keep.astype(np.int64), starts[:-1])
            kept_lengths[lengths == 0] = 0
            docs = project(vectors[keep], dim)
            model = model_for(*doc_framing, query=query_framing)
            queries = model.encode_queries(query_texts)
            mask = model.tokenize_queries(query_texts)["token_mask"]
            queries = project(queries.reshape(-1, 384), dim).reshape(len(queries), -1, dim)
            start = time.perf_counter()
            scores = exact_scores(docs, kept_lengths, queries, mask)
            top = np.argsort(-scores, axis=1)[:, :100]
            run = {
                q: {doc_ids[d]: float(scores[i, d]) for d in top[i]}
                for i, q in enumerate(query_ids)
            }
            metrics = evaluate_run(run, dataset.qrels)
            vectors_kept = int(keep.sum())
            row = {
                "variant": name,
                "markers": framing[0] == "markers",
                "query_augmentation": query_framing != "plain",
                "doc_maxlen": framing[1],
                "skiplist": skiplist,
                "dim": dim,
                **{k: round(v, 4) for k, v in metrics.items()},
                "token_vectors": vectors_kept,
                # A 2-bit index stores dim / 4 bytes of residual and a 4-byte centroid code per
                # vector (the doclens and centroids add little).
                "index_mb_2bit_estimate": round(vectors_kept * (dim // 4 + 4) / 1e6, 1),
                "score_seconds": round(time.perf_counter() - start, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            write_report(args, rows, loadavg_start)
    write_report(args, rows, loadavg_start)
    print(f"\n{'variant':58} nDCG@10  R@100  vectors  2-bit MB")
    for r in rows:
        print(
            f"{r['variant']:58} {r['ndcg@10']:.4f}  {r['recall@100']:.3f}  "
            f"{r['token_vectors']:>8}  {r['index_mb_2bit_estimate']:>7}"
        )
    if args.cli:
        print(f"lateint index + evaluate (the default, PLAID 2-bit): {args.cli}")
    return 0


def write_report(args, rows: list[dict], loadavg_start: list[str]) -> None:
    """The JSON report so far (rewritten after each row: a long run keeps what it measured)."""
    cli = json.loads(Path(args.cli).read_text()) if args.cli else None
    report = {
        "benchmark": "default_colbert",
        "dataset": "SciFact test (300 queries, 5183 passages), exact MaxSim, pytrec_eval",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "loadavg_start": loadavg_start,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
        "rows": rows,
        "earlier_measurements": EARLIER,
        "cli_default": cli,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
