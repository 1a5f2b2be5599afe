#!/usr/bin/env python
"""Fine-tune a decoder LLM (Qwen2, Llama, ...) as a text classifier.

    python run_classification.py configs/quickstart.yaml
    accelerate launch run_classification.py configs/qwen2.5-0.5b_full.yaml --learning_rate 1e-5

See README.md for the options; `--help` lists them all.
"""
import sys

from seqcls.train import cli

if __name__ == "__main__":
    sys.exit(cli())
