"""The `lateint` command line. Each subcommand lives in `lateint_jax.commands.<name>` and
defines `configure(parser)` and `run(args) -> int`; modules are imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys

from lateint_jax.errors import UserError

COMMANDS = {
    "encode": "Encode texts into an .npz of embeddings (ColBERT token vectors or bi-encoder vectors).",
    "convert": "Convert a checkpoint between Hugging Face / Stanford ColBERT / PyLate layouts.",
    "index": "Build a compressed PLAID index of a corpus.",
    "search": "Search an index and print JSON results.",
    "evaluate": "Evaluate an index on a BEIR dataset (nDCG@10, MRR@10, Recall@100).",
    "mine": "Mine hard negatives and write n-way training tuples.",
    "teacher": "Score training tuples with a cross-encoder teacher (soft labels for distillation).",
    "train": "Train from a config file (same as train.py).",
    "serve": "Serve an index over HTTP (same as serve.py).",
}


DESCRIPTION = (
    "lateint-jax: late-interaction retrieval (ColBERT, PLAID) in JAX. "
    "Run `lateint COMMAND --help` for the options of a command."
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already names one or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _command_module(name: str):
    return importlib.import_module(f"lateint_jax.commands.{name}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lateint", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        sp = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        if name == chosen:
            _command_module(name).configure(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_command_module(args.command).run(args) or 0)
    except UserError as err:
        print(f"lateint {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
