"""`lateint encode`: text files and BEIR .jsonl in, .npz out; bad input as one-line errors."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from lateint_jax.cli import main
from lateint_jax.commands.encode import read_texts
from lateint_jax.data.beir import passage_text
from lateint_jax.encoders import BiEncoder, ColBERT


@pytest.fixture(scope="module")
def colbert():
    return ColBERT.from_pretrained(None)


@pytest.fixture
def small_corpus(scifact_dir, tmp_path):
    """Six SciFact documents plus one without a title."""
    with open(scifact_dir / "corpus.jsonl") as f:
        lines = list(itertools.islice(f, 6))
    lines.append(json.dumps({"_id": "no-title", "title": "", "text": "Only text here."}) + "\n")
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(lines))
    return path


def test_beir_corpus_to_colbert_npz(small_corpus, tmp_path, colbert):
    out = tmp_path / "docs.npz"
    assert (
        main(["encode", str(small_corpus), str(out), "--kind", "colbert", "--batch-size", "4"]) == 0
    )
    data = np.load(out)
    texts, ids = read_texts(small_corpus)
    first = json.loads(small_corpus.read_text().split("\n")[0])
    assert texts[0] == passage_text(first["title"], first["text"])
    assert texts[-1] == "Only text here."
    assert list(data["ids"]) == ids and data["embeddings"].dtype == np.float32
    want = colbert.encode_documents(texts)
    np.testing.assert_array_equal(data["lengths"], [len(v) for v in want])
    np.testing.assert_allclose(data["embeddings"], np.concatenate(want), atol=1e-5)


def test_text_file_queries_and_biencoder(tmp_path, colbert):
    path = tmp_path / "queries.txt"
    path.write_text("what is scurvy?\n\nvitamin c\n")
    assert (
        main(["encode", str(path), str(tmp_path / "q.npz"), "--queries", "--max-length", "16"]) == 0
    )
    q = np.load(tmp_path / "q.npz")
    assert (
        "ids" not in q and list(q["lengths"]) == [16, 16, 16] and q["embeddings"].shape == (48, 384)
    )
    assert main(["encode", str(path), str(tmp_path / "b.npz"), "--kind", "biencoder"]) == 0
    b = np.load(tmp_path / "b.npz")["embeddings"]
    want = BiEncoder.from_pretrained(None).encode(["what is scurvy?", "", "vitamin c"])
    np.testing.assert_allclose(b, want, atol=1e-6)


def test_bad_input_gives_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2", "text": \n')
    proc = subprocess.run(
        [sys.executable, "-m", "lateint_jax", "encode", str(bad), str(tmp_path / "o.npz")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("lateint encode: error: ")
    assert "bad.jsonl:2: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ('{"_id": "1", "text": 5}\n', [], 'in.jsonl:1: "text" must be a string, got int'),
        ("a\n", ["--batch-size", "0"], "--batch-size must be >= 1"),
        ("a\n", ["--kind", "biencoder", "--queries"], "--queries only applies to --kind colbert"),
    ],
)
def test_argument_errors(tmp_path, capsys, content, args, message):
    path = tmp_path / ("in.jsonl" if content.startswith("{") else "in.txt")
    path.write_text(content)
    assert main(["encode", str(path), str(tmp_path / "o.npz"), *args]) == 2
    assert message in capsys.readouterr().err
    assert main(["encode", str(path), str(tmp_path / "o.txt")]) == 2
    assert "must end in .npz" in capsys.readouterr().err


def test_read_texts_ends_lines_at_newline_only(tmp_path):
    """U+2028, U+0085 and a raw \\x1c inside a JSON string or a text line end no line."""
    rows = [
        {"_id": "a", "title": "T\u2028", "text": "x\x85y"},
        {"_id": "b", "text": "z\u2028w\x1cv"},
    ]
    jsonl = tmp_path / "in.jsonl"
    lines = [json.dumps(r, ensure_ascii=False).replace("\\u001c", "\x1c") for r in rows]
    assert "\x1c" in lines[1]
    jsonl.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    assert read_texts(jsonl) == (["T x\x85y", "z\u2028w\x1cv"], ["a", "b"])
    text = tmp_path / "in.txt"
    text.write_text("one\u2028still one\n\ntwo\x1c\x0cthree\r\nlast", encoding="utf-8")
    assert read_texts(text) == (["one\u2028still one", "", "two\x1c\x0cthree", "last"], None)
