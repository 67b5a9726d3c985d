"""XLM-RoBERTa parity (position ids offset past padding, one token type) with transformers."""

import jax.numpy as jnp
import numpy as np
import pytest

from lateint_jax.convert.hf_bert import bert_state_dict, read_state_dict
from lateint_jax.convert.load import load_checkpoint
from lateint_jax.models.bert import bert_forward, position_ids
from lateint_jax.models.cross_encoder import cross_encoder_forward
from tests.tiny_models import ROBERTA_PAD as PAD

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install '.[torch]')")
transformers = pytest.importorskip("transformers")

VOCAB = 101  # a vocabulary no real tokenizer has; ids 0, 1, 2 are <s>, <pad>, </s>
# Parity tolerance: float32 on both sides, only the summation order differs: 1e-4 absolute.
ATOL = 1e-4


def random_batch(rng, batch=4, length=19):
    """Real tokens never use the pad id; padded positions hold it (as XLM-R tokenizers do)."""
    ids = rng.integers(3, VOCAB, size=(batch, length))
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, PAD)
    return ids, mask


@pytest.fixture(scope="module")
def tiny_xlmr(tiny_checkpoint):
    return tiny_checkpoint("tiny_xlmr", model_type="xlm-roberta", vocab_size=VOCAB)


def test_position_ids_follow_create_position_ids_from_input_ids(tiny_xlmr, rng):
    # transformers' torch model module: optional and heavy, so imported only here.
    from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaEmbeddings

    _, path = tiny_xlmr
    config = load_checkpoint(path).bert_config
    ids, _ = random_batch(rng)
    want = XLMRobertaEmbeddings.create_position_ids_from_input_ids(torch.tensor(ids), PAD)
    np.testing.assert_array_equal(np.asarray(position_ids(config, jnp.asarray(ids))), want.numpy())


def test_tiny_xlm_roberta_matches_torch(tiny_xlmr, rng):
    model, path = tiny_xlmr
    ckpt = load_checkpoint(path)
    assert ckpt.bert_config.model_type == "xlm-roberta" and ckpt.bert_config.position_offset == 2
    ids, mask = random_batch(rng)
    ours = bert_forward(ckpt.bert, ckpt.bert_config, jnp.asarray(ids), jnp.asarray(mask))
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    np.testing.assert_allclose(np.asarray(ours), want.last_hidden_state.numpy(), atol=ATOL, rtol=0)


def test_tiny_xlm_roberta_classifier_matches_torch(tiny_checkpoint, rng):
    model, path = tiny_checkpoint(
        "tiny_xlmr_classifier", model_type="xlm-roberta", head="classifier", vocab_size=VOCAB
    )
    ckpt = load_checkpoint(path)
    assert ckpt.layout == "cross-encoder" and set(ckpt.head) == {"dense", "out_proj"}
    ids, mask = random_batch(rng)
    params = {"bert": ckpt.bert, "head": ckpt.head}
    ours = cross_encoder_forward(
        params, ckpt.bert_config, jnp.asarray(ids), jnp.asarray(mask), None
    )
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits[:, 0]
    np.testing.assert_allclose(np.asarray(ours), want.numpy(), atol=ATOL, rtol=0)


def test_xlm_roberta_export_round_trip_is_bit_exact(tiny_xlmr):
    _, path = tiny_xlmr
    ckpt = load_checkpoint(path)
    state = read_state_dict(path)
    exported = bert_state_dict(ckpt.bert, ckpt.bert_config)
    assert set(exported) == set(state) - {"embeddings.position_ids", "embeddings.token_type_ids"}
    for name, value in exported.items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
