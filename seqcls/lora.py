"""LoRA and QLoRA (PEFT, bitsandbytes): the 4-bit quantization config, which modules get adapters, wrapping the model.

Adapters are only ever added for training; a trained adapter directory is loaded (and merged) by seqcls/model_dir.py.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .errors import UsageError
from .modeling import HEAD_NAMES, head_module

logger = logging.getLogger(__name__)



def quantization_config(model_args, use_cpu: bool = False):
    """QLoRA's BitsAndBytesConfig (4-bit NF4 weights, double quantization, bf16 compute, head unquantized), or None.

    bitsandbytes 4-bit kernels need a CUDA GPU: on a CPU this is a UsageError, never a silent full-precision run.
    """
    if not getattr(model_args, "load_in_4bit", False):
        return None
    if use_cpu or not torch.cuda.is_available():
        raise UsageError("load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes; there is none here (or use_cpu is "
                         "on): on a CPU train LoRA without load_in_4bit (use_lora true)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError("load_in_4bit needs the bitsandbytes package: pip install 'seqcls[qlora]'") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=list(HEAD_NAMES),  # the head stays a plain Linear in the compute dtype
    )


def check_head_unquantized(model, dtype: torch.dtype) -> None:
    """After a 4-bit load: the head must be plain weights in the compute dtype (a quantized head cannot train)."""
    name, head = head_module(model)
    for pname, param in head.named_parameters():
        kind = type(param).__name__
        if kind in ("Params4bit", "Int8Params") or param.dtype != dtype:
            raise RuntimeError(f"the {name} head was loaded as {kind} {param.dtype} ({pname}), expected unquantized "
                               f"{dtype}: check BitsAndBytesConfig.llm_int8_skip_modules")


def lora_target_modules(model, requested: list[str] | None) -> list[str] | str:
    """What gets LoRA adapters: the user's names (or peft's `all-linear`), else every linear layer of the
    transformer blocks, as names relative to a block (q_proj, ... for Qwen2; attention.self.query, ... for BERT).

    Relative names keep adapter_config.json short; if one would also match a linear layer outside the blocks
    (BERT's pooler.dense vs a block's output.dense), full names are used instead. The head is never a target
    (it is trained in full through modules_to_save).
    """
    # Not peft's "all-linear" itself: for a decoder LLM it selects the same layers, but for an encoder it also adapts the
    # pooler, which is trained in full (modules_to_save); tests/test_lora.py checks both.
    if requested:
        return "all-linear" if [r.lower() for r in requested] == ["all-linear"] else list(requested)
    linear = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    blocks = max(
        (m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0),
        key=lambda m: sum(p.numel() for p in m.parameters()),
        default=None,
    )
    if blocks is None:
        raise UsageError(f"{type(model).__name__}: no transformer blocks found; set lora_target_modules")
    prefix = next(name for name, m in model.named_modules() if m is blocks)
    in_blocks = {n for n in linear if n.startswith(prefix + ".")}
    relative = sorted({n[len(prefix) + 1:].split(".", 1)[1] for n in in_blocks if "." in n[len(prefix) + 1:]})
    if not relative:
        raise UsageError(f"{type(model).__name__}: no linear layers in {prefix}; set lora_target_modules")
    matched = {n for n in linear if any(n == r or n.endswith("." + r) for r in relative)}
    return relative if matched == in_blocks else sorted(in_blocks)


def checkpointing_on(training_args) -> bool:
    """Whether the Trainer will checkpoint activations (`activation_checkpointing`, formerly gradient_checkpointing)."""
    on = getattr(training_args, "activation_checkpointing", None)
    return bool(training_args.gradient_checkpointing if on is None else on)


def apply_lora(model, model_args, gradient_checkpointing: bool = False):
    """Wrap the model with LoRA adapters (task SEQ_CLS); the head (and an encoder's pooler) is trained in full and
    saved (modules_to_save).

    A 4-bit model is first prepared for k-bit training (frozen, norms upcast to fp32). With gradient checkpointing
    the input embeddings' output requires grad, so checkpointed blocks see a tensor that needs a gradient.
    """
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    head_name, _ = head_module(model)
    if getattr(model, "is_loaded_in_4bit", False):
        # checkpointing itself is switched on by the Trainer (activation_checkpointing); only the k-bit preparation here
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        model.enable_input_require_grads()
        model.config.use_cache = False
    targets = lora_target_modules(model, model_args.lora_target_modules)
    # encoders (BERT) classify pooler(CLS): the pooler is part of the head, trained in full with it
    poolers = sorted({name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name.endswith(".pooler")})
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        modules_to_save=[head_name, *poolers],
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:  # e.g. "Target modules {...} not found in the base model"
        raise UsageError(f"lora_target_modules {targets}: {str(e).splitlines()[0]}") from None
    base_path = Path(model_args.model_name_or_path)
    if base_path.is_dir():  # a relative path would break when the adapter is loaded from elsewhere
        peft_model.peft_config["default"].base_model_name_or_path = str(base_path.resolve())
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("LoRA r=%d alpha=%g dropout=%g on %s; trainable parameters %s of %s (%.3f%%), head %r in full",
                model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout,
                targets if isinstance(targets, str) else f"{len(targets)} module name(s) {targets[:8]}",
                f"{trainable:,}", f"{total:,}", 100 * trainable / total, head_name)
    return peft_model
