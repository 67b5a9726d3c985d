"""Metadata filters through the real FastAPI app: results equal the subset search of the
matching documents (worked out here in Python from the corpus records, not by SQL), bad filters
are 422s naming the bad part, and a filter matching nothing gives empty results."""

import pytest
from fastapi.testclient import TestClient

from lateint_jax.serving.app import create_app
from tests.serving.documents_fixtures import MAX_K, build_tiny_index, corpus_records, engine_for

QUERY = "moon ocean tide"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    paths = build_tiny_index(tmp_path_factory.mktemp("filters"))
    engine, info = engine_for(paths)  # read-only: metadata from the corpus, in memory
    with TestClient(create_app(engine, index_info=info)) as test_client:
        yield test_client


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


EXPECTED = {  # filter -> the records it keeps, by Python's reading of the same rule
    "eq string": (
        {"field": "lang", "eq": "fr"},
        lambda r: r["lang"] == "fr",
    ),
    "in": (
        {"field": "lang", "in": ["en", "de"]},
        lambda r: r["lang"] in ("en", "de"),
    ),
    "range": (
        {"field": "year", "gte": 2004, "lt": 2015},
        lambda r: _number(r.get("year")) and 2004 <= r["year"] < 2015,
    ),
    "typed string eq": (
        {"field": "year", "eq": "2010"},
        lambda r: r.get("year") == "2010",
    ),
    "nested and boolean": (
        {"and": [{"field": "venue.country", "eq": "ch"}, {"field": "open", "eq": False}]},
        lambda r: r["metadata"]["venue"]["country"] == "ch" and r["metadata"]["open"] is False,
    ),
    "or with not": (
        {"or": [{"field": "lang", "eq": "de"}, {"not": {"field": "year", "lte": 2012}}]},
        lambda r: r["lang"] == "de" or not (_number(r.get("year")) and r["year"] <= 2012),
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_filter_results_equal_the_subset_search(client, name):
    where, keep = EXPECTED[name]
    matching = [r["_id"] for r in corpus_records() if keep(r)]
    assert matching, "every case should match some documents"
    filtered = client.post("/search", json={"query": QUERY, "k": MAX_K, "filter": where})
    assert filtered.status_code == 200, filtered.text
    subset = client.post("/search", json={"query": QUERY, "k": MAX_K, "ids": matching})
    assert filtered.json()["results"] == subset.json()["results"]
    returned = {h["id"] for h in filtered.json()["results"]}
    assert returned <= set(matching)
    if len(matching) <= MAX_K:
        assert returned == set(matching)


def test_filter_and_ids_intersect(client):
    ids = ["doc-00", "doc-01", "doc-02", "doc-03"]
    body = {"query": QUERY, "k": 5, "ids": ids, "filter": {"field": "lang", "eq": "en"}}
    hits = client.post("/search", json=body).json()["results"]
    assert sorted(h["id"] for h in hits) == ["doc-00", "doc-03"]


@pytest.mark.parametrize(
    "where",
    [
        {"field": "lang", "eq": "xx"},
        {"field": "lang", "eq": "en' OR 1=1 --"},
        {"field": "no_such_field", "gte": 0},
        {"and": [{"field": "lang", "eq": "en"}, {"field": "lang", "eq": "fr"}]},
    ],
)
def test_a_filter_matching_nothing_gives_empty_results(client, where):
    response = client.post("/search", json={"queries": [QUERY, "bees"], "k": 3, "filter": where})
    assert response.status_code == 200, response.text
    assert response.json()["results"] == [[], []]


@pytest.mark.parametrize(
    ("where", "named"),
    [
        ({"field": "year", "between": [1, 2]}, "filter: unknown operator"),
        ({"field": "year; DROP TABLE documents", "eq": 1}, "filter.field"),
        ({"and": [{"field": "lang", "eq": "en"}, {"field": "year", "gte": "a", "lt": 5}]},
         "filter.and[1]: range bounds must all be numbers or all be strings"),
        ({"or": []}, "filter.or: expected a non-empty list"),
        ({"field": "lang", "in": "en"}, "filter.in: expected a non-empty list"),
        ({"field": "lang", "in": ["en", {"a": 1}]}, "filter.in[1]"),
        ({"field": "lang"}, "needs an operator"),
        ({"field": "lang", "eq": "en", "in": ["fr"]}, "eq and in stand alone"),
        ({"and": [{"field": "lang", "eq": "en"}], "or": []}, "takes no other keys"),
        ({"not": [1]}, "filter.not: a filter must be a JSON object"),
    ],
)  # fmt: skip
def test_bad_filters_are_422_naming_the_part(client, where, named):
    response = client.post("/search", json={"query": QUERY, "filter": where})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"][0]["field"] == "filter"
    assert named in body["error"], body["error"]


def test_read_only_server_refuses_writes_but_reads_metadata(client):
    response = client.post("/documents", json={"id": "x", "text": "new"})
    assert response.status_code == 403
    assert "--writable" in response.json()["error"]
    stored = client.get("/documents/doc-05").json()
    assert stored["metadata"]["year"] == "2010" and stored["indexed"] is True
    assert client.get("/documents/nope").status_code == 404
