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

    Sorting the probabilities high to low, predicting the top k rows positive gives tp = positives among them and
    F1 = 2 tp / (k + P). Only cuts between two different probabilities are possible; the threshold is the midpoint
    of the gap, so rows a little off the validation values are classified the same way. Without positives the
    F1 is 0 whatever the threshold: keep 0.5. Ties in F1 keep the highest threshold (the fewest positives).
    """
    probs = np.asarray(probs, dtype=np.float64)
    truth = (np.asarray(truth) >= 0.5).astype(np.int64)
    n_pos = int(truth.sum())
    if n_pos == 0 or len(probs) == 0:
        return DEFAULT_THRESHOLD, 0.0
    order = np.argsort(-probs, kind="stable")
    p = probs[order]
    tp = np.cumsum(truth[order])
    k = np.arange(1, len(p) + 1)
    f1 = 2 * tp / (k + n_pos)
    # a cut after position k-1 is possible only where the next probability is strictly lower
    possible = np.append(p[:-1] > p[1:], True)
    f1 = np.where(possible, f1, -1.0)
    best = int(np.argmax(f1))
    below = p[best + 1] if best + 1 < len(p) else 0.0
    return float((p[best] + below) / 2), float(f1[best])


def tune_thresholds(probs: np.ndarray, truth: np.ndarray) -> list[float]:
    """Per-label thresholds maximising each label's F1 on (probs, truth), both of shape (rows, labels)."""
    probs = np.asarray(probs)
    truth = np.asarray(truth)
    if probs.ndim != 2 or probs.shape != truth.shape:
        raise ValueError(f"probs {probs.shape} and truth {truth.shape} must both be (rows, labels)")
    return [round(best_threshold(probs[:, j], truth[:, j])[0], 6) for j in range(probs.shape[1])]
