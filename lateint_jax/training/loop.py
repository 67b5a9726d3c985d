"""The training loop: `run(config)` reads the tuples, builds the task, restores the latest
checkpoint if any, trains, logs and checkpoints, and exports the final model.

Multi-host: when `LATEINT_COORDINATOR` (host:port), `LATEINT_NUM_PROCESSES` and
`LATEINT_PROCESS_ID` are set (or on a TPU pod, where `jax.distributed.initialize()` finds
everything itself when `LATEINT_DISTRIBUTED=1`), every process runs this same loop; the mesh
spans all devices of all processes and each process feeds its own slice of each global batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import jax

from lateint_jax.data import tuples as tuples_lib
from lateint_jax.errors import UserError
from lateint_jax.sharding import data_mesh
from lateint_jax.training import checkpoint as ckpt_lib
from lateint_jax.training import step as step_lib
from lateint_jax.training.config import TrainConfig
from lateint_jax.training.state import create_state, learning_rate_schedule, make_optimizer
from lateint_jax.training.tasks import build_task


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(UserError):
    """Ctrl-C (SIGINT) stopped the run; the checkpoints on disk are complete."""


class _StopRequest:
    """Ctrl-C (SIGINT) asks the loop to stop after the step in flight; a second Ctrl-C
    interrupts at once. Only single-process runs on the main thread install it: processes of
    a multi-host run must stop together."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def initialize_distributed() -> None:
    """jax.distributed.initialize from LATEINT_* variables (no-op for a single process)."""
    if jax.distributed.is_initialized():
        return
    if "LATEINT_COORDINATOR" in os.environ:
        # CPU processes need a collectives backend to all-reduce across hosts; no-op elsewhere.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=os.environ["LATEINT_COORDINATOR"],
            num_processes=int(os.environ["LATEINT_NUM_PROCESSES"]),
            process_id=int(os.environ["LATEINT_PROCESS_ID"]),
        )
    elif os.environ.get("LATEINT_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def load_training_tuples(config: TrainConfig) -> list[tuples_lib.TrainingTuple]:
    corpus = queries = None
    if config.beir_folder:
        corpus, queries = tuples_lib.beir_texts(config.beir_folder)
    return tuples_lib.read_tuples(
        config.train_tuples,
        config.nway,
        corpus=corpus,
        queries=queries,
        require_scores=config.uses_teacher,
    )


def _devices(config: TrainConfig):
    devices = jax.devices()
    if config.num_devices is not None:
        if jax.process_count() > 1:
            raise UserError("num_devices cannot be set with several processes")
        devices = devices[: config.num_devices]
    return devices


class _Log:
    """One line per logged step to stdout and to metrics.jsonl (process 0 only)."""

    def __init__(self, path: Path):
        self.enabled = jax.process_index() == 0
        self.path = path

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        print(
            " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
            ),
            flush=True,
        )
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def run(config: TrainConfig) -> dict:
    """Train as configured. Returns a summary: final step, last metrics, exported model dirs."""
    config = config.validate()
    # Truncating long documents to the configured lengths is expected here, not news.
    logging.getLogger("lateint_jax.data.tokenize").setLevel(logging.ERROR)
    initialize_distributed()
    out = Path(config.output_dir)
    devices = _devices(config)
    mesh = data_mesh(devices, explicit=False)
    if config.batch_size % (len(devices) * config.accum_steps):
        raise UserError(
            f"batch_size {config.batch_size} must be a multiple of devices x accum_steps "
            f"({len(devices)} x {config.accum_steps})"
        )
    data = load_training_tuples(config)
    task = build_task(config, fixed_lengths=jax.process_count() > 1)
    schedule = learning_rate_schedule(config.learning_rate, config.warmup_steps, config.num_steps)
    optimizer = make_optimizer(schedule, config.weight_decay, config.max_grad_norm)
    state = step_lib.place_state(create_state(task.params, optimizer, config.seed), mesh)
    checkpointer = ckpt_lib.Checkpointer(
        out, config.to_dict(), config.checkpoint_every, config.keep_checkpoints
    )
    start = 0
    restored = checkpointer.restore(state)
    if restored is not None:
        state, meta = restored
        start = int(meta["batches_done"])
        if jax.process_index() == 0:
            print(f"resumed from {out / 'checkpoints' / str(start)}", flush=True)
    train_step = step_lib.make_train_step(
        task.loss_fn, optimizer, mesh, accum_steps=config.accum_steps, schedule=schedule
    )
    log = _Log(out / "metrics.jsonl")
    # This process's share of each global batch (processes own contiguous device blocks).
    per_process = config.batch_size // jax.process_count()
    mine = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
    stop = config.num_steps
    if config.halt_after_steps is not None:
        stop = min(stop, start + config.halt_after_steps)
    metrics, window_start, window_examples = {}, time.perf_counter(), 0
    step = start
    stop_request = _StopRequest()
    with stop_request:
        for step in range(start, stop):
            indices = tuples_lib.batch_indices(len(data), config.batch_size, config.seed, step)
            batch = task.collate([data[i] for i in indices[mine]])
            state, metrics = train_step(state, step_lib.shard_batch(batch, mesh))
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                checkpointer.wait()
                last = checkpointer.latest_step()
                raise TrainingDiverged(
                    f"loss is {loss} at step {step + 1}; stopped. Last good checkpoint: "
                    f"{'none' if last is None else out / 'checkpoints' / str(last)}"
                )
            window_examples += config.batch_size
            done = step + 1
            checkpointer.save(done, state, _progress(done, config))
            if done % config.log_every == 0 or done == config.num_steps:
                elapsed = time.perf_counter() - window_start
                record = {"step": done, **{k: float(v) for k, v in metrics.items()}}
                record["examples_per_s"] = window_examples / max(elapsed, 1e-9)
                log.write(record)
                window_start, window_examples = time.perf_counter(), 0
            if stop_request.requested:
                break
    done = step + 1
    if stop_request.requested and done < stop:
        _close(checkpointer, state, config, last=done)
        checkpointer.remove_unfinished()
        raise TrainingInterrupted(
            f"stopped by Ctrl-C after step {done}, saved as {out / 'checkpoints' / str(done)} "
            "(run the same command to resume from it)"
        )
    # Rerunning a finished run (or one cut at num_steps=<a saved step>) re-exports its model.
    finished = stop == config.num_steps
    exported = []
    _close(checkpointer, state, config, last=stop if finished else None)
    if finished and jax.process_index() == 0 and config.export_layouts:
        exported = task.export(jax.device_get(state.params), out)
        for path in exported:
            print(f"exported {path}", flush=True)
    return {
        "step": int(state.step),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "exported": [str(p) for p in exported],
        "params": state.params,
    }


def _progress(batches_done: int, config: TrainConfig) -> dict:
    """A checkpoint's "meta": where the data stream stands."""
    return {"batches_done": batches_done, "examples_seen": batches_done * config.batch_size}


def _close(checkpointer, state, config: TrainConfig, last: int | None) -> None:
    """Let saves in flight finish; with `last`, make that step the latest checkpoint (unless
    it already is); then close the checkpoint manager."""
    checkpointer.wait()
    if last is not None and checkpointer.latest_step() != last:
        checkpointer.save(last, state, _progress(last, config), force=True)
        checkpointer.wait()
    checkpointer.close()
