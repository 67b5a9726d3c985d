"""`lateint teacher TUPLES OUT --model CROSS_ENCODER`: score every (query, document) of each
tuple with a cross-encoder and write the logits as the tuple's "scores" (distillation labels).

Each tuple is cut to its positive + (nway - 1) first negatives before scoring, so the output
holds exactly the documents the student will see.
"""

from __future__ import annotations

import time

import numpy as np

from lateint_jax.data import beir
from lateint_jax.data import tuples as tuples_lib
from lateint_jax.encoders import CrossEncoder
from lateint_jax.errors import InputError


def configure(parser) -> None:
    parser.add_argument("tuples", help="tuples JSONL (see lateint_jax.data.tuples)")
    parser.add_argument("output", help="tuples JSONL to write, with teacher scores")
    parser.add_argument("--model", required=True, help="cross-encoder checkpoint (dir or hub name)")
    parser.add_argument("--beir-folder", default=None, help="resolves qid/pos_id/neg_ids")
    parser.add_argument("--nway", type=int, default=8, help="documents kept per tuple")
    parser.add_argument("--max-length", type=int, default=None, help="pair length (tokens)")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per model call")
    parser.add_argument(
        "--sample", type=int, default=None, help="score only this many tuples (a seeded sample)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")


def run(args) -> int:
    if args.nway < 2:
        raise InputError(f"--nway must be >= 2, got {args.nway}")
    start = time.perf_counter()
    corpus = queries = None
    if args.beir_folder:
        corpus, queries = tuples_lib.beir_texts(args.beir_folder)
    lines, pairs = [], []
    for number, line in beir.read_json_lines(args.tuples):
        where = f"{args.tuples}:{number}"
        query, documents = tuples_lib.resolve_line(line, where, corpus=corpus, queries=queries)
        if len(documents) < args.nway:
            raise InputError(
                f"{where}: has {len(documents)} documents, fewer than --nway {args.nway}"
            )
        line = dict(line)
        for key in ("neg_ids", "negatives"):
            if isinstance(line.get(key), list):
                line[key] = line[key][: args.nway - 1]
        lines.append(line)
        pairs += [(query, d) for d in documents[: args.nway]]
    if args.sample is not None and args.sample < len(lines):
        keep = np.sort(np.random.default_rng(args.seed).permutation(len(lines))[: args.sample])
        lines = [lines[i] for i in keep]
        pairs = [pairs[i * args.nway + j] for i in keep for j in range(args.nway)]
    model = CrossEncoder.from_pretrained(args.model, max_length=args.max_length)
    scores = model.score([q for q, _ in pairs], [d for _, d in pairs], batch_size=args.batch_size)
    for i, line in enumerate(lines):
        line["scores"] = [round(float(s), 4) for s in scores[i * args.nway : (i + 1) * args.nway]]
    tuples_lib.write_tuples(args.output, lines)
    elapsed = time.perf_counter() - start
    print(f"scored {len(pairs)} pairs of {len(lines)} tuples into {args.output} ({elapsed:.1f}s)")
    return 0
