"""BEIR readers: folders, corpus.jsonl, text files, qrels, the tfds builder records."""

import json

import numpy as np
import pytest

from lateint_jax.data.beir import load_beir, load_corpus, load_qrels, passage_text
from lateint_jax.data.tfds_beir import load_tfds_beir, records_to_beir
from lateint_jax.errors import InputError


def write_beir(folder, corpus, queries, qrels, split="test"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels").mkdir(exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def tiny(tmp_path):
    corpus = [
        {"_id": "d1", "title": "Tides", "text": "The moon pulls the sea."},
        {"_id": "d2", "title": "", "text": "Bread rises."},
        {"_id": 3, "text": "No title field."},
    ]
    queries = [
        {"_id": "q1", "text": "moon"},
        {"_id": "q2", "text": "bread"},
        {"_id": "q3", "text": "x"},
    ]
    return write_beir(
        tmp_path / "tiny", corpus, queries, [("q1", "d1", 1), ("q2", "d2", 2), ("q1", "3", 0)]
    )


def test_folder(tiny):
    data = load_beir(tiny)
    assert data.corpus.ids == ["d1", "d2", "3"]
    assert data.corpus.texts == ["Tides The moon pulls the sea.", "Bread rises.", "No title field."]
    assert data.queries == {"q1": "moon", "q2": "bread"}  # only judged queries
    assert data.qrels == {"q1": {"d1": 1, "3": 0}, "q2": {"d2": 2}}
    assert load_corpus(tiny / "corpus.jsonl").ids == data.corpus.ids


def test_text_file(tmp_path):
    path = tmp_path / "passages.txt"
    path.write_text("first passage\n\nthird one\n")
    corpus = load_corpus(path)
    assert corpus.ids == ["0", "1", "2"] and corpus.texts == ["first passage", "", "third one"]


def test_errors(tiny, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="is empty"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "bad.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    with pytest.raises(InputError, match="duplicate id 'a'"):
        load_corpus(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"_id": "a"}\n{oops\n')
    with pytest.raises(InputError, match="broken.jsonl:2: invalid JSON"):
        load_corpus(tmp_path / "broken.jsonl")
    (tmp_path / "noid.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(InputError, match='noid.jsonl:1: expected an object with an "_id"'):
        load_corpus(tmp_path / "noid.jsonl")
    with pytest.raises(InputError, match=r"splits here: \['test'\]"):
        load_qrels(tiny, "dev")
    (tmp_path / "nocorpus").mkdir()
    with pytest.raises(InputError, match="without corpus.jsonl"):
        load_corpus(tmp_path / "nocorpus")


def test_scifact(scifact_dir):
    data = load_beir(scifact_dir, "test")
    assert len(data.corpus) == 5183 and len(data.queries) == 300
    assert sum(len(v) for v in data.qrels.values()) == 339
    assert len(load_qrels(scifact_dir, "train")) == 809
    assert passage_text("T", "x") == "T x" and passage_text("", "x") == "x"


def test_tfds_records_to_beir():
    # records as tfds.as_numpy yields them for the `beir` builder (strings as bytes)
    passages = [
        {"passage_id": b"d1", "passage": b"Body one.", "passage_metadata": b'{"title": "Title"}'},
        {"passage_id": b"d2", "passage": b"Body two.", "passage_metadata": b"{}"},
    ]
    queries = [{"query_id": b"q1", "query": b"what"}, {"query_id": b"q2", "query": b"unjudged"}]
    judgements = [{"query_id": b"q1", "passage_id": b"d2", "score": np.float32(1.0)}]
    data = records_to_beir(passages, queries, judgements)
    assert data.corpus.ids == ["d1", "d2"] and data.corpus.texts == ["Title Body one.", "Body two."]
    assert data.queries == {"q1": "what"} and data.qrels == {"q1": {"d2": 1}}
    with pytest.raises(InputError, match="no judgements"):
        records_to_beir(passages, queries, [])


def test_tfds_builder(tmp_path):
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match=r"lateint-jax\[tfds\]"):
            load_tfds_beir("scifact", data_dir=tmp_path)
        pytest.skip("tensorflow-datasets is not installed (the tfds extra); checked the error only")
    with pytest.raises(InputError, match="not prepared"):
        load_tfds_beir("scifact", data_dir=tmp_path)
