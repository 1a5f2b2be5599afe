#!/usr/bin/env python
"""Summarize a sweep written by scripts/sweep.sh: sweep_results.csv, sweep_results.md (sorted by the best-model
metric, mean ± std over seeds per setting) and sweep_<parameter>.png, all in the sweep directory.

    python scripts/summarize_sweep.py runs/sweep-quickstart [--metric eval_accuracy]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from seqcls.sweep import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
