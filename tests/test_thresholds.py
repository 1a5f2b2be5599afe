"""Multi-label thresholds: chosen on validation to maximise each label's F1, saved with the model, used by
evaluation and by prediction (also in a later prediction-only run)."""
import json

import numpy as np
import pytest

from conftest import ROOT, run_cli, train_args
from seqcls.errors import UsageError
from seqcls.thresholds import best_threshold, tune_thresholds


def test_best_threshold_by_hand():
    # sorted probs 0.9 0.8 0.4 0.3 0.2, truth 1 0 1 0 0 (P = 2); top-k F1 = 2 tp / (k + P):
    # k=1 2/3, k=2 2/4, k=3 4/5 (best), k=4 4/6, k=5 4/7 -> cut between 0.4 and 0.3
    threshold, f1 = best_threshold(np.array([0.2, 0.8, 0.4, 0.9, 0.3]), np.array([0, 0, 1, 1, 0]))
    assert threshold == pytest.approx(0.35) and f1 == pytest.approx(0.8)


def test_best_threshold_never_cuts_between_equal_probabilities():
    # 0.6 appears twice (one positive, one negative): "top 2" is not a possible cut
    threshold, f1 = best_threshold(np.array([0.9, 0.6, 0.6, 0.1]), np.array([1, 1, 0, 0]))
    assert threshold in (pytest.approx(0.75), pytest.approx(0.35))
    preds = np.array([0.9, 0.6, 0.6, 0.1]) >= threshold
    tp = (preds & np.array([1, 1, 0, 0], bool)).sum()
    assert f1 == pytest.approx(2 * tp / (preds.sum() + 2))



def _hand_written_best_threshold(probs, truth):
    """The exact search this module did by hand before it used sklearn's precision_recall_curve: the reference."""
    probs = np.asarray(probs, dtype=np.float64)
    truth = (np.asarray(truth) >= 0.5).astype(np.int64)
    n_pos = int(truth.sum())
    order = np.argsort(-probs, kind="stable")
    p = probs[order]
    tp = np.cumsum(truth[order])
    f1 = 2 * tp / (np.arange(1, len(p) + 1) + n_pos)
    f1 = np.where(np.append(p[:-1] > p[1:], True), f1, -1.0)
    best = int(np.argmax(f1))
    below = p[best + 1] if best + 1 < len(p) else 0.0
    return float((p[best] + below) / 2), float(f1[best])


@pytest.mark.parametrize("seed", range(40))
def test_best_threshold_is_the_hand_written_search(seed):
    # ties in probability (rounded values) and in F1 (few rows) included: the same threshold and F1, bit for bit
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    probs = np.round(rng.random(n), int(rng.integers(1, 4)))
    truth = (rng.random(n) < rng.uniform(0.05, 0.8)).astype(int)
    if truth.sum() == 0:
        truth[int(rng.integers(n))] = 1
    assert best_threshold(probs, truth) == _hand_written_best_threshold(probs, truth)

def test_label_without_positives_keeps_half():
    assert best_threshold(np.array([0.7, 0.2]), np.array([0, 0])) == (0.5, 0.0)
    assert tune_thresholds(np.array([[0.7, 0.9], [0.2, 0.1]]), np.array([[0, 1], [0, 0]])) == [0.5, 0.5]


def decided(row, thresholds, names):
    return sorted(n for n in names if row["probabilities"][n] >= thresholds[names.index(n)])


@pytest.fixture(scope="module")
def tuned_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("thresholds") / "run"
    data = "data/example_multilabel.jsonl"
    proc = run_cli(*train_args(tiny_model_dir, out, "--tune_thresholds", "true", "--class_weights", "auto",
                               "--log_level", "info", data=data, test=data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_tuned_thresholds_are_saved_and_used_by_evaluation_and_prediction(tuned_run, tiny_model_dir, tmp_path):
    out, proc = tuned_run
    assert "class weights (auto)" in proc.stdout  # multi-label: BCE positive-class weights from train
    saved = json.loads((out / "seqcls.json").read_text())
    names = saved["label_space"]["names"]
    thresholds = saved["thresholds"]
    assert len(thresholds) == len(names) and all(0 <= t <= 1 for t in thresholds)
    assert thresholds != [0.5] * len(names)  # a random tiny model is nowhere near calibrated at 0.5
    assert json.loads((out / "eval_report.json").read_text())["thresholds"] == thresholds
    assert json.loads((out / "test_report.json").read_text())["thresholds"] == thresholds
    rows = [json.loads(line) for line in (out / "predict_results.jsonl").read_text().splitlines()]
    assert all(sorted(r["label"]) == decided(r, thresholds, names) for r in rows)

    # a later prediction-only run with the trained model reads the thresholds from its seqcls.json
    # (in-process: the entry point the CLI runs; the tuning run above is the real command)
    from seqcls.train import main

    again = tmp_path / "predict"
    main(["--model_name_or_path", str(out), "--test_file", str(ROOT / "data/example_multilabel.jsonl"),
          "--do_predict", "--output_dir", str(again), "--use_cpu", "true", "--report_to", "none",
          "--max_seq_length", "64"])
    rows_again = [json.loads(line) for line in (again / "predict_results.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows_again] == [r["label"] for r in rows]
    assert json.loads((again / "test_report.json").read_text())["thresholds"] == thresholds


def test_tune_thresholds_needs_multi_label(tiny_model_dir, tmp_path):
    from seqcls.train import main

    with pytest.raises(UsageError, match="tune_thresholds applies to multi-label"):
        main(train_args(tiny_model_dir, tmp_path / "run", "--tune_thresholds", "true", test=None)[1:])
    assert not (tmp_path / "run").exists()
