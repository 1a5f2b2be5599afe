"""Calibrated probabilities: calibration metrics, temperature scaling fitted on labelled data, folded into the head.

Temperature scaling divides the logits by T > 0 fitted to minimise the negative log-likelihood on held-out data:
one T over the softmax (single-label), one T per label over the sigmoids (multi-label). It never changes the
argmax, and multi-label thresholds are then tuned on the calibrated probabilities. The temperatures are folded
into the head's last linear layer (weight, and bias where there is one, divided by T row by row), so every
consumer (`Classifier`, `pipeline`, vLLM, an export) gets the calibrated probabilities with no code of ours; the
fitted values and the before/after figures are recorded in seqcls.json (`ModelSettings.calibration`).

Metrics (all computed from logits and targets):
- ECE, 15 equal-width bins on [0, 1]. Single-label: over the top-label confidence (is the argmax right?).
  Multi-label: over every (row, label) probability against that label's 0/1 truth.
- Brier score. Single-label: mean over rows of the squared distance between the probability vector and the
  one-hot truth (0..2). Multi-label: mean over every (row, label) of (p - y)^2.
- NLL: mean negative log-likelihood of the truth (multi-label: binary cross-entropy over every (row, label)).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from scipy.special import expit, softmax

from .errors import UsageError
from .labels import REGRESSION, SINGLE, LabelSpace

logger = logging.getLogger("seqcls")

ECE_BINS = 15
MIN_ROWS = 20  # fewer labelled rows cannot pin down a temperature
METHODS = ("none", "temperature")
_LOG_T_BOUNDS = (-5.0, 5.0)  # T in [0.0067, 148]: beyond that the probabilities are all but constant
_EPS = 1e-12


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width bins of (rows in bin / rows) * |accuracy in bin - mean confidence in bin|.

    Written by hand: scikit-learn's calibration_curve gives per-bin means but drops the counts that weight them."""
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(confidence) == 0:
        return 0.0
    index = _bin_index(confidence, bins)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    # bin i holds (i/bins, (i+1)/bins]; a confidence of exactly 0 goes to the first bin
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per non-empty bin (the bins of ECE): its edges, mean confidence, accuracy and count."""
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    index = _bin_index(confidence, bins)
    rows = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            rows.append({"low": round(b / bins, 6), "high": round((b + 1) / bins, 6),
                         "confidence": round(float(confidence[mask].mean()), 6),
                         "accuracy": round(float(correct[mask].mean()), 6), "count": int(mask.sum())})
    return rows


def reliability(label_space: LabelSpace, logits: np.ndarray, labels: np.ndarray,
                temperatures: Sequence[float] | None = None) -> dict:
    """The data of a reliability diagram, for eval_report.json / test_report.json: `{"reliability": {...}}` with
    the bins of the model's probabilities (`model`) and, when `temperatures` were fitted in this run (so the
    logits are the calibrated ones), the same before them (`before_calibration`: logits * T). Empty for
    regression or without labels."""
    if label_space.problem_type == REGRESSION or labels is None:
        return {}
    logits = np.asarray(logits, dtype=np.float64)
    over = ("top-label confidence of every row (is the argmax right?)" if label_space.problem_type == SINGLE else
            "every (row, label) pair: the label's probability against whether the label is true")
    record = {"bins": ECE_BINS, "over": over,
              "model": reliability_bins(*confidence_and_correct(label_space, logits, labels))}
    if temperatures is not None:
        raw = logits * np.asarray(temperatures, dtype=np.float64)
        record["before_calibration"] = reliability_bins(*confidence_and_correct(label_space, raw, labels))
    return {"reliability": record}


def confidence_and_correct(label_space: LabelSpace, logits: np.ndarray, labels: np.ndarray):
    """What ECE bins: the top-label confidence and whether the argmax is right (single-label), or every label
    probability and its truth (multi-label)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if label_space.problem_type == SINGLE:
        probs = softmax(logits, axis=-1)
        return probs.max(-1), (probs.argmax(-1) == labels).astype(np.float64)
    return expit(logits).reshape(-1), (labels >= 0.5).astype(np.float64).reshape(-1)


