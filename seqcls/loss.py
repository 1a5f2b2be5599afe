"""The training loss, one function for every problem type, handed to the Trainer as `compute_loss_func`.

Why our own: the sequence-classification head's loss ignores `num_items_in_batch` while the Trainer believes
it uses it (the forward accepts **kwargs), so under gradient accumulation the Trainer skips its division by the
number of accumulation steps: 2 x 4 accumulation gives 4x the gradient of 8 x 1 (transformers issue 47688).
Here the loss is a sum over the micro-batch divided by the number of targets in the whole accumulated batch,
so any split of the same batch into micro-batches gives the same gradient, and the Trainer knows it is scaled.
All loss math is in fp32, whatever the compute dtype.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .labels import MULTI, REGRESSION, SINGLE


class ClassificationLoss:
    """Callable `(outputs, labels, num_items_in_batch) -> loss` for `Trainer(compute_loss_func=...)`."""

    def __init__(self, problem_type: str, class_weights: Sequence[float] | None = None):
        self.problem_type = problem_type
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)

    def per_item(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Unreduced loss: one value per row (single-label, regression) or per row and label (multi-label)."""
        logits = logits.float()
        if self.problem_type == SINGLE:
            weight = None if self.class_weights is None else self.class_weights.to(logits.device)
            return F.cross_entropy(logits, labels.long().view(-1), weight=weight, reduction="none")
        if self.problem_type == MULTI:
            return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
        if self.problem_type == REGRESSION:
            return F.mse_loss(logits.view(-1), labels.float().view(-1), reduction="none")
        raise ValueError(f"unknown problem type {self.problem_type}")

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        losses = self.per_item(logits, labels)
        if num_items_in_batch is None:  # evaluation, or a Trainer path that does not count: a plain mean
            return losses.mean()
        return losses.sum() / num_items_in_batch
