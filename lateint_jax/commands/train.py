"""`lateint train --config configs/<name>.py [key=value ...]` (same as `python train.py`)."""

from __future__ import annotations

import argparse
import sys

from lateint_jax.cli import HelpFormatter
from lateint_jax.errors import UserError
from lateint_jax.training.config import apply_overrides, load_config
from lateint_jax.training.loop import TrainingInterrupted
from lateint_jax.training.loop import run as train


def configure(parser) -> None:
    parser.add_argument("--config", required=True, help="a configs/*.py file defining get_config()")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")


def run(args) -> int:
    config = apply_overrides(load_config(args.config), args.overrides)
    try:
        summary = train(config)
    except TrainingInterrupted as stopped:
        print(f"train: {stopped}", file=sys.stderr)
        return 130  # the shell's code for SIGINT
    except KeyboardInterrupt:  # before the first step, or a second Ctrl-C
        print("train: stopped by Ctrl-C", file=sys.stderr)
        return 130
    if summary["exported"]:
        print("models: " + " ".join(summary["exported"]))
    return 0


def main(argv: list[str]) -> int:
    """Entry point of train.py: bad input prints one line, as the lateint CLI does."""
    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
