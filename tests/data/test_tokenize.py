"""Tokenisation helpers: buckets, text checks, and framing identical to transformers' tokenizer."""

import logging

import numpy as np
import pytest
from transformers import AutoTokenizer

from lateint_jax.convert.files import default_model_dir
from lateint_jax.data.tokenize import TextTokenizer, bucket_length, check_texts, punctuation_ids
from lateint_jax.errors import InputError

TEXTS = ["Hello, world!", "", "a " * 300, "Ünïcödé 中文 🙂", "  spaces   around  "]


@pytest.fixture(scope="module")
def hf_tokenizer():
    return AutoTokenizer.from_pretrained(str(default_model_dir()))


def test_bucket_length():
    lengths = (1, 16, 17, 33, 64, 65, 129, 161, 180)
    assert [bucket_length(n, 180) for n in lengths] == [16, 16, 32, 48, 64, 96, 160, 180, 180]
    assert bucket_length(10, 12) == 12 and bucket_length(600, 512) == 512


def test_check_texts():
    assert check_texts(("a", "b")) == ["a", "b"]
    with pytest.raises(InputError, match=r"queries\[2\] is int"):
        check_texts(["a", "b", 3], "queries")
    with pytest.raises(InputError, match="got a single str"):
        check_texts("abc")
    with pytest.raises(InputError, match="got int"):
        check_texts(5)


def test_single_texts_match_transformers(hf_tokenizer, caplog):
    tok = TextTokenizer(hf_tokenizer)
    with caplog.at_level(logging.WARNING, logger="lateint_jax.data.tokenize"):
        ours = tok.frame_single(TEXTS, max_length=64)
    assert len([r for r in caplog.records if "truncated" in r.message]) == 1
    assert "1 of 5 texts were longer than 64 tokens" in caplog.text
    want = hf_tokenizer(
        TEXTS, truncation=True, max_length=64, padding="max_length", return_tensors="np"
    )
    assert ours["input_ids"].shape == (5, 64) and ours["input_ids"].dtype == np.int32
    np.testing.assert_array_equal(ours["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], want["attention_mask"])


def test_the_file_truncation_setting_is_ignored(hf_tokenizer):
    # all-MiniLM's tokenizer.json truncates at 128 by itself; our lengths come from max_length.
    tok = TextTokenizer(hf_tokenizer)
    assert len(tok.raw_ids(["a " * 300])[0]) == 300
    assert tok.frame_single(["a " * 300], max_length=256)["attention_mask"].sum() == 256


@pytest.mark.parametrize("max_length", [9, 24, 512])
def test_pairs_match_transformers_longest_first(hf_tokenizer, max_length):
    tok = TextTokenizer(hf_tokenizer)
    firsts = ["short query", "a b c d e f g h i j k l", "", "x " * 40]
    seconds = ["a b c d e f g h i j k l m n o p", "tiny", "only passage words here", "y " * 41]
    ours = tok.frame_pairs(firsts, seconds, max_length)
    width = ours["input_ids"].shape[1]
    want = hf_tokenizer(
        firsts, seconds, truncation="longest_first", max_length=max_length, padding="max_length"
    )
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(ours[key], np.asarray(want[key])[:, :width], err_msg=key)


def test_punctuation_skiplist(hf_tokenizer):
    tok = TextTokenizer(hf_tokenizer)
    ids = set(punctuation_ids(tok).tolist())
    assert (
        hf_tokenizer.convert_tokens_to_ids(".") in ids
        and hf_tokenizer.convert_tokens_to_ids("?") in ids
    )
    assert hf_tokenizer.convert_tokens_to_ids("a") not in ids and len(ids) == 32
