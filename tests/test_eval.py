"""Metrics against values worked out by hand on tiny runs."""

import math

import pytest

from lateint_jax.errors import InputError
from lateint_jax.eval import evaluate_run, results_to_run


def ranked(*doc_ids):
    """A run for one query with the given ranking (scores descending)."""
    return {d: float(len(doc_ids) - i) for i, d in enumerate(doc_ids)}


def test_single_relevant_at_rank_two():
    metrics = evaluate_run({"q": ranked("x", "a", "y")}, {"q": {"a": 1}})
    assert metrics["mrr@10"] == pytest.approx(0.5)
    assert metrics["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert metrics["recall@100"] == pytest.approx(1.0)


def test_graded_relevance_and_partial_recall():
    # relevant a (2) at rank 3, b (1) at rank 1, c (1) never retrieved
    metrics = evaluate_run({"q": ranked("b", "x", "a")}, {"q": {"a": 2, "b": 1, "c": 1}})
    dcg = (2**1 - 1) / math.log2(2) + (2**2 - 1) / math.log2(4)
    ideal = (2**2 - 1) / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    # trec_eval's ndcg uses gain = relevance (not 2**rel - 1)
    dcg_linear = 1 / math.log2(2) + 2 / math.log2(4)
    ideal_linear = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics["ndcg@10"] == pytest.approx(dcg_linear / ideal_linear)
    assert metrics["ndcg@10"] != pytest.approx(dcg / ideal)
    assert metrics["mrr@10"] == pytest.approx(1.0)
    assert metrics["recall@100"] == pytest.approx(2 / 3)


def test_mrr_cut_at_ten_and_averaging():
    eleven = [f"n{i}" for i in range(10)] + ["a"]
    run = {"q1": ranked(*eleven), "q2": ranked("b")}
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}, "q4": {"d": 0}}
    metrics = evaluate_run(run, qrels)
    # q1: relevant at 11 -> mrr 0, ndcg@10 0, recall 1; q2 perfect; q3 unanswered -> 0;
    # q4 has no relevant document -> not counted
    assert metrics["mrr@10"] == pytest.approx(1 / 3)
    assert metrics["ndcg@10"] == pytest.approx(1 / 3)
    assert metrics["recall@100"] == pytest.approx(2 / 3)


def test_results_to_run_and_errors():
    run = results_to_run(["q"], [[("a", 2.0), ("b", 1.5)]])
    assert run == {"q": {"a": 2.0, "b": 1.5}}
    with pytest.raises(InputError, match="1 query ids but 2"):
        results_to_run(["q"], [[], []])
    with pytest.raises(InputError, match="no query with a relevant"):
        evaluate_run(run, {"q": {"a": 0}})
