"""Helpers for tests that start real processes listening on localhost."""

import socket
import subprocess
import time

import httpx


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, processes: list[subprocess.Popen], seconds: float = 420) -> None:
    """Poll `url`/health until it answers 200; AssertionError with the first exited process's
    output if one exits, or when `seconds` pass (generous: CI machines may be busy)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"a server process exited early:\n{process.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not come up within {seconds:.0f} s")
