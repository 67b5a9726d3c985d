"""How the server's rerank stage splits sorted pairs into calls (`rerank.plan_calls`)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lateint_jax.serving.rerank import plan_calls
from lateint_jax.shapes import bucket_for

BATCHES = (1, 2, 4, 8)
LENGTHS = (16, 32, 64, 128)


def per_token_cost(extra_per_batch: float):
    """Padded tokens, each dearer in a bigger batch (as on CPU), plus a per-call overhead."""
    return lambda batch, length: batch * length * (1 + extra_per_batch * batch) + 8.0


def total(calls, lengths, cost) -> float:
    return sum(
        cost(bucket_for(stop - start, BATCHES), bucket_for(int(lengths[stop - 1]), LENGTHS))
        for start, stop in calls
    )


def all_splits(n: int):
    """Every way to cut range(n) into contiguous calls of at most BATCHES[-1]."""
    for cuts in itertools.product((False, True), repeat=n - 1):
        bounds = [0] + [i + 1 for i, cut in enumerate(cuts) if cut] + [n]
        calls = list(itertools.pairwise(bounds))
        if all(stop - start <= BATCHES[-1] for start, stop in calls):
            yield calls


@pytest.mark.parametrize("seed", range(6))
def test_plan_is_the_cheapest_split(seed):
    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(1, 129, size=int(rng.integers(1, 12))))
    cost = per_token_cost(float(rng.choice([0.0, 0.05, 0.3])))
    calls = plan_calls(lengths, cost, BATCHES, LENGTHS)
    assert [i for call in calls for i in range(*call)] == list(range(len(lengths))), f"seed {seed}"
    best = min(total(split, lengths, cost) for split in all_splits(len(lengths)))
    assert total(calls, lengths, cost) == pytest.approx(best), f"seed {seed}: {calls}"


def test_short_pairs_are_not_padded_to_the_longest():
    lengths = np.array([20, 20, 20, 20, 20, 20, 120])
    calls = plan_calls(lengths, per_token_cost(0.0), BATCHES, LENGTHS)
    assert calls == [(0, 2), (2, 6), (6, 7)]


def test_a_machine_where_big_batches_are_cheap_gets_one_call():
    lengths = np.full(8, 100)
    gpu_like = lambda batch, length: 1.0  # a call costs the same whatever its size
    assert plan_calls(lengths, gpu_like, BATCHES, LENGTHS) == [(0, 8)]
    assert len(plan_calls(lengths, per_token_cost(0.3), BATCHES, LENGTHS)) > 1


def test_no_pairs_no_calls():
    assert plan_calls(np.zeros((0,), np.int64), per_token_cost(0.0), BATCHES, LENGTHS) == []
