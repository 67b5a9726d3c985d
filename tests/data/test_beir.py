"""BEIR readers: folders, corpus.jsonl, text files, qrels, the tfds builder records; lines end
at "\n" only (never at the other characters str.splitlines() breaks on); errors name path:line."""

import json
import random

import numpy as np
import pytest

from lateint_jax.data.beir import (
    Corpus,
    load_beir,
    load_corpus,
    load_qrels,
    load_queries,
    passage_text,
    read_lines,
)
from lateint_jax.data.tfds_beir import load_tfds_beir, records_to_beir
from lateint_jax.errors import InputError
from tests.synthetic import write_beir

# Every character but "\n" and "\r" that str.splitlines() ends a line at.
SPLITLINES_ONLY = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# The control characters among them, which json.dumps escapes but a file may hold raw.
RAW_CONTROLS = "\x0b\x0c\x1c\x1d\x1e"


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
    with pytest.raises(InputError, match="bad.jsonl:2: duplicate id 'a' \\(first on line 1\\)"):
        load_corpus(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"_id": "a"}\n{oops\n')
    with pytest.raises(InputError, match="broken.jsonl:2: not valid JSON"):
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
    half = [{"query_id": b"q1", "passage_id": b"d2", "score": np.float32(0.5)}]
    with pytest.raises(InputError, match="judgement 1 of the tfds split: score .* not an integer"):
        records_to_beir(passages, queries, half)


def test_tfds_builder(tmp_path):
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match=r"lateint-jax\[tfds\]"):
            load_tfds_beir("scifact", data_dir=tmp_path)
        pytest.skip("tensorflow-datasets is not installed (the tfds extra); checked the error only")
    with pytest.raises(InputError, match="not prepared"):
        load_tfds_beir("scifact", data_dir=tmp_path)


# Private-use stand-ins for RAW_CONTROLS, which json.dumps would escape but leaves these alone.
STAND_IN = {char: chr(0xE000 + i) for i, char in enumerate(RAW_CONTROLS)}


def raw_json(record: dict) -> str:
    """One JSON line with every non-ASCII character and RAW_CONTROLS written as itself."""
    hidden = {k: v.translate(str.maketrans(STAND_IN)) for k, v in record.items()}
    line = json.dumps(hidden, ensure_ascii=False)
    return line.translate(str.maketrans({v: k for k, v in STAND_IN.items()}))


def write_lines(path, lines, end="\n"):
    path.write_bytes("".join(line + end for line in lines).encode("utf-8"))
    return path


def test_json_strings_keep_the_characters_splitlines_breaks_at(tmp_path):
    corpus = [
        {"_id": f"d{i}", "title": f"Ti{char}tle", "text": f"before{char}after"}
        for i, char in enumerate(SPLITLINES_ONLY)
    ]
    queries = [{"_id": f"q{i}", "text": f"ask{char}this"} for i, char in enumerate(SPLITLINES_ONLY)]
    folder = tmp_path / "beir"
    folder.mkdir()
    write_lines(folder / "corpus.jsonl", [raw_json(r) for r in corpus])
    write_lines(folder / "queries.jsonl", [raw_json(q) for q in queries])
    assert all(char in (folder / "corpus.jsonl").read_text() for char in SPLITLINES_ONLY)
    got = load_corpus(folder)
    assert got.ids == [r["_id"] for r in corpus]
    assert got.titles == [r["title"] for r in corpus]
    assert got.bodies == [r["text"] for r in corpus]
    assert got.texts == [f"{r['title']} {r['text']}" for r in corpus]
    assert load_queries(folder) == {q["_id"]: q["text"] for q in queries}


