"""Temperature scaling: the metrics by hand, the fold into the head, the record in seqcls.json, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli
from seqcls.calibration import (MIN_ROWS, calibration_metrics, expected_calibration_error, fit_temperatures,
                                fold_temperatures)
from seqcls.errors import UsageError
from seqcls.labels import MULTI, SINGLE, LabelSpace


def test_metrics_by_hand():
    space = LabelSpace(SINGLE, ("a", "b"))
    logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    labels = np.array([0, 0, 0])
    m = calibration_metrics(space, logits, labels)
    # confidences 0.9 (right), 0.8 (wrong), 0.6 (right): three different bins of 15
    assert m["ece"] == pytest.approx((abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.6)) / 3)
    assert m["brier"] == pytest.approx((2 * 0.1 ** 2 + 2 * 0.8 ** 2 + 2 * 0.4 ** 2) / 3)
    assert m["nll"] == pytest.approx(-(np.log(0.9) + np.log(0.2) + np.log(0.6)) / 3)
    # two confidences in one bin (0.9 and 0.92 both in (14/15 - ..]: (0.8667, 0.9333]) average before comparing
    assert expected_calibration_error([0.9, 0.92], [1, 0]) == pytest.approx(abs(0.5 - 0.91))

    multi = LabelSpace(MULTI, ("x", "y"))
    p = np.array([[0.7, 0.2]])
    m = calibration_metrics(multi, np.log(p / (1 - p)), np.array([[1.0, 0.0]]))
    assert m["brier"] == pytest.approx((0.3 ** 2 + 0.2 ** 2) / 2)
    assert m["ece"] == pytest.approx((abs(1 - 0.7) + abs(0 - 0.2)) / 2)
    assert m["nll"] == pytest.approx(-(np.log(0.7) + np.log(0.8)) / 2)


def test_fit_recovers_a_known_temperature():
    """Logits drawn calibrated at T=1, then sharpened 3x: the fit finds T close to 3 and lowers the NLL."""
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3)) * 2
    probs = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    space = LabelSpace(SINGLE, ("a", "b", "c"))
    (t,) = fit_temperatures(space, true_logits * 3, labels)
    assert t == pytest.approx(3, rel=0.1)
    assert calibration_metrics(space, true_logits * 3 / t, labels)["nll"] < calibration_metrics(
        space, true_logits * 3, labels)["nll"]


def test_fold_divides_the_logits_and_keeps_the_argmax(tiny_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3).eval()
    model.config.pad_token_id = tok.pad_token_id
    batch = tok(["很好吃", "太慢了，再也不点", "一般"], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**batch).logits
        fold_temperatures(model, [2.5], 3)
        after = model(**batch).logits
        torch.testing.assert_close(after, before / 2.5, rtol=1e-5, atol=1e-6)
        fold_temperatures(model, [1.0, 2.0, 4.0], 3)  # per output row, as for multi-label
        torch.testing.assert_close(model(**batch).logits, before / 2.5 / torch.tensor([1.0, 2.0, 4.0]),
                                   rtol=1e-5, atol=1e-6)
    assert torch.equal(before.argmax(-1), after.argmax(-1))


COMMON = ["--max_seq_length", "32", "--max_steps", "4", "--per_device_train_batch_size", "16", "--learning_rate",
          "3e-3", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no", "--seed", "0"]


@pytest.fixture(scope="module")
def calibrated(tiny_model_dir, tmp_path_factory) -> Path:
    from seqcls.train import main

    out = tmp_path_factory.mktemp("calibrated") / "run"
    main(["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--do_train", "--do_eval",
          "--train_file", str(ROOT / "data/example.jsonl"), "--validation_split_percentage", "20",
          "--calibration", "temperature", *COMMON])
    return out


def test_run_records_the_fit_and_evaluates_the_folded_model(calibrated):
    """seqcls.json records the temperature and before/after figures; evaluation of the saved (folded) model on the
    same validation rows gives exactly the 'after' figures, and the 'before' ones beside them."""
    from seqcls import model_dir

    record = model_dir.read_settings(calibrated).calibration
    assert record["method"] == "temperature" and len(record["temperatures"]) == 1 and record["rows"] >= MIN_ROWS
    assert record["after"]["nll"] <= record["before"]["nll"]
    card = (calibrated / "README.md").read_text(encoding="utf-8")
    assert f"temperature scaling (T = {record['temperatures'][0]:g})" in card
    metrics = json.loads((calibrated / "eval_results.json").read_text())
    for k in ("ece", "brier", "nll"):
        assert metrics[f"eval_{k}"] == pytest.approx(record["after"][k], abs=1e-5)
        assert metrics[f"eval_{k}_before_calibration"] == pytest.approx(record["before"][k], abs=1e-5)


def ece_of(bins) -> float:
    total = sum(b["count"] for b in bins)
    return sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins)


def test_reliability_diagram_before_and_after_in_the_report(calibrated):
    """eval_report.json holds the diagram's bins (the ECE bins, with counts) before and after the fit; the PNG and
    the card's Calibration section show them."""
    from test_report import PNG_MAGIC

    record = json.loads((calibrated / "eval_report.json").read_text())["reliability"]
    metrics = json.loads((calibrated / "eval_results.json").read_text())
    assert record["bins"] == 15 and record["over"].startswith("top-label confidence")
    for key, metric in (("model", "eval_ece"), ("before_calibration", "eval_ece_before_calibration")):
        assert sum(b["count"] for b in record[key]) == metrics["eval_samples"]
        assert ece_of(record[key]) == pytest.approx(metrics[metric], abs=1e-5)
    assert (calibrated / "reliability_diagram.png").read_bytes()[:8] == PNG_MAGIC
    card = (calibrated / "README.md").read_text(encoding="utf-8")
    section = card.split("## Calibration")[1].split("\n## ")[0]
    assert "![reliability diagram](reliability_diagram.png)" in section
    assert (f"| validation (the fit rows) | {metrics['eval_ece_before_calibration']:.4f} → {metrics['eval_ece']:.4f} |"
            in section)


