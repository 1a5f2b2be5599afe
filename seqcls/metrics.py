"""Metrics per problem type, computed with scikit-learn (no downloads); an `evaluate` metric is an optional extra."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .calibration import calibration_metrics
from .errors import UsageError
from .labels import MULTI, REGRESSION, SINGLE, LabelSpace

# the metric that picks the best checkpoint, and whether greater is better
BEST_METRIC = {SINGLE: ("macro_f1", True), MULTI: ("macro_f1", True), REGRESSION: ("mse", False)}
# whether greater is better, for every metric computed here (and the Trainer's loss): a sweep sorts by it
GREATER_IS_BETTER = {"accuracy": True, "macro_f1": True, "weighted_f1": True, "micro_f1": True,
                     "subset_accuracy": True, "pearson": True, "spearman": True, "mse": False, "mae": False,
                     "ece": False, "brier": False, "nll": False, "loss": False,
                     **{name: greater for name, greater in BEST_METRIC.values()}}


def greater_is_better(metric: str) -> bool | None:
    """Whether a greater value of `metric` (a results key such as eval_macro_f1 or test_ece_before_calibration)
    is better; None for a metric not computed here (an `evaluate` metric)."""
    name = metric.split("_", 1)[1] if metric.startswith(("eval_", "test_")) else metric
    return GREATER_IS_BETTER.get(name.removesuffix("_before_calibration"))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def multi_label_predictions(probs: np.ndarray, thresholds: Sequence[float] | None) -> np.ndarray:
    t = np.full(probs.shape[-1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    return (probs >= t).astype(np.int64)


TOO_MANY_LABELS = 2.0  # predicted labels per row above this many times the data's (and 1 more): a warning


def too_many_labels(metrics: dict[str, float], prefix: str = "") -> str | None:
    """A warning when multi-label predictions give rows far more labels than the data has, else None."""
    predicted, true = metrics.get(f"{prefix}labels_per_row"), metrics.get(f"{prefix}true_labels_per_row")
    if predicted is None or true is None or not (predicted > TOO_MANY_LABELS * true and predicted > true + 1):
        return None
    return (f"the thresholds predict {predicted:.1f} labels a row where the data has {true:.1f}: the model is weak "
            "(or the thresholds fell to the label priors); train longer, or raise the thresholds in seqcls.json")


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
            # how many labels a row gets, against the data: low thresholds on a weak model predict far more
            "labels_per_row": float(preds.sum(1).mean()) if len(preds) else 0.0,
            "true_labels_per_row": float(truth.sum(1).mean()) if len(truth) else 0.0,
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


# --metric_name values computed here, without `evaluate`: ours, and the official script's names for the same things
BUILTIN_METRICS = {"accuracy", "macro_f1", "weighted_f1", "micro_f1", "subset_accuracy", "mse", "mae", "pearson",
                   "spearman", "f1", "pearsonr", "spearmanr"}


def is_builtin_metric(metric_name: str) -> bool:
    return metric_name in BUILTIN_METRICS


def builtin_metric(label_space: LabelSpace, metric_name: str, logits: np.ndarray, labels: np.ndarray,
                   result: dict[str, float]) -> dict[str, float]:
    """The official script's metric names that ours do not already report: f1 (micro for multi-label, binary for
    two classes, as evaluate's f1 there), pearsonr and spearmanr."""
    if metric_name in ("pearsonr", "spearmanr") and metric_name[:-1] in result:
        return {metric_name: result[metric_name[:-1]]}
    if metric_name == "f1":
        if label_space.problem_type == MULTI:
            return {"f1": result["micro_f1"]}
        if label_space.problem_type == SINGLE and label_space.num_labels == 2:
            from sklearn.metrics import f1_score

            return {"f1": float(f1_score(labels, np.asarray(logits).argmax(-1), average="binary", zero_division=0))}
    return {}


def check_metric_for(label_space: LabelSpace, metric_name: str | None) -> None:
    """A built-in --metric_name that this problem type does not compute is an error (before training)."""
    if not metric_name or not is_builtin_metric(metric_name):
        return
    names = {SINGLE: {"accuracy", "macro_f1", "weighted_f1"}, MULTI: {"micro_f1", "macro_f1", "subset_accuracy", "f1"},
             REGRESSION: {"mse", "mae", "pearson", "spearman", "pearsonr", "spearmanr"}}[label_space.problem_type]
    if label_space.problem_type == SINGLE and label_space.num_labels == 2:
        names = names | {"f1"}
    if metric_name not in names:
        hint = " (f1 is binary F1: for several classes use macro_f1 or weighted_f1)" if metric_name == "f1" else ""
        raise UsageError(f"metric_name {metric_name!r} is not a metric of {label_space.problem_type}{hint}; "
                         f"use one of: {', '.join(sorted(names))}")


def load_extra_metric(metric_name: str | None):
    """An `evaluate` metric, for users who have the package and the metric offline. Never required."""
    if not metric_name or is_builtin_metric(metric_name):
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
    check_metric_for(label_space, metric_name)
    extra = load_extra_metric(metric_name)

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        labels = eval_pred.label_ids
        result = classification_metrics(label_space, logits, labels, thresholds() if thresholds else None)
        if metric_name and is_builtin_metric(metric_name):
            result.update(builtin_metric(label_space, metric_name, logits, labels, result))
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