def test_crlf_files(tmp_path):
    folder = tmp_path / "crlf"
    (folder / "qrels").mkdir(parents=True)
    write_lines(
        folder / "corpus.jsonl", [raw_json({"_id": "d1", "title": "T", "text": "x"})], "\r\n"
    )
    write_lines(folder / "queries.jsonl", [raw_json({"_id": "q1", "text": "y"})], "\r\n")
    write_lines(folder / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t2"], "\r\n")
    data = load_beir(folder)
    assert data.corpus.ids == ["d1"] and data.corpus.texts == ["T x"]
    assert data.queries == {"q1": "y"} and data.qrels == {"q1": {"d1": 2}}
    text = write_lines(tmp_path / "passages.txt", ["one", "", "a\rb", "last"], "\r\n")
    assert load_corpus(text).texts == ["one", "", "a\rb", "last"]


def test_text_corpus_line_holding_a_separator_stays_one_passage(tmp_path):
    lines = ["first", *(f"left{char}right" for char in SPLITLINES_ONLY), "", "last"]
    corpus = load_corpus(write_lines(tmp_path / "passages.txt", lines))
    assert corpus.ids == [str(i) for i in range(len(lines))]
    assert corpus.texts == lines
    assert corpus.passage(str(len(lines) - 1)) == "last"


def test_read_lines_ends_lines_at_newline_only(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes("a\rb\u2028c\r\n\n\x1cd\re".encode())
    assert list(read_lines(path)) == [(1, "a\rb\u2028c"), (2, ""), (3, "\x1cd\re")]


@pytest.mark.parametrize("seed", [20240611, 7])  # the test id names the seed
def test_random_texts_round_trip(tmp_path, seed):
    rng = random.Random(seed)
    alphabet = 'ab é\t"\\{}' + SPLITLINES_ONLY
    texts = ["".join(rng.choices(alphabet, k=rng.randrange(12))) for _ in range(200)]
    titles = [rng.choice(["", "Title", f"T{rng.choice(SPLITLINES_ONLY)}t"]) for _ in texts]
    records = [
        {"_id": f"d{i}", "title": t, "text": x} for i, (t, x) in enumerate(zip(titles, texts))
    ]
    jsonl = load_corpus(write_lines(tmp_path / "c.jsonl", [raw_json(r) for r in records]))
    assert jsonl.ids == [r["_id"] for r in records], f"seed {seed}"
    assert jsonl.bodies == texts and jsonl.titles == titles, f"seed {seed}"
    plain = load_corpus(write_lines(tmp_path / "c.txt", texts))
    assert plain.texts == texts, f"seed {seed}"
    assert plain.ids == [str(i) for i in range(len(texts))], f"seed {seed}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"_id": "a", "text": "x\u2028y"}\n{oops\n', r"c\.jsonl:2: not valid JSON"),
        ('{"_id": "a", "text": "x"}\n\n{"_id": "b", "text": 5}\n', r'c\.jsonl:3: "text" must be'),
        ('{"_id": ["a"], "text": "x"}\n', r'c\.jsonl:1: "_id" must be a string or an integer'),
        ('{"_id": "", "text": "x"}\n', r'c\.jsonl:1: empty "_id"'),
        ('{"_id": "a", "title": 3, "text": "x"}\n', r'c\.jsonl:1: "title" must be a string'),
        ("[1]\n", r'c\.jsonl:1: expected an object with an "_id"'),
    ],
)
def test_bad_corpus_lines_name_path_and_line(tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    path.write_bytes(content.encode("utf-8"))
    with pytest.raises(InputError, match=message):
        load_corpus(path)


def test_undecodable_line_names_path_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "x\xe2\x80\xa8"}\n{"_id": "b", "text": "\xff"}\n')
    with pytest.raises(InputError, match=r"c\.jsonl:2: not UTF-8"):
        load_corpus(path)
    path.write_bytes(b'{"_id": "q", "text": "x"}\n{"_id": "q", "text": "y"}\n')
    with pytest.raises(InputError, match=r"c\.jsonl:2: duplicate id 'q' \(first on line 1\)"):
        load_queries(path)


def write_qrels(folder, body: str, split="test"):
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / f"{split}.tsv").write_bytes(body.encode("utf-8"))
    return folder


def test_qrels_scores_header_and_repeats(tmp_path):
    body = "query-id\tcorpus-id\tscore\r\nq1\td1\t1.0\n\nq1\td2\t-1\nq2\td\u20283\t2\nq1\td1\t0\n"
    assert load_qrels(write_qrels(tmp_path, body)) == {
        "q1": {"d1": 0, "d2": -1},  # a repeated pair keeps its last score
        "q2": {"d\u20283": 2},
    }
    assert load_qrels(write_qrels(tmp_path, "q1\td1\t1\n")) == {"q1": {"d1": 1}}  # no header


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n", r"test\.tsv:3: expected `query-id"),
        ("q1\td1\t1\textra\n", r"test\.tsv:1: expected .* got 4 field"),
        ("q1 d1 1\n", r"test\.tsv:1: expected .* got 1 field"),
        ("q\u2028x\td1\t1\nq1\td1\t0.5\n", r"test\.tsv:2: score '0\.5' is not an integer"),
        ("q1\td1\tnan\n", r"test\.tsv:1: score 'nan' is not an integer"),
        ("q1\td1\thigh\n", r"test\.tsv:1: score 'high' is not a number"),
        ("q1\t\t1\n", r"test\.tsv:1: empty query-id or corpus-id"),
        ("query-id\tcorpus-id\tscore\n\n", r"test\.tsv has no judgements"),
    ],
)
def test_bad_qrels_rows_name_path_and_line(tmp_path, body, message):
    with pytest.raises(InputError, match=message):
        load_qrels(write_qrels(tmp_path, body))


def test_corpus_serves_lookups(tiny):
    corpus = load_corpus(tiny)
    assert len(corpus) == 3 and "d2" in corpus and "3" in corpus and "zz" not in corpus
    assert corpus.passage("d1") == "Tides The moon pulls the sea."
    assert corpus.get("d1") == {"title": "Tides", "text": "The moon pulls the sea."}
    assert corpus.get("3") == {"title": "", "text": "No title field."} and corpus.get("zz") == {}
    with pytest.raises(KeyError):
        corpus.passage("zz")
    assert corpus.passages_by_id() == dict(zip(corpus.ids, corpus.texts))
    untitled = Corpus.untitled(["a", "b"], ["x", "y"])
    assert untitled.titles == ["", ""] and untitled.texts == ["x", "y"]
    with pytest.raises(ValueError, match="one title and body per id"):
        Corpus(["a"], [], ["x"])
