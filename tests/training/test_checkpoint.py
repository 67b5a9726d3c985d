"""Checkpoints: keep-last-K, restore into the same tree, a clear error for another tree, and a
process SIGKILLed while saving leaves the previous checkpoint loadable."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lateint_jax.convert.hf_bert import bert_name_map, expected_shapes
from lateint_jax.errors import CheckpointError
from lateint_jax.models.bert import tiny_bert_config
from lateint_jax.models.colbert import ColBERTModel
from lateint_jax.training.checkpoint import Checkpointer
from lateint_jax.training.state import create_state

REPO = Path(__file__).resolve().parents[2]


def small_state(width=4, seed=0):
    params = {"w": jnp.arange(width * 3, dtype=jnp.float32).reshape(width, 3), "b": jnp.ones(3)}
    return create_state(params, optax.adamw(1e-3), seed)


def test_keeps_last_k_and_restores_exactly(tmp_path):
    ckpt = Checkpointer(tmp_path, {"task": "colbert", "dim": 4}, every=2, keep=2)
    state = small_state()
    for step in range(1, 7):
        state = jax.tree.map(lambda x: x + 1 if x.dtype == jnp.float32 else x, state)
        ckpt.save(step, state, {"batches_done": step})
    ckpt.wait()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [4, 6]
    restored, meta = ckpt.restore(small_state())
    assert meta == {"batches_done": 6}
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ckpt.close()


def test_other_tree_is_a_checkpoint_error(tmp_path):
    ckpt = Checkpointer(tmp_path, {"task": "colbert"}, every=1, keep=1)
    ckpt.save(1, small_state(4), {"batches_done": 1})
    ckpt.wait()
    with pytest.raises(CheckpointError, match="does not match this model"):
        ckpt.restore(small_state(5))
    ckpt.close()


def test_other_model_config_is_refused(tmp_path):
    ckpt = Checkpointer(tmp_path, {"task": "colbert", "dim": 4}, every=1, keep=1)
    ckpt.save(1, small_state(), {"batches_done": 1})
    ckpt.close()
    with pytest.raises(CheckpointError, match="dim: saved 4 vs now 8"):
        Checkpointer(tmp_path, {"task": "colbert", "dim": 8}, every=1, keep=1)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Checkpointer(tmp_path, {"task": "colbert", "dim": 4}, every=1, keep=1)


SAVER = """
import sys, jax, jax.numpy as jnp, optax
from lateint_jax.training.checkpoint import Checkpointer
from lateint_jax.training.state import create_state
params = {"w": jnp.ones((512, 512)), "v": jnp.zeros((256, 256))}
state = create_state(params, optax.adamw(1e-3), 0)
ckpt = Checkpointer(sys.argv[1], {"task": "colbert"}, every=1, keep=3)
step = 0
while True:
    step += 1
    state = jax.tree.map(lambda x: x + 1 if x.dtype == jnp.float32 else x, state)
    ckpt.save(step, state, {"batches_done": step})
    print(step, flush=True)
"""


def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO,
        text=True,
    )
    try:
        for line in proc.stdout:  # let a few saves complete, then kill mid-stream
            if int(line) >= 4:
                break
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    ckpt = Checkpointer(tmp_path, {"task": "colbert"}, every=1, keep=3)
    latest = ckpt.latest_step()
    assert latest is not None and latest >= 1
    template = create_state(
        {"w": jnp.ones((512, 512)), "v": jnp.zeros((256, 256))}, optax.adamw(1e-3), 0
    )
    restored, meta = ckpt.restore(template)
    assert meta["batches_done"] == latest
    # Each save added 1 to every float leaf: the restored step is internally consistent.
    np.testing.assert_array_equal(np.asarray(restored.params["w"]), 1.0 + latest)
    np.testing.assert_array_equal(np.asarray(restored.params["v"]), float(latest))
    ckpt.close()


def test_checkpoint_in_the_name_map_layout_restores_into_the_nnx_model(tmp_path):
    """TrainState.params is the NNX model's state as a pure dict, which is the layout the
    checkpoint name maps write (and every training checkpoint before the NNX modules held):
    a checkpoint built from the name map alone restores into a state built from ColBERTModel."""
    config = tiny_bert_config(vocab_size=50)
    rng = np.random.default_rng(0)
    old_bert: dict = {}
    for _, path, _ in bert_name_map(config, with_pooler=True):
        node = old_bert
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(
            rng.standard_normal(expected_shapes(config)[path]), jnp.float32
        )
    old = {"bert": old_bert, "linear": {"kernel": jnp.ones((config.hidden_size, 8))}}
    ckpt = Checkpointer(tmp_path, {"task": "colbert"}, every=1, keep=1)
    ckpt.save(1, create_state(old, optax.adamw(1e-3), 0), {"batches_done": 1})
    ckpt.wait()
    module = ColBERTModel(config, rngs=nnx.Rngs(1), dims=(8,), with_pooler=True)
    like = create_state(module.to_params(), optax.adamw(1e-3), 0)
    restored, _ = ckpt.restore(like)
    ckpt.close()
    jax.tree.map(np.testing.assert_array_equal, restored.params, old)
    module.load_params(restored.params)  # and the module takes the restored arrays back
    np.testing.assert_array_equal(
        np.asarray(module.bert.layers["1"].mlp.output.kernel[...]),
        np.asarray(old["bert"]["layers"]["1"]["mlp"]["output"]["kernel"]),
    )
