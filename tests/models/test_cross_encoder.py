"""Cross-encoder parity with transformers' BertForSequenceClassification, and pair tokenisation."""

import jax
import numpy as np
import pytest

from lateint_jax.encoders import CrossEncoder
from lateint_jax.errors import CheckpointError, InputError

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install '.[torch]')")
transformers = pytest.importorskip("transformers")

# Parity tolerance: float32 on both sides, only the summation order differs: 1e-4 absolute.
ATOL = 1e-4
QUERIES = ["what causes scurvy?", "", "vitamin d and bone density in older adults " * 3, "x"]
PASSAGES = [
    "Scurvy is caused by a lack of vitamin C.",
    "An empty query still gets a score.",
    "Bone mineral density was measured in 500 adults over ten years of follow-up. " * 2,
    "",
]


@pytest.fixture(scope="module")
def tiny_cross(tiny_checkpoint):
    """A random BertForSequenceClassification (one logit) with the packaged tokenizer."""
    model, path = tiny_checkpoint("tiny_cross", head="classifier", tokenizer=True)
    return model, transformers.AutoTokenizer.from_pretrained(str(path)), path


def torch_logits(model, enc):
    with torch.no_grad():
        return model(**{k: torch.tensor(v) for k, v in enc.items()}).logits[:, 0].numpy()


def test_pair_tokenisation_matches_transformers(tiny_cross):
    _, tokenizer, path = tiny_cross
    ours = CrossEncoder.from_pretrained(path, max_length=24).tokenize_pairs(QUERIES, PASSAGES)
    want = tokenizer(
        QUERIES, PASSAGES, truncation="longest_first", max_length=24, padding="max_length"
    )
    width = ours["input_ids"].shape[1]
    assert width == 24  # the longest pair fills the bucket (capped at max_length)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(ours[key], np.asarray(want[key])[:, :width], err_msg=key)


def test_scores_match_bert_for_sequence_classification(tiny_cross):
    model, tokenizer, path = tiny_cross
    ours = CrossEncoder.from_pretrained(path, max_length=24).score(QUERIES, PASSAGES, batch_size=3)
    enc = tokenizer(
        QUERIES,
        PASSAGES,
        truncation="longest_first",
        max_length=24,
        padding=True,
        return_tensors="np",
    )
    np.testing.assert_allclose(ours, torch_logits(model, enc), atol=ATOL, rtol=0)


def test_export_loads_in_transformers_with_identical_logits(tiny_cross, tmp_path):
    model, tokenizer, path = tiny_cross
    ours = CrossEncoder.from_pretrained(path, max_length=24)
    ours.save_pretrained(tmp_path / "out")
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "out"
    ).eval()
    enc = tokenizer(
        QUERIES, PASSAGES, truncation=True, max_length=24, padding=True, return_tensors="np"
    )
    np.testing.assert_array_equal(torch_logits(reloaded, enc), torch_logits(model, enc))
    again = CrossEncoder.from_pretrained(tmp_path / "out", max_length=24)
    jax.tree.map(np.testing.assert_array_equal, again.params, ours.params)


def test_bad_input(tiny_cross):
    _, _, path = tiny_cross
    model = CrossEncoder.from_pretrained(path, max_length=24)
    with pytest.raises(InputError, match="2 queries but 1 passages"):
        model.score(["a", "b"], ["c"])
    with pytest.raises(InputError, match=r"passages\[1\] is int"):
        model.score(["a", "b"], ["c", 3])
    with pytest.raises(CheckpointError, match="not a cross-encoder"):
        CrossEncoder.from_pretrained(None)
