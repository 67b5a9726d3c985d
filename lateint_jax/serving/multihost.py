"""The server as a multi-host JAX program: the index sharded over every process's devices.

Every process runs `serve.py` with the same `--index`, `--coordinator HOST:PORT` and
`--num-processes N`, and its own `--process-id`. Process 0 loads the encoder, the corpus and the
reranker and answers HTTP; the index is split by document over the devices of all processes.
A sharded search is one SPMD program that every process must enter with the same inputs, so
process 0 announces each call on its index before running it and the other processes replay
it in a loop (`follow`), in the same order (one lock on process 0 orders the announcements).

Writes (`--writable`): the served index is a `SegmentedIndex` whose main index is process 0's
`CoordinatedIndex`. The write segment (new documents, scored exactly) lives on process 0's
devices only, so what the others must mirror is the main index: each new version of it
(`tombstoned` for deletes and replacements, `merged` at a compaction) is made on process 0
first, then announced with its inputs, and every process derives the same version from the
same base (a background thread: searches on older versions go on meanwhile). Each announced
search names the version it runs on. A compaction's save is announced too: a process whose
`--index` folder is not process 0's (another host, no shared disk) saves its own copy, so a
restart finds the same index everywhere; start-up checks that every process loaded the same
one. Everything else (encoding, the write log, reranking, explanations) stays on process 0.

Messages are pickled (process 0 is the only sender, on `jax.distributed`'s own channel) and
padded to a power of two so the broadcast compiles once per size step. On CPU the collectives
go through gloo.
"""

from __future__ import annotations

import pickle
import sys
import threading
import uuid
import weakref
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

import jax
import numpy as np
from jax.experimental import multihost_utils

from lateint_jax import shapes
from lateint_jax.errors import InputError, UserError
from lateint_jax.index.open import open_index
from lateint_jax.index.segmented import SegmentedIndex
from lateint_jax.index.storage import read_metadata

OP_STOP, OP_SEARCH, OP_WARMUP, OP_DERIVE, OP_SAVED = range(5)
SAVE_MARK = "multihost_save"  # metadata: which process-0 save a folder holds (run, number)
MIN_MESSAGE_BYTES = 1024


def _broadcast(value: np.ndarray) -> np.ndarray:
    return np.asarray(multihost_utils.broadcast_one_to_all(value))


