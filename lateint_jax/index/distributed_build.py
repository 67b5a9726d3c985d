"""build_index as a multi-process JAX program (jax.distributed): each process reads and
compresses its own contiguous share of the corpus, with one codec, and process 0 saves the index,
which is the one-process build's, array for array and file for file.

Every process calls `build_index_distributed` with its share (`process_share`: process p holds
documents [N * p // P, N * (p + 1) // P) of the corpus order) and the same settings. The steps:

  settings   the processes compare a digest of their settings
  pass 1     each process reads its share into its own build state,
             INDEX_DIR.build/process-0000p, beside process 0's (INDEX_DIR.build itself)
  sample     each reads every share's token counts, draws the one-process build's k-means
             sample (build.choose_sample on the whole corpus) and writes its rows of it
  codec      process 0 trains the codec on the rows in corpus order and writes it
  pass 2     each compresses its share with that codec
  assemble   process 0 joins the shares' compressed chunks in order and saves the index

The bulk (token counts, ids, sample rows, codec, compressed chunks) goes through the shared
filesystem: the processes must all see INDEX_DIR's parent, as a multi-host server's processes
all open the same index folder, and the build states must outlive a crash for resume=True. The
collectives (multihost_utils.process_allgather) carry only one small row per process and step:
its step number, whether it failed, and why. Every process takes part in every step, so an
error in one process (bad input, a full disk) stops them all at the next step with a one-line
BuildProcessError naming the process, instead of leaving them waiting.

A process that dies (killed, out of memory) takes the program down: jax.distributed's
coordination service ends the others once its heartbeat stops (100 s by default). Every share's
finished chunks and the codec are kept; restarting every process with resume=True (the same
process count, shares and settings) counts the finished chunks off without reading them and
gives the uninterrupted build's index.

Shapes: N documents, P processes, M token vectors, D embedding dim.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from lateint_jax.errors import InputError, UserError
from lateint_jax.index.build import (
    assemble,
    build_index,
    choose_sample,
    compress_chunks,
    train_codec,
)
from lateint_jax.index.build_state import BuildState, finished_documents_in, state_dir_for
from lateint_jax.index.ingest import Corpus, ingest
from lateint_jax.index.layout import IndexArrays

MESSAGE_BYTES = 480  # of a failed process's error, sent to the others
HEADER = 8  # step, failed, 6 ints of payload
STEPS = (  # what a process does before each step; agree() number k ends STEPS[k]
    "",
    "checking its arguments",
    "opening the build state",
    "reading its documents",
    "checking the documents",
    "writing its k-means sample",
    "training the codec",
    "compressing its documents",
    "saving the index",
)


class BuildProcessError(UserError):
    """Another process of a multi-process build failed; its own output says more."""


def process_share(num_docs: int, process_index: int, process_count: int) -> range:
    """The documents (positions in the corpus order) process `process_index` of
    `process_count` builds: a contiguous range, all of them together covering 0..num_docs."""
    if num_docs < process_count:
        raise InputError(
            f"{num_docs} documents cannot be shared by {process_count} processes (each needs one)"
        )
    return range(
        num_docs * process_index // process_count, num_docs * (process_index + 1) // process_count
    )


def part_state_dir(index_dir, process_index: int) -> Path:
    """Where process `process_index` keeps its share's build state."""
    return state_dir_for(index_dir) / f"process-{process_index:05d}"


def finished_documents(index_dir, process_index: int) -> int:
    """How many leading documents of its share a resumed build's process counts off without
    reading them (build_state.finished_documents, per process)."""
    return finished_documents_in(part_state_dir(index_dir, process_index))


def build_index_distributed(documents, doc_ids, index_dir, **settings) -> IndexArrays | None:
    """One process's part of a multi-process build_index: `documents` and `doc_ids` are this
    process's share (process_share) and `settings` build_index's keywords, the same in every
    process. Call it in every process of a jax.distributed program (initialised by the caller;
    on CPU with jax_cpu_collectives_implementation="gloo"). index_dir is required and must be
    on a filesystem all the processes see. Process 0 saves the index and returns its arrays;
    the others return None once it is saved."""
    group = ProcessGroup(jax.process_index(), jax.process_count())
    try:
        arrays = build_index(documents, doc_ids, index_dir, processes=group, **settings)
        group.agree()
    except BaseException as err:
        group.fail(err)
        raise
    return arrays


def _digest_ints(value) -> list[int]:
    """Four int32 of the sha256 of value's JSON (the collectives carry int32)."""
    data = json.dumps(value, sort_keys=True).encode("utf-8")
    return np.frombuffer(hashlib.sha256(data).digest()[:16], np.int32).tolist()


