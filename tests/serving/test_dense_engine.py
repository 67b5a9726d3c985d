"""The HTTP API over a bi-encoder (dense) index of the demo corpus, with the real default model,
loaded the way `serve.py --index` loads it."""

import argparse

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lateint_jax.cli import main as lateint
from lateint_jax.serving.app import create_app
from lateint_jax.serving.demo import DEMO_CORPUS
from lateint_jax.serving.server import build_engine, configure


@pytest.fixture(scope="module")
def dense_index(tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("dense") / "index"
    assert (
        lateint(["index", str(DEMO_CORPUS), str(index_dir), "--kind", "biencoder", "--quiet"]) == 0
    )
    return index_dir


@pytest.fixture(scope="module")
def served(dense_index):
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(
        [
            "--index",
            str(dense_index),
            "--corpus",
            str(DEMO_CORPUS),
            "--max-batch",
            "4",
            "--max-k",
            "10",
        ]
    )
    engine, info = build_engine(args, log=lambda message: None)
    with TestClient(create_app(engine, index_info=info)) as client:
        yield engine, client


def test_search_matches_the_dense_index_directly(dense_index, served):
    from lateint_jax.encoders import BiEncoder
    from lateint_jax.index.dense_index import DenseIndex

    _, client = served
    query = "how do bees find flowers"
    response = client.post("/search", json={"query": query, "k": 5})
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    direct = DenseIndex.load(dense_index).search(
        BiEncoder.from_pretrained(None).encode([query]), k=5
    )
    assert [h["id"] for h in hits] == [i for i, _ in direct[0]]
    np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in direct[0]], rtol=1e-4)
    assert hits[0]["title"] == "Honeybees"


def test_subset_search_ranks_only_the_subset(served):
    _, client = served
    everything = client.post("/search", json={"query": "coral reefs", "k": 10}).json()["results"]
    subset = [h["id"] for h in everything[3:8]]
    hits = client.post("/search", json={"query": "coral reefs", "k": 3, "ids": subset}).json()
    assert [h["id"] for h in hits["results"]] == subset[:3]


def test_requests_after_warmup_compile_nothing(served):
    engine, client = served
    before = engine.compiled_counts()
    for n, query in enumerate(["tides", "a much longer query about the orbit of the moon " * 4]):
        queries = [query] * (n * 3 + 1)
        assert client.post("/search", json={"queries": queries, "k": 7}).status_code == 200
    assert engine.compiled_counts() == before


def test_explain_is_refused_with_a_reason(served):
    _, client = served
    response = client.post("/search", json={"query": "tides", "k": 3, "explain": True})
    assert response.status_code == 422
    assert "late-interaction" in response.json()["error"]


def test_encode_gives_one_vector_per_text(served):
    engine, client = served
    body = client.post("/encode", json={"texts": ["a", "b c"], "kind": "document"}).json()
    assert np.asarray(body["embeddings"]).shape == (2, 1, engine.encoder.dim)
