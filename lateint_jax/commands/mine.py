"""`lateint mine BEIR_FOLDER OUT.jsonl`: hard negatives for a qrels split, written as n-way tuples
(ids resolved later against the same corpus; see lateint_jax.data.tuples)."""

from __future__ import annotations

import time


def configure(parser) -> None:
    parser.add_argument("beir_folder", help="BEIR folder with corpus.jsonl, queries.jsonl, qrels/")
    parser.add_argument("output", help="tuples JSONL to write")
    parser.add_argument("--split", default="train", help="qrels split to mine (default: train)")
    parser.add_argument("--first-stage", choices=["bm25", "colbert"], default="bm25")
    parser.add_argument("--model", default=None, help="ColBERT model for --first-stage colbert")
    parser.add_argument("--depth", type=int, default=100, help="candidates ranked per query")
    parser.add_argument("--negatives", type=int, default=31, help="negatives kept per tuple")


def run(args) -> int:
    from lateint_jax.data import mining, tuples
    from lateint_jax.errors import InputError

    if args.negatives < 1 or args.depth < args.negatives:
        raise InputError("--negatives must be >= 1 and --depth >= --negatives")
    start = time.perf_counter()
    corpus = tuples.read_beir_corpus(args.beir_folder)
    queries = tuples.read_beir_queries(args.beir_folder)
    qrels = tuples.read_beir_qrels(args.beir_folder, args.split)
    wanted = {q: queries[q] for q in qrels if q in queries}
    if args.first_stage == "bm25":
        rankings = mining.bm25_rankings(corpus, wanted, args.depth)
    else:
        from lateint_jax.encoders import ColBERT

        model = ColBERT.from_pretrained(args.model)
        rankings = mining.colbert_rankings(model, corpus, wanted, args.depth)
    lines = mining.mine_tuples(rankings, qrels, args.negatives)
    tuples.write_tuples(args.output, lines)
    elapsed = time.perf_counter() - start
    print(f"wrote {len(lines)} tuples for {len(wanted)} queries to {args.output} ({elapsed:.1f}s)")
    return 0
