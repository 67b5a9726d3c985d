"""XLM-RoBERTa parity (position ids offset past padding, one token type) with transformers."""

import jax.numpy as jnp
import numpy as np
import pytest

from lateint_jax.convert.hf_bert import read_state_dict
from lateint_jax.convert.load import load_checkpoint
from lateint_jax.models.bert import bert_forward, position_ids
from lateint_jax.models.cross_encoder import cross_encoder_forward

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install '.[torch]')")
transformers = pytest.importorskip("transformers")

PAD = 1
TINY = {
    "vocab_size": 101,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "max_position_embeddings": 40,  # 38 tokens + the padding offset
    "type_vocab_size": 1,
    "pad_token_id": PAD,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


def random_batch(rng, batch=4, length=19):
    """Real tokens never use the pad id; padded positions hold it (as XLM-R tokenizers do)."""
    ids = rng.integers(3, TINY["vocab_size"], size=(batch, length))
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, PAD)
    return ids, mask


def seeded():
    torch.manual_seed(np.random.SeedSequence().entropy % 2**31)


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory):
    seeded()
    model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**TINY)).eval()
    path = tmp_path_factory.mktemp("tiny_xlmr")
    model.save_pretrained(path)
    return model, path


def test_position_ids_follow_create_position_ids_from_input_ids(tiny_xlmr):
    _, path = tiny_xlmr
    config = load_checkpoint(path).bert_config
    ids, _ = random_batch(np.random.default_rng())
    from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaEmbeddings

    want = XLMRobertaEmbeddings.create_position_ids_from_input_ids(torch.tensor(ids), PAD)
    np.testing.assert_array_equal(np.asarray(position_ids(config, jnp.asarray(ids))), want.numpy())


def test_tiny_xlm_roberta_matches_torch(tiny_xlmr):
    model, path = tiny_xlmr
    ckpt = load_checkpoint(path)
    assert ckpt.bert_config.model_type == "xlm-roberta" and ckpt.bert_config.position_offset == 2
    ids, mask = random_batch(np.random.default_rng())
    ours = bert_forward(ckpt.bert, ckpt.bert_config, jnp.asarray(ids), jnp.asarray(mask))
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    np.testing.assert_allclose(np.asarray(ours), want.last_hidden_state.numpy(), atol=1e-4, rtol=0)


def test_tiny_xlm_roberta_classifier_matches_torch(tmp_path):
    seeded()
    config = transformers.XLMRobertaConfig(**TINY, num_labels=1)
    model = transformers.XLMRobertaForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.layout == "cross-encoder" and set(ckpt.head) == {"dense", "out_proj"}
    ids, mask = random_batch(np.random.default_rng())
    params = {"bert": ckpt.bert, "head": ckpt.head}
    ours = cross_encoder_forward(
        params, ckpt.bert_config, jnp.asarray(ids), jnp.asarray(mask), None
    )
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits[:, 0]
    np.testing.assert_allclose(np.asarray(ours), want.numpy(), atol=1e-4, rtol=0)


def test_xlm_roberta_export_round_trip_is_bit_exact(tiny_xlmr, tmp_path):
    _, path = tiny_xlmr
    from lateint_jax.convert.hf_bert import bert_state_dict

    ckpt = load_checkpoint(path)
    state = read_state_dict(path)
    exported = bert_state_dict(ckpt.bert, ckpt.bert_config)
    assert set(exported) == set(state) - {"embeddings.position_ids", "embeddings.token_type_ids"}
    for name, value in exported.items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
