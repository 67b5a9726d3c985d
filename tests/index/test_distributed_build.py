"""build_index as a two-process JAX program on localhost (gloo collectives, one CPU device per
process): the index equals the one-process build's, array for array and file for file; an error
in one process stops both with a clear message."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lateint_jax.cli import main as lateint
from lateint_jax.errors import InputError
from lateint_jax.index.build import KMEANS_NITERS, build_index
from lateint_jax.index.build_state import BuildState, state_dir_for
from lateint_jax.index.distributed_build import (
    build_index_distributed,
    part_state_dir,
    process_share,
)
from lateint_jax.index.storage import METADATA_FILE, load_index
from tests.index.test_streaming_build import FIELDS
from tests.local_servers import free_port

REPO = Path(__file__).resolve().parents[2]
NUM_DOCS, DIM = 600, 64
# A 1 MiB budget cuts each share into several chunks and the k-means sample to a random subset.
SETTINGS = {"num_centroids": 64, "memory_budget_bytes": 1 << 20, "progress": False}

PROCESS = """
import os
import signal
import sys
import jax
import numpy as np
from lateint_jax.index import build_state
from lateint_jax.index.distributed_build import build_index_distributed, process_share
from tests.synthetic import clustered_docs

coordinator, process_id, target, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
num_docs, dim, nan_in, die_at, resume = (int(a) for a in sys.argv[5:10])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator, num_processes=2, process_id=process_id,
                           heartbeat_timeout_seconds=10)
docs = clustered_docs(num_docs, dim=dim, topics=48, seed=seed)
if nan_in >= 0:
    docs[nan_in][0, 0] = np.nan
share = process_share(num_docs, process_id, 2)
mine, ids = docs[share.start:share.stop], [f"doc-{i}" for i in share]
if process_id == 1:
    mine = (doc for doc in mine)  # one process reads a list, the other a one-shot stream
    real, compressed = build_state.write_atomically, []

    def write_then_die(path, write):
        real(path, write)
        compressed.append(path) if path.name.startswith("compressed-") else None
        if len(compressed) == die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    build_state.write_atomically = write_then_die
arrays = build_index_distributed(mine, ids, target, num_centroids=64, seed=seed, resume=bool(resume),
                                 memory_budget_bytes=1 << 20, progress=False)
print(f"process {process_id} returned {type(arrays).__name__}", flush=True)
if process_id == 1:
    print(f"process 1 compressed {len(compressed)} chunks", flush=True)
jax.distributed.shutdown()
"""


def run_two_processes(target, seed, nan_in=-1, die_at=-1, resume=False):
    """PROCESS in two fresh interpreters, one CPU device each, joined by jax.distributed;
    process 1 puts a NaN in document `nan_in`, or is killed after writing its `die_at`-th
    compressed chunk, when those are >= 0. -> both CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    coordinator = f"127.0.0.1:{free_port()}"
    args = [coordinator, None, target, seed, NUM_DOCS, DIM, nan_in, die_at, int(resume)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, *map(str, args[:1] + [pid] + args[2:])],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    done = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            out, err = process.communicate()
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


@pytest.fixture(scope="module")
def corpus(seed):
    from tests.synthetic import clustered_docs

    return clustered_docs(NUM_DOCS, dim=DIM, topics=48, seed=seed), [
        f"doc-{i}" for i in range(NUM_DOCS)
    ]


def test_process_share_covers_the_corpus_in_order():
    for count, processes in [(10, 3), (7, 7), (1000, 4)]:
        shares = [process_share(count, p, processes) for p in range(processes)]
        assert [i for share in shares for i in share] == list(range(count))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_one_process_program_builds_the_build_index_index(corpus, tmp_path, seed):
    """jax.process_count() == 1 (no jax.distributed here): the same steps, in-process."""
    docs, ids = corpus
    build_index_distributed(docs[:200], ids[:200], tmp_path / "one", seed=seed, **SETTINGS)
    build_index(docs[:200], ids[:200], tmp_path / "ref", seed=seed, **SETTINGS)
    assert_same_folders(tmp_path / "ref", tmp_path / "one", f" seed={seed}")


def test_resume_needs_the_same_process_count(corpus, tmp_path):
    """A state left by two processes: one process may not resume it, nor start over on it
    without being told to (resume=False discards it)."""
    docs, ids = corpus
    target = tmp_path / "index"
    settings = {"nbits": 2, "num_centroids": 64, "seed": 0, "kmeans_niters": KMEANS_NITERS}
    settings |= {"memory_budget_bytes": SETTINGS["memory_budget_bytes"], "processes": 2}
    BuildState.open_folder(state_dir_for(target), settings, resume=False)
    with pytest.raises(InputError, match=r"settings differ \(processes: 2 then, 1 now\)"):
        build_index_distributed(docs[:50], ids[:50], target, resume=True, **SETTINGS)
    with pytest.raises(InputError, match="processes: 2 then, None now"):
        build_index(docs[:50], ids[:50], target, resume=True, **SETTINGS)
    build_index(docs[:50], ids[:50], target, **SETTINGS)
    assert not state_dir_for(target).exists() and load_index(target).num_docs == 50


