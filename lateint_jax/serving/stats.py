"""Service counters: requests per endpoint and status class, and latency percentiles."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np


class ServiceStats:
    """Thread-safe request counts and a sliding window of latencies (the last `window`)."""

    def __init__(self, window: int = 10_000):
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._status: Counter = Counter()
        self._latencies: dict[str, deque] = {}
        self._window = window
        self.in_flight = 0
        self.started_at = time.time()

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def record(self, endpoint: str, status_code: int, seconds: float) -> None:
        with self._lock:
            self._counts[endpoint] += 1
            self._status[f"{status_code // 100}xx"] += 1
            if status_code < 400:
                window = self._latencies.setdefault(endpoint, deque(maxlen=self._window))
                window.append(seconds)

    def snapshot(self) -> dict:
        """Counts and p50/p99 latency in milliseconds, per endpoint and over all of them."""
        with self._lock:
            per_endpoint = {name: list(window) for name, window in self._latencies.items()}
            counts = dict(self._counts)
            status = dict(self._status)
            in_flight = self.in_flight
        everything = [s for window in per_endpoint.values() for s in window]
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "requests": sum(counts.values()),
            "in_flight": in_flight,
            "requests_by_endpoint": counts,
            "responses_by_status": status,
            "latency_ms": _percentiles(everything),
            "latency_ms_by_endpoint": {n: _percentiles(w) for n, w in per_endpoint.items()},
        }


def _percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"count": 0, "p50": None, "p99": None}
    ms = np.asarray(seconds) * 1000.0
    return {
        "count": int(ms.size),
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
    }


class CountRequests:
    """ASGI middleware feeding `ServiceStats`: in-flight requests, and each answer's path,
    status and seconds until its last byte was handed over. Plain ASGI: Starlette's
    `@app.middleware("http")` wraps every response in a stream, about 0.2 ms a request."""

    def __init__(self, app, stats: ServiceStats):
        self.app = app
        self.stats = stats

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.stats.begin()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.stats.end()
            self.stats.record(scope["path"], status, time.perf_counter() - started)
