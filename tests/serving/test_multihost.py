"""The server as a two-process JAX program on localhost (gloo collectives): the index sharded
over both processes' devices, process 0 answering HTTP, results equal to one process's."""

import signal
import subprocess

import httpx
import numpy as np
import pytest

from lateint_jax import open_index
from lateint_jax.cli import main as lateint
from lateint_jax.data.beir import load_corpus
from lateint_jax.encoders import BiEncoder, ColBERT
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


def serve_on_two_processes(index_dir, ask):
    """Run serve.py as a two-process program over index_dir, call ask(url) once it answers,
    shut it down; -> what ask returned. Checks that process 1 left cleanly."""
    http_port, coordinator = free_port(), f"127.0.0.1:{free_port()}"
    processes = []
    for process_id in (0, 1):
        args = [
            "--index", index_dir, "--corpus", DEMO_CORPUS, "--port", http_port,
            "--max-batch", "1", "--max-k", "10", "--coordinator", coordinator,
            "--num-processes", "2", "--process-id", process_id,
        ]  # fmt: skip
        processes.append(spawn_serve(args, devices=2))  # 2 devices per process
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_until_healthy(url, processes)
        stats = httpx.get(f"{url}/stats", timeout=30).json()
        assert stats["process_count"] == 2 and stats["device_count"] == 4
        answers = ask(url)
    finally:
        processes[0].send_signal(signal.SIGTERM)
        logs = []
        for process in processes:
            try:
                logs.append(process.communicate(timeout=120)[0])
            except subprocess.TimeoutExpired:
                process.kill()
                logs.append(process.communicate()[0])
    assert "[process 1] stopped" in logs[1], logs[1][-3000:]
    return answers


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
    served, served_subset = serve_on_two_processes(index_dir, lambda url: search_all(url, subset))

    # One process, every local device (8 here): same ids, same scores.
    single = open_index(index_dir).search(colbert.encode_queries(QUERIES), k=5)
    for hits, expected in zip(served, single):
        assert [h["id"] for h in hits] == [i for i, _ in expected]
        np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in expected], rtol=1e-5)
    assert [h["id"] for h in served_subset] == ["demo-042", served_subset[1]["id"]]
    assert {h["id"] for h in served_subset} <= set(subset)


def test_two_processes_serve_a_dense_index_as_one(tmp_path):
    index_dir = tmp_path / "dense-index"
    assert (
        lateint(["index", str(DEMO_CORPUS), str(index_dir), "--kind", "biencoder", "--quiet"]) == 0
    )
    subset = [f"demo-{n:03d}" for n in range(0, 70, 3)]
    served, served_subset = serve_on_two_processes(index_dir, lambda url: search_all(url, subset))

    index, encoder = open_index(index_dir), BiEncoder.from_pretrained(None)
    single = index.search(encoder.encode(QUERIES), k=5)
    single_subset = index.search(encoder.encode(QUERIES[:1]), k=2, subset_ids=subset)
    for hits, expected in zip([*served, served_subset], [*single, *single_subset]):
        assert [h["id"] for h in hits] == [i for i, _ in expected]
        np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in expected], rtol=1e-5)
