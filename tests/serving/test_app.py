"""The HTTP API over a real tiny index of the demo corpus, built with the real default model.

The reranker is a tiny random BERT cross-encoder written by transformers (torch) and loaded by
our CrossEncoder: its scores mean nothing, but the plumbing and the numbers are real (they are
checked against the torch model).
"""

import asyncio
import itertools
import json
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lateint_jax import compilations, open_index
from lateint_jax.data.beir import load_corpus
from lateint_jax.encoders import ColBERT, CrossEncoder
from lateint_jax.serving.app import create_app
from lateint_jax.serving.demo import DEMO_CORPUS, build_corpus_index
from lateint_jax.serving.encoding import CompiledColBERT
from lateint_jax.serving.engine import SearchEngine
from lateint_jax.serving.rerank import CompiledReranker
from lateint_jax.serving.schemas import LIMITS
from tests.serving.fuzzing import fuzz_every_operation
from tests.tiny_models import save_tiny_model

torch = pytest.importorskip("torch")

MAX_BATCH = 4
MAX_K = 10  # one k bucket: a shorter warm-up


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    colbert = ColBERT.from_pretrained(None)
    encoder = CompiledColBERT(colbert, max_batch=MAX_BATCH)
    corpus = load_corpus(DEMO_CORPUS)
    index_dir = tmp_path_factory.mktemp("serving") / "demo-index"
    build_corpus_index(encoder, corpus, index_dir)
    reranker_dir = tmp_path_factory.mktemp("reranker")
    # initializer_range spreads the random logits so rankings are not all ties.
    torch_model = save_tiny_model(
        reranker_dir, seed=0, head="classifier", tokenizer=True, initializer_range=0.5
    )
    reranker = CompiledReranker(
        CrossEncoder.from_pretrained(str(reranker_dir)),
        batch_buckets=(8,),
        length_buckets=(64, 128),
    )
    engine = SearchEngine(
        open_index(index_dir),
        encoder,
        corpus,
        reranker,
        max_batch=MAX_BATCH,
        max_wait_s=0.002,
        max_k=MAX_K,
    )
    engine.warmup()
    return {
        "engine": engine,
        "colbert": colbert,
        "corpus": corpus,
        "index_dir": index_dir,
        "reranker_dir": reranker_dir,
        "torch_model": torch_model,
    }


@pytest.fixture(scope="module")
def client(stack):
    with TestClient(create_app(stack["engine"], index_info={"index_bytes": 1})) as test_client:
        yield test_client


def test_search_matches_the_index_directly(stack, client):
    query = "how do bees find flowers"
    response = client.post("/search", json={"query": query, "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    hits = body["results"]
    direct = open_index(stack["index_dir"]).search(stack["colbert"].encode_queries([query]), k=5)
    assert [h["id"] for h in hits] == [i for i, _ in direct[0]]
    np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in direct[0]], rtol=1e-4)
    assert hits[0]["title"] == "Honeybees"
    assert body["timings"]["first_stage_ms"] > 0


def test_many_queries_give_a_list_per_query(client):
    queries = ["coral reefs", "how do vaccines work", "binary search", "bread yeast", "tides"]
    body = client.post("/search", json={"queries": queries, "k": 3}).json()
    assert len(body["results"]) == len(queries)
    assert all(len(hits) == 3 for hits in body["results"])
    singles = [client.post("/search", json={"query": q, "k": 3}).json()["results"] for q in queries]
    assert [[h["id"] for h in hits] for hits in body["results"]] == [
        [h["id"] for h in hits] for hits in singles
    ]


def test_subset_search_returns_only_those_ids(client):
    ids = ["demo-000", "demo-025", "demo-040"]
    hits = client.post("/search", json={"query": "the moon", "k": 10, "ids": ids}).json()
    assert sorted(h["id"] for h in hits["results"]) == sorted(ids)
    assert hits["results"][0]["id"] == "demo-000"


