"""`lateint mine BEIR_FOLDER OUT.jsonl`: hard negatives for a qrels split, written as n-way tuples
(ids resolved later against the same corpus; see lateint_jax.data.tuples)."""

from __future__ import annotations

import time

import numpy as np

from lateint_jax.data import beir, mining, tuples
from lateint_jax.encoders import ColBERT
from lateint_jax.errors import InputError


def configure(parser) -> None:
    parser.add_argument("beir_folder", help="BEIR folder with corpus.jsonl, queries.jsonl, qrels/")
    parser.add_argument("output", help="tuples JSONL to write")
    parser.add_argument("--split", default="train", help="qrels split to mine (default: train)")
    parser.add_argument(
        "--first-stage",
        choices=["bm25", "colbert"],
        default="bm25",
        help="what ranks the corpus for each query",
    )
    parser.add_argument("--model", default=None, help="ColBERT model for --first-stage colbert")
    parser.add_argument("--depth", type=int, default=100, help="candidates ranked per query")
    parser.add_argument("--negatives", type=int, default=31, help="negatives kept per tuple")
    parser.add_argument(
        "--title-queries",
        type=int,
        metavar="N",
        default=0,
        help="instead of the qrels, mine N pseudo-queries from the corpus (domain adaptation): "
        "a passage's title is the query, its text the positive (titles left out of every "
        "passage); passages sampled with --seed",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed for --title-queries")


def run(args) -> int:
    if args.negatives < 1 or args.depth < args.negatives:
        raise InputError("--negatives must be >= 1 and --depth >= --negatives")
    if args.title_queries < 0:
        raise InputError(f"--title-queries must be >= 0, got {args.title_queries}")
    start = time.perf_counter()
    lines, what = _title_query_tuples(args) if args.title_queries else _qrels_tuples(args)
    tuples.write_tuples(args.output, lines)
    elapsed = time.perf_counter() - start
    print(f"wrote {len(lines)} {what} to {args.output} ({elapsed:.1f}s)")
    return 0


def _qrels_tuples(args) -> tuple[list[dict], str]:
    corpus = beir.load_corpus(args.beir_folder).passages_by_id()
    queries = beir.load_queries(args.beir_folder)
    qrels = beir.load_qrels(args.beir_folder, args.split)
    wanted = {q: queries[q] for q in qrels if q in queries}
    lines = mining.mine_tuples(_rankings(args, corpus, wanted), qrels, args.negatives)
    return lines, f"tuples for {len(wanted)} queries"


def _rankings(args, corpus: dict[str, str], queries: dict[str, str]) -> dict[str, list[str]]:
    if args.first_stage == "bm25":
        return mining.bm25_rankings(corpus, queries, args.depth)
    model = ColBERT.from_pretrained(args.model)
    return mining.colbert_rankings(model, corpus, queries, args.depth)


def _title_query_tuples(args) -> tuple[list[dict], str]:
    corpus = beir.load_corpus(args.beir_folder)
    titled = dict(zip(corpus.ids, zip(corpus.titles, corpus.bodies)))
    with_title = sorted(d for d, (title, text) in titled.items() if title.strip() and text.strip())
    if len(with_title) < args.title_queries:
        raise InputError(
            f"--title-queries {args.title_queries}: the corpus has only {len(with_title)} "
            "passages with both a title and a text"
        )
    rng = np.random.default_rng(args.seed)
    chosen = [with_title[i] for i in rng.choice(len(with_title), args.title_queries, replace=False)]
    bodies = dict(zip(corpus.ids, corpus.bodies))
    rankings = _rankings(args, bodies, {d: titled[d][0] for d in chosen})
    lines = mining.title_pseudo_queries(titled, rankings, args.negatives)
    return lines, "title pseudo-query tuples"
