"""build_index from a one-shot generator, in bounded memory, resumable: the same index as from a
list, the same index after a SIGKILL and resume=True, clear errors for bad budgets, ids and
settings, and a full disk that leaves the previous index in place."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lateint_jax.errors import DiskFullError, InputError
from lateint_jax.index import build, build_state, storage
from lateint_jax.index.build import build_index
from lateint_jax.index.build_state import state_dir_for, write_atomically
from lateint_jax.index.storage import load_index, save_index
from tests.synthetic import clustered_docs

REPO = Path(__file__).resolve().parents[2]
KERNEL_ALLOWANCE = 64 << 20
FIELDS = ("centroids", "bucket_cutoffs", "bucket_weights", "codes", "residuals", "doc_offsets")
FIELDS += ("ivf_pids", "ivf_offsets", "deleted")
BUDGET = 1 << 20  # chunks of 256 KiB: 1024 vectors of dim 64, so the corpus below has ~12
SETTINGS = {"num_centroids": 64, "memory_budget_bytes": BUDGET, "progress": False}


def run_script(script: str, *args) -> subprocess.CompletedProcess:
    """Run a Python script in a fresh interpreter with this checkout on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-c", script, *map(str, args)]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def assert_same_index(a, b, note=""):
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name + note)
    assert a.doc_ids == b.doc_ids and a.nbits == b.nbits, note


def ids_of(count):
    return [f"doc-{i}" for i in range(count)]


@pytest.fixture(scope="module")
def corpus(seed):
    return clustered_docs(700, dim=64, topics=48, seed=seed), ids_of(700)


@pytest.fixture(scope="module")
def from_list(corpus):
    docs, ids = corpus
    return build_index(docs, ids, None, **SETTINGS)


def test_generator_gives_the_list_index(corpus, from_list, seed):
    """Both read the same sample (by index from the list, from the float32 spill for the
    generator) and compress the same chunks, so every array is equal."""
    docs, ids = corpus
    assert sum(d.size * 4 for d in docs) > 8 * BUDGET // 4  # several chunks
    streamed = build_index((d for d in docs), iter(ids), None, **SETTINGS)
    assert_same_index(from_list, streamed, f" seed={seed}")


def test_chunking_does_not_change_the_index(corpus, tmp_path, monkeypatch, seed):
    """With the k-means sample fixed (the budget also caps it), a budget that cuts the corpus
    into many chunks gives the index of one that holds it in one chunk."""
    docs, ids = corpus
    real = build.choose_sample
    monkeypatch.setattr(build, "choose_sample", lambda *a, **k: real(*a[:3], max_bytes=1 << 40))
    many = build_index(docs, ids, None, **SETTINGS)
    one = build_index(docs, ids, None, **{**SETTINGS, "memory_budget_bytes": 64 << 20})
    assert chunk_count(docs) > 3
    assert_same_index(many, one, f" seed={seed}")


def test_sample_is_cut_to_the_budget(corpus):
    docs, _ = corpus
    lengths = np.array([len(d) for d in docs])
    full = build.choose_sample(lengths, 64, seed=0, max_bytes=1 << 30)
    cut = build.choose_sample(lengths, 64, seed=0, max_bytes=100_000)
    assert len(full) == len(docs) and set(cut) < set(full)
    assert lengths[cut].sum() * 64 * 4 <= 100_000 and (np.diff(cut) > 0).all()


@pytest.mark.parametrize(
    "budget, message",
    [
        (0, "at least 1048576"),
        (-5, "at least"),
        (1000, "at least"),
        ("1GB", "whole number of bytes, got '1GB'"),
        (1.5e9, "whole number"),
        (True, "whole number"),
    ],
)
def test_bad_budget(corpus, budget, message):
    docs, ids = corpus
    with pytest.raises(InputError, match=f"memory_budget_bytes must be .*{message}"):
        build_index(docs[:5], ids[:5], None, memory_budget_bytes=budget, progress=False)


def test_bad_ids_from_a_stream(corpus):
    docs, ids = corpus
    small = docs[:30]
    cases = [
        (ids[:29], "doc_ids ran out after 29 ids"),
        (ids[:31], "got 30 documents but 31 ids"),
        (ids[:29] + ["doc-3"], "duplicate document ids: 'doc-3'"),
        (ids[:29] + [None], "non-empty strings, got None"),
    ]
    for bad_ids, message in cases:
        with pytest.raises(InputError, match=message):
            build_index(iter(small), iter(bad_ids), None, num_centroids=8, progress=False)
    with pytest.raises(InputError, match="corpus is empty"):
        build_index(iter([]), iter([]), None, progress=False)


