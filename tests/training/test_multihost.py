"""Two CPU processes on 127.0.0.1 (gloo collectives, 2 devices each) train the tiny config over
one global 4-device mesh and end with the same parameters as one process on 4 devices fed
the same global batches."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from lateint_jax.training import loop
from lateint_jax.training.config import load_config
from tests.local_servers import free_port

REPO = Path(__file__).resolve().parents[2]

WORKER = """
import dataclasses, sys
import jax, numpy as np
from lateint_jax.training import loop
from lateint_jax.training.config import load_config

out, run_dir = sys.argv[1], sys.argv[2]
config = dataclasses.replace(
    load_config("configs/tiny_cpu.py"), num_steps=3, checkpoint_every=100, output_dir=run_dir
)
summary = loop.run(config)
assert jax.device_count() == 4, jax.device_count()
params = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), summary["params"])
leaves, _ = jax.tree_util.tree_flatten_with_path(params)
if jax.process_index() == 0:
    np.savez(out, **{jax.tree_util.keystr(k): v for k, v in leaves})
"""


def launch(tmp_path, name, devices, process_id=None, num_processes=None, port=None):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    env["JAX_PLATFORMS"] = "cpu"
    if process_id is not None:
        env.update(
            LATEINT_COORDINATOR=f"127.0.0.1:{port}",
            LATEINT_NUM_PROCESSES=str(num_processes),
            LATEINT_PROCESS_ID=str(process_id),
        )
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tmp_path / f"{name}.npz"), str(tmp_path / name)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]


def test_two_processes_match_one(tmp_path):
    port = free_port()
    workers = [launch(tmp_path, "multi", 2, i, 2, port) for i in range(2)]
    for proc in workers:
        finish(proc)
    # The reference: this process, on 4 of its 8 devices, same config and global batches.
    config = dataclasses.replace(
        load_config(REPO / "configs" / "tiny_cpu.py"),
        num_steps=3,
        checkpoint_every=100,
        num_devices=4,
        output_dir=str(tmp_path / "single"),
    )
    single = loop.run(config)["params"]
    multi = np.load(tmp_path / "multi.npz")
    leaves, _ = jax.tree_util.tree_flatten_with_path(single)
    assert sorted(multi.files) == sorted(jax.tree_util.keystr(k) for k, _ in leaves)
    for key, value in leaves:
        name = jax.tree_util.keystr(key)
        np.testing.assert_allclose(
            multi[name], np.asarray(value), rtol=1e-5, atol=1e-6, err_msg=name
        )
