"""ColBERT encoder: colbert-ai's tokenisation rules, and parity with PyLate.

colbert-ai 0.2.21 cannot be imported next to transformers 5 (it imports `transformers.AdamW`), so
the reference is PyLate 1.6 loading the Stanford-format (colbert-ai) checkpoint we write from a
tiny random model. PyLate 1.6 pins sentence-transformers 5.3 / transformers <= 5.3, so it lives in
its own venv (see docs/ENCODERS.md); the tests run it as a subprocess and skip when it is absent.
"""

import dataclasses
import json
import os
import string
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest

from lateint_jax import encoders
from lateint_jax.convert.files import default_model_dir
from lateint_jax.convert.load import load_checkpoint
from lateint_jax.encoders import ColBERT, load_tokenizer
from lateint_jax.errors import InputError
from lateint_jax.models.bert import init_bert_params
from lateint_jax.models.colbert import ColBERTConfig, init_projection
from tests.tiny_models import tiny_bert

REPO = Path(__file__).resolve().parents[2]
PYLATE_PYTHON = Path(
    os.environ.get("LATEINT_PYLATE_PYTHON", REPO / ".bench-venvs" / "pylate" / "bin" / "python")
)
TINY = tiny_bert()  # the packaged tokenizer's vocabulary
DIM = 16
# Parity tolerance: float32 on both sides (PyLate runs torch), only the summation order
# differs; vectors are unit length, so 1e-4 absolute.
ATOL = 1e-4
QUERIES = [
    "what is a cat?",
    "",
    "a very long query with many many words that surely goes past the limit",
]
DOCS = ["Cats are small, furry animals; they purr!", "", "word, " * 30, "(a) b-c."]

PYLATE_SCRIPT = """
import json, sys
import numpy as np
from pylate import models
jobs = json.loads(open(sys.argv[1]).read())
out = {}
for i, job in enumerate(jobs):
    model = models.ColBERT(model_name_or_path=job["path"], device="cpu", **job.get("kwargs", {}))
    q = model.encode(job["queries"], is_query=True)
    d = model.encode(job["docs"], is_query=False)
    for j, x in enumerate(q):
        out[f"{i}_q{j}"] = np.asarray(x)
    for j, x in enumerate(d):
        out[f"{i}_d{j}"] = np.asarray(x)
np.savez(sys.argv[2], **out)
"""


def tiny_colbert(seed, **config) -> ColBERT:
    key = jax.random.key(seed)
    params = {
        "bert": init_bert_params(TINY, key),
        "linear": {
            "kernel": jax.random.normal(jax.random.fold_in(key, 1), (TINY.hidden_size, DIM))
        },
    }
    tok = load_tokenizer(load_checkpoint(None))
    config.setdefault("doc_maxlen", 64)
    return ColBERT(params, TINY, ColBERTConfig(dim=DIM, **config), tok)


