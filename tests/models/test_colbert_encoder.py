"""ColBERT encoder: colbert-ai's tokenisation rules, and parity with PyLate.

colbert-ai 0.2.21 cannot be imported next to transformers 5 (it imports `transformers.AdamW`), so
the reference is PyLate 1.6 loading the Stanford-format (colbert-ai) checkpoint we write from a
tiny random model. PyLate 1.6 pins sentence-transformers 5.3 / transformers <= 5.3, so it lives in
its own venv (see docs/ENCODERS.md); the tests run it as a subprocess and skip when it is absent.
"""

import dataclasses
import json
import string

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
from tests import reference_python
from tests.tiny_models import tiny_bert

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
    d = model.encode(job["docs"], is_query=False, pool_factor=job.get("pool_factor", 1))
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
    return reference_python.run_pylate(PYLATE_SCRIPT, jobs, tmp_path, "ref")


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


def test_default_model_is_an_honest_untrained_colbert():
    """No ColBERT head: no markers, no [MASK] augmentation, the identity head (384-d), the
    checkpoint's own max_seq_length; a smaller dim gets the seeded orthogonal projection."""
    a = ColBERT.from_pretrained(None)
    assert (a.config.query_token, a.config.doc_token) == ("", "")
    assert not a.config.query_augmentation and (a.config.dim, a.config.doc_maxlen) == (384, 256)
    np.testing.assert_array_equal(np.asarray(a.params["linear"]["kernel"]), np.eye(384))
    b = ColBERT.from_pretrained("default", dim=64)
    kernel = np.asarray(b.params["linear"]["kernel"])
    np.testing.assert_array_equal(kernel, np.asarray(init_projection(384, 64, seed=0)["kernel"]))
    np.testing.assert_allclose(kernel.T @ kernel * (64 / 384), np.eye(64), atol=1e-5)
    tok = a.tokenizer
    enc = a.tokenize_queries(["what do cats eat?"])
    n = int(enc["attention_mask"][0].sum())
    assert list(enc["input_ids"][0, :n]) == [
        tok.cls_id,
        *tok.raw_ids(["what do cats eat?"])[0],
        tok.sep_id,
    ]
    np.testing.assert_array_equal(enc["token_mask"], enc["attention_mask"])
    q = a.encode_queries(["what do cats eat?"])
    assert q.shape == (1, 32, 384) and not q[0, n:].any()  # padding: zero vectors, count 0
    np.testing.assert_allclose(np.linalg.norm(q[0, :n], axis=1), 1, atol=1e-5)
    docs = a.encode_documents(["Cats eat meat and fish.", "Stock markets fell sharply today."])
    assert len(docs[0]) == len(tok.raw_ids(["Cats eat meat and fish"])[0]) + 2  # [CLS] ... [SEP]
    scores = [float((q[0] @ d.T).max(axis=1).sum()) for d in docs]
    assert scores[0] > scores[1]
    assert default_model_dir().exists()


def test_colbert_ai_conventions_on_the_default_reproduce_the_old_default():
    """An index built before issue 13 records colbert-ai's settings (its config has no
    query_augmentation key); loading with them gives the markers, [MASK] and the 128-d head."""
    old = ColBERT.from_pretrained(None, config=ColBERTConfig.from_dict({"dim": 128}))
    assert old.config.query_token == "[unused0]" and old.config.query_augmentation
    kernel = np.asarray(old.params["linear"]["kernel"])
    np.testing.assert_array_equal(kernel, np.asarray(init_projection(384, 128, seed=0)["kernel"]))
    enc = old.tokenize_queries(["cats"])
    assert enc["input_ids"][0, 1] == old.tokenizer.token_id("[unused0]") and enc["token_mask"].all()
    assert old.encode_queries(["cats"])[0, -1].any()  # [MASK] vectors count


def test_no_markers_no_augmentation_matches_pylate(tmp_path, seed):
    """PyLate's empty prefixes and do_query_expansion=False (the untrained default's settings,
    written in PyLate's layout): the same vectors; PyLate drops query padding, ours is zeros."""
    model = tiny_colbert(
        seed, query_maxlen=12, doc_maxlen=20, query_token="", doc_token="", query_augmentation=False
    )
    model.save_pretrained(tmp_path / "pylate", layout="pylate")
    settings = json.loads((tmp_path / "pylate" / "config_sentence_transformers.json").read_text())
    assert settings["query_prefix"] == "" and settings["do_query_expansion"] is False
    with pytest.raises(InputError, match="query_token is empty"):
        model.save_pretrained(tmp_path / "stanford", layout="stanford")
    ref = run_pylate(
        [{"path": str(tmp_path / "pylate"), "queries": QUERIES, "docs": DOCS}], tmp_path
    )
    again = ColBERT.from_pretrained(tmp_path / "pylate")
    assert again.config == dataclasses.replace(model.config, framing="pylate")
    for m in (model, again):
        queries, mask = m.encode_queries(QUERIES), m.tokenize_queries(QUERIES)["token_mask"]
        for j in range(len(QUERIES)):
            keep = mask[j].astype(bool)
            assert not queries[j][~keep].any()
            np.testing.assert_allclose(
                queries[j][keep], ref[f"0_q{j}"], atol=ATOL, rtol=0, err_msg=f"q{j} seed={seed}"
            )
        for j, doc in enumerate(m.encode_documents(DOCS)):
            np.testing.assert_allclose(
                doc, ref[f"0_d{j}"], atol=ATOL, rtol=0, err_msg=f"d{j} seed={seed}"
            )


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
