"""The models as flax.nnx modules, used the way a Flax user would: built from a config.json,
trained with nnx.Optimizer inside nnx.jit, sharded with nnx annotations over the ("data",)
mesh; the attention (written out on CPU, jax.nn.dot_product_attention elsewhere) and the
bfloat16 option."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lateint_jax import encoders, losses, scoring
from lateint_jax.convert.load import load_checkpoint
from lateint_jax.encoders import ColBERT, load_tokenizer
from lateint_jax.models.bert import BertEncoder
from lateint_jax.models.bi_encoder import BiEncoderModel
from lateint_jax.models.colbert import ColBERTConfig, ColBERTModel
from lateint_jax.models.cross_encoder import CrossEncoderModel
from lateint_jax.models.layers import attend, attend_einsum
from lateint_jax.models.modernbert import ModernBertEncoder
from lateint_jax.sharding import DATA_AXIS, data_mesh
from tests.tiny_models import TOKENIZER_VOCAB, tiny_bert, tiny_config

DIM = 16


def _batch(rng, rows=8, length=12):
    ids = rng.integers(1000, TOKENIZER_VOCAB, (rows, length)).astype(np.int32)
    mask = np.ones((rows, length), np.int32)
    mask[:, length // 2 :] = rng.integers(0, 2, (rows, length - length // 2))
    mask[:, 0] = 1
    return jnp.asarray(ids), jnp.asarray(mask)


def _in_batch_loss(model: ColBERTModel, q_ids, q_mask, d_ids, d_mask):
    """Query i's positive is document i; the other documents of the batch are negatives."""
    q, d = model(q_ids, q_mask), model(d_ids, d_mask)
    scores = scoring.maxsim(q, d, d_mask.astype(bool))  # [B, B]
    return losses.in_batch_cross_entropy(scores, jnp.arange(q.shape[0]))


@nnx.jit
def _train_step(model, optimizer, q_ids, q_mask, d_ids, d_mask):
    loss, grads = nnx.value_and_grad(_in_batch_loss)(model, q_ids, q_mask, d_ids, d_mask)
    optimizer.update(model, grads)
    return loss


def test_colbert_model_from_hf_config_trains_with_nnx_optimizer(rng):
    model = ColBERTModel.from_hf_config(tiny_config(), rngs=nnx.Rngs(0), dim=DIM)
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
    q_ids, q_mask = _batch(rng)
    d_ids, d_mask = _batch(rng)
    before = jax.tree.map(np.asarray, model.to_params())
    steps = [float(_train_step(model, optimizer, q_ids, q_mask, d_ids, d_mask)) for _ in range(6)]
    assert steps[-1] < steps[0] - 0.05, steps
    after = model.to_params()
    moved = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))), before, after)
    assert all(jax.tree.leaves(moved))  # every parameter (the head included) was trained
    # Params stay float32, and the module's state is the checkpoint layout.
    assert {leaf.dtype for leaf in jax.tree.leaves(after)} == {np.dtype(np.float32)}
    assert set(after) == {"bert", "linear"} and set(after["linear"]) == {"kernel"}


def test_the_user_facing_encoder_runs_its_trained_module(rng):
    """ColBERT.module is the nnx module encode_* runs: training it in place changes encoding."""
    tok = load_tokenizer(load_checkpoint(None))
    init = ColBERTModel.from_hf_config(tiny_config(), rngs=nnx.Rngs(1), dim=DIM).to_params()
    config = ColBERTConfig(dim=DIM, query_maxlen=12, doc_maxlen=16)
    colbert = ColBERT(init, tiny_bert(), config, tok)
    before = colbert.encode_queries(["what do cats eat"])
    optimizer = nnx.Optimizer(colbert.module, optax.adamw(1e-2), wrt=nnx.Param)
    q_ids, q_mask = _batch(rng)
    d_ids, d_mask = _batch(rng)
    for _ in range(2):
        _train_step(colbert.module, optimizer, q_ids, q_mask, d_ids, d_mask)
    after = colbert.encode_queries(["what do cats eat"])
    assert np.abs(after - before).max() > 1e-3
    enc = colbert.tokenize_queries(["what do cats eat"])
    direct = colbert.module(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]))
    np.testing.assert_allclose(after[0], np.asarray(direct)[0], atol=1e-5)
    # .apply is the pure function of .params
    pure = colbert.apply(colbert.params, enc["input_ids"], enc["attention_mask"])
    np.testing.assert_allclose(np.asarray(pure), np.asarray(direct), atol=1e-6)
    assert encoders._colbert_jit._cache_size() >= 1


