"""The server as a two-process JAX program on localhost (gloo collectives): the index sharded
over both processes' devices, process 0 answering HTTP, results equal to one process's; with
--writable, writes mirrored on both processes, durable across kill -9, compacted and saved on
both (each process with its own copy of the index folder)."""

import argparse
import shutil
import signal
import subprocess

import httpx
import numpy as np
import pytest

from lateint_jax import open_index
from lateint_jax.cli import main as lateint
from lateint_jax.data.beir import load_corpus
from lateint_jax.encoders import BiEncoder, ColBERT
from lateint_jax.errors import InputError
from lateint_jax.index.storage import read_metadata
from lateint_jax.serving import documents_api
from lateint_jax.serving.demo import DEMO_CORPUS, build_corpus_index
from lateint_jax.serving.encoding import CompiledColBERT
from tests.local_servers import free_port, spawn_serve, wait_until_healthy

QUERIES = ["how do bees find flowers", "coral reefs", "binary search", "bread yeast"]


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    colbert = ColBERT.from_pretrained(None)
    index_dir = tmp_path_factory.mktemp("multihost") / "demo-index"
    build_corpus_index(CompiledColBERT(colbert, max_batch=4), load_corpus(DEMO_CORPUS), index_dir)
    return colbert, index_dir


@pytest.fixture(scope="module")
def dense_index(tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("multihost") / "dense-index"
    assert (
        lateint(["index", str(DEMO_CORPUS), str(index_dir), "--kind", "biencoder", "--quiet"]) == 0
    )
    return index_dir


def start_two_processes(index_dirs, extra=()):
    """serve.py as a two-process program, process p on index_dirs[p] -> (url, processes)."""
    http_port, coordinator = free_port(), f"127.0.0.1:{free_port()}"
    processes = []
    for process_id, index_dir in enumerate(index_dirs):
        args = [
            "--index", index_dir, "--corpus", DEMO_CORPUS, "--port", http_port,
            "--max-batch", "1", "--max-k", "10", "--coordinator", coordinator,
            "--num-processes", "2", "--process-id", process_id, *extra,
        ]  # fmt: skip
        processes.append(spawn_serve(args, devices=2))  # 2 devices per process
    return f"http://127.0.0.1:{http_port}", processes


def stop(processes, how=signal.SIGTERM) -> list[str]:
    """Signal process 0 (SIGTERM: it releases process 1) or, with SIGKILL, both -> their logs."""
    for process in processes[: 1 if how == signal.SIGTERM else 2]:
        process.send_signal(how)
    logs = []
    for process in processes:
        try:
            logs.append(process.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            process.kill()
            logs.append(process.communicate()[0])
    return logs


def serve_on_two_processes(index_dir, ask, extra=(), index_dirs=None):
    """Run serve.py as a two-process program over index_dir, call ask(url) once it answers,
    shut it down; -> what ask returned. Checks that process 1 left cleanly."""
    url, processes = start_two_processes(index_dirs or [index_dir, index_dir], extra)
    try:
        wait_until_healthy(url, processes)
        stats = httpx.get(f"{url}/stats", timeout=30).json()
        assert stats["process_count"] == 2 and stats["device_count"] == 4
        answers = ask(url)
    finally:
        logs = stop(processes)
    assert "[process 1] stopped" in logs[1], logs[1][-3000:]
    return answers, logs


def search_all(url, subset):
    """The QUERIES at k=5, then the first query restricted to `subset` at k=2."""
    served = [
        httpx.post(f"{url}/search", json={"query": q, "k": 5}, timeout=60).json()["results"]
        for q in QUERIES
    ]
    body = {"query": QUERIES[0], "k": 2, "ids": subset}
    return served, httpx.post(f"{url}/search", json=body, timeout=60).json()["results"]


def test_two_processes_serve_the_same_results_as_one(demo_index):
    colbert, index_dir = demo_index
    subset = ["demo-000", "demo-010", "demo-042"]
    (served, served_subset), _ = serve_on_two_processes(
        index_dir, lambda url: search_all(url, subset)
    )

    # One process, every local device (8 here): same ids, same scores.
    single = open_index(index_dir).search(colbert.encode_queries(QUERIES), k=5)
    for hits, expected in zip(served, single):
        assert [h["id"] for h in hits] == [i for i, _ in expected]
        np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in expected], rtol=1e-5)
    assert [h["id"] for h in served_subset] == ["demo-042", served_subset[1]["id"]]
    assert {h["id"] for h in served_subset} <= set(subset)


def test_two_processes_serve_a_dense_index_as_one(dense_index):
    index_dir = dense_index
    subset = [f"demo-{n:03d}" for n in range(0, 70, 3)]
    (served, served_subset), _ = serve_on_two_processes(
        index_dir, lambda url: search_all(url, subset)
    )

    index, encoder = open_index(index_dir), BiEncoder.from_pretrained(None)
    single = index.search(encoder.encode(QUERIES), k=5)
    single_subset = index.search(encoder.encode(QUERIES[:1]), k=2, subset_ids=subset)
    for hits, expected in zip([*served, served_subset], [*single, *single_subset]):
        assert [h["id"] for h in hits] == [i for i, _ in expected]
        np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in expected], rtol=1e-5)


