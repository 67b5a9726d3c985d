"""`lateint index` and `lateint evaluate` end to end with the real packaged model on a tiny
corpus (30 passages, doc_maxlen 32)."""

import json
import shutil

import numpy as np
import pytest

import lateint_jax as lj
from lateint_jax.cli import main
from lateint_jax.commands import index as index_command
from lateint_jax.index import build_state
from lateint_jax.index.storage import load_index, read_metadata
from tests.synthetic import write_beir

TOPICS = [
    "The moon's gravity raises ocean tides twice a day.",
    "Plants turn sunlight, water and carbon dioxide into sugar.",
    "Vaccines train the immune system to recognise a pathogen.",
    "Sourdough bread rises thanks to wild yeast and bacteria.",
    "Espresso is brewed by forcing hot water through fine coffee.",
    "Binary search halves a sorted list at every step.",
    "A hash table maps keys to array slots through a hash function.",
    "Garbage collectors free memory that is no longer reachable.",
    "Volcanoes erupt when molten rock reaches the surface.",
    "Honey bees communicate the location of flowers by dancing.",
]
PASSAGES = [f"{t} Note {i}." for i, t in enumerate(TOPICS * 3)]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "passages.txt"
    path.write_text("\n".join(PASSAGES) + "\n")
    return path


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory):
    queries = [
        {"_id": "q-tide", "text": "what causes ocean tides"},
        {"_id": "q-bees", "text": "how do bees tell each other where flowers are"},
        {"_id": "q-hash", "text": "hash table keys"},
    ]
    # each topic appears three times (lines t, t + 10, t + 20): all three copies are relevant
    qrels = [
        (q, str(t + c), 1)
        for q, t in (("q-tide", 0), ("q-bees", 9), ("q-hash", 6))
        for c in (0, 10, 20)
    ]
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny", [], queries, qrels)


