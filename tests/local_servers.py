"""Helpers for tests that start real processes listening on localhost."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def spawn_serve(args: list[str], devices: int, env: dict | None = None) -> subprocess.Popen:
    """`python serve.py ARGS` from the repository, on `devices` fake CPU devices, its output
    (stdout and stderr together) readable from `.stdout`."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        **(env or {}),
    }
    command = [sys.executable, str(REPO / "serve.py"), *map(str, args)]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


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
