"""Seeded synthetic inputs the tests share: token-vector corpora, queries drawn from them, the
vectors an index decodes, and small BEIR folders."""

from __future__ import annotations

import json

import numpy as np

from lateint_jax.codec.residual import decompress


def clustered_docs(num_docs, dim=64, topics=128, noise=0.3, seed=0):
    """Documents of 5-30 unit token vectors drawn around 3 of `topics` random directions."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((topics, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    docs = []
    for _ in range(num_docs):
        length = int(rng.integers(5, 31))
        which = rng.choice(topics, 3)[rng.integers(0, 3, length)]
        vectors = centers[which] + noise * rng.standard_normal((length, dim)) / np.sqrt(dim)
        docs.append((vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32))
    return docs


def queries_like(docs, count, length=8, noise=0.3, seed=1):
    """Queries made of noisy tokens of random documents: [count, length, D]."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        doc = docs[rng.integers(len(docs))]
        tokens = doc[rng.integers(0, len(doc), length)]
        tokens = tokens + noise * rng.standard_normal(tokens.shape) / np.sqrt(tokens.shape[1])
        out.append(tokens / np.linalg.norm(tokens, axis=1, keepdims=True))
    return np.stack(out).astype(np.float32)


def synthetic_docs(num_docs=120, dim=32, seed=0):
    """Documents of 1-29 unit token vectors around 24 fixed cluster centres (the same centres
    for every seed, so documents of different seeds share a distribution)."""
    centers = np.random.default_rng(1234).normal(size=(24, dim))
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(num_docs):
        x = centers[rng.integers(0, 24, rng.integers(1, 30))]
        x = x + 0.06 * rng.normal(size=x.shape)
        docs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return docs, [f"doc-{i}" for i in range(num_docs)]


def decoded_docs(arrays):
    vectors = np.asarray(
        decompress(
            arrays.centroids, arrays.bucket_weights, arrays.codes, arrays.residuals, arrays.nbits
        )
    )
    return [vectors[a:b] for a, b in zip(arrays.doc_offsets[:-1], arrays.doc_offsets[1:])]


def write_beir(folder, corpus, queries, qrels, split="test"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels").mkdir(exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder
