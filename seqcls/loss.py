"""The training loss, one function for every problem type, handed to the Trainer as `compute_loss_func`.

Why our own: the sequence-classification head's loss ignores `num_items_in_batch` while the Trainer believes
it uses it (the forward accepts **kwargs), so under gradient accumulation the Trainer skips its division by the
number of accumulation steps: 2 x 4 accumulation gives 4x the gradient of 8 x 1 (transformers issue 47688).
Here the loss is a sum over the micro-batch divided by the number of targets in the whole accumulated batch,
so any split of the same batch into micro-batches gives the same gradient, and the Trainer knows it is scaled.
All loss math is in fp32, whatever the compute dtype.

Class imbalance lives here too, as terms of that one sum (the Trainer's own label smoother is bypassed when a
`compute_loss_func` is given, so label smoothing is applied here as well). For row i with true class y, C classes,
p = softmax(logits), class weight w, focal exponent gamma and smoothing eps:

    single-label:  l_i = w[y] * (1 - p[y])^gamma * ( -(1 - eps) * log p[y] - eps/C * sum_k log p[k] )
    multi-label:   l_ic = (1 - q_ic)^gamma * -( pw[c] * t_ic * log s_ic + (1 - t_ic) * log(1 - s_ic) )
                   with s = sigmoid(logits), t the 0/1 target, q_ic = s_ic if t_ic = 1 else 1 - s_ic,
                   pw the positive-class weights
    regression:    l_i = (logit_i - target_i)^2

    loss = sum of l over the micro-batch / N,   N = number of targets in the accumulated batch
                                                    (rows; rows x labels for multi-label)

N counts targets, it does not sum their weights. torch's `cross_entropy(weight=..., reduction="mean")` divides
by sum_i w[y_i] instead, but that sum is only known per micro-batch, so it would make gradient accumulation
inexact again. Dividing by N keeps 8 x 1 and 2 x 4 identical, and with single-label `class_weights auto`
(w[c] = N_train / (C * n_c)) the weights of the train rows sum to N_train exactly, so the loss keeps the scale of
the unweighted loss on average (and the learning rate means what it meant). Explicit weights scale the loss
by their mean over the train rows: give them around 1, or adjust the learning rate. Multi-label `pos_weight`
(auto: negatives / positives) multiplies only the positive terms: it raises the loss and its gradient on
positives by design, as in torch's BCEWithLogitsLoss. With gamma = 0, eps = 0 and
no weights every formula is the plain cross-entropy / BCE / MSE. With weights, the eps term is not class
weighted (torch's `cross_entropy(weight=, label_smoothing=)` weights each smoothing term by w[k]): the row's
weight is that of its true class, as in the focal-loss paper's alpha.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError
from .labels import MULTI, REGRESSION, SINGLE, LabelSpace

logger = logging.getLogger(__name__)


class ClassificationLoss:
    """Callable `(outputs, labels, num_items_in_batch) -> loss` for `Trainer(compute_loss_func=...)`.

    `class_weights`: single-label class weights, or multi-label positive-class weights (BCE `pos_weight`).
    """

    def __init__(self, problem_type: str, class_weights: Sequence[float] | None = None, focal_gamma: float = 0.0,
                 label_smoothing: float = 0.0):
        if problem_type == REGRESSION and (class_weights is not None or focal_gamma or label_smoothing):
            raise UsageError("class_weights, focal_gamma and label_smoothing_factor apply to classification, not "
                             "regression; remove them")
        if problem_type == MULTI and label_smoothing:
            raise UsageError("label_smoothing_factor applies to single-label classification only; remove it for "
                             "multi-label data (positive-class weights: class_weights auto)")
        self.problem_type = problem_type
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.focal_gamma = float(focal_gamma)
        self.label_smoothing = float(label_smoothing)

    def per_item(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Unreduced loss: one value per row (single-label, regression) or per row and label (multi-label)."""
        logits = logits.float()
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        if self.problem_type == SINGLE:
            target = labels.long().view(-1)
            losses = F.cross_entropy(logits, target, reduction="none", label_smoothing=self.label_smoothing)
            if self.focal_gamma:
                p_true = torch.softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
                losses = (1 - p_true).clamp(min=0) ** self.focal_gamma * losses
            if weights is not None:
                losses = weights[target] * losses
            return losses
        if self.problem_type == MULTI:
            target = labels.float()
            losses = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weights, reduction="none")
            if self.focal_gamma:
                s = torch.sigmoid(logits)
                p_true = target * s + (1 - target) * (1 - s)
                losses = (1 - p_true).clamp(min=0) ** self.focal_gamma * losses
            return losses
        if self.problem_type == REGRESSION:
            return F.mse_loss(logits.view(-1), labels.float().view(-1), reduction="none")
        raise ValueError(f"unknown problem type {self.problem_type}")

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        losses = self.per_item(logits, labels)
        if num_items_in_batch is None:  # evaluation, or a Trainer path that does not count: a plain mean
            return losses.mean()
        return losses.sum() / num_items_in_batch


def resolve_class_weights(spec: Sequence[str] | None, label_space: LabelSpace, train_labels) -> list[float] | None:
    """`class_weights` as numbers: `auto` from the train targets, or the explicit list checked against the labels.

    single-label auto: w[c] = N / (C * n_c) (scikit-learn's "balanced"); multi-label auto: pw[c] = negatives /
    positives of label c (BCE's usual positive weight). A label that train never shows (or always shows) gets
    weight 1: there is nothing to balance.
    """
    if spec is None:
        return None
    if label_space.problem_type == REGRESSION:
        raise UsageError("class_weights applies to classification, not regression; remove it")
    n_labels = label_space.num_labels
    if list(spec) != ["auto"]:
        weights = [float(w) for w in spec]
        if len(weights) != n_labels:
            raise UsageError(
                f"class_weights has {len(weights)} value(s) but there are {n_labels} labels "
                f"{list(label_space.names)}; give one weight per label in that order, or auto"
            )
    elif label_space.problem_type == SINGLE:
        from sklearn.utils.class_weight import compute_class_weight

        targets = np.asarray(train_labels).astype(np.int64)
        present = np.unique(targets)
        weights = np.ones(n_labels)
        # sklearn's "balanced" N / (C * n_c) counts only the classes it is given, which must all occur in train: a
        # label train never shows keeps weight 1, and C stays the number of labels (a factor of exactly 1 otherwise)
        weights[present] = compute_class_weight("balanced", classes=present, y=targets) * (len(present) / n_labels)
    else:
        targets = np.asarray(train_labels)
        positives = (targets >= 0.5).sum(axis=0).astype(np.float64)
        negatives = len(targets) - positives
        weights = np.where((positives > 0) & (negatives > 0), negatives / np.maximum(positives, 1), 1.0)
    weights = [float(w) for w in weights]
    logger.info("class weights (%s): %s", " ".join(spec), [round(w, 4) for w in weights])
    return weights