@pytest.fixture(scope="module")
def colbert_index(corpus_file, tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("idx") / "colbert"
    args = ["index", str(corpus_file), str(index_dir), "--doc-maxlen", "32", "--quiet"]
    assert main(args) == 0
    return index_dir


def test_index_metadata(colbert_index):
    arrays = load_index(colbert_index)
    assert arrays.doc_ids == [str(i) for i in range(30)] and arrays.nbits == 2
    model = arrays.metadata["model"]
    assert model["name"] == "default" and model["kind"] == "colbert"
    assert model["colbert_config"]["doc_maxlen"] == 32 and arrays.dim == 384  # identity head
    assert (arrays.doc_lengths >= 3).all() and (arrays.doc_lengths <= 32).all()


def test_existing_index_refused_and_kept(colbert_index, corpus_file, capsys):
    before = (colbert_index / "metadata.json").read_bytes()
    assert main(["index", str(corpus_file), str(colbert_index), "--quiet"]) == 2
    assert "already exists (add --overwrite" in capsys.readouterr().err
    assert (colbert_index / "metadata.json").read_bytes() == before
    assert main(["index", str(corpus_file), str(colbert_index) + "-x", "--nbits", "3"]) == 2
    assert "--nbits must be 1, 2 or 4" in capsys.readouterr().err


def test_evaluate_writes_metrics(colbert_index, beir_folder, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(colbert_index), str(beir_folder), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ndcg@10" in printed and "recall@100" in printed
    metrics = json.loads(out.read_text())
    assert sorted(metrics) == ["mrr@10", "ndcg@10", "recall@100"]
    assert metrics["recall@100"] == 1.0  # all 30 passages are retrieved (k capped at 30)
    assert 0.5 < metrics["mrr@10"] <= 1.0 and 0.3 < metrics["ndcg@10"] <= 1.0


def test_evaluate_rejects_other_model(colbert_index, beir_folder, tmp_path, capsys):
    other = tmp_path / "not-the-model"
    other.mkdir()
    assert main(["evaluate", str(colbert_index), str(beir_folder), "--model", str(other)]) == 2
    assert "was built with model 'default'" in capsys.readouterr().err


def test_biencoder_index_and_evaluate(corpus_file, beir_folder, tmp_path):
    index_dir = tmp_path / "dense"
    assert main(["index", str(corpus_file), str(index_dir), "--kind", "biencoder", "--quiet"]) == 0
    assert read_metadata(index_dir)["kind"] == "dense"
    out = tmp_path / "dense.json"
    assert main(["evaluate", str(index_dir), str(beir_folder), "--json", str(out), "--k", "5"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["mrr@10"] > 0.5


def test_bad_corpus(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert main(["index", str(tmp_path / "empty.txt"), str(tmp_path / "i"), "--quiet"]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "nope.jsonl"), str(tmp_path / "i"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


def contents(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if the corpus is read or a model loaded (checks must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the corpus or model was loaded before the output was checked")

    monkeypatch.setattr(index_command, "load_corpus", refuse)
    monkeypatch.setattr(index_command.ColBERT, "from_pretrained", refuse)
    monkeypatch.setattr(index_command.BiEncoder, "from_pretrained", refuse)


def mydata(tmp_path):
    corpus = [{"_id": str(i), "text": text} for i, text in enumerate(PASSAGES)]
    return write_beir(tmp_path / "mydata", corpus, [{"_id": "q", "text": "tides"}], [])


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_index_refuses_output_overlapping_corpus(tmp_path, capsys, no_loading, where):
    data = mydata(tmp_path)
    before = contents(data)
    corpus, out, relation = {
        "same": (data, data, "is the input"),
        "inside": (data, data / "index", "lies inside the input"),
        "around": (data / "corpus.jsonl", data, "contains the input"),
    }[where]
    for kind in ("colbert", "biencoder"):
        args = ["index", str(corpus), str(out), "--overwrite", "--kind", kind, "--quiet"]
        assert main(args) == 2, (where, kind)
        assert relation in capsys.readouterr().err, (where, kind)
    assert contents(data) == before


def test_index_refuses_output_overlapping_model_folder(tmp_path, corpus_file, capsys, no_loading):
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    args = ["index", str(corpus_file), str(model / "idx"), "--model", str(model), "--quiet"]
    assert main(args) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert sorted(p.name for p in model.iterdir()) == ["config.json"]


def test_overwrite_refuses_a_folder_that_is_not_an_index(tmp_path, corpus_file, capsys, no_loading):
    out = mydata(tmp_path)
    before = contents(out)
    assert main(["index", str(corpus_file), str(out), "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to replace {out}" in err and "not recognised as a lateint-jax index" in err
    assert contents(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata"]


def test_overwrite_replaces_an_existing_index(colbert_index, corpus_file, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(colbert_index, index_dir)
    args = ["index", str(corpus_file), str(index_dir), "--kind", "biencoder", "--quiet"]
    assert main(args) == 2
    assert read_metadata(index_dir)["kind"] == "colbert"
    assert main([*args, "--overwrite"]) == 0
    assert read_metadata(index_dir)["kind"] == "dense"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2GB", 2 * 10**9),
        ("512MiB", 512 * 2**20),
        ("1000000", 10**6),
        ("1e9", 10**9),
        ("1.5 gib", 3 * 2**29),
    ],
)
def test_memory_budget_sizes(text, expected):
    assert index_command.parse_bytes(text) == expected


def test_bad_memory_budget(corpus_file, tmp_path, capsys, no_loading):
    for text, message in [
        ("lots", "such as 2GB"),
        ("2GiBs", "such as 2GB"),
        ("-1", "such as"),
        ("1000", "at least 1MiB"),
    ]:
        args = ["index", str(corpus_file), str(tmp_path / "i"), "--memory-budget", text, "--quiet"]
        assert main(args) == 2, text
        err = capsys.readouterr().err
        assert "--memory-budget must be" in err and message in err, (text, err)


@pytest.mark.parametrize("stage", ["write_spill", "write_compressed"])
def test_interrupted_build_resumes_without_encoding_finished_chunks(tmp_path, monkeypatch, stage):
    """90 passages under a 1MiB budget make several chunks. A build stopped at chunk 1 (while
    reading and spilling, or while compressing, when every chunk is spilled) resumes with
    --resume, encodes only the passages not spilled yet, and gives the uninterrupted index."""
    corpus = tmp_path / "passages.txt"
    corpus.write_text("\n".join(f"{p} Copy {c}." for c in range(3) for p in PASSAGES) + "\n")
    small = ["--doc-maxlen", "32", "--memory-budget", "1MiB", "--quiet"]
    assert main(["index", str(corpus), str(tmp_path / "whole"), *small]) == 0
    real_write = getattr(build_state.BuildState, stage)

    def stop_at_chunk_one(state, chunk, *arrays):
        if chunk == 1:
            raise RuntimeError("stopped (test)")
        real_write(state, chunk, *arrays)

    monkeypatch.setattr(build_state.BuildState, stage, stop_at_chunk_one)
    with pytest.raises(RuntimeError, match="stopped"):
        main(["index", str(corpus), str(tmp_path / "resumed"), *small])
    monkeypatch.undo()
    skipped = build_state.finished_documents(tmp_path / "resumed")
    assert (0 < skipped < 90) if stage == "write_spill" else skipped == 90
    encoded = []
    real_encode = index_command.ColBERT.encode_documents

    def counting(self, texts, *args, **kwargs):
        encoded.extend(texts)
        return real_encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(index_command.ColBERT, "encode_documents", counting)
    assert main(["index", str(corpus), str(tmp_path / "resumed"), *small, "--resume"]) == 0
    assert len(encoded) == 90 - skipped
    whole, resumed = load_index(tmp_path / "whole"), load_index(tmp_path / "resumed")
    for name in ("centroids", "bucket_weights", "codes", "residuals", "doc_offsets"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(resumed, name), err_msg=name)


def test_pool_factor_stores_fewer_vectors_and_still_finds(colbert_index, corpus_file, tmp_path):
    pooled = tmp_path / "pooled"
    argv = ["index", str(corpus_file), str(pooled), "--doc-maxlen", "32", "--quiet"]
    assert main([*argv, "--pool-factor", "2"]) == 0
    full, half = lj.open_index(colbert_index), lj.open_index(pooled)
    assert half.metadata["pool_factor"] == 2
    ratio = half.stats()["token_vectors"] / full.stats()["token_vectors"]
    assert 0.4 <= ratio <= 0.6, ratio
    queries = lj.ColBERT.from_pretrained(None).encode_queries([PASSAGES[4]])
    assert half.search(queries, k=1)[0][0][0] == full.search(queries, k=1)[0][0][0] == "4"


def test_bad_pool_factor(corpus_file, tmp_path, capsys):
    assert main(["index", str(corpus_file), str(tmp_path / "i"), "--pool-factor", "0"]) == 2
    assert "--pool-factor must be at least 1" in capsys.readouterr().err
    argv = ["index", str(corpus_file), str(tmp_path / "j"), "--kind", "biencoder"]
    assert main([*argv, "--pool-factor", "2"]) == 2
    assert "ColBERT index only" in capsys.readouterr().err
