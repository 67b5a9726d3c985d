#!/usr/bin/env bash
# The test command of the README and of CI: install everything the tests need, then run them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --references
exec .venv/bin/python -m pytest tests "$@"
