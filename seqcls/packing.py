"""Padding-free packed training: several examples per row, each example kept apart, the head at each last token.

A packed batch is `input_ids` [rows, width] holding the examples end to end, `position_ids` restarting at 0
for every example, no `attention_mask`, and `last_token_index`: where each example's last token lies in the
flattened batch. transformers (5.x) reads the restarts in `position_ids`: with flash_attention_2 and one row it
runs the variable-length kernel (no padding, no cross-example attention); with sdpa or eager it builds a
block-diagonal causal mask. Rows are therefore capped (`row_length`) for sdpa/eager, whose cost grows with the
square of the row, and unlimited for flash attention.

The sequence-classification head pools one token per row, so the packed forward reads the head's per-token
output (a forward hook on `score`) and gathers it at each example's last token: the model is still called as a
whole, so DDP, FSDP and DeepSpeed wrappers see an ordinary forward. transformers' `DataCollatorWithFlattening`
does the flattening for causal LMs but has no per-example pooling, hence this module.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .errors import UsageError

LAST_TOKEN_KEY = "last_token_index"


def pack_rows(lengths: Sequence[int], row_length: int | None) -> list[list[int]]:
    """Assign examples to rows: one row for all (`row_length` None), else first-fit decreasing into rows of at
    most `row_length` tokens. Returns each row's example indices."""
    if row_length is None:
        return [list(range(len(lengths)))]
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        n = lengths[i]
        if n > row_length:
            raise ValueError(f"an example of {n} tokens does not fit a packed row of {row_length}")
        for r, space in enumerate(free):
            if n <= space:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(row_length - n)
    return rows


class PackingCollator:
    """Collate tokenized examples into one packed batch (see the module docstring) for `ClassificationTrainer`."""

    def __init__(self, pad_token_id: int, row_length: int | None = None):
        self.pad_token_id = pad_token_id
        self.row_length = row_length

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [list(f["input_ids"]) for f in features]
        lengths = [len(x) for x in ids]
        rows = pack_rows(lengths, self.row_length)
        width = max(sum(lengths[i] for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        last = torch.empty(len(features), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                n = lengths[i]
                input_ids[r, start:start + n] = torch.tensor(ids[i], dtype=torch.long)
                position_ids[r, start:start + n] = torch.arange(n)
                # the head pools the last token that is not padding, as the unpacked model does
                real = [k for k, t in enumerate(ids[i]) if t != self.pad_token_id]
                last[i] = r * width + start + (real[-1] if real else 0)
                start += n
            # the unused tail is one more "sequence" (positions restart at 0): it attends only to itself
            position_ids[r, start:] = torch.arange(width - start)
        batch = {"input_ids": input_ids, "position_ids": position_ids, LAST_TOKEN_KEY: last}
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            kind = torch.float32 if isinstance(labels[0], (float, list)) else torch.long
            batch["labels"] = torch.tensor(labels, dtype=kind)
        return batch


def score_head(model) -> torch.nn.Module:
    """The sequence-classification head (`score`) inside a possibly wrapped (DDP, PEFT) model."""
    inner = getattr(model, "module", model)  # DDP / DeepSpeed engine
    if hasattr(inner, "get_base_model"):  # PEFT
        inner = inner.get_base_model()
    head = getattr(inner, "score", None)
    if not isinstance(head, torch.nn.Module):
        raise UsageError(
            f"packing needs a decoder model with a `score` head (Qwen2, Qwen3, Llama, ...); {type(inner).__name__} "
            "has none. Set packing false"
        )
    return head


class PackedForward:
    """Callable standing in for the model in `Trainer.compute_loss`: forward a packed batch, return one logit row
    per example (gathered from the head's per-token output at `last_token_index`)."""

    def __init__(self, model, last_token_index: torch.Tensor):
        self.model = model
        self.last_token_index = last_token_index

    def __call__(self, **inputs):
        from transformers.modeling_outputs import SequenceClassifierOutputWithPast

        captured: list[torch.Tensor] = []
        handle = score_head(self.model).register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            # attention_mask None and no cache: transformers then keeps the packed examples apart
            self.model(**inputs, attention_mask=None, use_cache=False)
        finally:
            handle.remove()
        per_token = captured[-1]
        logits = per_token.reshape(-1, per_token.shape[-1])[self.last_token_index.to(per_token.device)]
        return SequenceClassifierOutputWithPast(logits=logits)


def check_packing(model, attn_implementation: str | None) -> None:
    """Refuse models and kernels with which packing would silently compute something else."""
    score_head(model)
    if attn_implementation not in (None, "sdpa", "eager") and "flash" not in str(attn_implementation):
        raise UsageError(f"packing works with attn_implementation sdpa, eager or flash_attention_2/3, not "
                         f"{attn_implementation!r}")


def packed_row_length(attn_implementation: str | None, max_length: int) -> int | None:
    """Flash attention runs packed examples in one row without quadratic cost; sdpa/eager get rows of
    max_seq_length tokens (their cost grows with the square of the row)."""
    return None if "flash" in str(attn_implementation) else max_length


__all__ = ["LAST_TOKEN_KEY", "pack_rows", "PackingCollator", "PackedForward", "score_head", "check_packing",
           "packed_row_length"]