def calibration_metrics(label_space: LabelSpace, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ECE, Brier score and NLL of a classifier's logits against its targets (empty for regression)."""
    if label_space.problem_type == REGRESSION:
        return {}
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    confidence, correct = confidence_and_correct(label_space, logits, labels)
    if label_space.problem_type == SINGLE:
        probs = softmax(logits, axis=-1)
        onehot = np.eye(logits.shape[-1])[labels.astype(np.int64)]
        brier = float(((probs - onehot) ** 2).sum(-1).mean())
        nll = float(-np.log(np.clip(probs[np.arange(len(labels)), labels.astype(np.int64)], _EPS, 1)).mean())
    else:
        probs = expit(logits)
        truth = (labels >= 0.5).astype(np.float64)
        brier = float(((probs - truth) ** 2).mean())
        nll = float(-(truth * np.log(np.clip(probs, _EPS, 1)) + (1 - truth) * np.log(np.clip(1 - probs, _EPS, 1))).mean())
    return {"ece": expected_calibration_error(confidence, correct), "brier": brier, "nll": nll}


def check_fittable(label_space: LabelSpace, labels: "np.ndarray | str | None", where: str) -> None:
    """Refuse data a temperature cannot be fitted on: regression, no validation data ("missing"), no labels, too
    few rows, one class. "present": only the checks that need no rows (run before the model loads)."""
    if label_space.problem_type == REGRESSION:
        raise UsageError("calibration temperature applies to classification; this model is regression: "
                         "use --calibration none")
    if isinstance(labels, str) and labels == "missing":
        raise UsageError("calibration temperature needs validation data: give --validation_file or "
                         "--validation_split_percentage (and --do_eval when recalibrating a trained model)")
    if labels is None:
        raise UsageError(f"calibration temperature needs labelled validation data; {where} has no labels")
    if isinstance(labels, str):
        return
    labels = np.asarray(labels)
    if len(labels) < MIN_ROWS:
        raise UsageError(f"calibration temperature needs at least {MIN_ROWS} labelled rows; {where} has "
                         f"{len(labels)}: give a larger validation set")
    if label_space.problem_type == SINGLE and len(np.unique(labels)) < 2:
        raise UsageError(f"calibration temperature needs at least 2 classes present; {where} holds only "
                         f"{label_space.names[int(labels[0])]!r}: give a validation set with several classes")


def fit_temperatures(label_space: LabelSpace, logits: np.ndarray, labels: np.ndarray) -> list[float]:
    """The NLL-minimising temperature(s): one (single-label) or one per label (multi-label; a label whose
    truth is constant in the data keeps T = 1, logged, since any larger T only lowers its NLL there).

    Bounded 1-D search on log T (scipy), so T stays positive; the NLL of temperature scaling is convex in 1/T."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if label_space.problem_type == SINGLE:
        y = labels.astype(np.int64)

        def nll(log_t: float) -> float:
            z = logits / np.exp(log_t)
            z = z - z.max(-1, keepdims=True)
            return float((np.log(np.exp(z).sum(-1)) - z[np.arange(len(y)), y]).mean())

        return [round(float(np.exp(minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded",
                                                   options={"xatol": 1e-6}).x)), 6)]
    truth = (labels >= 0.5).astype(np.float64)
    temps = []
    for j in range(logits.shape[1]):
        x, t = logits[:, j], truth[:, j]
        if t.min() == t.max():
            logger.warning("calibration: label %r is %s in every row of the calibration data; its temperature "
                           "stays 1", label_space.names[j], "present" if t[0] else "absent")
            temps.append(1.0)
            continue

        def bce(log_t: float, x=x, t=t) -> float:
            z = x / np.exp(log_t)
            return float((np.logaddexp(0, z) - t * z).mean())  # -[t log s(z) + (1-t) log(1-s(z))]

        temps.append(round(float(np.exp(minimize_scalar(bce, bounds=_LOG_T_BOUNDS, method="bounded",
                                                        options={"xatol": 1e-6}).x)), 6))
    return temps


def scale_logits(logits: np.ndarray, temperatures: Sequence[float]) -> np.ndarray:
    """logits / T (broadcast: one T, or one per label)."""
    return np.asarray(logits, dtype=np.float64) / np.asarray(temperatures, dtype=np.float64)


def final_linear(model, num_labels: int):
    """The head's last linear layer with num_labels outputs (under PEFT: the trained copy in modules_to_save)."""
    import torch

    from .modeling import head_module

    _, head = head_module(model)
    active = getattr(head, "modules_to_save", None)
    if active is not None:  # peft's ModulesToSaveWrapper: the forward and the saved adapter use the active copy
        head = active[head.active_adapter if isinstance(head.active_adapter, str) else head.active_adapter[0]]
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    if not linears:
        raise UsageError(f"{type(head).__name__}: no linear layer with {num_labels} outputs to fold the temperature "
                         "into; use --calibration none")
    return linears[-1]


def fold_temperatures(model, temperatures: Sequence[float], num_labels: int) -> None:
    """Divide the head's output rows by T in place: the model's logits become logits / T."""
    import torch

    layer = final_linear(model, num_labels)
    with torch.no_grad():
        t = torch.as_tensor(list(temperatures), dtype=torch.float64)
        t = t.expand(num_labels) if t.numel() == 1 else t
        layer.weight.copy_((layer.weight.double() / t[:, None]).to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_((layer.bias.double() / t).to(layer.bias.dtype))


def calibration_record(label_space: LabelSpace, logits: np.ndarray, labels: np.ndarray, temperatures: list[float],
                       fitted_on: str) -> dict:
    """What seqcls.json keeps about a fitted calibration (ModelSettings.calibration)."""
    before = calibration_metrics(label_space, logits, labels)
    after = calibration_metrics(label_space, scale_logits(logits, temperatures), labels)
    return {"method": "temperature", "temperatures": [float(t) for t in temperatures], "fitted_on": fitted_on,
            "rows": int(len(labels)), "before": {k: round(v, 6) for k, v in before.items()},
            "after": {k: round(v, 6) for k, v in after.items()}}
