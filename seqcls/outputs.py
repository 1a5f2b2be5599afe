"""Output files: predictions and the classification report, each written to a temporary name and renamed."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .labels import MULTI, REGRESSION, SINGLE, LabelSpace
from .metrics import multi_label_predictions, sigmoid, softmax


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Write to a temporary file beside `path`, renamed onto it only when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def decode(label_space: LabelSpace, logits: np.ndarray, thresholds: Sequence[float] | None = None,
           top_k: int | None = None) -> list[dict[str, Any]]:
    """Turn a batch of logits into one result per row: `label` (name, names or value), `score`, and the
    probability of every label (`probabilities`, highest first, cut to `top_k` if given)."""
    logits = np.asarray(logits, dtype=np.float64)
    names = label_space.names
    rows: list[dict[str, Any]] = []
    if label_space.problem_type == REGRESSION:
        for value in logits.reshape(-1):
            rows.append({"label": float(value), "score": float(value)})
        return rows
    if label_space.problem_type == SINGLE:
        probs = softmax(logits)
        for p in probs:
            best = int(p.argmax())
            rows.append({"label": names[best], "score": float(p[best]), "probabilities": _ranked(names, p, top_k)})
        return rows
    probs = sigmoid(logits)
    chosen = multi_label_predictions(probs, thresholds)
    for p, c in zip(probs, chosen):
        picked = [names[i] for i in np.flatnonzero(c)]
        score = float(min(p[i] for i in np.flatnonzero(c))) if picked else float(1 - p.max())
        rows.append({"label": picked, "score": score, "probabilities": _ranked(names, p, top_k)})
    return rows


def _ranked(names: Sequence[str], probs: np.ndarray, top_k: int | None) -> dict[str, float]:
    order = np.argsort(-probs, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return {names[i]: round(float(probs[i]), 6) for i in order}


def classification_report(label_space: LabelSpace, logits: np.ndarray, labels: np.ndarray,
                          thresholds: Sequence[float] | None = None) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, plus the confusion matrix (rows: truth, columns: prediction)."""
    from sklearn.metrics import classification_report as sk_report, confusion_matrix, multilabel_confusion_matrix

    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if label_space.problem_type == REGRESSION:
        from .metrics import classification_metrics

        return {"problem_type": REGRESSION, "metrics": classification_metrics(label_space, logits, labels),
                "n": int(len(labels))}
    names = list(label_space.names)
    if label_space.problem_type == SINGLE:
        preds = logits.argmax(-1)
        report = sk_report(labels, preds, labels=list(range(len(names))), target_names=names, output_dict=True,
                           zero_division=0)
        matrix = confusion_matrix(labels, preds, labels=list(range(len(names))))
        return {"problem_type": SINGLE, "labels": names, "per_class": report,
                "confusion_matrix": matrix.tolist()}
    preds = multi_label_predictions(sigmoid(logits), thresholds)
    truth = (labels >= 0.5).astype(np.int64)
    report = sk_report(truth, preds, target_names=names, output_dict=True, zero_division=0)
    matrices = multilabel_confusion_matrix(truth, preds)
    return {"problem_type": MULTI, "labels": names, "per_class": report,
            "thresholds": list(thresholds) if thresholds is not None else [0.5] * len(names),
            "confusion_matrix_per_label": {n: m.tolist() for n, m in zip(names, matrices)}}