def test_state_folder_that_is_not_ours_is_refused(corpus, tmp_path):
    docs, ids = corpus
    (tmp_path / "index.build").mkdir()
    (tmp_path / "index.build" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not a lateint build state"):
        build_index(docs[:20], ids[:20], tmp_path / "index", progress=False)
    assert (tmp_path / "index.build" / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match="resume=True needs an index_dir"):
        build_index(docs[:20], ids[:20], None, resume=True, progress=False)


def interrupted(corpus, target, monkeypatch):
    """A streamed build into target that stops (an exception) after 3 compressed chunks."""
    docs, ids = corpus
    real = build_state.BuildState.write_compressed

    def stop_after_three(state, chunk, codes, residuals):
        if chunk == 3:
            raise RuntimeError("interrupted (test)")
        real(state, chunk, codes, residuals)

    monkeypatch.setattr(build_state.BuildState, "write_compressed", stop_after_three)
    with pytest.raises(RuntimeError, match="interrupted"):
        build_index((d for d in docs), ids, target, **SETTINGS)
    monkeypatch.undo()


def test_resume_checks_settings_and_documents(corpus, from_list, tmp_path, monkeypatch, seed):
    docs, ids = corpus
    target = tmp_path / "index"
    interrupted(corpus, target, monkeypatch)
    with pytest.raises(InputError, match=r"settings differ \(nbits: 2 then, 4 now\)"):
        build_index(iter(docs), ids, target, resume=True, **{**SETTINGS, "nbits": 4})
    with pytest.raises(InputError, match="memory_budget_bytes"):
        build_index(
            iter(docs), ids, target, resume=True, **{**SETTINGS, "memory_budget_bytes": 2 << 20}
        )
    renamed = ids[:5] + ["other"] + ids[6:]
    with pytest.raises(InputError, match="chunk 0 .*'doc-0'.* same documents, in the same order"):
        build_index(iter(docs), renamed, target, resume=True, **SETTINGS)
    with pytest.raises(InputError, match="more documents than in the interrupted build"):
        extra = clustered_docs(1, dim=64, seed=seed + 1)
        build_index(iter(docs + extra), ids + ["extra"], target, resume=True, **SETTINGS)
    resumed = build_index(iter(docs), ids, target, resume=True, **SETTINGS)
    assert_same_index(from_list, resumed, f" seed={seed}")
    assert_same_index(from_list, load_index(target), f" seed={seed}")
    assert not state_dir_for(target).exists()


def chunk_count(docs, chunk_bytes=BUDGET // 4):
    """How many chunks ingest cuts docs into (a chunk closes once it holds chunk_bytes)."""
    count, held = 0, 0
    for doc in docs:
        held += doc.size * 4
        if held >= chunk_bytes:
            count, held = count + 1, 0
    return count + (held > 0)


def test_without_resume_a_previous_state_is_discarded(corpus, from_list, tmp_path, monkeypatch):
    docs, ids = corpus
    target = tmp_path / "index"
    interrupted(corpus, target, monkeypatch)
    calls = []
    real = build.compress_in_slices
    monkeypatch.setattr(build, "compress_in_slices", lambda *a: calls.append(1) or real(*a))
    assert_same_index(from_list, build_index(docs, ids, target, **SETTINGS))
    assert len(calls) == chunk_count(docs) > 3  # every chunk compressed again


KILLED_BUILD = """
import os, signal, sys
from lateint_jax.index import build_state
from lateint_jax.index.build import build_index
from tests.synthetic import clustered_docs

target, prefix, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
real = build_state.write_atomically
written = []

def write_then_die(path, write):
    real(path, write)
    written.append(path.name) if path.name.startswith(prefix) else None
    if len(written) == count:  # the file is in place, the manifest does not name it yet
        (path.parent / f".{path.name}.torn.tmp").write_bytes(b"half a file")
        os.kill(os.getpid(), signal.SIGKILL)

build_state.write_atomically = write_then_die
docs = clustered_docs(700, dim=64, topics=48, seed=seed)
build_index((d for d in docs), [f"doc-{i}" for i in range(700)], target,
            num_centroids=64, memory_budget_bytes=1 << 20, progress=False)
"""


@pytest.mark.parametrize(
    "stage, prefix, count", [("spill", "spill-", 5), ("compress", "compressed-", 4)]
)
def test_resume_after_sigkill_equals_uninterrupted(
    corpus, from_list, tmp_path, seed, stage, prefix, count
):
    docs, ids = corpus
    target = tmp_path / "index"
    killed = run_script(KILLED_BUILD, target, prefix, count, seed)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = state_dir_for(target)
    assert not target.exists() and len(list(state.glob(prefix + "*"))) >= count - (
        stage == "compress"
    )
    resumed = build_index((d for d in docs), iter(ids), target, resume=True, **SETTINGS)
    note = f" (killed in {stage}) seed={seed}"
    assert_same_index(from_list, resumed, note)
    assert_same_index(from_list, load_index(target), note)
    assert not state.exists()


def test_full_disk_keeps_the_previous_index(corpus, from_list, tmp_path, monkeypatch, seed):
    """ENOSPC simulated in the index writer (test_full_disk_on_a_real_tmpfs fills a real one): a
    clear error, the old index untouched, the build state kept, and resume=True then finishes."""
    docs, ids = corpus
    target = tmp_path / "index"
    previous = build_index(docs[:50], ids[:50], None, num_centroids=16, progress=False)
    save_index(previous, target)
    real_write = storage._HashingWriter.write

    def full_at_the_residuals(self, data):
        if self.handle.name.endswith("residuals.npy"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(storage._HashingWriter, "write", full_at_the_residuals)
    with pytest.raises(DiskFullError, match="no space left .* nothing there was changed"):
        build_index(docs, ids, target, overwrite=True, **SETTINGS)
    monkeypatch.undo()
    assert_same_index(previous, load_index(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "index.build"]
    resumed = build_index(docs, ids, target, overwrite=True, resume=True, **SETTINGS)
    assert_same_index(from_list, resumed, f" seed={seed}")


FULL_TMPFS = """
import subprocess, sys
from pathlib import Path
import numpy as np
from lateint_jax.errors import DiskFullError
from lateint_jax.index.build import build_index
from lateint_jax.index.storage import load_index
from tests.synthetic import clustered_docs

disk, seed = Path(sys.argv[1]), int(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=448k", "none", str(disk)], check=True)
docs = clustered_docs(700, dim=64, topics=48, seed=seed)
ids = [f"doc-{i}" for i in range(700)]
previous = build_index(docs[:40], ids[:40], disk / "index", num_centroids=16, progress=False)
try:  # the build state (about 250 KB) fits, the new index beside the old one does not
    build_index(docs, ids, disk / "index", overwrite=True, num_centroids=64, progress=False)
except DiskFullError as err:
    print(err)
kept = load_index(disk / "index")
assert kept.doc_ids == ids[:40] and np.array_equal(kept.residuals, previous.residuals)
print(sorted(p.name for p in disk.iterdir()))
"""


def test_full_disk_on_a_real_tmpfs(tmp_path, seed):
    """A 448 KiB tmpfs in a user and mount namespace (skipped where unshare is refused)."""
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no unprivileged mount namespace: {probe.stderr.decode()[:200]}")
    (tmp_path / "disk").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    command = ["unshare", "-r", "-m", sys.executable, "-c", FULL_TMPFS, str(tmp_path / "disk")]
    run = subprocess.run(
        [*command, str(seed)], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no space left on the device while saving the index" in run.stdout, run.stdout
    assert "nothing there was changed" in run.stdout and "['index', 'index.build']" in run.stdout


def test_full_disk_while_writing_state(tmp_path):
    def fill(handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match="spill-00003.npy; free some space and rerun"):
        write_atomically(tmp_path / "spill-00003.npy", fill)
    assert list(tmp_path.iterdir()) == []


PEAK_MEMORY = """
import resource, sys
import numpy as np
from lateint_jax.index.build import build_index
from tests.synthetic import clustered_docs

vectors, budget, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def documents():  # clustered unit vectors, made a few at a time
    made, part = 0, 0
    while made < vectors:
        for doc in clustered_docs(64, dim=64, topics=64, seed=seed * 1000 + part):
            made += len(doc)
            yield doc
        part += 1

def ids():
    return (f"d{n}" for n in range(sum(1 for _ in documents())))

warm = list(documents())[:200]  # compile the kernels and load XLA before measuring
build_index(warm, [f"w{i}" for i in range(200)], None, num_centroids=256,
            memory_budget_bytes=1 << 20, progress=False)
before = rss()
arrays = build_index(documents(), ids(), sys.argv[4], num_centroids=256,
                     memory_budget_bytes=budget, progress=False)
print(arrays.num_embeddings, arrays.codes.nbytes + arrays.residuals.nbytes, before, rss())
"""


def test_peak_memory_follows_the_budget_not_the_corpus(tmp_path, seed):
    """A generator of 1M vectors of dim 64 (244 MiB as float32, 15x the 16 MiB budget): the
    build's peak RSS grows by less than budget + 2 x the compressed index + a fixed allowance for
    the jitted kernels' blocks (k-means scores, compress slices) and XLA, measured after a warm-up
    build has loaded XLA and compiled the kernels."""
    budget, vectors = 16 << 20, 1_000_000
    run = run_script(PEAK_MEMORY, vectors, budget, seed, tmp_path / "index")
    assert run.returncode == 0, run.stderr[-3000:]
    total, index_bytes, before, peak = map(int, run.stdout.split())
    bound = budget + 2 * index_bytes + KERNEL_ALLOWANCE
    note = f"grew {(peak - before) >> 20} MiB, bound {bound >> 20} MiB, seed={seed}"
    assert total * 64 * 4 > bound + (64 << 20), note  # holding the corpus could not pass
    assert peak - before < bound, note
