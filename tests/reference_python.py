"""Running a reference implementation (PyTorch, PyLate) in its own interpreter from a test: the
PyLate venv's path, and one runner that skips clearly when the venv is missing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PYLATE_PYTHON = Path(
    os.environ.get("LATEINT_PYLATE_PYTHON", REPO / ".bench-venvs" / "pylate" / "bin" / "python")
)


def run_python(python, script: str, *args, cwd) -> None:
    """`python -c script args...` offline, without the tests' XLA_FLAGS; fails with its stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run(
        [str(python), "-c", script, *map(str, args)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def run_pylate(script: str, job, tmp_path: Path, name: str) -> dict:
    """Run `script` (argv: job JSON in, .npz out) in the PyLate venv -> the arrays it saved.
    Skips, naming the path, when the venv is missing (recipe in docs/ENCODERS.md)."""
    if not PYLATE_PYTHON.exists():
        pytest.skip(
            f"PyLate reference venv not found at {PYLATE_PYTHON} (set LATEINT_PYLATE_PYTHON; "
            "recipe in docs/ENCODERS.md)"
        )
    job_path, out_path = tmp_path / f"{name}.json", tmp_path / f"{name}.npz"
    job_path.write_text(json.dumps(job))
    run_python(PYLATE_PYTHON, script, job_path, out_path, cwd=tmp_path)
    return dict(np.load(out_path))
