"""A process-wide count of the programs JAX has compiled, through its public monitoring events.

The server reports it in /stats and the tests check it stays constant after warm-up: any
request that reaches a shape warm-up did not cover shows up here, whichever function it hit.
`by_thread` says which thread lowered them (a program is lowered in the thread that first calls
it), so a test can tell a search's compile from a background thread's.
"""

from __future__ import annotations

import threading
from collections import Counter

from jax import monitoring

# Recorded once per program lowered to MLIR (a new function or a new shape), before compiling.
LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"

_lock = threading.Lock()
_count = 0
_threads: Counter[str] = Counter()
_listening = False


def _on_duration(event: str, duration: float, **kwargs) -> None:
    global _count
    if event == LOWERING_EVENT:
        with _lock:
            _count += 1
            _threads[threading.current_thread().name] += 1


def start() -> None:
    """Begin counting (idempotent); programs compiled before the first call are not counted."""
    global _listening
    with _lock:
        if not _listening:
            monitoring.register_event_duration_secs_listener(_on_duration)
            _listening = True


def count() -> int:
    """Programs lowered since `start()`."""
    start()
    with _lock:
        return _count


def by_thread() -> dict[str, int]:
    """Programs lowered since `start()`, per name of the thread that lowered them."""
    start()
    with _lock:
        return dict(_threads)
