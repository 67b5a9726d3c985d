"""The training loop on configs/tiny_cpu.py (a random 2-layer BERT): logging, bit-exact resume
(2N steps == N, stop, N more), NaN stop keeping the last good checkpoint, config checks, the
CLI, and export of the trained student to PyTorch layouts."""

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from lateint_jax.encoders import ColBERT
from lateint_jax.errors import CheckpointError, InputError
from lateint_jax.models.colbert import colbert_forward
from lateint_jax.training import loop
from lateint_jax.training.config import (
    EXPORT_LAYOUTS,
    TrainConfig,
    apply_overrides,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny_cpu.py"


def tiny(tmp_path, name, **changes) -> TrainConfig:
    config = load_config(TINY)
    return dataclasses.replace(config, output_dir=str(tmp_path / name), **changes)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """8 steps uninterrupted, checkpoints every 4, exported to both ColBERT layouts."""
    tmp = tmp_path_factory.mktemp("full")
    config = tiny(tmp, "run", export_layouts=("pylate", "stanford"))
    return config, loop.run(config)


def test_logs_loss_lr_and_throughput(full_run):
    config, summary = full_run
    records = [
        json.loads(x) for x in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    for r in records:
        assert {"loss", "learning_rate", "examples_per_s", "grad_norm"} <= set(r)
        assert r["examples_per_s"] > 0
    assert records[-1]["loss"] < records[0]["loss"]  # the tiny model does learn
    saved = json.loads((Path(config.output_dir) / "config.json").read_text())
    assert saved["nway"] == config.nway and saved["tiny_model"] is True
    steps = sorted(int(p.name) for p in (Path(config.output_dir) / "checkpoints").iterdir())
    assert steps == [4, 8]  # keep_checkpoints=2
    assert summary["step"] == 8


def test_stop_and_resume_is_bit_exact(full_run, tmp_path):
    config, summary = full_run
    first = loop.run(tiny(tmp_path, "resumed", halt_after_steps=4))
    assert first["step"] == 4 and not first["exported"]
    # A fresh call, as after a kill: nothing survives but the run directory.
    second = loop.run(tiny(tmp_path, "resumed"))
    assert second["step"] == 8
    for a, b in zip(jax.tree.leaves(summary["params"]), jax.tree.leaves(second["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # NaN teacher scores from step 5 on: stop naming the step, keep checkpoint 4.
    nan_dir = tmp_path / "nan"
    shutil.copytree(tmp_path / "resumed", nan_dir)
    shutil.rmtree(nan_dir / "checkpoints" / "8")
    bad = tmp_path / "nan.jsonl"
    lines = [json.loads(x) for x in Path(config.train_tuples).read_text().splitlines()]
    bad.write_text("".join(json.dumps({**x, "scores": [float("nan")] * 8}) + "\n" for x in lines))
    with pytest.raises(loop.TrainingDiverged, match="at step 5.*checkpoints/4"):
        loop.run(tiny(tmp_path, "nan", train_tuples=str(bad)))
    assert sorted(p.name for p in (nan_dir / "checkpoints").iterdir()) == ["4"]


def test_other_model_config_is_refused(full_run):
    config, _ = full_run
    with pytest.raises(CheckpointError, match="another model config .*dim: saved 16 vs now 8"):
        loop.run(dataclasses.replace(config, dim=8))


def test_exported_student_gives_the_same_embeddings_in_pytorch(full_run):
    torch = pytest.importorskip("torch")
    # transformers' torch model: optional and heavy, imported only here.
    from transformers import BertModel

    config, summary = full_run
    trained = summary["params"]
    texts = ["does zinc affect infection?", "A trial of aspirin predicts mortality."]
    for layout in ("pylate", "stanford"):
        reloaded = ColBERT.from_pretrained(Path(config.output_dir) / f"model_{layout}")
        encoded = reloaded.tokenize_documents(texts)
        ours = np.asarray(
            colbert_forward(
                trained, reloaded.bert_config, encoded["input_ids"], encoded["attention_mask"]
            )
        )
        folder = Path(config.output_dir) / f"model_{layout}"
        bert = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
        weights = load_file(
            folder / ("1_Dense" if layout == "pylate" else "") / "model.safetensors"
        )
        linear = torch.from_numpy(weights["linear.weight"])
        with torch.no_grad():
            hidden = bert(
                input_ids=torch.from_numpy(encoded["input_ids"]).long(),
                attention_mask=torch.from_numpy(encoded["attention_mask"]).long(),
            ).last_hidden_state
            theirs = torch.nn.functional.normalize(hidden @ linear.T, dim=-1).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_overrides_are_typed_and_checked():
    config = apply_overrides(
        load_config(TINY), ["nway=2", "loss=pairwise", "max_grad_norm=none", "export_layouts=a,b"]
    )
    assert (config.nway, config.max_grad_norm, config.export_layouts) == (2, None, ("a", "b"))
    with pytest.raises(InputError, match="unknown config key 'nwy'"):
        apply_overrides(config, ["nwy=3"])
    with pytest.raises(InputError, match="nway='x': expected int"):
        apply_overrides(config, ["nway=x"])
    with pytest.raises(InputError, match="pairwise loss needs nway=2"):
        dataclasses.replace(config, nway=4).validate()
    with pytest.raises(InputError, match="loss for task 'colbert'"):
        dataclasses.replace(config, loss="mnrl").validate()
    with pytest.raises(InputError, match=r"export_layouts \['a', 'b'\] unknown for task 'colbert'"):
        dataclasses.replace(config, loss="nway_ce").validate()


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.py")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    load_config(path).validate()


def test_cli_prints_one_line_errors(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", str(TINY), "nway=99"],
        capture_output=True,
        check=False,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("train.py: error:")
    assert "nway=99" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "lateint_jax", "train", "--config", str(tmp_path / "none.py")],
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 2 and "config file not found" in result.stderr


@pytest.mark.parametrize(
    "task, loss, nway", [("cross_encoder", "nway_ce", 4), ("bi_encoder", "mnrl", 4)]
)
def test_other_tasks_train(tmp_path, task, loss, nway):
    config = tiny(
        tmp_path, task, task=task, loss=loss, nway=nway, num_steps=2, log_every=1,
        pair_maxlen=32, export_layouts=EXPORT_LAYOUTS[task],
    )  # fmt: skip
    summary = loop.run(config)
    records = [
        json.loads(x) for x in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    assert summary["step"] == 2 and all(np.isfinite(r["loss"]) for r in records)
    assert [Path(p).is_dir() for p in summary["exported"]] == [True] * len(EXPORT_LAYOUTS[task])


def test_ctrl_c_stops_with_one_line_and_a_whole_checkpoint(tmp_path):
    """SIGINT mid-run: the step in flight finishes and is saved, one line says where, no
    traceback, no unfinished checkpoint folder; rerunning resumes from that step."""
    run_dir = tmp_path / "run"
    command = [
        sys.executable, str(REPO / "train.py"), "--config", str(TINY), f"output_dir={run_dir}",
        "num_steps=100000", "checkpoint_every=3", "log_every=1",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    metrics = run_dir / "metrics.jsonl"
    try:
        for line in process.stdout:  # the run is training once it logs a step
            if line.startswith("step=") and metrics.exists():
                break
        process.send_signal(signal.SIGINT)
        out = process.communicate(timeout=120)[0]
    finally:
        process.kill()
    said = [line for line in out.splitlines() if not line.startswith("step=")]
    assert process.returncode == 130, out[-3000:]
    assert len(said) == 1 and said[0].startswith("train: stopped by Ctrl-C after step"), said
    saved = int(said[0].split("after step ")[1].split(",")[0])
    folders = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert str(saved) in folders and all(name.isdigit() for name in folders), folders
    resumed = loop.run(tiny(tmp_path, "run", num_steps=saved + 1, export_layouts=()))
    assert resumed["step"] == saved + 1
