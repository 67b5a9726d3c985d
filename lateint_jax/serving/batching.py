"""Request coalescing: many concurrent callers, one device batch.

Callers `submit` single items and get a `concurrent.futures.Future`; one worker thread gathers
items until `max_batch` are waiting or `max_wait_s` has passed since the first one arrived, runs
the batch function once on the whole list, and resolves every future. The batch function is
where device work happens, so the device sees a few large batches instead of many small ones,
and only one thread ever drives it.

Items a caller submits together (`submit_many`: a request's queries, or its rerank pairs)
are queued as one entry, so a batch never takes half of them by racing the caller. After a
batch that held one caller's items the next one waits for nobody (it takes only what is
already queued): with no concurrent traffic, waiting would only add `max_wait_s` to every
request. The first batch after start waits.

Async handlers await `asyncio.wrap_future(batcher.submit(item))`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

_STOP = object()


@dataclass
class BatchStats:
    """Counts since start: batches run, items served, and the largest batch seen."""

    batches: int = 0
    items: int = 0
    largest: int = 0

    def as_dict(self) -> dict:
        mean = self.items / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "items": self.items,
            "largest_batch": self.largest,
            "mean_batch": round(mean, 3),
        }


class Batcher:
    """Coalesces submitted items into calls of `batch_fn(items) -> results` (same length).

    If `batch_fn` raises, every future of that batch gets the exception; the worker keeps
    running. `close()` serves what is already queued, then stops the worker.
    """

    def __init__(
        self,
        batch_fn: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        name: str = "batcher",
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._last_was_lone = False
        self._carried: list = []  # the rest of a caller's items that did not fit the last batch
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def submit(self, item: Any) -> Future:
        """Queue one item; the future resolves to its result."""
        return self.submit_many([item])[0]

    def submit_many(self, items: Sequence[Any]) -> list[Future]:
        """Queue one caller's items together; one future per item, in order."""
        group = [(item, Future()) for item in items]
        if group:
            with self._lock:
                if self._closed:
                    raise RuntimeError("batcher is closed")
                self._queue.put(group)
        return [future for _, future in group]

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting items, serve the queued ones, and join the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._worker.join(timeout)

    def _take(self, pending: list, group: list) -> None:
        """Moves what fits of `group` into `pending`; the rest starts the next batch."""
        room = self.max_batch - len(pending)
        pending.extend(group[:room])
        self._carried = group[room:]

    def _gather(self, first) -> tuple[list, int, bool]:
        """(items, callers, stop seen): a batch started by group `first`."""
        pending: list = []
        self._take(pending, first)
        callers = 1
        deadline = time.monotonic() + (0.0 if self._last_was_lone else self.max_wait_s)
        while len(pending) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    entry = self._queue.get(timeout=remaining)
                else:
                    entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                return pending, callers, True
            self._take(pending, entry)
            callers += 1
        return pending, callers, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._carried or self._queue.get()
            if first is _STOP:
                break
            pending, callers, stopping = self._gather(first)
            self._last_was_lone = callers == 1
            self._serve(pending)
        # Anything that slipped in before the stop marker was read is still served.
        leftover = list(self._carried)
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is not _STOP:
                leftover.extend(entry)
        for start in range(0, len(leftover), self.max_batch):
            self._serve(leftover[start : start + self.max_batch])

    def _serve(self, pending: list) -> None:
        live = [(item, fut) for item, fut in pending if fut.set_running_or_notify_cancel()]
        if not live:
            return
        self.stats.batches += 1
        self.stats.items += len(live)
        self.stats.largest = max(self.stats.largest, len(live))
        try:
            results = self.batch_fn([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(
                    f"batch function returned {len(results)} results for {len(live)} items"
                )
        except BaseException as err:  # noqa: BLE001 - handed to every waiting caller
            for _, fut in live:
                fut.set_exception(err)
            return
        for (_, fut), result in zip(live, results):
            fut.set_result(result)