def test_rerank_stage_reports_both_scores_and_matches_torch(stack, client):
    query = "glaciers and ice"
    body = client.post("/search", json={"query": query, "k": 4, "rerank": {"depth": 10}}).json()
    hits = body["results"]
    assert len(hits) == 4
    assert body["timings"]["rerank_ms"] > 0
    first = client.post("/search", json={"query": query, "k": 10}).json()["results"]
    first_scores = {h["id"]: h["score"] for h in first}
    passages = [stack["corpus"].passage(h["id"]) for h in hits]
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(str(stack["reranker_dir"]))
    with torch.no_grad():
        encoded = tokenizer(
            [query] * len(passages),
            passages,
            truncation=True,
            max_length=stack["engine"].reranker.cross_encoder.max_length,
            padding=True,
            return_tensors="pt",
        )
        expected = stack["torch_model"](**encoded).logits[:, 0].numpy()
    np.testing.assert_allclose([h["rerank_score"] for h in hits], expected, atol=1e-4)
    assert [h["score"] for h in hits] == [h["rerank_score"] for h in hits]
    assert all(a["rerank_score"] >= b["rerank_score"] for a, b in itertools.pairwise(hits))
    for hit in hits:  # the candidates came from the first-stage top 10, with their scores
        assert hit["first_stage_score"] == pytest.approx(first_scores[hit["id"]], rel=1e-5)


def test_rerank_endpoint_cuts_pairs_where_the_cross_encoder_does(stack, client):
    # The third pair is longer than every length bucket below max_length (128 tokens here).
    long = " ".join(f"The moon pulls the sea, tide {n}." for n in range(60))
    passages = ["The moon pulls the sea.", "Bread rises with yeast.", long]
    body = client.post("/rerank", json={"query": "tides", "passages": passages}).json()
    cross_encoder = stack["engine"].reranker.cross_encoder
    np.testing.assert_allclose(
        body["scores"], cross_encoder.score(["tides"] * 3, passages), atol=1e-5
    )
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(str(stack["reranker_dir"]))
    encoded = tokenizer(
        ["tides"] * 3,
        passages,
        truncation=True,
        max_length=cross_encoder.max_length,
        padding=True,
        return_tensors="pt",
    )
    assert encoded["attention_mask"].sum(dim=1).max() > 128, "the long pair is not long"
    with torch.no_grad():
        expected = stack["torch_model"](**encoded).logits[:, 0].numpy()
    np.testing.assert_allclose(body["scores"], expected, atol=1e-4)


def test_encode_endpoint_matches_the_encoder(stack, client):
    body = client.post("/encode", json={"texts": ["tides"], "kind": "query"}).json()
    np.testing.assert_allclose(
        np.asarray(body["embeddings"]), stack["colbert"].encode_queries(["tides"]), atol=1e-5
    )
    docs = ["Bread rises, slowly!", "The sea."]
    body = client.post("/encode", json={"texts": docs, "kind": "document"}).json()
    for got, want in zip(body["embeddings"], stack["colbert"].encode_documents(docs)):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_explanations_align_query_tokens_with_document_tokens(stack, client):
    body = client.post(
        "/search", json={"query": "honeybees waggle dance", "k": 2, "explain": True}
    ).json()
    top = body["results"][0]
    assert top["title"] == "Honeybees"
    matches = {m["query_token"]: m for m in top["explanation"]}
    # one entry per query vector that counts (the default has no [MASK] augmentation)
    counted = stack["colbert"].tokenize_queries(["honeybees waggle dance"])["token_mask"]
    assert len(top["explanation"]) == int(counted.sum()) < stack["colbert"].config.query_maxlen
    assert matches["dance"]["doc_token"] == "dance"
    assert matches["dance"]["similarity"] > 0.9
    start, end = matches["dance"]["text_span"]  # where the matched token lies in the text
    assert top["text"][start:end] == "dance"
    for match in top["explanation"]:  # a span holds its token; frame tokens have none
        if match["doc_token"].startswith("["):
            assert match["text_span"] is None, match
        elif match["text_span"] is not None:  # (None: a token of the title)
            start, end = match["text_span"]
            assert top["text"][start:end].lower() == match["doc_token"].removeprefix("##"), match
    # The index side of the explanation adds up to the first-stage MaxSim score.
    total = sum(m["index_similarity"] for m in top["explanation"])
    assert total == pytest.approx(top["score"], rel=1e-3)


def test_health_and_stats(client):
    assert client.get("/health").json()["status"] == "ok"
    stats = client.get("/stats").json()
    assert stats["documents"] == 70
    assert stats["device_count"] == len(stats["devices"]) >= 1
    assert stats["requests_by_endpoint"]["/search"] >= 1
    assert stats["latency_ms_by_endpoint"]["/search"]["p99"] >= stats["latency_ms"]["p50"] > 0


def test_page_is_served(client):
    response = client.get("/")
    assert response.status_code == 200
    assert "<form" in response.text and "/search" in response.text