# ---------------------------------------------------------------- writes
NEW_DOCUMENTS = [
    {"id": "new-bees", "text": "Honey bees find flowers by their scent and their colour."},
    {"id": "new-reef", "text": "Coral reefs bleach when the sea around them warms."},
    {"id": "demo-005", "text": "Binary search halves a sorted range at every step."},  # replaced
]
DELETED = "demo-010"
LATER = {"id": "new-bread", "text": "Yeast makes bread dough rise in a warm oven."}
LATER_DELETED = "new-reef"
WRITABLE = ["--writable", "--insecure-writes", "--compact-every", "1000"]


def search_top(url) -> list[list[dict]]:
    return [
        httpx.post(f"{url}/search", json={"query": q, "k": 5}, timeout=60).json()["results"]
        for q in QUERIES
    ]


def assert_same(served, expected) -> None:
    for hits, want in zip(served, expected, strict=True):
        assert [h["id"] for h in hits] == [i for i, _ in want]
        np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in want], rtol=1e-5)


def expected_after_writes(colbert, index_dir, upserts, deleted):
    """One process, the library: the index's writable form with the same writes (vectors
    encoded as the server's writer encodes them)."""
    encoder = CompiledColBERT(colbert, max_batch=1)
    served = open_index(index_dir).writable()
    added = {d["id"]: np.asarray(encoder.encode_documents([d["text"]])[0]) for d in upserts}
    removed = [i for i in [*added, *deleted] if i in served]
    return served.with_writes(removed, added).search(colbert.encode_queries(QUERIES), k=5)


def ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.text
    return response


def test_two_processes_take_writes_as_one(demo_index, tmp_path):
    colbert, built = demo_index
    folders = [tmp_path / "process-0", tmp_path / "process-1"]  # as on two hosts: a copy each
    for folder in folders:
        shutil.copytree(built, folder)

    # 1. Writes acknowledged, then kill -9 of both processes.
    url, processes = start_two_processes(folders, WRITABLE)
    try:
        wait_until_healthy(url, processes)
        ok(httpx.post(f"{url}/documents", json={"documents": NEW_DOCUMENTS}, timeout=60))
        ok(httpx.delete(f"{url}/documents/{DELETED}", timeout=60))
        after_writes = search_top(url)
    finally:
        stop(processes, signal.SIGKILL)
    expected = expected_after_writes(colbert, built, NEW_DOCUMENTS, [DELETED])
    assert_same(after_writes, expected)

    # 2. Restart: the log replayed on both processes; then a write and a delete, each starting
    # a compaction (merge, warm-up, save on both); SIGTERM compacts what is left.
    def replayed_then_more(url):
        replayed = search_top(url)
        ok(httpx.post(f"{url}/documents", json=LATER, timeout=60))
        ok(httpx.delete(f"{url}/documents/{LATER_DELETED}", timeout=60))
        return replayed, search_top(url)

    extra = [*WRITABLE[:-1], "1"]
    (replayed, later), logs = serve_on_two_processes(
        None, replayed_then_more, extra, index_dirs=folders
    )
    assert_same(replayed, expected)
    assert "compacted and saved the index" in logs[0], logs[0][-3000:]
    assert "saved my copy of the index" in logs[1], logs[1][-3000:]
    found = {h["id"] for hits in later for h in hits}
    assert "new-bread" in found and not {LATER_DELETED, DELETED} & found
    assert later[QUERIES.index("bread yeast")][0]["id"] == "new-bread"

    # 3. Both folders hold every write; a restart serves what one process finds in either.
    metadata = [read_metadata(folder) for folder in folders]
    assert metadata[0]["applied_write_seq"] == metadata[1]["applied_write_seq"] == 6
    single = [open_index(folder).search(colbert.encode_queries(QUERIES), k=5) for folder in folders]
    assert single[0] == single[1]
    (restarted,), _ = serve_on_two_processes(
        None, lambda url: (search_top(url),), WRITABLE, index_dirs=folders
    )
    assert_same(restarted, single[0])


def test_processes_with_different_indexes_refuse_to_start(demo_index, tmp_path):
    _, built = demo_index
    changed = tmp_path / "changed"
    shutil.copytree(built, changed)
    index = open_index(changed)
    index.delete(["demo-001"])
    index.save()
    _, processes = start_two_processes([built, changed])
    logs = [process.communicate(timeout=300)[0] for process in processes]
    assert all(process.returncode != 0 for process in processes), logs[0][-3000:]
    for log in logs:
        assert "the processes loaded different indexes" in log, log[-3000:]


def test_a_dense_index_takes_no_multi_host_writes(dense_index):
    args = argparse.Namespace(writable=True, num_processes=2, documents_db=None)
    with pytest.raises(InputError, match="needs a late-interaction index"):
        documents_api.open_documents(args, dense_index, open_index(dense_index), None, None, print)
