"""Metrics per problem type, computed with scikit-learn (no downloads); an `evaluate` metric is an optional extra."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .calibration import calibration_metrics
from .errors import UsageError
from .labels import MULTI, REGRESSION, SINGLE, LabelSpace

# the metric that picks the best checkpoint, and whether greater is better
BEST_METRIC = {SINGLE: ("macro_f1", True), MULTI: ("macro_f1", True), REGRESSION: ("mse", False)}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def multi_label_predictions(probs: np.ndarray, thresholds: Sequence[float] | None) -> np.ndarray:
    t = np.full(probs.shape[-1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    return (probs >= t).astype(np.int64)


def classification_metrics(label_space: LabelSpace, logits: np.ndarray, labels: np.ndarray,
                           thresholds: Sequence[float] | None = None) -> dict[str, float]:
    """The metrics of one problem type from raw logits and targets."""
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error

    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if label_space.problem_type == SINGLE:
        preds = logits.argmax(-1)
        return {
            "accuracy": float(accuracy_score(labels, preds)),
            "macro_f1": float(f1_score(labels, preds, average="macro", labels=range(label_space.num_labels),
                                       zero_division=0)),
            "weighted_f1": float(f1_score(labels, preds, average="weighted", zero_division=0)),
            **calibration_metrics(label_space, logits, labels),
        }
    if label_space.problem_type == MULTI:
        preds = multi_label_predictions(sigmoid(logits), thresholds)
        truth = (labels >= 0.5).astype(np.int64)
        return {
            "micro_f1": float(f1_score(truth, preds, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(truth, preds, average="macro", zero_division=0)),
            "subset_accuracy": float(accuracy_score(truth, preds)),
            **calibration_metrics(label_space, logits, labels),
        }
    from scipy.stats import pearsonr, spearmanr

    preds = logits.reshape(-1).astype(np.float64)
    truth = labels.reshape(-1).astype(np.float64)
    constant = np.ptp(preds) == 0 or np.ptp(truth) == 0
    return {
        "mse": float(mean_squared_error(truth, preds)),
        "mae": float(mean_absolute_error(truth, preds)),
        "pearson": 0.0 if constant else float(pearsonr(preds, truth)[0]),
        "spearman": 0.0 if constant else float(spearmanr(preds, truth)[0]),
    }


def load_extra_metric(metric_name: str | None):
    """An `evaluate` metric, for users who have the package and the metric offline. Never required."""
    if not metric_name:
        return None
    try:
        import evaluate
    except ImportError:
        raise UsageError(f"metric_name {metric_name!r} needs the evaluate package: pip install 'seqcls[evaluate]'") from None
    try:
        return evaluate.load(metric_name)
    except Exception as e:  # evaluate raises many types when a metric script cannot be fetched
        raise UsageError(
            f"metric_name {metric_name!r} could not be loaded ({str(e).splitlines()[0]}); "
            "the built-in metrics need no download: remove metric_name"
        ) from None


def build_compute_metrics(label_space: LabelSpace, metric_name: str | None = None,
                          thresholds: Callable[[], Sequence[float] | None] | None = None):
    """The Trainer's `compute_metrics`: built-in metrics, plus the optional `evaluate` metric."""
    extra = load_extra_metric(metric_name)

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        labels = eval_pred.label_ids
        result = classification_metrics(label_space, logits, labels, thresholds() if thresholds else None)
        if extra is not None:
            if label_space.problem_type == SINGLE:
                preds = np.asarray(logits).argmax(-1)
            elif label_space.problem_type == MULTI:
                preds = multi_label_predictions(sigmoid(np.asarray(logits)), None)
            else:
                preds = np.asarray(logits).reshape(-1)
            scores = extra.compute(predictions=preds, references=labels)
            result.update({f"{metric_name}_{k}" if k in result else k: float(v) for k, v in scores.items()
                           if np.isscalar(v)})
        return result

    return compute_metrics