def test_measure_a_trained_dir_on_a_labelled_file(calibrated, tmp_path):
    """An evaluate-only run measures a trained model's calibration on any labelled file: ECE/Brier/NLL and the
    reliability diagram, without writing a model."""
    from seqcls.train import main

    out = tmp_path / "measured"
    main(["--model_name_or_path", str(calibrated), "--output_dir", str(out), "--do_eval", "--validation_file",
          str(ROOT / "data/example_test.jsonl"), "--use_cpu", "true", "--report_to", "none"])
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"eval_ece", "eval_brier", "eval_nll"} <= set(metrics) and metrics["eval_samples"] == 60
    assert not any(k.endswith("_before_calibration") for k in metrics)  # nothing fitted here
    record = json.loads((out / "eval_report.json").read_text())["reliability"]
    assert "before_calibration" not in record and ece_of(record["model"]) == pytest.approx(metrics["eval_ece"],
                                                                                         abs=1e-5)
    assert (out / "reliability_diagram.png").is_file() and not (out / "model.safetensors").exists()


def test_recalibrate_a_trained_dir_on_new_data(calibrated, tmp_path):
    """An evaluate-only run with --calibration writes a new model directory whose record multiplies the
    temperatures; the shipped directory is left as it was."""
    from seqcls import model_dir
    from seqcls.train import main

    before = (calibrated / "model.safetensors").read_bytes()
    new = tmp_path / "recalibrated"
    main(["--model_name_or_path", str(calibrated), "--output_dir", str(new), "--do_eval", "--validation_file",
          str(ROOT / "data/example_test.jsonl"), "--calibration", "temperature", "--use_cpu", "true",
          "--report_to", "none"])
    assert (calibrated / "model.safetensors").read_bytes() == before
    record = model_dir.read_settings(new).calibration
    assert record["fitted_on"].endswith("example_test.jsonl")
    metrics = json.loads((new / "eval_results.json").read_text())
    assert metrics["eval_nll"] == pytest.approx(record["after"]["nll"], abs=1e-5)
    # the new directory serves the recalibrated probabilities: the shipped model's logits / this fit's T
    from seqcls import Classifier

    texts = ["很好吃，送得也快", "太慢了", "一般般"]
    shipped = Classifier.from_pretrained(calibrated).predict_logits(texts)
    (t,) = np.asarray(record["temperatures"]) / np.asarray(model_dir.read_settings(calibrated).calibration["temperatures"])
    np.testing.assert_allclose(Classifier.from_pretrained(new).predict_logits(texts), shipped / t, rtol=1e-4, atol=1e-5)
    assert json.loads((new / "eval_report.json").read_text())["reliability"]["before_calibration"]
    assert (new / "reliability_diagram.png").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--test_file", "data/example_test.jsonl", "--do_predict"], "needs validation data"),
    (["--validation_file", "SMALL"], f"at least {MIN_ROWS} labelled rows"),
    (["--validation_file", "data/example_test.jsonl", "--output_dir", "SHIPPED"], "writes a new model directory"),
])
def test_recalibration_bad_input_writes_nothing(calibrated, tmp_path, extra, message):
    from seqcls.train import main

    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"text": f"好{i}", "label": "消极" if i % 2 else "中立"},
                                        ensure_ascii=False) + "\n" for i in range(MIN_ROWS - 1)), encoding="utf-8")
    extra = [str(ROOT / a) if a.startswith("data/") else {"SMALL": str(small), "SHIPPED": str(calibrated)}.get(a, a)
             for a in extra]
    shipped = {p.name: p.stat().st_mtime_ns for p in calibrated.iterdir()}
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=message):
        main(["--model_name_or_path", str(calibrated), "--output_dir", str(out), "--do_eval", "--calibration",
              "temperature", "--use_cpu", "true", "--report_to", "none", *extra])
    assert not out.exists() or not any(out.iterdir())
    assert {p.name: p.stat().st_mtime_ns for p in calibrated.iterdir()} == shipped


