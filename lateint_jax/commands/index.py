"""`lateint index CORPUS INDEX_DIR --model M`: encode a corpus and build an index.

CORPUS is a BEIR folder, a BEIR corpus.jsonl, or a text file with one passage per line.
--kind colbert (default) builds the compressed PLAID index; --kind biencoder a single-vector one.

A ColBERT corpus is encoded a group of passages at a time and streamed into build_index, which
holds at most --memory-budget of token vectors (see build_index); after a crash, --resume skips
the chunks already done and does not encode their passages again.

With --coordinator HOST:PORT --num-processes N --process-id I (the flags of `lateint serve`),
the command is one of N processes of a JAX program (index.distributed_build): each encodes and
compresses its contiguous share of the corpus, and process 0 saves the index, the one-process
build's. INDEX_DIR's parent must be on a filesystem every process sees.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys

import jax

from lateint_jax.data.beir import load_corpus
from lateint_jax.encoders import BiEncoder, ColBERT
from lateint_jax.errors import InputError
from lateint_jax.index.build import MIN_MEMORY_BUDGET, build_dense_index, build_index
from lateint_jax.index.build_state import finished_documents
from lateint_jax.index.distributed_build import build_index_distributed, process_share
from lateint_jax.index.distributed_build import finished_documents as finished_share_documents
from lateint_jax.index.storage import check_index_target, index_size_bytes
from lateint_jax.outputs import refuse_overlap
from lateint_jax.serving.multihost import initialize

ENCODE_GROUP_BATCHES = 16  # passages encoded per encoder call: 16 batches
BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
BYTE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'2GB' -> 2 * 10**9, '512MiB' -> 512 * 2**20, '1e9' or '1000000' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:e[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if match is None or match.group(2) not in BYTE_UNITS:
        raise InputError(
            f"--memory-budget must be a size such as 2GB, 512MiB or 1000000 (bytes), got {text!r}"
        )
    return int(float(match.group(1)) * BYTE_UNITS[match.group(2)])


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "corpus", help="BEIR folder, corpus.jsonl, or text file (one passage per line)"
    )
    parser.add_argument(
        "index_dir",
        help="folder to create (refused if it exists, see --overwrite; never inside CORPUS)",
    )
    parser.add_argument(
        "--model", default="default", help="hub name or local folder (default: the packaged MiniLM)"
    )
    parser.add_argument(
        "--kind",
        choices=("colbert", "biencoder"),
        default="colbert",
        help="a compressed late-interaction index or a single-vector one",
    )
    parser.add_argument(
        "--nbits",
        type=int,
        default=2,
        help="residual bits per dimension: 1, 2 or 4 (4: about twice the bytes per vector, "
        "closer to exact MaxSim: what PyLate and fast-plaid build; docs/SEARCH.md)",
    )
    parser.add_argument(
        "--num-centroids", type=int, default=None, help="default: colbert-ai's rule"
    )
    parser.add_argument("--doc-maxlen", type=int, default=None, help="tokens per passage (ColBERT)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per encoder call")
    parser.add_argument("--seed", type=int, default=0, help="k-means and sampling seed")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing index (only an index this project wrote is ever replaced)",
    )
    parser.add_argument(
        "--memory-budget",
        default="1GiB",
        help="ColBERT: token vectors held in memory at once while building (2GB, 512MiB, bytes)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="ColBERT: continue an interrupted build of INDEX_DIR (same corpus and settings)",
    )
    parser.add_argument(
        "--pool-factor",
        type=int,
        default=1,
        help="ColBERT: hierarchical token pooling keeps about 1/N of each passage's vectors "
        "(PyLate's rule; 1 = none)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--coordinator",
        help="multi-process build: HOST:PORT of process 0 for jax.distributed (all processes)",
    )
    parser.add_argument(
        "--num-processes", type=int, default=1, help="multi-process build: process count"
    )
    parser.add_argument("--process-id", type=int, default=0, help="multi-process build: this one")


def _check_output(args) -> None:
    """Refuse an index_dir that overlaps the corpus or a local --model folder, or that exists
    and may not be replaced (storage.check_index_target); before anything is read or loaded."""
    model = None if args.model == "default" else args.model
    refuse_overlap(args.index_dir, [args.corpus, model], what="index folder")
    check_index_target(args.index_dir, args.overwrite)


def _check_args(args) -> None:
    _check_output(args)
    if args.kind == "colbert" and args.nbits not in (1, 2, 4):
        raise InputError(f"--nbits must be 1, 2 or 4, got {args.nbits}")
    if args.batch_size <= 0:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    if args.num_centroids is not None and args.num_centroids <= 0:
        raise InputError(f"--num-centroids must be positive, got {args.num_centroids}")
    if args.doc_maxlen is not None and args.doc_maxlen < 3:
        raise InputError(f"--doc-maxlen must be at least 3, got {args.doc_maxlen}")
    if args.pool_factor < 1:
        raise InputError(f"--pool-factor must be at least 1, got {args.pool_factor}")
    if args.kind != "colbert" and args.pool_factor != 1:
        raise InputError("--pool-factor applies to a ColBERT index only")
    if args.num_processes < 1:
        raise InputError(f"--num-processes must be at least 1, got {args.num_processes}")
    if args.num_processes > 1 and args.kind != "colbert":
        raise InputError("a multi-process build (--num-processes > 1) builds a ColBERT index only")
    args.memory_budget_bytes = parse_bytes(args.memory_budget)
    if args.memory_budget_bytes < MIN_MEMORY_BUDGET:
        raise InputError(f"--memory-budget must be at least 1MiB, got {args.memory_budget!r}")


class EncodedPassages:
    """The corpus's token vectors, encoded a group at a time while build_index reads them (one
    pass; its len() gives build_index's progress bar a total). The first `skip` passages, which
    a resumed build counts off without reading (index.ingest), are not encoded: None stands in."""

    def __init__(self, encoder, texts, batch_size: int, skip: int = 0, pool_factor: int = 1):
        self.encoder, self.texts, self.batch_size, self.skip = encoder, texts, batch_size, skip
        self.pool_factor = pool_factor

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self):
        yield from itertools.repeat(None, self.skip)
        group = self.batch_size * ENCODE_GROUP_BATCHES
        for start in range(self.skip, len(self.texts), group):
            part = self.texts[start : start + group]
            yield from self.encoder.encode_documents(
                part, batch_size=self.batch_size, pool_factor=self.pool_factor
            )


def run(args) -> int:
    _check_args(args)
    corpus = load_corpus(args.corpus)
    if args.num_processes > 1:
        initialize(args)  # before the encoder touches a device
        try:
            return _run_one_process(args, corpus)
        finally:
            jax.distributed.shutdown()
    model_name = None if args.model == "default" else args.model
    progress = not args.quiet
    if args.kind == "biencoder":
        encoder = BiEncoder.from_pretrained(model_name)
        vectors = encoder.encode(corpus.texts, batch_size=args.batch_size, progress=progress)
        build_dense_index(
            vectors,
            corpus.ids,
            args.index_dir,
            encoder=encoder,
            overwrite=args.overwrite,
        )
        summary = f"{len(corpus)} documents, {vectors.shape[1]}-d vectors"
    else:
        encoder = _colbert(args)
        skip = finished_documents(args.index_dir) if args.resume else 0
        passages = EncodedPassages(encoder, corpus.texts, args.batch_size, skip, args.pool_factor)
        arrays = build_index(
            passages,
            corpus.ids,
            args.index_dir,
            **_build_settings(args, encoder, progress),
        )
        summary = _summary(arrays, args.index_dir)
    print(f"indexed {summary} into {args.index_dir}", file=sys.stderr)
    return 0


def _colbert(args) -> ColBERT:
    overrides = {} if args.doc_maxlen is None else {"doc_maxlen": args.doc_maxlen}
    return ColBERT.from_pretrained(None if args.model == "default" else args.model, **overrides)


def _build_settings(args, encoder, progress: bool) -> dict:
    return {
        "nbits": args.nbits,
        "memory_budget_bytes": args.memory_budget_bytes,
        "resume": args.resume,
        "num_centroids": args.num_centroids,
        "seed": args.seed,
        "encoder": encoder,
        "metadata": {"pool_factor": args.pool_factor},
        "overwrite": args.overwrite,
        "progress": progress,
    }


def _summary(arrays, index_dir) -> str:
    total = sum(index_size_bytes(index_dir).values())
    return (
        f"{arrays.num_docs} documents, {arrays.num_embeddings} token vectors, "
        f"{arrays.num_centroids} centroids, {total / arrays.num_embeddings:.1f} bytes/vector"
    )


def _run_one_process(args, corpus) -> int:
    """One process of a multi-process build: encode and compress this process's share."""
    share = process_share(len(corpus), jax.process_index(), jax.process_count())
    encoder = _colbert(args)
    skip = finished_share_documents(args.index_dir, args.process_id) if args.resume else 0
    texts = corpus.texts[share.start : share.stop]
    passages = EncodedPassages(encoder, texts, args.batch_size, skip, args.pool_factor)
    arrays = build_index_distributed(
        passages,
        corpus.ids[share.start : share.stop],
        args.index_dir,
        **_build_settings(args, encoder, not args.quiet),
    )
    if arrays is None:
        summary = f"documents {share.start}..{share.stop - 1}; process 0 saved the index"
    else:
        summary = _summary(arrays, args.index_dir)
    print(f"[process {args.process_id}] indexed {summary} into {args.index_dir}", file=sys.stderr)
    return 0
