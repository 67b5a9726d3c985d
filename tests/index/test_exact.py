"""Exact brute-force MaxSim search against a PyTorch reference of ColBERT's score (padded
documents, pad similarities at -9999, max over document tokens, sum over query tokens)."""

import jax
import numpy as np
import pytest
import torch

from lateint_jax import sharding
from lateint_jax.index import exact
from lateint_jax.index.build import build_index
from lateint_jax.index.colbert_index import ColBERTIndex
from tests.synthetic import clustered_docs, queries_like


def torch_maxsim(queries: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    """[B, Q, D] queries x list of [T_i, D] documents -> [B, N] scores, computed in torch."""
    longest = max(len(d) for d in docs)
    padded = torch.zeros(len(docs), longest, queries.shape[2])
    mask = torch.zeros(len(docs), longest, dtype=torch.bool)
    for n, doc in enumerate(docs):
        padded[n, : len(doc)] = torch.from_numpy(np.array(doc))
        mask[n, : len(doc)] = True
    sims = torch.einsum("bqd,ntd->bnqt", torch.from_numpy(queries), padded)
    sims = sims.masked_fill(~mask[None, :, None, :], -9999.0)
    return sims.max(-1).values.sum(-1).numpy()


def assert_matches_reference(hits, reference: np.ndarray, ids: list[str], k: int):
    for row, scores in zip(hits, reference):
        expected = np.argsort(-scores, kind="stable")[:k]
        assert [doc_id for doc_id, _ in row] == [ids[n] for n in expected]
        np.testing.assert_allclose([s for _, s in row], scores[expected], rtol=1e-5)


@pytest.fixture(scope="module")
def corpus():
    docs = clustered_docs(150, dim=32, seed=7)
    ids = [f"e{i}" for i in range(len(docs))]
    return docs, ids, build_index(docs, ids, progress=False)


@pytest.mark.parametrize("devices", [1, 8])
def test_exact_search_on_decompressed_vectors_matches_torch(corpus, devices):
    docs, ids, arrays = corpus
    index = ColBERTIndex(arrays, devices=jax.devices()[:devices])
    queries = queries_like(docs, 5, seed=8)
    stored = [index.document_vectors(doc_id) for doc_id in ids]
    assert_matches_reference(
        index.exact_search(queries, k=12), torch_maxsim(queries, stored), ids, 12
    )


def test_raw_vectors_path_matches_torch(corpus):
    docs, ids, _ = corpus
    mesh = sharding.data_mesh(jax.devices()[:2])
    vectors, lengths, live = exact.place_documents(docs, mesh)
    queries = queries_like(docs, 3, seed=9)
    mask = np.ones(queries.shape[:2], bool)
    scores, found = exact.search_vectors(vectors, lengths, queries, mask, live, 9, mesh)
    reference = torch_maxsim(queries, docs)
    hits = [
        [(ids[n], s) for s, n in zip(row_s, row_n)]
        for row_s, row_n in zip(np.asarray(scores), np.asarray(found))
    ]
    assert_matches_reference(hits, reference, ids, 9)


def test_padded_query_tokens_do_not_count(corpus):
    docs, ids, arrays = corpus
    index = ColBERTIndex(arrays, devices=jax.devices()[:1])
    queries = queries_like(docs, 2, length=5, seed=10)  # padded to 8 tokens inside
    stored = [index.document_vectors(doc_id) for doc_id in ids]
    assert_matches_reference(
        index.exact_search(queries, k=4), torch_maxsim(queries, stored), ids, 4
    )


def test_chunks_divide_the_shard():
    assert exact.chunk_docs(48, 1, 32, 184) == 16
    assert exact.chunk_docs(1024, 32, 32, 184) == 16
    assert exact.chunk_docs(1024, 1, 32, 184) == 512
    assert exact.chunk_docs(40, 64, 32, 1024) == 2
    assert exact.chunk_docs(40, 64, 64, 1024) == 1
