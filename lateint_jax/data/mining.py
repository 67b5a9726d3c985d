"""Hard-negative mining: rank the corpus for each training query with a first stage, drop the
query's positives, and write one n-way tuple per (query, positive) pair.

First stages: "bm25" (bm25s, English stemming when PyStemmer is installed) or "colbert"
(exhaustive MaxSim of a ColBERT model over the whole corpus; fine for corpora of a few
thousand documents).
"""

from __future__ import annotations

import logging

import numpy as np

from lateint_jax import scoring
from lateint_jax.errors import InputError

logger = logging.getLogger(__name__)


def bm25_rankings(
    corpus: dict[str, str], queries: dict[str, str], depth: int
) -> dict[str, list[str]]:
    """{query id: the top `depth` corpus ids by BM25}, best first."""
    import bm25s  # optional (the train extra): imported only when BM25 is asked for

    try:
        import Stemmer  # optional too: BM25 runs without stemming when it is missing

        stemmer = Stemmer.Stemmer("english")
    except ImportError:
        stemmer = None
        logger.warning("PyStemmer not installed: BM25 without stemming")
    doc_ids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(
            [corpus[d] for d in doc_ids], stopwords="en", stemmer=stemmer, show_progress=False
        ),
        show_progress=False,
    )
    qids = list(queries)
    tokens = bm25s.tokenize(
        [queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False
    )
    hits, _ = retriever.retrieve(tokens, k=min(depth, len(doc_ids)), show_progress=False)
    return {qid: [doc_ids[i] for i in row] for qid, row in zip(qids, hits)}


def colbert_run(
    model, corpus: dict[str, str], queries: dict[str, str], depth: int, batch_size: int = 32
) -> dict[str, dict[str, float]]:
    """{query id: {doc id: MaxSim}} of the top `depth` docs by exact MaxSim of `model` (a
    ColBERT encoder) over the whole corpus: a first stage, and an exact evaluation run."""
    doc_ids = list(corpus)
    docs = model.encode_documents([corpus[d] for d in doc_ids], batch_size=batch_size)
    longest = max(len(d) for d in docs)
    padded = np.zeros((len(docs), longest, docs[0].shape[-1]), np.float32)
    mask = np.zeros((len(docs), longest), bool)
    for i, d in enumerate(docs):
        padded[i, : len(d)] = d
        mask[i, : len(d)] = True
    qids = list(queries)
    run = {}
    for start in range(0, len(qids), 64):
        chunk = qids[start : start + 64]
        q = model.encode_queries([queries[x] for x in chunk])
        scores = np.concatenate(
            [
                np.asarray(scoring.maxsim_jit(q, padded[s : s + 1024], mask[s : s + 1024]))
                for s in range(0, len(docs), 1024)
            ],
            axis=1,
        )
        top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
        for qid, row, values in zip(chunk, top, scores):
            run[qid] = {doc_ids[i]: float(values[i]) for i in row}
    return run


def colbert_rankings(
    model, corpus: dict[str, str], queries: dict[str, str], depth: int
) -> dict[str, list[str]]:
    """{query id: top `depth` corpus ids by exact MaxSim of `model`}, best first."""
    run = colbert_run(model, corpus, queries, depth)
    return {q: sorted(docs, key=docs.get, reverse=True) for q, docs in run.items()}


def mine_tuples(
    rankings: dict[str, list[str]],
    qrels: dict[str, dict[str, int]],
    num_negatives: int,
) -> list[dict]:
    """One tuple dict per (query, relevant doc): {"qid", "pos_id", "neg_ids"}.

    Every doc judged relevant for the query is removed from its negatives. Queries whose ranking
    leaves fewer than `num_negatives` negatives are skipped (with a warning).
    """
    lines, short = [], 0
    for qid, judged in qrels.items():
        if qid not in rankings:
            raise InputError(f"query {qid!r} from the qrels has no ranking (missing from queries?)")
        positives = {d for d, rel in judged.items() if rel > 0}
        negatives = [d for d in rankings[qid] if d not in judged][:num_negatives]
        if len(negatives) < num_negatives:
            short += 1
            continue
        lines += [{"qid": qid, "pos_id": p, "neg_ids": negatives} for p in sorted(positives)]
    if short:
        logger.warning(
            "%d queries had fewer than %d negatives and were skipped", short, num_negatives
        )
    return lines


def title_pseudo_queries(
    titled: dict[str, tuple[str, str]], rankings: dict[str, list[str]], num_negatives: int
) -> list[dict]:
    """Domain-adaptation tuples from a corpus alone: passage d's title is the query, d's body
    (title removed, or the match would be trivial) the positive, and the bodies of the first
    stage's best hits for that title, d excluded, the negatives.

    titled: {doc id: (title, body)} of the passages to turn into queries and of every passage
    `rankings` may name; rankings: {doc id: corpus ids ranked for its title}.
    """
    lines, short = [], 0
    for doc_id, ranked in rankings.items():
        negatives = [d for d in ranked if d != doc_id][:num_negatives]
        if len(negatives) < num_negatives:
            short += 1
            continue
        title, body = titled[doc_id]
        lines.append(
            {
                "query": title,
                "pos_id": doc_id,
                "positive": body,
                "neg_ids": negatives,
                "negatives": [titled[d][1] for d in negatives],
            }
        )
    if short:
        logger.warning(
            "%d titles had fewer than %d negatives and were skipped", short, num_negatives
        )
    return lines


def with_texts(lines: list[dict], corpus: dict[str, str], queries: dict[str, str]) -> list[dict]:
    """Mined tuples with their texts inlined ("query", "positive", "negatives"), so they train
    without the corpus at hand (e.g. after reading the data through TFDS)."""
    return [
        {
            **line,
            "query": queries[line["qid"]],
            "positive": corpus[line["pos_id"]],
            "negatives": [corpus[d] for d in line["neg_ids"]],
        }
        for line in lines
    ]
