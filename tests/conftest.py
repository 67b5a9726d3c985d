"""Test setup: 8 fake CPU devices for the sharding tests, and the shared data location."""

import os
from pathlib import Path

# Must be set before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("LATEINT_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    path = DATA_DIR / "scifact"
    if not (path / "corpus.jsonl").exists():
        pytest.skip(
            f"SciFact not found at {path} (set LATEINT_DATA to the folder holding scifact/)"
        )
    return path
