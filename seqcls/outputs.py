"""Output files: predictions and the classification report, each written to a temporary name and renamed."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from scipy.special import expit, softmax

from .labels import MULTI, REGRESSION, SINGLE, LabelSpace
from .metrics import multi_label_predictions


TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporary files a killed writer (SIGKILL, power loss) left beside `path`: those whose writing
    process is gone. The writer's PID is part of the name, so a live writer's file is never touched."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f"{glob.escape(_tmp_prefix(path))}*{TMP_SUFFIX}"):
        pid = tmp.name[len(_tmp_prefix(path)):].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Write to a temporary file beside `path`, renamed onto it only when the block ends without error.

    The file gets the mode an ordinary open() would give (0666 less the umask; mkstemp alone gives 0600, which a
    serving account could not read). The temporary name holds the writer's PID, so the leftovers of a SIGKILL are
    recognised and removed by the next writer of the same path (`remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(path)}{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, carry: Sequence[str] = ()) -> Iterator[Path]:
    """Write a directory whole or not at all: the block fills a temporary directory beside `path`, which then gets
    the modes an ordinary mkdir/open would give (mkdtemp alone gives 0700) and replaces `path`. `carry`: names of
    files the old `path` holds that move into the new one (a run's lock and identity)."""
    import shutil

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        mask = current_umask()
        for f in [tmp, *tmp.rglob("*")]:
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~mask)
        for name in carry:
            if (out / name).exists():
                os.replace(out / name, tmp / name)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_temporary(path: str | Path) -> bool:
    """A file atomic_open is still writing, or one a killed writer left: readers skip these."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def write_json(path: str | Path, obj: Any, **dump_options: Any) -> None:
    """JSON to `path`, complete or not at all (ensure_ascii=False, indent=2 unless given)."""
    with atomic_open(path) as f:
        json.dump(obj, f, **{"ensure_ascii": False, "indent": 2, **dump_options})
        f.write("\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def decode_logits(label_space: LabelSpace, logits: np.ndarray, thresholds: Sequence[float] | None = None,
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
        probs = softmax(logits, axis=-1)
        for p in probs:
            best = int(p.argmax())
            rows.append({"label": label_space.value(names[best]), "score": float(p[best]),
                         "probabilities": _ranked(names, p, top_k)})
        return rows
    probs = expit(logits)
    chosen = multi_label_predictions(probs, thresholds)
    for p, c in zip(probs, chosen):
        picked = [label_space.value(names[i]) for i in np.flatnonzero(c)]
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
    preds = multi_label_predictions(expit(logits), thresholds)
    truth = (labels >= 0.5).astype(np.int64)
    report = sk_report(truth, preds, target_names=names, output_dict=True, zero_division=0)
    matrices = multilabel_confusion_matrix(truth, preds)
    return {"problem_type": MULTI, "labels": names, "per_class": report,
            "thresholds": list(thresholds) if thresholds is not None else [0.5] * len(names),
            "confusion_matrix_per_label": {n: m.tolist() for n, m in zip(names, matrices)}}
