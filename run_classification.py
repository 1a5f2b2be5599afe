#!/usr/bin/env python
"""Fine-tune a decoder LLM (Qwen2, Llama, ...) as a text classifier.

    python run_classification.py configs/quickstart.yaml
    accelerate launch run_classification.py configs/qwen2.5-0.5b_full.yaml --learning_rate 1e-5

See README.md for the options; `--help` lists them all.
"""
import sys

if __name__ == "__main__":
    from seqcls.arguments import print_help_if_asked

    print_help_if_asked(sys.argv[1:])  # --help without importing the training stack (Trainer, datasets, ...)
    from seqcls.train import cli

    sys.exit(cli())
