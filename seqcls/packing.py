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
        # rows as long as this batch's longest example (at most row_length): under sdpa/eager the attention cost
        # grows with the square of the row, so a batch of short texts gets short rows (measured: 7% padding
        # instead of 10% and +4% samples/s on the small model, waimai_10k)
        rows = pack_rows(lengths, None if self.row_length is None else min(self.row_length, max(lengths)))
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
    """The decoder's sequence-classification head (`score`) inside a possibly wrapped (DDP, PEFT) model."""
    from .modeling import head_module

    inner = getattr(model, "module", model)  # DDP / DeepSpeed engine; head_module unwraps PEFT
    name, head = head_module(inner)
    if name != "score":
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


def packing_mismatch(model, rows: list[list[int]], row_length: int | None) -> float | None:
    """Largest difference between packed logits and each row's own logits (no padding), or None if the model has
    no `score` head or fails on the packed batch. A few short rows: cheap even for a large model."""
    try:
        score_head(model)
    except UsageError:
        return None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            alone = torch.cat([model(input_ids=torch.tensor([ids], device=device)).logits for ids in rows])
            batch = PackingCollator(getattr(model.config, "pad_token_id", None) or 0, row_length)(
                [{"input_ids": ids} for ids in rows])
            last = batch.pop(LAST_TOKEN_KEY)
            packed = PackedForward(model, last)(**{k: v.to(device) for k, v in batch.items()}).logits
    except Exception:  # any model or kernel that cannot run packed rows: packing is simply not for it
        return None
    finally:
        model.train(was_training)
    return float((packed.float() - alone.float()).abs().max() / max(1.0, float(alone.float().abs().max())))


def resolve_packing(setting: str | bool, model, attn_implementation: str | None, sample_rows: list[list[int]],
                    row_length: int | None) -> bool:
    """Whether to pack training batches. auto: when this model computes the same logits packed as alone (checked on
    a few training rows at start-up), so packing changes the speed and nothing else. true: the same check, failing
    with a UsageError."""
    if setting in (False, "false"):
        return False
    supported = attn_implementation in (None, "sdpa", "eager") or "flash" in str(attn_implementation)
    mismatch = packing_mismatch(model, sample_rows, row_length) if supported and sample_rows else None
    tolerance = 1e-4 if next(model.parameters()).dtype == torch.float32 else 3e-2
    ok = mismatch is not None and mismatch <= tolerance
    if setting == "auto":
        return ok
    if not ok:
        if not supported:
            why = f"attn_implementation {attn_implementation!r} cannot keep packed examples apart"
        elif mismatch is None:
            why = "it has no `score` head, or failed on packed rows"
        else:
            why = f"its packed logits differ from its unpacked ones by {mismatch:.2g}"
        raise UsageError(f"packing true: {type(model).__name__} cannot be trained packed ({why}); set packing false")
    return True


def packed_row_length(attn_implementation: str | None, longest: int) -> int | None:
    """Flash attention runs packed examples in one row without quadratic cost; sdpa/eager get rows as long as the
    longest training row (their cost grows with the square of the row)."""
    return None if "flash" in str(attn_implementation) else longest


__all__ = ["LAST_TOKEN_KEY", "pack_rows", "PackingCollator", "PackedForward", "score_head", "packing_mismatch",
           "resolve_packing", "packed_row_length"]
