"""Serve a lateint-jax index over HTTP.

    python serve.py                      # the offline demo: builds (once) and serves a small index
    python serve.py --index INDEX_DIR --corpus corpus.jsonl [--reranker PATH] [--port 8000]

Same as `lateint serve`; see docs/SERVING.md.
"""

import argparse
import sys

from lateint_jax.cli import HelpFormatter
from lateint_jax.errors import UserError
from lateint_jax.serving import server

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    server.configure(parser)
    args = parser.parse_args()
    try:
        sys.exit(server.serve(args))
    except UserError as err:
        print(f"serve.py: error: {err}", file=sys.stderr)
        sys.exit(2)
