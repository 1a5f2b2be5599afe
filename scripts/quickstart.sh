#!/usr/bin/env bash
# Everything from a fresh clone: set up .venv, build the embedded tiny Qwen2, then train, evaluate and predict
# with configs/quickstart.yaml. Extra arguments override the config (e.g. --num_train_epochs 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
python -m seqcls.tiny models/tiny-qwen2
python run_classification.py configs/quickstart.yaml "$@"