class ProcessGroup:
    """This process's place in a multi-process build and the steps the processes take together:
    each `agree` is one allgather of a row per process, entered by all of them in the same order."""

    def __init__(self, process_index: int, process_count: int):
        self.index, self.count = process_index, process_count
        self.step, self.stopped = 0, False

    def agree(self, payload=(), failure: str | None = None) -> np.ndarray:
        """The next step: -> every process's payload [P, HEADER - 2] int32. Raises
        BuildProcessError when another process failed (after its own error, when this one
        failed too: the caller raises that)."""
        self.step += 1
        row = np.zeros(HEADER + MESSAGE_BYTES, np.int32)
        row[0], row[1] = self.step, failure is not None
        row[2 : 2 + len(payload)] = payload
        message = (failure or "").encode("utf-8")[:MESSAGE_BYTES]
        row[HEADER : HEADER + len(message)] = np.frombuffer(message, np.uint8)
        try:
            rows = np.asarray(multihost_utils.process_allgather(row))
        except BaseException:
            self.stopped = True
            raise
        failed = np.flatnonzero(rows[:, 1])
        if failed.size:
            self.stopped = True
            if failure is None:
                first = int(failed[0])
                text = bytes(rows[first, HEADER:].astype(np.uint8)).rstrip(b"\0")
                raise BuildProcessError(
                    f"process {first} of the build failed while {STEPS[self.step]}: "
                    f"{text.decode('utf-8', 'replace')}"
                )
        if (rows[:, 0] != self.step).any():  # a bug: the processes took different paths
            self.stopped = True
            raise RuntimeError(f"the build processes are at different steps: {rows[:, 0]}")
        return rows[:, 2:HEADER]

    def fail(self, err: BaseException) -> None:
        """Tell the others, at the step they wait in, that this process failed with err."""
        if not self.stopped:
            self.stopped = True
            self.agree(failure=f"{type(err).__name__}: {err}")

    def compress_corpus(
        self, documents, doc_ids, index_dir, fingerprint: dict, resume: bool, *,
        num_centroids, nbits, seed, kmeans_niters, budget, progress,
    ):  # fmt: skip
        """build.compress_corpus for one process (the module docstring's steps); -> its result
        on process 0, None on the others."""
        if index_dir is None:
            raise InputError("a multi-process build needs index_dir, a folder all processes see")
        shared = {k: v for k, v in fingerprint.items() if k != "input"}
        if len({tuple(row[:4]) for row in self.agree(_digest_ints(shared))}) > 1:
            raise InputError(
                f"the build processes were given different settings; all must use the same "
                f"{', '.join(sorted(shared))}"
            )
        main_dir = state_dir_for(index_dir)
        if self.index == 0:  # removes the previous shares' states unless resuming
            BuildState.open_folder(main_dir, {**shared, "processes": self.count}, resume)
        self.agree()
        state = BuildState.open_folder(part_state_dir(index_dir, self.index), fingerprint, resume)
        corpus = ingest(documents, doc_ids, state, budget // 4, progress=progress)
        state.write_ids(corpus.ids)
        self.agree()
        parts = [BuildState.existing(part_state_dir(index_dir, p)) for p in range(self.count)]
        lengths = [_lengths(part) for part in parts]
        _check_dims(parts)
        ids = _all_ids(parts) if self.index == 0 else None
        self.agree()
        main = BuildState.existing(main_dir)
        if not main.manifest["codec"]:
            start = sum(len(x) for x in lengths[: self.index])
            mine = choose_sample(np.concatenate(lengths), corpus.dim, seed, budget // 4) - start
            rows = corpus.read_documents(mine[(mine >= 0) & (mine < len(corpus.ids))])
            state.write_sample(np.concatenate(rows) if rows else np.zeros((0, corpus.dim)))
        self.agree()
        if self.index == 0 and not main.manifest["codec"]:
            samples = [part.read_sample() for part in parts]
            total = int(sum(x.sum() for x in lengths))
            codec = train_codec(samples, total, num_centroids, nbits, seed, kmeans_niters, progress)
            main.write_codec(*codec)
        self.agree()
        centroids, cutoffs, weights = BuildState.existing(main_dir).read_codec()
        compress_chunks(corpus, centroids, cutoffs, nbits, budget, progress)
        self.agree()
        if self.index != 0:
            return None
        parts = [BuildState.existing(part_state_dir(index_dir, p)) for p in range(self.count)]
        whole = _joined_corpus(parts, lengths, ids, corpus.dim)
        centroids, codes, residuals, doc_offsets = assemble(whole, centroids, nbits)
        return main, whole, (centroids, cutoffs, weights, codes, residuals, doc_offsets)


def _lengths(part: BuildState) -> np.ndarray:
    """A share's token counts [N_p] int64, in its order."""
    return np.concatenate([part.read_lengths(k) for k in range(len(part.chunks))])


def _check_dims(parts: list[BuildState]) -> None:
    dims = [part.manifest["dim"] for part in parts]
    if len(set(dims)) > 1:
        raise InputError(
            f"the processes' documents have different dims: {dims} (process 0, 1, ...)"
        )


def _all_ids(parts: list[BuildState]) -> list[str]:
    """Every share's ids in corpus order; InputError on an id that two shares hold."""
    ids = [doc_id for part in parts for doc_id in part.read_ids()]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicates = sorted({i for i in ids if i in seen or seen.add(i)})
        raise InputError(f"duplicate document ids: {', '.join(map(repr, duplicates[:5]))}")
    return ids


class _JoinedChunks:
    """The shares' compressed chunks numbered end to end, as assemble reads them."""

    def __init__(self, parts: list[BuildState]):
        self.where = [(part, k) for part in parts for k in range(len(part.chunks))]

    def read_compressed(self, chunk: int):
        part, k = self.where[chunk]
        return part.read_compressed(k)


def _joined_corpus(parts, lengths, ids, dim) -> Corpus:
    """The whole corpus as the shares' chunks end to end (process 0's view for assemble)."""
    counts = [record["docs"] for part in parts for record in part.chunks]
    chunk_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Corpus(ids, np.concatenate(lengths), dim, chunk_starts, _JoinedChunks(parts), None)
