"""`lateint serve`: serve an index over HTTP (same flags as serve.py)."""

from __future__ import annotations

from lateint_jax.serving.server import configure, serve


def run(args) -> int:
    return serve(args)


__all__ = ["configure", "run"]
