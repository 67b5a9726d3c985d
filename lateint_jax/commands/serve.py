"""`lateint serve`: serve an index over HTTP (same flags as serve.py)."""

from __future__ import annotations

from lateint_jax.serving.server import configure as _configure


def configure(parser) -> None:
    _configure(parser)


def run(args) -> int:
    from lateint_jax.serving.app import run as run_app

    return run_app(args)
