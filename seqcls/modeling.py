"""Tokenizer and model loading: the pad-token policy for decoder LLMs, dtype, attention kernel, label maps."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .errors import UsageError
from .labels import LabelSpace

logger = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _load_error(what: str, name: str, e: Exception) -> UsageError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    hint = "a local directory with config.json, or a Hub id reachable from here"
    if not Path(name).exists() and "/" not in name:
        hint = "check the path"
    return UsageError(f"{what} {name!r} could not be loaded ({first}); give {hint}")


def load_tokenizer(model_args, token: str | None = None):
    """The tokenizer, with a pad token (its own, else `pad_token`, else its eos) and the chosen padding side."""
    from transformers import AutoTokenizer

    name = model_args.tokenizer_name or model_args.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name,
            cache_dir=model_args.cache_dir,
            use_fast=model_args.use_fast_tokenizer,
            revision=model_args.model_revision,
            token=token,
            trust_remote_code=model_args.trust_remote_code,
        )
    except (OSError, ValueError) as e:
        raise _load_error("tokenizer", name, e) from None
    set_pad_token(tokenizer, model_args.pad_token)
    if model_args.padding_side:
        tokenizer.padding_side = model_args.padding_side
    return tokenizer


def set_pad_token(tokenizer, pad_token: str | None = None) -> None:
    """Decoder LLMs often ship without a pad token: use the one asked for, else the eos token.

    The head pools the last token that is not the pad token, so a text must not end in the pad token:
    with pad == eos, an eos appended to a text is skipped (prefer a distinct pad token then).
    """
    if pad_token is not None:
        if pad_token not in tokenizer.get_vocab():
            raise UsageError(f"pad_token {pad_token!r} is not in the tokenizer's vocabulary; choose an existing token")
        tokenizer.pad_token = pad_token
    elif tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UsageError("the tokenizer has neither a pad nor an eos token; set pad_token to an existing token")
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("pad token: none in the tokenizer, using its eos token %r", tokenizer.eos_token)


def resolve_dtype(name: str, bf16: bool = False, fp16: bool = False) -> torch.dtype:
    """`auto` keeps fp32 master weights for training (bf16/fp16 compute comes from autocast under --bf16/--fp16)."""
    if name == "auto":
        return torch.float32
    return DTYPES[name]


def load_model(model_args, label_space: LabelSpace, tokenizer, dtype: torch.dtype = torch.float32,
               token: str | None = None):
    """AutoModelForSequenceClassification with the label maps, problem type and pad token id in its config."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    name = model_args.config_name or model_args.model_name_or_path
    try:
        config = AutoConfig.from_pretrained(
            name,
            num_labels=label_space.num_labels,
            id2label=label_space.id2label,
            label2id=label_space.label2id,
            problem_type=label_space.problem_type,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            token=token,
            trust_remote_code=model_args.trust_remote_code,
        )
    except (OSError, ValueError) as e:
        raise _load_error("model config", name, e) from None
    # without pad_token_id the head cannot find the last real token of a padded batch
    config.pad_token_id = tokenizer.pad_token_id
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path,
            config=config,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            token=token,
            trust_remote_code=model_args.trust_remote_code,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            dtype=dtype,
            attn_implementation=model_args.attn_implementation,
            use_safetensors=True,
        )
    except (OSError, ValueError) as e:
        raise _load_error("model", model_args.model_name_or_path, e) from None
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def max_length_for(tokenizer, model, requested: int | None, cap: int = 2048) -> int:
    """Truncation length: the requested one (checked against the model's positions), else the tokenizer's limit
    capped at `cap`."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if requested is not None:
        if limit is not None and requested > limit:
            raise UsageError(
                f"max_seq_length {requested} is beyond the model's limit of {limit} positions; use at most {limit}"
            )
        return requested
    candidates = [c for c in (tokenizer.model_max_length, limit, cap) if c and c < 10**9]
    return min(candidates)


def freeze_input_embeddings(model) -> int:
    """Stop training the input embedding matrix (no gradient, no optimizer state); return its parameter count.

    For a decoder LLM fine-tuned as a classifier the vocabulary matrix is most of the memory traffic of a
    step (27% of Qwen2.5-0.5B's parameters), while the rows a classification set touches move little.
    """
    embeddings = model.get_input_embeddings()
    if embeddings is None:
        raise UsageError(f"freeze_embeddings: {type(model).__name__} exposes no input embeddings; set it false")
    count = 0
    for p in embeddings.parameters():
        p.requires_grad_(False)
        count += p.numel()
    return count
