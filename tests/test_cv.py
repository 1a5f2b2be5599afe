"""seqcls.cv and scripts/cv.sh: a 3-fold CV on the tiny model over a clear-cut set (texts of one of two repeated
words) with one planted label error. Out-of-fold rows come back complete and in input order, the folds are disjoint
and cover the rows, the planted error ranks first, a re-run skips finished folds and runs only the missing one,
the fold ensemble averages the fold models; bad input is one UsageError with nothing written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

from seqcls import cv
from seqcls.errors import UsageError
from seqcls.labels import MULTI, REGRESSION, LabelSpace

CV_SH = ROOT / "scripts" / "cv.sh"
PLANTED = 7  # a banana text labelled apple


def clear_cut_rows() -> list[dict]:
    rows = []
    for i in range(60):
        label = "apple" if i % 2 == 0 else "banana"
        rows.append({"text": ("苹果" if label == "apple" else "香蕉") * (2 + i % 4), "label": label, "uid": f"u{i}"})
    rows[PLANTED]["label"] = "apple"
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def recipe(model: Path, train: Path) -> list[str]:
    return ["--model_name_or_path", str(model), "--train_file", str(train), "--id_column", "uid",
            "--max_seq_length", "32", "--num_train_epochs", "3", "--per_device_train_batch_size", "8",
            "--learning_rate", "3e-3", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no",
            "--eval_strategy", "no", "--disable_tqdm", "true", "--seed", "0"]


def run_cv(cv_dir: Path, args: list[str], k: int = 3) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable, "K": str(k), "CV_DIR": str(cv_dir)}
    return subprocess.run(["bash", str(CV_SH), *args], env=env, capture_output=True, text=True, timeout=900)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def cv_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cv")
    rows = clear_cut_rows()
    train = write_jsonl(tmp / "train.jsonl", rows)
    cv_dir = tmp / "cv"
    args = recipe(tiny_model_dir, train)
    first = run_cv(cv_dir, args)
    assert first.returncode == 0, first.stdout + first.stderr
    oof_first = read_jsonl(cv_dir / "oof_predictions.jsonl")
    # resume: fold 2 lost (as if never run); the re-run skips folds 0 and 1 and runs fold 2 only
    fold0_mtime = (cv_dir / "fold0" / "all_results.json").stat().st_mtime_ns
    import shutil

    shutil.rmtree(cv_dir / "fold2")
    second = run_cv(cv_dir, args)
    assert second.returncode == 0, second.stdout + second.stderr
    return {"rows": rows, "dir": cv_dir, "first": first, "second": second, "oof_first": oof_first,
            "fold0_mtime": fold0_mtime, "args": args, "train": train}


@pytest.mark.slow
def test_out_of_fold_rows_complete_and_in_input_order(cv_run):
    oof = read_jsonl(cv_run["dir"] / "oof_predictions.jsonl")
    rows = cv_run["rows"]
    assert [r["row"] for r in oof] == list(range(len(rows)))
    assert [r["id"] for r in oof] == [r["uid"] for r in rows]
    assert [r["label"] for r in oof] == [r["label"] for r in rows]
    assert all(set(r["probabilities"]) == {"apple", "banana"} for r in oof)
    assert sorted({r["fold"] for r in oof}) == [0, 1, 2]


@pytest.mark.slow
def test_folds_disjoint_and_covering_and_stratified(cv_run):
    cv_dir, n = cv_run["dir"], len(cv_run["rows"])
    held = [[r[cv.ROW] for r in read_jsonl(cv_dir / "data" / f"fold{f}" / "heldout.jsonl")] for f in range(3)]
    assert sorted(i for h in held for i in h) == list(range(n))
    for f in range(3):
        train = {r[cv.ROW] for r in read_jsonl(cv_dir / "data" / f"fold{f}" / "train.jsonl")}
        assert train.isdisjoint(held[f]) and len(train) + len(held[f]) == n
        apples = sum(cv_run["rows"][i]["label"] == "apple" for i in held[f])
        assert abs(apples - 31 / 3) <= 1  # 31 apples, 29 bananas: stratified by label
    oof = read_jsonl(cv_dir / "oof_predictions.jsonl")
    assert all(r["row"] in held[r["fold"]] for r in oof)


@pytest.mark.slow
def test_planted_label_error_ranked_first(cv_run):
    issues = read_jsonl(cv_run["dir"] / "label_issues.jsonl")
    assert issues and issues[0]["row"] == PLANTED
    assert issues[0]["id"] == f"u{PLANTED}"
    assert issues[0]["given_label"] == "apple" and issues[0]["suggested_label"] == "banana"
    assert issues[0]["text"] == cv_run["rows"][PLANTED]["text"]
    assert len(issues) <= 3  # the clear-cut rows are not flagged
    assert f"| 1 | {PLANTED} |" in (cv_run["dir"] / "label_issues.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_cv_metrics_mean_std(cv_run):
    text = (cv_run["dir"] / "cv_results.md").read_text(encoding="utf-8")
    assert "| test_macro_f1 | " in text and " ± " in text
    lines = (cv_run["dir"] / "cv_results.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and lines[0].startswith("run,status")


@pytest.mark.slow
def test_rerun_skips_finished_folds(cv_run):
    out = cv_run["second"].stdout
    assert "fold0: finished before, skipped" in out and "fold1: finished before, skipped" in out
    assert "3/3 fold2 (new)" in out and "fold2: done" in out
    assert (cv_run["dir"] / "fold0" / "all_results.json").stat().st_mtime_ns == cv_run["fold0_mtime"]
    oof = read_jsonl(cv_run["dir"] / "oof_predictions.jsonl")
    kept = [r for r in cv_run["oof_first"] if r["fold"] != 2]
    assert [r for r in oof if r["fold"] != 2] == kept  # finished folds' predictions untouched


@pytest.mark.slow
def test_other_options_in_same_cv_dir_refused(cv_run):
    before = sorted(p.name for p in cv_run["dir"].iterdir())
    with pytest.raises(UsageError, match="holds another cross-validation.*k 3 -> 2"):
        cv.split(cv_run["dir"], 2, cv_run["args"])
    with pytest.raises(UsageError, match="the recipe options"):
        cv.split(cv_run["dir"], 3, cv_run["args"] + ["--learning_rate", "1e-3"])
    original = cv_run["train"].read_text(encoding="utf-8")
    try:  # the same options over an edited training file
        cv_run["train"].write_text(original.replace('"label": "banana"', '"label": "apple"', 1), encoding="utf-8")
        with pytest.raises(UsageError, match="the training rows"):
            cv.split(cv_run["dir"], 3, cv_run["args"])
    finally:
        cv_run["train"].write_text(original, encoding="utf-8")
    assert sorted(p.name for p in cv_run["dir"].iterdir()) == before


@pytest.mark.slow
def test_fold_ensemble_averages_fold_probabilities(cv_run):
    from seqcls.predict import Classifier

    dirs = cv.fold_model_dirs(cv_run["dir"])
    texts = ["苹果苹果苹果", "香蕉香蕉", "苹果香蕉"]
    clfs = [Classifier.from_pretrained(d, device="cpu") for d in dirs]
    singles = [[row["probabilities"]["apple"] for row in c.predict(texts)] for c in clfs]
    ensemble = cv.predict_ensemble([], texts, classifiers=clfs)
    assert [r["label"] for r in ensemble[:2]] == ["apple", "banana"]
    np.testing.assert_allclose([r["probabilities"]["apple"] for r in ensemble], np.mean(singles, axis=0), atol=1e-5)
    # the CLI: same rows, ids from the id column
    inp = write_jsonl(cv_run["dir"].parent / "new.jsonl", [{"text": t, "uid": f"n{i}"} for i, t in enumerate(texts)])
    out = cv_run["dir"].parent / "ens.jsonl"
    assert cv.cli(["predict", "--cv_dir", str(cv_run["dir"]), str(inp), "-o", str(out), "--id_column", "uid"]) == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["n0", "n1", "n2"] and [r["label"] for r in rows] == [r["label"] for r in ensemble]


# ----------------------------------------------------------------------------------------------------------
# Bad input and fold assignment, in-process (no training)


def test_bad_k_and_missing_labels_write_nothing(tiny_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", clear_cut_rows())
    args = recipe(tiny_model_dir, train)
    cv_dir = tmp_path / "cv"
    with pytest.raises(UsageError, match="at least 2 folds"):
        cv.split(cv_dir, 1, args)
    with pytest.raises(UsageError, match="label 'banana' has only 29 row"):
        cv.split(cv_dir, 30, args)
    unlabelled = write_jsonl(tmp_path / "unlabelled.jsonl", [{"text": r["text"]} for r in clear_cut_rows()])
    with pytest.raises(UsageError, match="label"):
        cv.split(cv_dir, 3, recipe(tiny_model_dir, unlabelled))
    (tmp_path / "val.csv").write_text("text,label\n苹果,apple\n香蕉,banana\n", encoding="utf-8")
    csv_validation = args + ["--validation_file", str(tmp_path / "val.csv")]
    with pytest.raises(UsageError, match="fold files are JSON lines"):
        cv.split(cv_dir, 3, csv_validation)
    with pytest.raises(UsageError, match="max_predict_samples"):
        cv.split(cv_dir, 3, args + ["--max_predict_samples", "5"])
    assert not cv_dir.exists()
    # the shell script: one line, exit 2, nothing written
    done = run_cv(cv_dir, args, k=1)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "at least 2 folds" in done.stderr
    assert not cv_dir.exists()


def test_multi_label_and_regression_folds(tmp_path):
    rng = np.random.default_rng(0)
    space = LabelSpace(MULTI, ("a", "b", "c"))
    labels = [[n for n in space.names if rng.random() < 0.4] or ["a"] for _ in range(90)]
    folds = cv.assign_folds(labels, space, 3, seed=0)
    sizes = np.bincount(folds, minlength=3)
    assert sizes.sum() == 90 and sizes.max() - sizes.min() <= 4
    for name in space.names:  # each label spread evenly over the folds (iterative stratification)
        per_fold = np.bincount(folds[[name in lab for lab in labels]], minlength=3)
        assert per_fold.max() - per_fold.min() <= 2
    values = rng.normal(size=50).tolist()
    folds = cv.assign_folds(values, LabelSpace(REGRESSION), 5, seed=0)
    assert np.bincount(folds).tolist() == [10] * 5
    top = np.argsort(values)[-10:]  # the largest targets spread over the folds (quantile bins)
    assert np.bincount(folds[top], minlength=5).max() <= 3
    with pytest.raises(UsageError, match="label 'c' is on only 1 row"):
        cv.assign_folds([["a"], ["b"], ["a", "c"], ["a"], ["b"]], space, 2, seed=0)