@pytest.mark.parametrize("extra, message", [
    (["--train_file", "data/example.jsonl"], "needs validation data"),
    (["--train_file", "data/example_pair.jsonl", "--text_pair_column_name", "text_pair",
      "--validation_split_percentage", "30"], "applies to classification"),
    (["--train_file", "data/example.jsonl", "--validation_file", "SMALL"], f"at least {MIN_ROWS} labelled rows"),
])
def test_bad_input_is_refused_before_anything_is_written(tiny_model_dir, tmp_path, extra, message):
    from seqcls.train import main

    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"text": f"好{i}", "label": "消极" if i % 2 else "中立"},
                                        ensure_ascii=False) + "\n" for i in range(MIN_ROWS - 1)), encoding="utf-8")
    extra = [str(ROOT / a) if a.startswith("data/") else (str(small) if a == "SMALL" else a) for a in extra]
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=message):
        main(["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--do_train",
              "--calibration", "temperature", *COMMON, *extra])
    assert not out.exists() or not any(out.iterdir())


def test_cli_says_it_in_one_line(tiny_model_dir, tmp_path, capfd, monkeypatch):
    # in-process (seqcls-train's entry point): a subprocess would spend its time importing torch only to fail here
    from seqcls.train import cli

    monkeypatch.delenv("SEQCLS_DEBUG", raising=False)
    code = cli(["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "out"), "--do_train",
                "--train_file", str(ROOT / "data/example.jsonl"), "--calibration", "temperature", *COMMON])
    stderr = capfd.readouterr().err
    assert code == 2 and [line for line in stderr.splitlines() if line.startswith("error") or "Traceback" in line] == [
        "error: calibration temperature needs validation data: give --validation_file or "
        "--validation_split_percentage (and --do_eval when recalibrating a trained model)"], stderr


def test_multi_label_fits_one_temperature_per_label_before_thresholds(tiny_model_dir, tmp_path):
    from seqcls import model_dir
    from seqcls.train import main

    out = tmp_path / "multi"
    main(["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--do_train", "--do_eval",
          "--train_file", str(ROOT / "data/example_multilabel.jsonl"), "--validation_split_percentage", "30",
          "--calibration", "temperature", "--tune_thresholds", "true", *COMMON])
    settings = model_dir.read_settings(out)
    assert len(settings.calibration["temperatures"]) == settings.label_space.num_labels
    assert settings.thresholds is not None
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_nll"] == pytest.approx(settings.calibration["after"]["nll"], abs=1e-5)
    record = json.loads((out / "eval_report.json").read_text())["reliability"]
    assert record["over"].startswith("every (row, label) pair")  # all label-row pairs, said so
    assert sum(b["count"] for b in record["model"]) == metrics["eval_samples"] * settings.label_space.num_labels
    assert ece_of(record["before_calibration"]) == pytest.approx(metrics["eval_ece_before_calibration"], abs=1e-5)


def test_scipy_softmax_and_expit_are_the_hand_written_formulas():
    """outputs.decode_logits and the calibration metrics use scipy.special's softmax and expit instead of the
    hand-written formulas they had: the same probabilities (softmax bit for bit, expit within an ulp or two)."""
    from seqcls.labels import MULTI, SINGLE, LabelSpace
    from seqcls.outputs import decode_logits

    logits = np.random.default_rng(0).normal(scale=8.0, size=(64, 5))
    z = logits - logits.max(axis=-1, keepdims=True)
    softmax = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    sigmoid = 1.0 / (1.0 + np.exp(-logits))
    names = tuple("abcde")
    rows = decode_logits(LabelSpace(SINGLE, names), logits)
    assert [r["score"] for r in rows] == softmax.max(axis=-1).tolist()
    multi = decode_logits(LabelSpace(MULTI, names), logits)
    by_hand = [{n: round(float(p), 6) for n, p in zip(names, row)} for row in sigmoid]
    assert [r["probabilities"] for r in multi] == by_hand
    from scipy.special import expit

    np.testing.assert_allclose(expit(logits), sigmoid, rtol=4e-16, atol=0)
