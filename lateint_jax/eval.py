"""Retrieval metrics via pytrec_eval (trec_eval's own code): nDCG@10, MRR@10, Recall@100, and
`evaluate(index, beir_folder)`, which searches a BEIR split's queries and scores the run.

MRR@10 is trec_eval's `recip_rank` on the run cut to each query's 10 best documents. Scores are
averaged over every judged query that has at least one relevant document; a query the run does
not answer counts as 0 (BEIR instead averages over the answered queries only; with a complete
run the two agree).
"""

from __future__ import annotations

import numpy as np
import pytrec_eval

from lateint_jax.data.beir import BeirDataset, load_beir
from lateint_jax.errors import InputError
from lateint_jax.index.base import Index
from lateint_jax.index_model import encoder_for_index

METRIC_KEYS = ("ndcg@10", "mrr@10", "recall@100")


def _top(docs: dict[str, float], k: int) -> dict[str, float]:
    ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:k])


def evaluate_run(
    run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]
) -> dict[str, float]:
    """run {query id: {doc id: score}}, qrels {query id: {doc id: relevance}}
    -> {"ndcg@10", "mrr@10", "recall@100"} means over the judged queries."""
    judged = [q for q, docs in qrels.items() if any(rel > 0 for rel in docs.values())]
    if not judged:
        raise InputError("qrels hold no query with a relevant document")
    qrels = {q: {d: int(r) for d, r in qrels[q].items()} for q in judged}
    run = {
        str(q): {str(d): float(s) for d, s in docs.items()}
        for q, docs in run.items()
        if q in qrels and docs
    }
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    cut = {q: _top(docs, 10) for q, docs in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    per_query = {
        "ndcg@10": [full.get(q, {}).get("ndcg_cut_10", 0.0) for q in judged],
        "mrr@10": [rr.get(q, {}).get("recip_rank", 0.0) for q in judged],
        "recall@100": [full.get(q, {}).get("recall_100", 0.0) for q in judged],
    }
    return {key: float(np.mean(values)) for key, values in per_query.items()}


def results_to_run(
    query_ids: list[str], results: list[list[tuple[str, float]]]
) -> dict[str, dict[str, float]]:
    """Search output (one [(doc id, score), ...] list per query) -> a pytrec_eval run."""
    if len(query_ids) != len(results):
        raise InputError(f"{len(query_ids)} query ids but {len(results)} result lists")
    return {q: {d: float(s) for d, s in hits} for q, hits in zip(query_ids, results)}


def search_texts(index: Index, encoder, texts: list[str], k: int, batch_size: int = 64):
    """Encode `texts` as queries and search: one [(doc id, score), ...] list per text."""
    results = []
    for start in range(0, len(texts), batch_size):
        queries = encoder.encode_queries(texts[start : start + batch_size], batch_size=batch_size)
        results.extend(index.search(queries, k=k))
    return results


def evaluate(
    index: Index,
    beir_folder,
    split: str = "test",
    *,
    encoder=None,
    k: int = 100,
    batch_size: int = 64,
) -> dict[str, float]:
    """Search every judged query of a BEIR split (queries encoded by `encoder`, default: the
    model the index records) and return {"ndcg@10", "mrr@10", "recall@100"}."""
    dataset = load_beir(beir_folder, split, with_corpus=False)
    return evaluate_dataset(index, dataset, encoder=encoder, k=k, batch_size=batch_size)


def evaluate_dataset(
    index: Index, dataset: BeirDataset, *, encoder=None, k: int = 100, batch_size: int = 64
) -> dict[str, float]:
    """`evaluate` on a split already read (`data.beir.load_beir`)."""
    if k <= 0 or batch_size <= 0:
        raise InputError(f"k and batch_size must be positive, got {k} and {batch_size}")
    encoder = encoder if encoder is not None else encoder_for_index(index.metadata)
    query_ids = list(dataset.queries)
    texts = [dataset.queries[q] for q in query_ids]
    results = search_texts(index, encoder, texts, k, batch_size)  # k above the index: all
    return evaluate_run(results_to_run(query_ids, results), dataset.qrels)
