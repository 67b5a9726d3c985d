"""A process-wide count of the programs JAX has compiled, through its public monitoring events.

The server reports it in /stats and the tests check it stays constant after warm-up: any
request that reaches a shape warm-up did not cover shows up here, whichever function it hit.
"""

from __future__ import annotations

import threading

from jax import monitoring

# Recorded once per program lowered to MLIR (a new function or a new shape), before compiling.
LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"

_lock = threading.Lock()
_count = 0
_listening = False


def _on_duration(event: str, duration: float, **kwargs) -> None:
    global _count
    if event == LOWERING_EVENT:
        with _lock:
            _count += 1


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
