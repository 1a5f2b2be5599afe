"""Merge a LoRA adapter directory into its base model: a plain model directory anyone can load.

    seqcls-merge runs/qwen-lora runs/qwen-merged          (or: python -m seqcls.merge ADAPTER_DIR OUT_DIR)

The result holds model.safetensors (base weights + B·A·alpha/r, the trained head), config.json with the label
maps and pad id, the tokenizer and seqcls.json, so `AutoModelForSequenceClassification.from_pretrained(OUT_DIR)`,
`pipeline("text-classification", model=OUT_DIR)` and seqcls prediction load it without PEFT, with the logits
of the adapter. A QLoRA adapter is merged into the unquantized base (bf16 by default, the base's own dtype):
merging into 4-bit weights would round the update away.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .cli import DEBUG_FLAG, DEBUG_HELP, log_progress, run_cli
from .errors import UsageError
from .model_dir import ADAPTER_CONFIG, is_adapter_dir, load, save

if TYPE_CHECKING:  # torch is imported when a model is merged: --help and usage errors need no torch (1.9 CPU-s)
    import torch

DTYPE_NAMES = ("bfloat16", "float16", "float32")  # the keys of modeling.DTYPES, which imports torch

logger = logging.getLogger("seqcls.merge")


def base_dtype(base: str, token: str | None = None) -> torch.dtype:
    """The dtype the base checkpoint was published in (config `dtype`), float32 if it does not say."""
    import torch
    from transformers import AutoConfig

    from .modeling import DTYPES

    try:
        config = AutoConfig.from_pretrained(base, token=token)
    except (OSError, ValueError):
        return torch.float32
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def merge(adapter_dir: str | Path, out_dir: str | Path, dtype: str = "auto", base_model_name_or_path: str | None = None,
          overwrite: bool = False, token: str | None = None) -> Path:
    """Merge `adapter_dir` into its base and write a plain model directory at `out_dir` (atomically), with the
    tokenizer and settings of the adapter's run (seqcls.model_dir)."""
    import json

    from .modeling import DTYPES

    adapter_dir, out = Path(adapter_dir), Path(out_dir)
    if not is_adapter_dir(adapter_dir):
        raise UsageError(f"{adapter_dir} holds no {ADAPTER_CONFIG}; give the output_dir of a use_lora training run")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UsageError(f"{out} exists and is not empty; choose another OUT_DIR or add --overwrite")
    if out.resolve() == adapter_dir.resolve():
        raise UsageError("OUT_DIR must differ from ADAPTER_DIR")
    base = base_model_name_or_path or json.loads((adapter_dir / ADAPTER_CONFIG).read_text())[
        "base_model_name_or_path"]
    torch_dtype = base_dtype(base, token) if dtype == "auto" else DTYPES[dtype]
    trained = load(adapter_dir, dtype=torch_dtype, token=token, base_model_name_or_path=base)
    save(out, trained.model, trained.tokenizer, trained.settings, overwrite=overwrite)
    logger.info("merged %s into %s (%s): %s", adapter_dir, base, torch_dtype, out)
    return out


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqcls-merge",
        description="Merge a LoRA adapter directory (a use_lora training run) into its base model and write a plain "
        "model directory for AutoModelForSequenceClassification / pipeline.",
    )
    parser.add_argument("adapter_dir", help="output_dir of a use_lora training run (adapter_config.json, ...)")
    parser.add_argument("out_dir", help="where to write the merged model (must not exist or be empty)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPE_NAMES],
                        help="dtype of the merged weights (default: the base checkpoint's own dtype)")
    parser.add_argument("--base_model_name_or_path", default=None,
                        help="the base model, if not where adapter_config.json says (e.g. after moving it)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty out_dir")
    parser.add_argument("--token", default=None, help="Hub token for a gated base model (or set HF_TOKEN)")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return parser


def main(argv: list[str]) -> int:
    args = make_parser().parse_args(argv)
    log_progress()
    print(merge(args.adapter_dir, args.out_dir, args.dtype, args.base_model_name_or_path, args.overwrite,
                args.token or os.environ.get("HF_TOKEN") or None))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """Console entry point `seqcls-merge` (seqcls.cli: one line and exit 2 for a usage error)."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