def _send(message: tuple) -> None:
    data = np.frombuffer(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    _broadcast(np.array([data.size], np.int32))
    _broadcast(shapes.pad_axis(data, shapes.power_of_two(data.size, MIN_MESSAGE_BYTES)))


def _receive() -> tuple:
    size = int(_broadcast(np.zeros(1, np.int32))[0])
    data = _broadcast(np.zeros(shapes.power_of_two(size, MIN_MESSAGE_BYTES), np.uint8))
    return pickle.loads(data[:size].tobytes())


def fingerprint(index) -> np.ndarray:
    """What every process's loaded index must agree on before serving."""
    ids = zlib.crc32("\n".join(index.doc_ids).encode())
    deleted = zlib.crc32(np.packbits(np.asarray(index.arrays.deleted, bool)).tobytes())
    seq = int(index.metadata.get("applied_write_seq", 0))
    return np.array([len(index.doc_ids), ids, deleted, seq], np.int64).astype(np.int32)


def check_same_index(index, index_dir) -> None:
    """Raise on every process when their `--index` folders hold different indexes."""
    multihost_utils.assert_equal(
        fingerprint(index),
        f"the processes loaded different indexes from --index {index_dir} (documents, "
        "deletions or applied writes differ): give every process a copy of process 0's folder",
    )


class Channel:
    """Process 0's side: announcements in one order, version numbers, released versions."""

    def __init__(self):
        self.lock = threading.RLock()  # held from an announcement to the end of the local call
        self.run = uuid.uuid4().hex[:12]
        self._versions = 0
        self._saves = 0
        self._released: list[int] = []

    def announce(self, op: int, *args) -> None:
        """Send (versions released since the last message, op, args); hold `lock`."""
        released, self._released = self._released, []
        _send((released, op, *args))

    def new_version(self) -> int:
        self._versions += 1
        return self._versions

    def new_save_mark(self) -> list:
        self._saves += 1
        return [self.run, self._saves]

    def release(self, version: int) -> None:
        self._released.append(version)  # a finalizer: any thread, any time; list.append is atomic


class CoordinatedIndex:
    """Process 0's index, one version of it: every call the other processes must make too is
    announced first. The rest of `Index`'s interface reads the local index."""

    def __init__(self, index, channel: Channel | None = None, version: int = 0):
        self.index = index
        self.channel = channel or Channel()
        self.version = version
        weakref.finalize(self, self.channel.release, version)

    def __getattr__(self, name):
        return getattr(self.index, name)

    def __contains__(self, doc_id: str) -> bool:  # dunders bypass __getattr__
        return doc_id in self.index

    def search(self, queries, k: int = 10, **options):
        with self.channel.lock:
            self.channel.announce(OP_SEARCH, self.version, queries, k, options)
            return self.index.search(queries, k=k, **options)

    def warmup(self, request_shapes) -> int:
        request_shapes = list(request_shapes)
        with self.channel.lock:
            self.channel.announce(OP_WARMUP, self.version, request_shapes)
            return self.index.warmup(request_shapes)

    def exact_search(self, *args, **kwargs):
        raise InputError("exact_search runs on one process only (open the index without a server)")

    # ------------------------------------------------------------------ writes
    def writable(self) -> SegmentedIndex | None:
        """The served form that takes writes: the write segment beside this (coordinated)
        main index; None for a kind without one."""
        return None if self.index.writable() is None else SegmentedIndex(self)

    def _derived(self, method: str, *args) -> CoordinatedIndex:
        made = getattr(self.index, method)(*args)  # fails here, before anything is announced
        with self.channel.lock:
            version = self.channel.new_version()
            self.channel.announce(OP_DERIVE, self.version, version, method, args)
        return CoordinatedIndex(made, self.channel, version)

    def tombstoned(self, doc_ids) -> CoordinatedIndex:
        return self._derived("tombstoned", list(doc_ids))

    def merged(self, codes, residuals, doc_offsets, doc_ids) -> CoordinatedIndex:
        return self._derived("merged", codes, residuals, doc_offsets, list(doc_ids))

    def save(self, index_dir=None):
        """Save process 0's folder, then have each process whose folder is another one save
        its copy of this version (same metadata)."""
        if index_dir is not None:
            raise InputError("a multi-host server saves where each process loaded its index")
        self.index.metadata[SAVE_MARK] = self.channel.new_save_mark()
        saved = self.index.save()
        with self.channel.lock:
            self.channel.announce(OP_SAVED, self.version, dict(self.index.metadata))
        return saved

    def stop(self) -> None:
        """Release the other processes from their loop."""
        with self.channel.lock:
            self.channel.announce(OP_STOP)


def _done(value) -> Future:
    future = Future()
    future.set_result(value)
    return future


def _save_copy(version: Future, metadata: dict, log) -> None:
    """Save the index `version` holds into its folder unless that folder already holds this save or a later one
    (process 0's own folder, on a shared disk)."""
    index, mark = version.result(), metadata[SAVE_MARK]
    try:
        found = read_metadata(index.index_dir).get(SAVE_MARK)
    except UserError:
        found = None
    if found is not None and found[0] == mark[0] and found[1] >= mark[1]:
        return
    index.metadata.clear()
    index.metadata.update(metadata)
    try:
        index.save()
    except Exception as err:  # noqa: BLE001 - nobody waits on this thread: say it
        log(f"could not save my copy of the index ({err!r}): a restart will refuse it")
        return
    log(f"saved my copy of the index (process 0's save {mark[1]})")


def follow(index, log=print) -> None:
    """Processes 1..N-1: replay process 0's calls until it says stop. Versions of the index
    are derived (and copies saved) in order on one background thread."""
    versions: dict[int, Future] = {0: _done(index)}
    worker = ThreadPoolExecutor(1, thread_name_prefix="versions")

    def derive(base: Future, method: str, args):
        return getattr(base.result(), method)(*args)

    try:
        while True:
            released, op, *args = _receive()
            for version in released:
                versions.pop(version, None)
            if op == OP_STOP:
                return
            if op == OP_SEARCH:
                version, queries, k, options = args
                try:
                    versions[version].result().search(queries, k=k, **options)
                except UserError:
                    pass  # process 0 rejected the same call at the same check, before any collective
            elif op == OP_WARMUP:
                version, request_shapes = args
                versions[version].result().warmup(request_shapes)
            elif op == OP_DERIVE:
                base, version, method, method_args = args
                versions[version] = worker.submit(derive, versions[base], method, method_args)
            elif op == OP_SAVED:
                version, metadata = args
                worker.submit(_save_copy, versions[version], metadata, log)
    finally:
        worker.shutdown(wait=True)


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
        index = open_index(args.index, devices=jax.devices())
        check_same_index(index, args.index)
        follow(index, log)
        jax.distributed.shutdown()  # leaves together with process 0
        log("stopped")
        return 0

    coordinated = []

    def wrap(index):
        check_same_index(index, args.index)
        coordinated.append(CoordinatedIndex(index))
        return coordinated[0]

    try:
        return run_server(args, log, wrap_index=wrap)
    finally:
        if coordinated:
            coordinated[0].stop()
            jax.distributed.shutdown()
