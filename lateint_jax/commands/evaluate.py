"""`lateint evaluate INDEX_DIR BEIR_FOLDER [--split test] [--json OUT] [--k 100]`.

Encodes the split's judged queries with the model recorded in the index, searches the index in
batches, and prints nDCG@10, MRR@10 and Recall@100 (pytrec_eval); --json writes them with the
keys `ndcg@10`, `mrr@10`, `recall@100`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from lateint_jax.data.beir import load_beir
from lateint_jax.errors import InputError
from lateint_jax.eval import METRIC_KEYS, evaluate_dataset
from lateint_jax.index.open import open_index
from lateint_jax.index_model import encoder_for_index


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index_dir", help="an index built by `lateint index`")
    parser.add_argument("beir_folder", help="BEIR folder with queries.jsonl and qrels/<split>.tsv")
    parser.add_argument("--split", default="test", help="qrels split (default: test)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the metrics as JSON")
    parser.add_argument("--k", type=int, default=100, help="documents retrieved per query")
    parser.add_argument("--batch-size", type=int, default=64, help="queries per search call")
    parser.add_argument(
        "--model",
        default=None,
        help="must name the index's model (default: the index's); for an index built from "
        "vectors, which records none, the checkpoint that encoded them",
    )


def write_json_atomic(path, value) -> None:
    """Write JSON beside the target, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args) -> int:
    if args.k <= 0:
        raise InputError(f"--k must be positive, got {args.k}")
    if args.batch_size <= 0:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    dataset = load_beir(args.beir_folder, args.split, with_corpus=False)  # fails before loading
    index = open_index(args.index_dir)
    encoder = encoder_for_index(index.metadata, args.model)
    if min(args.k, index.num_live) < 100:
        print(
            f"note: retrieving {min(args.k, index.num_live)} documents per query, so Recall@100 "
            "is capped",
            file=sys.stderr,
        )
    metrics = evaluate_dataset(
        index, dataset, encoder=encoder, k=args.k, batch_size=args.batch_size
    )
    queries = len(dataset.queries)
    print(f"{args.index_dir} on {args.beir_folder} ({args.split}, {queries} queries)")
    for key in METRIC_KEYS:
        print(f"  {key:<11} {metrics[key]:.4f}")
    if args.json:
        write_json_atomic(args.json, metrics)
    return 0
