"""Multi-label decision thresholds: one per label, chosen on validation data to maximise that label's F1.

A label is predicted when its probability is >= its threshold (0.5 without tuning). Rare labels of a skewed
data set (most of GoEmotions') almost never reach 0.5, so their F1 is 0 at 0.5 and much better lower.
The thresholds are saved in the model directory's `seqcls.json` ("thresholds"), so evaluation and prediction
use the same ones.
"""
from __future__ import annotations

import numpy as np


DEFAULT_THRESHOLD = 0.5


def best_threshold(probs: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The threshold that maximises F1 of one label, and that F1 (exact search over every cut).

    Predicting the k rows at or above a cut positive gives tp = positives among them and F1 = 2 tp / (k + P) (the
    counts come from scikit-learn's precision-recall curve, and F1 from the counts, so equal F1s tie exactly).
    Only cuts between two different probabilities are possible; the threshold is the midpoint
    of the gap, so rows a little off the validation values are classified the same way. Without positives the
    F1 is 0 whatever the threshold: keep 0.5. Ties in F1 keep the highest threshold (the fewest positives).
    """
    from sklearn.metrics import precision_recall_curve

    probs = np.asarray(probs, dtype=np.float64)
    truth = (np.asarray(truth) >= 0.5).astype(np.int64)
    n_pos = int(truth.sum())
    if n_pos == 0 or len(probs) == 0:
        return DEFAULT_THRESHOLD, 0.0
    # scikit-learn's curve: one point per distinct probability, ascending (its last point, predicting nothing, is
    # dropped); predicting the rows with probability >= cuts[i] positive finds tp = recall * P among k = tp / precision
    precision, recall, cuts = precision_recall_curve(truth, probs, drop_intermediate=False)
    tp = np.rint(recall[:-1] * n_pos)
    k = np.rint(tp / np.maximum(precision[:-1], 1e-300))  # tp = 0: F1 is 0 whatever k is
    f1 = 2 * tp / (k + n_pos)
    best = len(f1) - 1 - int(np.argmax(f1[::-1]))  # ties: the highest threshold (the fewest positives)
    below = cuts[best - 1] if best > 0 else 0.0
    return float((cuts[best] + below) / 2), float(f1[best])


def tune_thresholds(probs: np.ndarray, truth: np.ndarray) -> list[float]:
    """Per-label thresholds maximising each label's F1 on (probs, truth), both of shape (rows, labels)."""
    probs = np.asarray(probs)
    truth = np.asarray(truth)
    if probs.ndim != 2 or probs.shape != truth.shape:
        raise ValueError(f"probs {probs.shape} and truth {truth.shape} must both be (rows, labels)")
    return [round(best_threshold(probs[:, j], truth[:, j])[0], 6) for j in range(probs.shape[1])]
