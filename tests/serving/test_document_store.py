"""The SQLite document store: durable settings, writes committed whole or not at all, the log's
round trip and sequence numbers, corpus metadata, and filters run as SQL."""

import json
import sqlite3

import numpy as np
import pytest

from lateint_jax.serving.document_store import DocumentStore, StoredDocument, corpus_metadata
from lateint_jax.serving.filters import compile_filter


@pytest.fixture
def store(tmp_path):
    opened = DocumentStore(tmp_path / "docs.sqlite")
    yield opened
    opened.close()


def test_the_file_uses_a_wal_journal_and_full_sync(store):
    with sqlite3.connect(store.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_seed_then_writes_round_trip_and_survive_reopening(tmp_path, rng):
    path = tmp_path / "docs.sqlite"
    store = DocumentStore(path)
    assert not store.seeded
    store.seed([("a", "A", "text a", {"lang": "en"}), ("b", "", None, {})], "store-1")
    vectors = rng.standard_normal((5, 8)).astype(np.float32)
    seqs = store.commit_writes(
        [("upsert", "c", vectors), ("delete", "a", None)],
        [StoredDocument("c", "C", "text c", {"year": 2001})],
    )
    assert seqs == [1, 2]
    store.close()

    reopened = DocumentStore(path)
    assert reopened.seeded and reopened.setting("store_id") == "store-1"
    assert sorted(reopened.ids()) == ["b", "c"]
    assert reopened.get("c") == StoredDocument("c", "C", "text c", {"year": 2001})
    logged = reopened.logged_after(0, dim=8)
    assert [(w.seq, w.op, w.doc_id) for w in logged] == [(1, "upsert", "c"), (2, "delete", "a")]
    np.testing.assert_array_equal(logged[0].vectors, vectors)
    assert logged[1].vectors is None
    assert [w.seq for w in reopened.logged_after(1, dim=8)] == [2]
    reopened.close()


def test_sequence_numbers_keep_growing_after_the_log_is_dropped(store):
    store.seed([], "s")
    first = store.commit_writes([("delete", "x", None)], [])
    store.drop_log_through(first[-1])
    assert store.log_size() == 0
    assert store.commit_writes([("delete", "y", None)], []) == [first[-1] + 1]
    assert store.last_seq() == first[-1] + 1


def test_a_failing_write_leaves_nothing_behind(store, rng):
    store.seed([("a", "", "t", {})], "s")
    not_json = {"when": object()}  # json.dumps fails after the log row was inserted
    with pytest.raises(TypeError):
        store.commit_writes(
            [("upsert", "b", rng.standard_normal((2, 4)).astype(np.float32))],
            [StoredDocument("b", "", "text", not_json)],
        )
    assert store.log_size() == 0
    assert store.ids() == ["a"]


def test_corpus_metadata_merges_the_metadata_object(tmp_path):
    path = tmp_path / "corpus.jsonl"
    records = [
        {"_id": "1", "title": "t", "text": "x", "year": 2001, "metadata": {"lang": "en"}},
        {"_id": 2, "text": "y", "metadata": "not an object"},
        {"_id": "3", "text": "z"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert dict(corpus_metadata(path)) == {
        "1": {"lang": "en", "year": 2001},
        "2": {"metadata": "not an object"},
        "3": {},
    }
    assert dict(corpus_metadata(tmp_path)) == dict(corpus_metadata(path))  # a BEIR folder
    text_file = tmp_path / "lines.txt"
    text_file.write_text("one\ntwo\n")
    assert list(corpus_metadata(text_file)) == []


def test_filters_run_as_sql_with_typed_comparisons(store):
    rows = [
        ("n", "", "t", {"year": 2010}),
        ("s", "", "t", {"year": "2010"}),
        ("f", "", "t", {"year": 2010.5, "ok": True}),
        ("one", "", "t", {"ok": 1}),
        ("none", "", "t", {"year": None}),
        ("missing", "", "t", {}),
    ]
    store.seed(rows, "s")

    def ids(where):
        return sorted(store.matching_ids(compile_filter(where)))

    assert ids({"field": "year", "eq": 2010}) == ["n"]
    assert ids({"field": "year", "eq": "2010"}) == ["s"]
    assert ids({"field": "year", "gte": 2010}) == ["f", "n"]
    assert ids({"field": "year", "eq": None}) == ["none"]
    assert ids({"field": "ok", "eq": True}) == ["f"]
    assert ids({"field": "ok", "eq": 1}) == ["one"]
    assert ids({"not": {"field": "year", "gte": 2010}}) == ["missing", "none", "one", "s"]
    assert ids({"field": "year", "in": [2010, "2010"]}) == ["n", "s"]
