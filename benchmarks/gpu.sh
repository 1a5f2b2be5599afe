#!/usr/bin/env bash
# Training speed on one GPU: arms (a) ours, (b) official default, (c) official best, and ours with the token
# budget, without packing, and with flash attention's variable-length packing (when flash-attn is installed), with a
# randomly initialised Qwen2-0.5B-shaped model (hidden 896, 24 layers, 14/2 heads, vocab 151936) in bf16
# (autocast over fp32 master weights, as --bf16 true trains). Reports samples/s, real tokens/s, padding, peak GPU
# memory, accuracy and MFU against the card's dense bf16 peak (and against a bf16 matmul measured in the run).
#
#   bash benchmarks/gpu.sh                       # waimai_10k and goemotions, 9000 train rows each, seed 0
#   SEQCLS_SHARED_DATA=/path/to/data bash benchmarks/gpu.sh --seeds 0
#
# Needs: the project installed (bash scripts/setup.sh, or pip install -e .) with a CUDA build of torch, and the
# shared data folder (waimai_10k/, goemotions/ with train.jsonl and validation.jsonl); by default ../shared/data
# beside the checkout. flash-attn, when installed, is used by the packing arm (its variable-length kernel);
# without it packing runs under sdpa with a block-diagonal mask (the ours arm). Not yet run on a GPU (none was lent
# when it was written): time it with a short --train-rows first, most of each arm is loading and tokenizing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export SEQCLS_SHARED_DATA=${SEQCLS_SHARED_DATA:-$(cd .. && pwd)/shared/data}
export PYTHONUNBUFFERED=1

"$PYTHON" - <<'EOF'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh needs a CUDA GPU (torch.cuda.is_available() is false)")
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
EOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv || true

exec "$PYTHON" benchmarks/train.py --device cuda --models qwen2-0.5b \
    --datasets waimai_10k goemotions --train-rows 9000 --eval-rows 1000 \
    --arms official-default official-best ours ours+budget ours-packing_off ours+flash \
    --seeds 0 --parts training evaluation --json "${JSON_OUT:-benchmarks/gpu_results.json}" "$@"