def test_no_request_compiles_after_warmup(stack, client):
    before = compilations.count()
    for n in (1, 3, 5, 9):  # batch sizes inside and across buckets
        queries = [f"query number {i} about oceans" for i in range(n)]
        k = min(MAX_K, 1 + n)
        body = {"queries": queries, "k": k, "explain": n < 5, "rerank_depth": 9}
        response = client.post("/search", json=body)
        assert response.status_code == 200, response.text
        assert [len(hits) for hits in response.json()["results"]] == [k] * n
    encoded = client.post("/encode", json={"texts": ["x"] * 7, "kind": "document"})
    assert encoded.status_code == 200, encoded.text
    assert len(encoded.json()["embeddings"]) == 7
    reranked = client.post("/rerank", json={"query": "q", "passages": ["p " * 90] * 11})
    assert reranked.status_code == 200, reranked.text
    assert len(reranked.json()["scores"]) == 11
    assert compilations.count() == before, "a request compiled a program warm-up did not"


def test_concurrent_requests_are_coalesced(stack, client):
    engine = stack["engine"]
    before = engine.first_stage.stats.as_dict()
    statuses = []

    def one(i):
        statuses.append(client.post("/search", json={"query": f"energy {i}", "k": 3}).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = engine.first_stage.stats.as_dict()
    assert statuses == [200] * 16
    assert after["items"] - before["items"] == 16
    assert after["batches"] - before["batches"] < 16, "no two requests shared a device batch"


BAD_REQUESTS = [
    ("/search", "{not json", "body"),
    ("/search", {}, "query"),
    ("/search", {"query": ""}, "query"),
    ("/search", {"query": "a", "k": 0}, "k"),
    ("/search", {"query": "a", "k": MAX_K + 1}, "k"),
    ("/search", {"query": "a", "k": 2, "rerank_depth": MAX_K + 1}, "rerank.depth"),
    ("/search", {"query": "a", "k": LIMITS.max_k + 1}, "k"),
    ("/search", {"query": "a", "k": "ten"}, "k"),
    ("/search", {"query": 7}, "query"),
    ("/search", {"query": "a" * (LIMITS.max_query_chars + 1)}, "query"),
    ("/search", {"queries": ["a"] * (LIMITS.max_queries + 1)}, "queries"),
    ("/search", {"query": "a", "ids": ["demo-000", "nope"]}, "ids"),
    ("/search", {"query": "a", "k": 100, "explain": True}, "explain"),
    ("/search", {"queries": ["a"] * 9, "k": 8, "explain": True}, "explain"),
    ("/search", {"query": "a", "rerank": {"depth": -1}}, "rerank.depth"),
    ("/rerank", {"query": "a"}, "passages"),
    ("/encode", {"texts": "not a list"}, "texts"),
]


@pytest.mark.parametrize("path, body, field", BAD_REQUESTS)
def test_bad_requests_get_422_naming_the_field(client, path, body, field):
    if isinstance(body, str):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]
    # and the server keeps serving
    assert client.post("/search", json={"query": "tides", "k": 1}).status_code == 200


def test_engine_search_runs_outside_http(stack):
    results, timings = asyncio.run(stack["engine"].search(["coral reefs"], k=2))
    assert results[0][0]["title"] == "Coral reefs"
    assert timings["total_ms"] >= timings["first_stage_ms"]


def test_openapi_schema_lists_the_endpoints(client):
    schema = client.get("/openapi.json").json()
    assert {"/search", "/rerank", "/encode", "/health", "/stats"} <= set(schema["paths"])
    assert json.dumps(schema)  # serialisable


# ---------------------------------------------------------------- fuzzing the OpenAPI schema
FUZZ_EXAMPLES = 20  # per operation and generation mode


def test_fuzzed_requests_never_get_a_5xx(stack):
    """schemathesis generates valid (positive) and schema-violating (negative) requests for
    every operation in the OpenAPI schema; none may get a 5xx."""
    calls = []

    def never_5xx(case):
        response = case.call()
        calls.append(response.status_code)
        assert response.status_code < 500, (
            f"{case.method} {case.path} {case.body!r:.300}: {response.text[:300]}"
        )

    fuzz_every_operation(create_app(stack["engine"]), never_5xx, FUZZ_EXAMPLES)
    assert len(calls) >= 5 * FUZZ_EXAMPLES  # every operation was exercised
    assert any(code == 422 for code in calls) and any(code == 200 for code in calls)
