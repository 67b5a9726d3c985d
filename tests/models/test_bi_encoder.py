"""Bi-encoder parity with sentence-transformers on the packaged all-MiniLM-L6-v2."""

import logging

import jax
import numpy as np
import pytest

from lateint_jax.convert.files import default_model_dir
from lateint_jax.encoders import BiEncoder
from lateint_jax.errors import InputError

pytest.importorskip("torch", reason="parity tests need torch (pip install '.[torch]')")
st = pytest.importorskip("sentence_transformers", reason="parity tests need sentence-transformers")

TEXTS = [
    "The mitochondria is the powerhouse of the cell.",
    "",
    "Ünïcödé, emoji 🙂 and 中文 characters.",
    "long " * 300,  # over the 256-token limit: truncated with one warning
    "short",
]


@pytest.fixture(scope="module")
def minilm():
    return BiEncoder.from_pretrained(None)


@pytest.fixture(scope="module")
def reference():
    return st.SentenceTransformer(str(default_model_dir()), device="cpu")


def test_matches_sentence_transformers(minilm, reference, caplog):
    assert minilm.normalize and minilm.max_length == reference.max_seq_length == 256
    with caplog.at_level(logging.WARNING):
        ours = minilm.encode(TEXTS, batch_size=2)
    assert [r.message for r in caplog.records].count(
        "1 of 5 texts were longer than 256 tokens and were truncated"
    ) == 1
    want = reference.encode(TEXTS, batch_size=2)
    assert ours.shape == (5, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, want, atol=1e-5, rtol=0)


def test_order_and_batching_do_not_change_results(minilm):
    full = minilm.encode(TEXTS, batch_size=8)
    one_by_one = np.stack([minilm.encode([t], batch_size=1)[0] for t in TEXTS])
    np.testing.assert_allclose(full, one_by_one, atol=1e-5, rtol=0)


def test_export_loads_in_sentence_transformers(minilm, reference, tmp_path):
    minilm.save_pretrained(tmp_path / "st")
    exported = st.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    texts = TEXTS[:3]
    np.testing.assert_array_equal(exported.encode(texts), reference.encode(texts))
    again = BiEncoder.from_pretrained(tmp_path / "st")
    jax.tree.map(np.testing.assert_array_equal, again.params, minilm.params)
    assert again.normalize and again.max_length == 256


def test_bad_texts_are_named(minilm):
    with pytest.raises(InputError, match=r"texts\[1\] is NoneType"):
        minilm.encode(["fine", None])
    with pytest.raises(InputError, match="a list of strings, got a single str"):
        minilm.encode("not a list")
    assert minilm.encode([]).shape == (0, 384)
