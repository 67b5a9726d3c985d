"""`lateint search` end to end on tiny real indexes built by `lateint index` with the packaged
default model: JSON out, both index kinds, and one-line errors for bad input."""

import json

import pytest

from lateint_jax import BiEncoder, ColBERT, build_dense_index, build_index
from lateint_jax.cli import main

PASSAGES = [
    "The mitochondria is the powerhouse of the cell and makes ATP.",
    "Paris is the capital and most populous city of France.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "The Great Wall of China is a series of ancient fortifications.",
    "Insulin is a hormone that regulates blood glucose levels.",
    "Jupiter is the largest planet in the Solar System.",
    "Python is a programming language that emphasises readability.",
    "The heart pumps blood through the circulatory system.",
    "Mount Everest is Earth's highest mountain above sea level.",
    "Vaccines train the immune system to recognise pathogens.",
]


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "passages.txt"
    corpus.write_text("\n".join(PASSAGES) + "\n")
    for kind in ("colbert", "biencoder"):
        assert main(["index", str(corpus), str(root / kind), "--kind", kind, "--quiet"]) == 0
    return root


def run_search(capsys, *argv):
    code = main(["search", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("kind", ["colbert", "biencoder"])
def test_search_prints_json(indexes, capsys, kind):
    code, out, _ = run_search(capsys, indexes / kind, "What is the capital of France?", "-k", "3")
    assert code == 0
    result = json.loads(out)
    assert result["query"] == "What is the capital of France?"
    assert len(result["results"]) == 3
    assert result["results"][0]["id"] == "1"  # text-file passages are numbered from 0
    scores = [hit["score"] for hit in result["results"]]
    assert scores == sorted(scores, reverse=True)


def test_several_queries_and_exact(indexes, capsys):
    code, out, _ = run_search(
        capsys, indexes / "colbert", "largest planet", "blood sugar hormone", "-k", "2", "--exact"
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [line["results"][0]["id"] for line in lines] == ["5", "4"]


def test_bad_input_is_one_line(indexes, capsys):
    for argv, message in [
        ((indexes / "colbert", "q", "-k", "0"), "positive"),
        ((indexes / "colbert", "q", "--model", "some/other-model"), "built with model"),
        ((indexes / "missing", "q"), "does not exist"),
        ((indexes / "biencoder", "q", "--ncells", "2"), "a dense index takes no search options"),
        ((indexes / "colbert", "q", "--exact", "--ndocs", "8"), "--exact takes no"),
        ((indexes / "colbert", "q", "--nprobe", "2", "--ncells", "2"), "do not mix"),
        ((indexes / "colbert", "q", "--nprobe", "0"), "nprobe must be"),
    ]:
        code, out, err = run_search(capsys, *argv)
        assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_search_engines_agree_on_a_tiny_index(indexes, capsys):
    """WARP (the default; with every centroid probed and no rerank), PLAID (any PLAID knob) and
    exact search all find the obvious answers of a ten-passage index."""
    everything = ("--nprobe", "1000", "--rerank", "0")
    for extra in ((), everything, ("--ncells", "2"), ("--exact",)):
        code, out, _ = run_search(
            capsys, indexes / "colbert", "largest planet", "blood sugar hormone", "-k", "2", *extra
        )
        tops = [json.loads(line)["results"][0]["id"] for line in out.splitlines()]
        assert code == 0 and tops == ["5", "4"], extra


def test_exact_search_of_a_dense_index_is_its_search(indexes, capsys):
    """A single-vector index is searched exhaustively either way: --exact gives the same."""
    runs = [
        run_search(capsys, indexes / "biencoder", "blood sugar hormone", "-k", "4", *extra)
        for extra in ((), ("--exact",))
    ]
    assert runs[0][0] == runs[1][0] == 0
    assert json.loads(runs[0][1]) == json.loads(runs[1][1])


def test_k_beyond_the_index_returns_every_document_and_says_so(indexes, capsys):
    code, out, err = run_search(capsys, indexes / "colbert", "planets", "-k", "11")
    assert code == 0 and len(json.loads(out)["results"]) == len(PASSAGES)
    assert "returning all of them" in err and len(err.strip().splitlines()) == 1


def test_corpus_adds_each_result_text(indexes, capsys):
    code, out, _ = run_search(
        capsys, indexes / "biencoder", "capital of France", "-k", "2", "--corpus",
        indexes / "passages.txt",
    )  # fmt: skip
    top = json.loads(out)["results"][0]
    assert code == 0 and top["id"] == "1" and top["text"] == PASSAGES[1] and top["title"] == ""


@pytest.mark.parametrize("kind", ["colbert", "biencoder"])
def test_an_index_built_from_vectors_searches_with_the_model_named(indexes, capsys, tmp_path, kind):
    """An index built from vectors records no model: search asks for --model, then answers as
    the index `lateint index` built from the same passages with the same model."""
    ids = [str(i) for i in range(len(PASSAGES))]
    if kind == "colbert":
        build_index(ColBERT.from_pretrained(None).encode_documents(PASSAGES), ids, tmp_path / "v")
    else:
        build_dense_index(BiEncoder.from_pretrained(None).encode(PASSAGES), ids, tmp_path / "v")
    code, out, err = run_search(capsys, tmp_path / "v", "largest planet")
    assert code == 2 and out == "" and "--model" in err
    query = ("largest planet", "-k", "3", "--exact")
    code, out, _ = run_search(capsys, tmp_path / "v", *query, "--model", "default")
    assert code == 0
    _, recorded, _ = run_search(capsys, indexes / kind, *query)
    assert [hit["id"] for hit in json.loads(out)["results"]] == [
        hit["id"] for hit in json.loads(recorded)["results"]
    ]