def test_sharded_state_over_the_data_mesh_runs_and_matches(rng):
    mesh = data_mesh(jax.devices(), explicit=False)
    assert mesh.shape[DATA_AXIS] == 8
    model = ColBERTModel.from_hf_config(tiny_config(), rngs=nnx.Rngs(2), dim=DIM)
    q_ids, q_mask = _batch(rng)
    d_ids, d_mask = _batch(rng)
    expected = np.asarray(nnx.jit(lambda m, i, a: m(i, a))(model, q_ids, q_mask))
    # nnx sharding annotations: the embedding table split along its hidden axis, the FFN
    # kernels along their intermediate axis; everything else replicated.
    model.bert.embeddings.word.set_metadata(out_sharding=(None, DATA_AXIS))
    for layer in model.bert.layers.values():
        layer.mlp.intermediate.kernel.set_metadata(out_sharding=(None, DATA_AXIS))
        layer.mlp.output.kernel.set_metadata(out_sharding=(DATA_AXIS, None))
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, nnx.get_named_sharding(state, mesh)))
    word = model.bert.embeddings.word[...]
    assert word.sharding.spec == P(None, DATA_AXIS) and not word.sharding.is_fully_replicated
    batch = NamedSharding(mesh, P(DATA_AXIS))
    q_ids, q_mask, d_ids, d_mask = (
        jax.device_put(x, batch) for x in (q_ids, q_mask, d_ids, d_mask)
    )
    got = nnx.jit(lambda m, i, a: m(i, a))(model, q_ids, q_mask)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
    with jax.set_mesh(mesh):  # the optimizer state inherits the annotations: it needs the mesh
        optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
        loss = _train_step(model, optimizer, q_ids, q_mask, d_ids, d_mask)
    assert np.isfinite(float(loss))
    assert model.bert.embeddings.word[...].sharding.spec == P(None, DATA_AXIS)


def test_dot_product_attention_matches_explicit_softmax(rng):
    B, T, A, E = 3, 10, 2, 8
    q, k, v = (jnp.asarray(rng.standard_normal((B, T, A, E)), jnp.float32) for _ in range(3))
    key_mask = rng.integers(0, 2, (B, T)).astype(bool)
    key_mask[:, 0] = True
    mask = jnp.asarray(key_mask)[:, None, None, :]
    logits = jnp.einsum("BTAE,BSAE->BATS", q, k) / np.sqrt(E)
    weights = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)
    explicit = jnp.einsum("BATS,BSAE->BTAE", weights, v)
    np.testing.assert_allclose(np.asarray(attend(q, k, v, mask)), np.asarray(explicit), atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_written_out_attention_matches_dot_product_attention(rng, dtype):
    """Per-query masks as ModernBERT's sliding window gives them, a query that attends to no key
    and a batch row that attends to nothing (a padding row): the same as JAX's own attention."""
    B, T, A, E = 3, 12, 2, 8
    q, k, v = (jnp.asarray(rng.standard_normal((B, T, A, E)), dtype) for _ in range(3))
    mask = rng.integers(0, 2, (B, 1, T, T)).astype(bool)
    mask[1, 0, 3] = False
    mask[2] = False
    mask = jnp.asarray(mask)
    got = jax.jit(attend_einsum)(q, k, v, mask)
    expected = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
    assert got.dtype == dtype
    assert np.isfinite(np.asarray(got, np.float32)).all()
    atol = 1e-6 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(expected, np.float32), atol=atol, rtol=0
    )


def test_bfloat16_compute_is_close_to_float32_with_float32_params(rng):
    ids, mask = _batch(rng, rows=4, length=16)
    for name, cls, config in (
        ("bert", BertEncoder, tiny_config()),
        ("modernbert", ModernBertEncoder, tiny_config("modernbert")),
    ):
        f32 = cls.from_hf_config(config, rngs=nnx.Rngs(3))
        bf16 = cls.from_hf_config(config, rngs=nnx.Rngs(3), compute_dtype=jnp.bfloat16)
        assert {x.dtype for x in jax.tree.leaves(bf16.to_params())} == {np.dtype(np.float32)}
        a, b = np.asarray(f32(ids, mask)), np.asarray(bf16(ids, mask))
        assert b.dtype == np.float32
        # LayerNorm'd hidden states of unit scale: bfloat16 matmuls keep ~2-3 digits.
        np.testing.assert_allclose(b, a, atol=0.1, err_msg=name)
        assert np.abs(b - a).mean() < 0.02, name
        assert np.abs(b - a).max() > 0, name  # the option really changes the arithmetic


def test_every_head_builds_from_a_config_json_and_round_trips_its_params(rng):
    ids, mask = _batch(rng, rows=2, length=8)
    for model_type in ("bert", "xlm-roberta", "modernbert"):
        config = tiny_config(model_type)
        for cls in (ColBERTModel, BiEncoderModel, CrossEncoderModel):
            model = cls.from_hf_config(config, rngs=nnx.Rngs(4))
            out = model(ids, mask)
            params = model.to_params()
            again = cls.merge(nnx.graphdef(model), params)
            np.testing.assert_array_equal(np.asarray(again(ids, mask)), np.asarray(out))
            assert np.all(np.isfinite(np.asarray(out))), (model_type, cls.__name__)
