"""The server as a multi-host JAX program: the index sharded over every process's devices.

Every process runs `serve.py` with the same `--index`, `--coordinator HOST:PORT` and
`--num-processes N`, and its own `--process-id`. Process 0 loads the encoder, the corpus and the
reranker and answers HTTP; the index is split by document over the devices of all processes.
A sharded search is one SPMD program that every process must enter with the same inputs, so
process 0 broadcasts each search call (a fixed-size header, the query block, and a subset mask
when there is one) before running it, and the other processes replay it in a loop. Everything
else (encoding, reranking, explanations, subset scoring of small subsets) stays on process 0.

On CPU the collectives go through gloo.
"""

from __future__ import annotations

import sys
from dataclasses import astuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from lateint_jax.errors import InputError, UserError
from lateint_jax.index.base import SearchShape
from lateint_jax.index.open import open_index

OP_STOP, OP_SEARCH, OP_WARMUP = 0, 1, 2
HEADER = 7  # op, rows, query tokens (0: dense), dim, k, ncells (0 = default), has subset
# OP_WARMUP: rows = number of shapes, then one [rows, 4] block of (batch, k, tokens, subset).


def _broadcast(value: np.ndarray) -> np.ndarray:
    return np.asarray(multihost_utils.broadcast_one_to_all(value))


def _search(index, queries, k, subset_ids, ncells):
    knobs = {"ncells": ncells} if ncells else {}  # a DenseIndex has no cells to probe
    return index.search(queries, k=k, subset_ids=subset_ids, **knobs)


class CoordinatedIndex:
    """Process 0's index: every `search` is announced to the other processes first."""

    def __init__(self, index):
        self.index = index
        self._row = {doc_id: n for n, doc_id in enumerate(index.doc_ids)}

    def __getattr__(self, name):
        return getattr(self.index, name)

    def __contains__(self, doc_id: str) -> bool:  # dunders bypass __getattr__
        return doc_id in self.index

    def search(self, queries, k: int = 10, *, subset_ids=None, ncells=None):
        queries = np.ascontiguousarray(queries, np.float32)
        if queries.ndim not in (2, 3):
            raise InputError(f"queries must be [B, Q, D] or [B, H], got shape {queries.shape}")
        rows, dim = queries.shape[0], queries.shape[-1]
        tokens = queries.shape[1] if queries.ndim == 3 else 0
        header = [OP_SEARCH, rows, tokens, dim, k, ncells or 0, subset_ids is not None]
        _broadcast(np.array(header, np.int32))
        _broadcast(queries)
        if subset_ids is not None:
            mask = np.zeros(len(self.index.doc_ids), np.int32)
            mask[[self._row[i] for i in subset_ids if i in self._row]] = 1
            _broadcast(mask)
        return _search(self.index, queries, k, subset_ids, ncells)

    def warmup(self, request_shapes) -> int:
        shapes = np.array([astuple(s) for s in request_shapes], np.int32).reshape(-1, 4)
        _broadcast(np.array([OP_WARMUP, len(shapes)] + [0] * (HEADER - 2), np.int32))
        _broadcast(shapes)
        return self.index.warmup(request_shapes)

    def stop(self) -> None:
        """Release the other processes from their loop."""
        _broadcast(np.array([OP_STOP] + [0] * (HEADER - 1), np.int32))


def follow(index) -> None:
    """Processes 1..N-1: replay process 0's searches until it says stop."""
    while True:
        op, rows, tokens, dim, k, ncells, has_subset = (
            int(v) for v in _broadcast(np.zeros(HEADER, np.int32))
        )
        if op == OP_STOP:
            return
        if op == OP_WARMUP:
            block = _broadcast(np.zeros((rows, 4), np.int32))
            index.warmup([SearchShape(int(b), int(k), int(t), bool(s)) for b, k, t, s in block])
            continue
        shape = (rows, tokens, dim) if tokens else (rows, dim)
        queries = _broadcast(np.zeros(shape, np.float32))
        subset = None
        if has_subset:
            mask = _broadcast(np.zeros(len(index.doc_ids), np.int32))
            subset = [index.doc_ids[i] for i in np.flatnonzero(mask)]
        try:
            _search(index, queries, k, subset, ncells)
        except UserError:
            pass  # process 0 rejected the same call at the same check, before any collective


def initialize(args) -> None:
    if not args.coordinator:
        raise InputError("--num-processes > 1 needs --coordinator HOST:PORT (process 0's)")
    if not 0 <= args.process_id < args.num_processes:
        raise InputError(f"--process-id must be in 0..{args.num_processes - 1}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )


def serve_multihost(args, run_server) -> int:
    """Entry point for one process of a multi-host server; process 0 answers HTTP with
    run_server(args, log, wrap_index=...) (`server.run_uvicorn`)."""
    if not args.index:
        raise InputError("a multi-host server needs --index (every process loads the same one)")
    initialize(args)
    log = lambda message: print(
        f"[process {jax.process_index()}] {message}", file=sys.stderr, flush=True
    )
    if jax.process_index() != 0:
        log(f"loading my shards of {args.index} ({jax.local_device_count()} local devices)")
        follow(open_index(args.index, devices=jax.devices()))
        jax.distributed.shutdown()  # leaves together with process 0
        log("stopped")
        return 0

    coordinated = []

    def wrap(index):
        coordinated.append(CoordinatedIndex(index))
        return coordinated[0]

    try:
        return run_server(args, log, wrap_index=wrap)
    finally:
        if coordinated:
            coordinated[0].stop()
            jax.distributed.shutdown()
