"""The coalescing queue, shape buckets, service stats and request validation."""

import threading
import time

import numpy as np
import pytest
from pydantic import ValidationError

from lateint_jax.serving.batching import Batcher
from lateint_jax.serving.schemas import LIMITS, EncodeRequest, RerankRequest, SearchRequest
from lateint_jax.serving.stats import ServiceStats
from lateint_jax.shapes import bucket_for, chunks, pad_axis, powers_of_two_up_to


def test_concurrent_submits_are_coalesced_into_few_batches():
    seen = []

    def double(items):
        seen.append(len(items))
        time.sleep(0.02)  # a slow device call: later arrivals pile up meanwhile
        return [2 * x for x in items]

    batcher = Batcher(double, max_batch=8, max_wait_s=0.05)
    results = {}

    def client(i):
        results[i] = batcher.submit(i).result(timeout=10)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {i: 2 * i for i in range(32)}
    assert sum(seen) == 32
    assert max(seen) <= 8
    assert len(seen) < 32, f"nothing was coalesced: batch sizes {seen}"
    assert batcher.stats.largest == max(seen)


def test_a_lone_item_waits_at_most_max_wait():
    batcher = Batcher(lambda items: items, max_batch=64, max_wait_s=0.05)
    started = time.perf_counter()
    assert batcher.submit("x").result(timeout=5) == "x"
    assert time.perf_counter() - started < 2.0
    batcher.close()


def test_after_a_lone_batch_a_lone_item_runs_without_waiting():
    wait_s = 2.0
    batcher = Batcher(lambda items: items, max_batch=64, max_wait_s=wait_s)
    started = time.perf_counter()
    assert batcher.submit("first").result(timeout=10) == "first"
    assert time.perf_counter() - started >= wait_s * 0.9  # nothing known yet: it waits
    started = time.perf_counter()
    assert batcher.submit("second").result(timeout=10) == "second"
    assert time.perf_counter() - started < wait_s / 2, "a lone request waited for company"
    batcher.close()


def test_a_failing_batch_fails_its_callers_and_the_worker_survives():
    def fragile(items):
        if "bad" in items:
            raise ValueError("bad item")
        return items

    batcher = Batcher(fragile, max_batch=4, max_wait_s=0.0)
    with pytest.raises(ValueError, match="bad item"):
        batcher.submit("bad").result(timeout=5)
    assert batcher.submit("good").result(timeout=5) == "good"
    batcher.close()


def test_wrong_result_count_is_reported():
    batcher = Batcher(lambda items: items[:-1], max_batch=4, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        batcher.submit(1).result(timeout=5)
    batcher.close()


def test_one_callers_items_run_together_and_the_next_caller_does_not_wait():
    wait_s = 2.0
    seen = []
    batcher = Batcher(
        lambda items: seen.append(list(items)) or items, max_batch=4, max_wait_s=wait_s
    )
    started = time.perf_counter()
    futures = batcher.submit_many(list(range(10)))  # a request's pairs: more than one batch
    assert [f.result(timeout=10) for f in futures] == list(range(10))
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], "a caller's items were split or reordered"
    assert time.perf_counter() - started < wait_s * 1.5, "the carried items waited again"
    started = time.perf_counter()
    assert [f.result(timeout=10) for f in batcher.submit_many(["a", "b"])] == ["a", "b"]
    assert time.perf_counter() - started < wait_s / 2, "a lone caller's items waited for company"
    assert seen[-1] == ["a", "b"]
    batcher.close()


def test_close_serves_queued_items_then_refuses_new_ones():
    gate = threading.Event()

    def slow(items):
        gate.wait(5)
        return items

    batcher = Batcher(slow, max_batch=2, max_wait_s=0.0)
    futures = [batcher.submit(i) for i in range(5)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    gate.set()
    closer.join(10)
    assert [f.result(timeout=5) for f in futures] == list(range(5))
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(6)


def test_buckets():
    assert powers_of_two_up_to(32) == (1, 2, 4, 8, 16, 32)
    assert powers_of_two_up_to(24) == (1, 2, 4, 8, 16, 24)
    assert bucket_for(3, (1, 2, 4, 8)) == 4
    assert bucket_for(8, (1, 2, 4, 8)) == 8
    with pytest.raises(ValueError, match="exceeds"):
        bucket_for(9, (1, 2, 4, 8))
    assert chunks(5, 2) == [(0, 2), (2, 4), (4, 5)]
    a = np.ones((3, 2), np.int32)
    assert pad_axis(a, 4).shape == (4, 2) and pad_axis(a, 4)[3].sum() == 0
    assert pad_axis(a, 5, axis=1, value=7)[:, 2:].tolist() == [[7, 7, 7]] * 3


def test_stats_percentiles_and_counts():
    stats = ServiceStats()
    for ms in range(1, 101):
        stats.record("/search", 200, ms / 1000.0)
    stats.record("/search", 422, 0.5)
    snap = stats.snapshot()
    assert snap["requests"] == 101
    assert snap["responses_by_status"] == {"2xx": 100, "4xx": 1}
    # Failed requests count but do not enter the latency window.
    assert snap["latency_ms"]["count"] == 100
    assert snap["latency_ms"]["p50"] == pytest.approx(50.5)
    assert snap["latency_ms"]["p99"] == pytest.approx(99.01)


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "give exactly one"),
        ({"query": "a", "queries": ["b"]}, "give exactly one"),
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "a", "k": 0}, "k"),
        ({"query": "a", "k": LIMITS.max_k + 1}, "k"),
        ({"query": "a" * (LIMITS.max_query_chars + 1)}, "query"),
        ({"queries": ["a"] * (LIMITS.max_queries + 1)}, "queries"),
        ({"queries": ["a", " "]}, "queries[1]"),
        ({"query": "a", "k": "ten"}, "k"),
        ({"query": "a", "rerank": {"depth": 0}}, "depth"),
        ({"query": "a", "rerank": {"depth": 5}, "rerank_depth": 6}, "disagree"),
        ({"query": "a", "surprise": 1}, "surprise"),
    ],
)
def test_search_request_rejects_bad_bodies(body, field):
    with pytest.raises(ValidationError) as info:
        SearchRequest.model_validate(body)
    assert field in str(info.value)


def test_search_request_accepts_both_forms():
    one = SearchRequest.model_validate({"query": "tides", "k": 3, "rerank_depth": 20})
    assert one.texts == ["tides"] and one.depth == 20
    many = SearchRequest.model_validate({"queries": ["a", "b"], "rerank": {"depth": 7}})
    assert many.texts == ["a", "b"] and many.depth == 7 and many.k == 10
    assert SearchRequest.model_validate({"query": "x"}).depth is None


def test_rerank_and_encode_requests_validate():
    with pytest.raises(ValidationError, match="passages"):
        RerankRequest.model_validate({"query": "q", "passages": []})
    with pytest.raises(ValidationError, match="kind"):
        EncodeRequest.model_validate({"texts": ["a"], "kind": "image"})
    with pytest.raises(ValidationError, match=r"texts\[0\]"):
        EncodeRequest.model_validate({"texts": [""]})