def test_two_processes_build_the_one_process_index(corpus, tmp_path, seed):
    docs, ids = corpus
    note = f" seed={seed}"
    single = tmp_path / "one"
    build_index(docs, ids, single, seed=seed, **SETTINGS)
    target = tmp_path / "two"
    results = run_two_processes(target, seed)
    for pid, result in enumerate(results):
        assert result.returncode == 0, result.stderr[-3000:]
    assert "process 0 returned IndexArrays" in results[0].stdout
    assert "process 1 returned NoneType" in results[1].stdout
    assert not state_dir_for(target).exists()

    assert load_index(target).doc_ids == ids
    assert_same_folders(single, target, note)


def assert_same_folders(single, target, note):
    """The same arrays, and every file the same bytes but metadata.json's creation time."""
    one, two = load_index(single), load_index(target)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), name + note)
    assert one.doc_ids == two.doc_ids
    names = sorted(p.name for p in single.iterdir())
    assert names == sorted(p.name for p in target.iterdir())
    for name in names:
        if name != METADATA_FILE:
            assert (single / name).read_bytes() == (target / name).read_bytes(), name + note
    meta_one, meta_two = (json.loads((d / METADATA_FILE).read_text()) for d in (single, target))
    assert meta_one.pop("created_utc") and meta_two.pop("created_utc")
    assert meta_one == meta_two


@pytest.mark.slow  # jax.distributed takes its 10 s heartbeat timeout to end process 0
def test_a_killed_process_stops_the_build_and_resume_finishes_it(corpus, tmp_path, seed):
    """Process 1 is SIGKILLed in pass 2: process 0 is ended by jax.distributed (heartbeat
    timeout); both shares' finished chunks are kept, and the same program run again (resume=True)
    saves the one-process index."""
    docs, ids = corpus
    target = tmp_path / "two"
    killed = run_two_processes(target, seed, die_at=2)
    assert killed[1].returncode == -signal.SIGKILL, killed[1].stderr[-3000:]
    assert killed[0].returncode != 0 and "another task died" in killed[0].stderr
    assert len(list(part_state_dir(target, 1).glob("compressed-*"))) == 2
    chunks = len(list(part_state_dir(target, 1).glob("lengths-*")))
    assert not target.exists() and chunks > 2
    resumed = run_two_processes(target, seed, resume=True)
    assert [r.returncode for r in resumed] == [0, 0], resumed[0].stderr[-3000:]
    # Killed before its manifest recorded the 2nd chunk: only the 1st is skipped.
    assert f"process 1 compressed {chunks - 1} chunks" in resumed[1].stdout
    single = tmp_path / "one"
    build_index(docs, ids, single, seed=seed, **SETTINGS)
    assert_same_folders(single, target, f" seed={seed}")
    assert not state_dir_for(target).exists()


def test_an_error_in_one_process_stops_both(tmp_path, seed):
    """A NaN in process 1's share: it reports the document, process 0 names process 1."""
    bad = NUM_DOCS - 3  # in process 1's share
    assert bad in process_share(NUM_DOCS, 1, 2)
    results = run_two_processes(tmp_path / "index", seed, nan_in=bad)
    assert results[0].returncode != 0 and results[1].returncode != 0
    assert f"InputError: document 'doc-{bad}' has NaN or infinite values" in results[1].stderr
    assert (
        f"BuildProcessError: process 1 of the build failed while reading its documents: "
        f"InputError: document 'doc-{bad}' has NaN" in results[0].stderr
    ), results[0].stderr[-3000:]
    assert not (tmp_path / "index").exists()


@pytest.mark.slow
def test_lateint_index_on_two_processes(tmp_path):
    """`lateint index --coordinator --num-processes 2 --process-id I` (the real packaged encoder,
    each process encoding its half of 30 passages) saves the one-process command's index."""
    from tests.commands.test_index import PASSAGES

    corpus = tmp_path / "passages.txt"
    corpus.write_text("\n".join(PASSAGES) + "\n")
    common = [str(corpus), "--doc-maxlen", "32", "--quiet", "--memory-budget", "1MiB"]
    single = tmp_path / "one"
    assert lateint(["index", common[0], str(single), *common[1:]]) == 0
    target = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    coordinator = f"127.0.0.1:{free_port()}"
    flags = ["--coordinator", coordinator, "--num-processes", "2", "--process-id"]
    command = [sys.executable, "-m", "lateint_jax.cli", "index", common[0], str(target)]
    processes = [
        subprocess.Popen(
            [*command, *common[1:], *flags, str(pid)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]
    logs = [process.communicate(timeout=240)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0], logs
    assert "[process 1] indexed documents 15..29; process 0 saved the index" in logs[1]
    assert_same_folders(single, target, "")


def test_shares_must_not_repeat_ids_or_differ_in_dim(tmp_path):
    """What process 0 checks once every share is read (the shares' own build states)."""
    from lateint_jax.index import distributed_build

    parts = []
    for p, (ids, dim) in enumerate([(["a", "b"], 8), (["c", "a"], 8), (["d"], 16)]):
        part = BuildState.open_folder(part_state_dir(tmp_path / "index", p), {}, resume=False)
        part.write_ids(ids)
        part.manifest["dim"] = dim
        parts.append(part)
    assert distributed_build._all_ids(parts[::2]) == ["a", "b", "d"]
    with pytest.raises(InputError, match="duplicate document ids: 'a'"):
        distributed_build._all_ids(parts[:2])
    distributed_build._check_dims(parts[:2])
    with pytest.raises(InputError, match=r"different dims: \[8, 8, 16\]"):
        distributed_build._check_dims(parts)