def run_pylate(jobs, tmp_path) -> dict:
    if not PYLATE_PYTHON.exists():
        pytest.skip(
            f"PyLate reference venv not found at {PYLATE_PYTHON} (set LATEINT_PYLATE_PYTHON; "
            "recipe in docs/ENCODERS.md)"
        )
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "ref.py").write_text(PYLATE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [
            str(PYLATE_PYTHON),
            str(tmp_path / "ref.py"),
            str(tmp_path / "jobs.json"),
            str(tmp_path / "ref.npz"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(tmp_path / "ref.npz"))


def test_matches_pylate_on_stanford_and_pylate_exports(tmp_path, seed):
    plain = tiny_colbert(seed, query_maxlen=12, doc_maxlen=20)
    attend = tiny_colbert(seed + 1, query_maxlen=10, doc_maxlen=16, attend_to_mask_tokens=True)
    plain.save_pretrained(tmp_path / "stanford", layout="stanford")
    attend.save_pretrained(tmp_path / "stanford_attend", layout="stanford")
    plain.save_pretrained(tmp_path / "pylate", layout="pylate")
    models = [plain, attend, plain]
    jobs = [
        {"path": str(tmp_path / name), "queries": QUERIES, "docs": DOCS}
        for name in ("stanford", "stanford_attend", "pylate")
    ]
    ref = run_pylate(jobs, tmp_path)
    for i, model in enumerate(models):
        queries = model.encode_queries(QUERIES, batch_size=2)
        docs = model.encode_documents(DOCS, batch_size=2)
        for j in range(len(QUERIES)):
            np.testing.assert_allclose(
                queries[j], ref[f"{i}_q{j}"], atol=ATOL, rtol=0, err_msg=f"{i} q{j}"
            )
        for j in range(len(DOCS)):
            assert docs[j].shape == ref[f"{i}_d{j}"].shape, (i, j)
            np.testing.assert_allclose(
                docs[j], ref[f"{i}_d{j}"], atol=ATOL, rtol=0, err_msg=f"{i} d{j}"
            )


def test_export_round_trips_bit_exact(tmp_path):
    model = tiny_colbert(3, query_maxlen=24, doc_maxlen=40, attend_to_mask_tokens=True)
    for layout in ("stanford", "pylate"):
        model.save_pretrained(tmp_path / layout, layout=layout)
        again = ColBERT.from_pretrained(tmp_path / layout)
        # Each layout's readers frame text their own way (the same for this WordPiece model).
        framing = "pylate" if layout == "pylate" else "colbert-ai"
        assert again.config == dataclasses.replace(model.config, framing=framing), layout
        jax.tree.map(np.testing.assert_array_equal, again.params, model.params)
    with pytest.raises(Exception, match="already exists"):
        model.save_pretrained(tmp_path / "stanford")


def test_query_tokens_follow_colbert_ai():
    model = tiny_colbert(0, query_maxlen=8)
    tok = model.tokenizer
    raw = tok.raw_ids(["hello world"])[0]
    enc = model.tokenize_queries(["hello world", "one two three four five six seven"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == (2, 8)
    cls, q, sep, msk = tok.cls_id, tok.token_id("[unused0]"), tok.sep_id, tok.mask_id
    np.testing.assert_array_equal(ids[0], [cls, q, *raw, sep, msk, msk, msk])
    np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 1, 0, 0, 0])
    assert ids[1, -1] == sep and mask[1].all()  # truncated to 5 words, no [MASK] left
    attend = tiny_colbert(0, query_maxlen=8, attend_to_mask_tokens=True)
    assert attend.tokenize_queries(["hello world"])["attention_mask"].all()


def test_document_mask_drops_punctuation_and_padding():
    model = tiny_colbert(0, doc_maxlen=32)
    enc = model.tokenize_documents(["a, b. c!", "d"])
    tok = model.tokenizer
    punct = {tok.raw_ids([p])[0][0] for p in string.punctuation}
    for ids, att, keep in zip(
        enc["input_ids"], enc["attention_mask"], enc["token_mask"], strict=True
    ):
        expected = att.astype(bool) & ~np.isin(ids, list(punct))
        np.testing.assert_array_equal(keep.astype(bool), expected)
    assert enc["input_ids"][0, 1] == tok.token_id("[unused1]")
    docs = model.encode_documents(["a, b. c!", "d", ""])
    assert [len(d) for d in docs] == [int(enc["token_mask"][0].sum()), 4, 3]
    assert all(np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5) for d in docs)
    no_skip = tiny_colbert(0, doc_maxlen=32, mask_punctuation=False)
    assert len(no_skip.encode_documents(["a, b. c!"])[0]) == int(enc["attention_mask"][0].sum())


def test_document_token_spans_locate_each_vector_in_the_text():
    model = tiny_colbert(0, doc_maxlen=12)
    texts = ["Honeybees dance, telling nest-mates where flowers are!", "d", "", "x " * 40]
    for text in texts:
        spans = model.document_token_spans(text)
        assert len(spans) == len(model.encode_documents([text])[0]), text  # one per vector
        assert spans[:2] == [None, None] and spans[-1] is None  # [CLS], [D], [SEP]
        inner = spans[2:-1]
        assert all(0 <= a < b <= len(text) for a, b in inner), (text, spans)
        assert inner == sorted(inner)
    spans = model.document_token_spans(texts[0])
    words = [texts[0][a:b] for a, b in spans[2:-1]]
    assert "," not in words and "!" not in words  # punctuation has no vector
    joined = "".join(words)  # the pieces cover the text's letters in order, up to truncation
    assert len(joined) > 20 and joined == "".join(c for c in texts[0] if c.isalnum())[: len(joined)]


def test_encoding_compiles_one_shape_per_bucket():
    model = tiny_colbert(1, doc_maxlen=100)
    texts = [" ".join(["word"] * n) for n in (3, 5, 40, 41, 90, 2, 7)]
    encoders._colbert_jit.clear_cache()
    docs = model.encode_documents(texts, batch_size=4)
    # 5-10 tokens -> bucket 16 (4 docs), 43-44 -> 48 (2 docs), 93 -> 96 (1 doc): 3 shapes.
    assert encoders._colbert_jit._cache_size() == 3
    single = [model.encode_documents([t])[0] for t in texts]
    for a, b in zip(docs, single, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_default_model_gets_a_deterministic_orthogonal_projection():
    a = ColBERT.from_pretrained(None)
    b = ColBERT.from_pretrained("default", dim=64)
    kernel = np.asarray(a.params["linear"]["kernel"])
    assert kernel.shape == (384, 128) and b.params["linear"]["kernel"].shape == (384, 64)
    np.testing.assert_array_equal(kernel, np.asarray(init_projection(384, 128, seed=0)["kernel"]))
    gram = kernel.T @ kernel * (128 / 384)
    np.testing.assert_allclose(gram, np.eye(128), atol=1e-5)
    q = a.encode_queries(["what do cats eat?"])
    docs = a.encode_documents(["Cats eat meat and fish.", "Stock markets fell sharply today."])
    scores = [float((q[0] @ d.T).max(axis=1).sum()) for d in docs]
    assert scores[0] > scores[1]
    assert default_model_dir().exists()


def test_bad_input():
    model = tiny_colbert(0)
    with pytest.raises(InputError, match=r"queries\[0\] is bytes"):
        model.encode_queries([b"bytes"])
    with pytest.raises(InputError, match=r"documents\[2\] is float"):
        model.encode_documents(["a", "b", 1.5])
    with pytest.raises(InputError, match="batch_size must be >= 1"):
        model.encode_documents(["a"], batch_size=0)
    with pytest.raises(InputError, match="doc_maxlen"):
        tiny_colbert(0, doc_maxlen=1000)
