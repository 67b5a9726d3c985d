"""The data-parallel train step on 8 fake CPU devices, with a tiny stand-in ColBERT (embedding
table + projection + MaxSim): same result as one device, as a pmapped step (mean of per-shard
gradients), and with gradient accumulation; no recompilation; donated buffers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lateint_jax import losses, scoring
from lateint_jax.models.bert import init_bert_params
from lateint_jax.models.colbert import colbert_forward, init_projection
from lateint_jax.sharding import data_mesh
from lateint_jax.training import state as state_lib
from lateint_jax.training import step as step_lib
from tests.tiny_models import tiny_bert

V, H, D, B, Q, K, T = 50, 12, 8, 16, 5, 3, 7


def stand_in_loss(params, batch, key):
    def encode(ids):
        x = jnp.einsum("...H,HD->...D", params["embedding"][ids], params["projection"])
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)

    scores = scoring.maxsim_paired(encode(batch["q"]), encode(batch["d"]), batch["mask"] > 0)
    return losses.nway_cross_entropy(scores), {"accuracy": (scores.argmax(-1) == 0).mean()}


def training_mesh(devices=None):
    return data_mesh(jax.devices() if devices is None else devices, explicit=False)


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "embedding": jnp.asarray(rng.normal(size=(V, H)), jnp.float32),
        "projection": jnp.asarray(rng.normal(size=(H, D)), jnp.float32),
    }


def make_batch(seed):
    rng = np.random.default_rng(seed)
    mask = (rng.random((B, K, T)) > 0.3).astype(np.int32)
    mask[..., 0] = 1
    return {
        "q": rng.integers(0, V, (B, Q)).astype(np.int32),
        "d": rng.integers(0, V, (B, K, T)).astype(np.int32),
        "mask": mask,
    }


SCHEDULE = state_lib.learning_rate_schedule(1e-2, warmup_steps=2, total_steps=10)
OPTIMIZER = state_lib.make_optimizer(SCHEDULE, weight_decay=0.01, max_grad_norm=1.0)


def train(num_devices, steps=2, accum_steps=1):
    """Params after each step and the metrics of each step."""
    mesh = training_mesh(jax.devices()[:num_devices])
    state = step_lib.place_state(state_lib.create_state(init_params(), OPTIMIZER, seed=0), mesh)
    fn = step_lib.make_train_step(
        stand_in_loss, OPTIMIZER, mesh, accum_steps=accum_steps, schedule=SCHEDULE
    )
    params, history = [], []
    for i in range(steps):
        state, metrics = fn(state, step_lib.shard_batch(make_batch(i), mesh))
        params.append(jax.device_get(state.params))
        history.append(jax.device_get(metrics))
    assert int(state.step) == steps
    return params, history


@pytest.fixture(scope="module")
def eight_devices():
    assert jax.device_count() == 8
    return train(8)


def assert_trees_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_eight_devices_match_one(eight_devices):
    params8, m8 = eight_devices
    params1, m1 = train(1)
    assert_trees_close(params8[-1], params1[-1])
    np.testing.assert_allclose([m["loss"] for m in m8], [m["loss"] for m in m1], rtol=1e-5)


def test_update_is_the_mean_of_per_device_gradients(eight_devices):
    # What a pmapped step computes: each device's gradient on its shard, then pmean.
    params = init_params()
    batch = make_batch(0)
    shards = [jax.tree.map(lambda x, i=i: x[i * 2 : (i + 1) * 2], batch) for i in range(8)]
    grad_fn = jax.jit(jax.grad(lambda p, s: stand_in_loss(p, s, None)[0]))
    grads = [grad_fn(params, s) for s in shards]
    mean_grad = jax.tree.map(lambda *g: sum(g) / 8, *grads)
    updates, _ = OPTIMIZER.update(mean_grad, OPTIMIZER.init(params), params)
    assert_trees_close(eight_devices[0][0], optax.apply_updates(params, updates))
    np.testing.assert_allclose(
        eight_devices[1][0]["grad_norm"], optax.global_norm(mean_grad), rtol=1e-5
    )


def test_gradient_accumulation_matches_full_batch(eight_devices):
    params4, m4 = train(8, accum_steps=4)  # 4 microbatches of 4 rows, strided over devices
    assert_trees_close(eight_devices[0][-1], params4[-1])
    np.testing.assert_allclose(eight_devices[1][-1]["loss"], m4[-1]["loss"], rtol=1e-5)


def test_learning_rate_is_reported_and_follows_warmup_then_decay(eight_devices):
    lrs = [float(m["learning_rate"]) for m in eight_devices[1]]
    np.testing.assert_allclose(lrs, [0.0, 5e-3], rtol=1e-6, atol=1e-9)
    assert float(SCHEDULE(2)) == pytest.approx(1e-2)
    assert float(SCHEDULE(6)) == pytest.approx(1e-2 * (10 - 6) / 8)
    assert float(SCHEDULE(10)) == pytest.approx(0.0)


def test_compiles_once_and_donates_state():
    mesh = training_mesh()
    state = step_lib.place_state(state_lib.create_state(init_params(), OPTIMIZER, seed=0), mesh)
    fn = step_lib.make_train_step(stand_in_loss, OPTIMIZER, mesh)
    old = state
    for i in range(3):
        state, _ = fn(state, step_lib.shard_batch(make_batch(i), mesh))
    assert fn._cache_size() == 1
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old.params))
    assert state.params["embedding"].sharding.is_fully_replicated


def test_clipping_bounds_the_gradient_norm():
    optimizer = state_lib.make_optimizer(optax.constant_schedule(1.0), 0.0, max_grad_norm=1e-3)
    params = init_params()
    grads = jax.jit(jax.grad(lambda p: stand_in_loss(p, make_batch(0), None)[0]))(params)
    clipped, _ = optimizer.update(grads, optimizer.init(params), params)
    # Adam's first step has magnitude lr per coordinate whatever the scale, so check the clip
    # itself: the chain's first stage must hand Adam a gradient of norm 1e-3.
    clip = optax.clip_by_global_norm(1e-3)
    after_clip, _ = clip.update(grads, clip.init(params))
    assert float(optax.global_norm(after_clip)) == pytest.approx(1e-3, rel=1e-4)
    assert float(optax.global_norm(grads)) > 1e-3
    assert jax.tree.structure(clipped) == jax.tree.structure(params)


def test_step_randomness_is_fold_in_of_step():
    seen = []

    def loss_with_noise(params, batch, key):
        noise = jax.random.normal(key, ())
        loss, aux = stand_in_loss(params, batch, key)
        return loss, {**aux, "noise": noise}

    mesh = training_mesh()
    state = step_lib.place_state(state_lib.create_state(init_params(), OPTIMIZER, seed=3), mesh)
    fn = step_lib.make_train_step(loss_with_noise, OPTIMIZER, mesh)
    for i in range(2):
        state, metrics = fn(state, step_lib.shard_batch(make_batch(i), mesh))
        seen.append(float(metrics["noise"]))
    key = jax.random.key(3)
    expected = [float(jax.random.normal(jax.random.fold_in(key, i), ())) for i in range(2)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


def test_explicit_mesh_is_refused():
    with pytest.raises(ValueError, match="explicit=False"):
        step_lib.make_train_step(stand_in_loss, OPTIMIZER, data_mesh(jax.devices()))


def test_bfloat16_compute_stays_close_to_float32():
    config = tiny_bert(vocab_size=100, num_hidden_layers=1)
    params = {
        "bert": init_bert_params(config, jax.random.key(0)),
        "linear": init_projection(config.hidden_size, D),
    }
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, (4, 9)).astype(np.int32)
    mask = np.ones_like(ids)

    @jax.jit
    def both(params):
        def loss(dtype):
            q = colbert_forward(params, config, ids[:2], mask[:2], dtype)
            d = colbert_forward(params, config, ids[2:], mask[2:], dtype)
            return losses.nway_cross_entropy(scoring.maxsim(q, d))

        return loss(jnp.float32), loss(jnp.bfloat16)

    f32, bf16 = both(params)
    assert bf16.dtype == jnp.float32  # losses upcast bfloat16 scores
    assert float(bf16) == pytest.approx(float(f32), rel=2e-2, abs=2e-2)
