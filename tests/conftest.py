"""Test setup: 8 fake CPU devices for the sharding tests, the shared data location, the session's
random seed, and the tiny random model.

Random inputs: every random draw in the tests is seeded. Tests that want fresh inputs each run take
the `seed` fixture (or `rng`, a numpy Generator from it): one seed per session, taken from
LATEINT_TEST_SEED or drawn, printed in the header and the summary, and added to the failure
message of every test that used it. `LATEINT_TEST_SEED=<seed> pytest ...` replays a run.
"""

import os
import secrets
from pathlib import Path

# Must be set before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest

from tests.tiny_models import save_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("LATEINT_DATA", REPO_ROOT.parent / "shared" / "data"))
SEED_VARIABLE = "LATEINT_TEST_SEED"
_SEED = pytest.StashKey[int]()


def seed_note(seed: int) -> str:
    """The line a failing seeded test adds to its failure message."""
    return f"seed={seed} (replay: {SEED_VARIABLE}={seed} pytest ...)"


def pytest_configure(config):
    # Chosen once, before any xdist worker starts; exported so workers and subprocesses share it.
    value = os.environ.get(SEED_VARIABLE) or str(secrets.randbelow(2**31))
    try:
        seed = int(value)
    except ValueError:
        raise pytest.UsageError(f"{SEED_VARIABLE}={value!r} is not an integer") from None
    os.environ[SEED_VARIABLE] = str(seed)
    config.stash[_SEED] = seed


def pytest_report_header(config):
    return f"random inputs: {SEED_VARIABLE}={config.stash[_SEED]}"


def pytest_terminal_summary(terminalreporter, config):
    terminalreporter.write_line(f"random inputs: {SEED_VARIABLE}={config.stash[_SEED]}")


def _add_seed_note(item):
    try:
        return (yield)
    except Exception as err:
        if "seed" in item.fixturenames:  # the fixture closure: also through rng, tiny_checkpoint
            err.add_note(seed_note(item.config.stash[_SEED]))
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _add_seed_note(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _add_seed_note(item))


@pytest.fixture(scope="session")
def seed(pytestconfig) -> int:
    """The session's seed (see the module docstring)."""
    return pytestconfig.stash[_SEED]


@pytest.fixture
def rng(seed) -> np.random.Generator:
    """A fresh numpy Generator from the session's seed, the same stream in every test."""
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, seed):
    """make(name, **kwargs) -> (torch model, folder): tests.tiny_models.save_tiny_model into a
    fresh temporary folder, weights drawn from the session's seed unless kwargs give `seed`."""

    def make(name: str = "tiny", **kwargs):
        path = tmp_path_factory.mktemp(name)
        kwargs.setdefault("seed", seed)
        return save_tiny_model(path, **kwargs), path

    return make


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    path = DATA_DIR / "scifact"
    if not (path / "corpus.jsonl").exists():
        pytest.skip(
            f"SciFact not found at {path} (set LATEINT_DATA to the folder holding scifact/)"
        )
    return path
