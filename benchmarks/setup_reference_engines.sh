#!/usr/bin/env bash
# Creates the venvs that benchmarks/engines.py runs its reference engines in (idempotent: a venv
# whose packages are already there is left as it is; `--force` recreates both).
#
#   bash benchmarks/setup_reference_engines.sh [--force]
#
# .bench-venvs/colbert  colbert-ai 0.2.22 on torch 2.13.0 (the CPU build) with faiss-cpu and a
#                       transformers 4.x (colbert.modeling.hf_colbert imports the v4 model classes).
# .bench-venvs/warp     fast-plaid 1.7.0.2110 and xtr-warp-rs 2.1.0.2110: both pin torch==2.11.0,
#                       whose Linux wheel on PyPI is the CUDA build (~5 GB with its nvidia-* wheels);
#                       it runs on CPU, and on a GPU machine the same venv serves `--device gpu`.
# Nothing is installed into the project's own .venv.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="$REPO/.bench-venvs"
PYTHON="${PYTHON:-python3.11}"
FORCE="${1:-}"

make_venv() {  # make_venv DIR CHECK_IMPORT PIP_ARGS...
    local dir="$1" check="$2"
    shift 2
    if [[ "$FORCE" == "--force" ]]; then rm -rf "$dir"; fi
    if [[ -x "$dir/bin/python" ]] && "$dir/bin/python" -c "$check" 2>/dev/null; then
        echo "$dir: ready"
        return
    fi
    [[ -x "$dir/bin/python" ]] || "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --upgrade pip
    "$dir/bin/python" -m pip install "$@"
    "$dir/bin/python" -c "$check"
    echo "$dir: installed"
}

make_venv "$VENVS/colbert" \
    "import importlib.metadata as m; assert m.version('colbert-ai') == '0.2.22'; import faiss, colbert, torch" \
    torch==2.13.0 "transformers>=4.40,<5" faiss-cpu colbert-ai==0.2.22 numpy

make_venv "$VENVS/warp" \
    "import importlib.metadata as m; assert m.version('fast-plaid') == '1.7.0.2110'; assert m.version('xtr-warp-rs') == '2.1.0.2110'; import fast_plaid, xtr_warp, torch" \
    torch==2.11.0 fast-plaid==1.7.0.2110 xtr-warp-rs==2.1.0.2110 numpy
