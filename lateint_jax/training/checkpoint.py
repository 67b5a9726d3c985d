"""Training checkpoints: orbax CheckpointManager wrapped in one place.

Layout of a run directory:

    <dir>/config.json          the resolved training config (written atomically)
    <dir>/checkpoints/<step>/  orbax: "state" (TrainState) and "meta" (JSON: data position)

orbax writes each step into a temporary directory and renames it when complete, so a process
killed during a save leaves the previous step as the latest loadable one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from lateint_jax.errors import CheckpointError
from lateint_jax.training.state import TrainState

# Config keys that change the parameter tree or its meaning: a checkpoint written under other
# values cannot be resumed.
MODEL_KEYS = ("task", "model", "dim", "tiny_model")


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


class Checkpointer:
    """Saves every `every` steps, keeps the last `keep`; restores the latest."""

    def __init__(self, run_dir: str | os.PathLike, config: dict, every: int, keep: int):
        self.run_dir = Path(run_dir).absolute()
        self.config = config
        self._check_config()
        self.manager = ocp.CheckpointManager(
            self.run_dir / "checkpoints",
            options=ocp.CheckpointManagerOptions(
                save_interval_steps=every, max_to_keep=keep, create=True
            ),
            item_names=("state", "meta"),
        )

    def _check_config(self) -> None:
        saved_path = self.run_dir / "config.json"
        if saved_path.exists():
            try:
                saved = json.loads(saved_path.read_text())
            except json.JSONDecodeError as err:
                raise CheckpointError(f"{saved_path} is not valid JSON: {err.msg}") from None
            changed = {
                k: (saved.get(k), self.config.get(k))
                for k in MODEL_KEYS
                if saved.get(k) != self.config.get(k)
            }
            if changed and _has_checkpoints(self.run_dir):
                detail = ", ".join(
                    f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in changed.items()
                )
                raise CheckpointError(
                    f"checkpoints in {self.run_dir} belong to another model config ({detail}); "
                    "use another output_dir"
                )
        if jax.process_index() == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(saved_path, self.config)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState, meta: dict, force: bool = False) -> bool:
        """Save (asynchronously) when `step` is on the interval or `force`; True if saving."""
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )

    def restore(self, like: TrainState, step: int | None = None) -> tuple[TrainState, dict] | None:
        """The state at `step` (default: latest) shaped and sharded like `like`, and its meta;
        None when there is no checkpoint yet."""
        step = self.manager.latest_step() if step is None else step
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"checkpoint step {step} in {self.run_dir} does not match this model: {err}"
            ) from None
        return restored.state, dict(restored.meta)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def remove_unfinished(self) -> None:
        """Delete the temporary folders of saves that never completed (process 0 only)."""
        if jax.process_index() != 0:
            return
        for folder in (self.run_dir / "checkpoints").glob("*.orbax-checkpoint-tmp*"):
            shutil.rmtree(folder, ignore_errors=True)


def _has_checkpoints(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.exists() and any(p.name.isdigit() for p in folder.iterdir())
