"""BERT encoder parity with transformers' PyTorch BertModel (tiny random config and MiniLM)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lateint_jax.convert.hf_bert import bert_state_dict, read_state_dict, write_safetensors
from lateint_jax.convert.load import load_checkpoint
from lateint_jax.errors import CheckpointError
from lateint_jax.models.bert import BertConfig, bert_forward, init_bert_params
from tests.tiny_models import tiny_config

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install '.[torch]')")
transformers = pytest.importorskip("transformers")

TINY = tiny_config(vocab_size=99)  # a vocabulary no real tokenizer has
# Parity tolerance: float32 on both sides, only the summation order differs; hidden states are
# LayerNorm outputs of order 1, so 1e-4 absolute (rtol 0) throughout.
ATOL = 1e-4


def random_batch(rng, vocab, batch=3, length=17, first_id=0):
    """Random ids, right-padded masks (every row keeps at least one token), token types."""
    ids = rng.integers(first_id, vocab, size=(batch, length))
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    types = (np.arange(length)[None, :] >= (lengths[:, None] // 2)).astype(np.int64) * mask
    return ids, mask, types


def torch_hidden(model, ids, mask, types=None):
    with torch.no_grad():
        kwargs = {"token_type_ids": torch.tensor(types)} if types is not None else {}
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kwargs)
    return out.last_hidden_state.numpy()


@pytest.fixture(scope="module")
def tiny_bert(tiny_checkpoint):
    return tiny_checkpoint("tiny_bert", vocab_size=TINY["vocab_size"])


def test_tiny_bert_matches_torch(tiny_bert, rng):
    model, path = tiny_bert
    ckpt = load_checkpoint(path)
    ids, mask, types = random_batch(rng, TINY["vocab_size"])
    ours = bert_forward(
        ckpt.bert, ckpt.bert_config, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)
    )
    want = torch_hidden(model, ids, mask, types)
    valid = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(ours)[valid], want[valid], atol=ATOL, rtol=0)
    # Padded positions are computed too (they attend to the real tokens); they match as well.
    np.testing.assert_allclose(np.asarray(ours), want, atol=ATOL, rtol=0)


def test_pytorch_bin_checkpoint_loads_the_same(tiny_bert, tmp_path):
    model, path = tiny_bert
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    from_bin = load_checkpoint(tmp_path).bert
    from_safetensors = load_checkpoint(path).bert
    jax.tree.map(np.testing.assert_array_equal, from_bin, from_safetensors)


def test_bf16_compute_is_close_but_not_exact(tiny_bert, rng):
    _, path = tiny_bert
    ckpt = load_checkpoint(path)
    ids, mask, _ = random_batch(rng, TINY["vocab_size"])
    f32 = bert_forward(ckpt.bert, ckpt.bert_config, jnp.asarray(ids), jnp.asarray(mask))
    bf16 = bert_forward(
        ckpt.bert, ckpt.bert_config, jnp.asarray(ids), jnp.asarray(mask), compute_dtype=jnp.bfloat16
    )
    assert bf16.dtype == jnp.float32
    err = float(jnp.abs(f32 - bf16).max())
    assert 0 < err < 0.1


def test_minilm_matches_torch():
    ckpt = load_checkpoint(None)
    model = transformers.BertModel.from_pretrained(str(ckpt.model_dir)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(ckpt.model_dir))
    texts = ["A short one.", "Scientists measured the effect of vitamin D on bone density.", ""]
    enc = tok(texts, padding=True, return_tensors="np")
    ours = bert_forward(
        ckpt.bert,
        ckpt.bert_config,
        jnp.asarray(enc["input_ids"]),
        jnp.asarray(enc["attention_mask"]),
    )
    want = torch_hidden(model, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    np.testing.assert_allclose(np.asarray(ours), want, atol=ATOL, rtol=0)


def test_export_round_trip_is_bit_exact_and_loads_in_transformers(tiny_bert, tmp_path, rng):
    model, path = tiny_bert
    state = read_state_dict(path)
    ckpt = load_checkpoint(path)
    exported = bert_state_dict(ckpt.bert, ckpt.bert_config)
    for name, value in exported.items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    # transformers loads the exported weights and computes the same hidden states.
    write_safetensors(exported, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(ckpt.bert_config.to_hf()))
    reloaded = transformers.BertModel.from_pretrained(tmp_path).eval()
    ids, mask, types = random_batch(rng, TINY["vocab_size"])
    np.testing.assert_array_equal(
        torch_hidden(reloaded, ids, mask, types), torch_hidden(model, ids, mask, types)
    )


def test_shape_mismatch_names_tensor_and_both_shapes(tiny_bert, tmp_path):
    _, path = tiny_bert
    config = json.loads((path / "config.json").read_text())
    H, I = config["hidden_size"], config["intermediate_size"]
    config["intermediate_size"] = I + 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(
        CheckpointError,
        match=rf"encoder\.layer\.0\.intermediate\.dense\.weight.*\({I}, {H}\).*\({I + 8}, {H}\)",
    ):
        load_checkpoint(tmp_path)


def test_missing_and_leftover_tensors_are_named(tiny_bert, tmp_path):
    _, path = tiny_bert
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    state = read_state_dict(path)
    del state["encoder.layer.1.output.dense.bias"]
    write_safetensors(state, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"lacks tensors: encoder\.layer\.1\.output\.dense\.bias"
    ):
        load_checkpoint(tmp_path)
    state = read_state_dict(path)
    state["surprise.weight"] = np.zeros(3, np.float32)
    write_safetensors(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not use: surprise.weight"):
        load_checkpoint(tmp_path)


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="model_type 'gpt2' is not supported"):
        load_checkpoint(tmp_path)


def test_config_from_hf_reads_dicts_and_files(tiny_bert):
    _, path = tiny_bert
    config = BertConfig.from_hf(path)
    assert config == BertConfig.from_hf(path / "config.json")
    assert config.hidden_size == TINY["hidden_size"] and config.model_type == "bert"
    params = init_bert_params(config, jax.random.key(0))
    kernel = params["layers"]["1"]["mlp"]["intermediate"]["kernel"]
    assert kernel.shape == (TINY["hidden_size"], TINY["intermediate_size"])
    with pytest.raises(CheckpointError, match="lacks hidden_size"):
        BertConfig.from_hf({k: v for k, v in TINY.items() if k != "hidden_size"})


def test_rank_check_is_a_clear_error(tiny_bert):
    _, path = tiny_bert
    ckpt = load_checkpoint(path)
    with pytest.raises(ValueError, match=r"must both be \[B, T\]"):
        bert_forward(ckpt.bert, ckpt.bert_config, jnp.zeros((3,), int), jnp.zeros((3,), int))
