"""The report of a run: confusion matrix and training curves as PNG, a model card that names the labels and metrics
and reproduces the run, regenerated without retraining; a plot that fails only warns; tensorboard logging."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_cli

from seqcls import report
from seqcls.labels import MULTI, SINGLE, LabelSpace
from seqcls.outputs import classification_report

LABELS = ["中立", "消极", "积极"]  # sorted, as training orders them
SECRET = "hf_do_not_leak_this_token"
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_width=300, min_height=200):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    height, width = imread(path).shape[:2]
    assert width >= min_width and height >= min_height, (path, width, height)
    assert width <= 4000 and height <= 4000, (path, width, height)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    """One short run: a config file plus command-line overrides, evaluation every 4 steps, a test file, an access
    token on the command line (it must not leak), tensorboard when installed."""
    tmp = tmp_path_factory.mktemp("report")
    config = tmp / "base.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_model_dir}\n"
        f"train_file: {ROOT / 'data/example.jsonl'}\n"
        f"test_file: {ROOT / 'data/example_test.jsonl'}\n"
        "validation_split_percentage: 15\n"
        "max_seq_length: 32\n"
        "do_train: true\ndo_eval: true\ndo_predict: true\n"
        "use_cpu: true\nnum_train_epochs: 1\nper_device_train_batch_size: 8\nlearning_rate: 3e-3\n"
        "save_strategy: 'no'\n",
        encoding="utf-8",
    )
    out = tmp / "run"
    proc = run_cli(
        str(ROOT / "run_classification.py"), str(config),
        "--output_dir", str(out), "--max_train_samples", "64", "--eval_strategy", "steps", "--eval_steps", "4",
        "--logging_steps", "2", "--report_to", "tensorboard" if HAS_TENSORBOARD else "none",
        "--token", SECRET, "--seed", "3",
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


def test_plots_are_valid_pngs(run):
    assert_png(run / "confusion_matrix.png")
    assert_png(run / "training_curves.png")


def test_model_card_names_labels_metrics_and_data(run):
    card = (run / "README.md").read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["labels"] == LABELS
    assert meta["pipeline_tag"] == "text-classification"
    assert "base_model" not in meta  # a local directory is no Hub id; the body names it instead
    assert "(a local directory)" in card
    assert {"accuracy", "macro_f1"} <= set(meta["metrics"])
    results = json.loads((run / "all_results.json").read_text())
    (entry,) = meta["model-index"]
    by_split = {r["dataset"]["split"]: r["metrics"] for r in entry["results"]}
    assert set(by_split) == {"validation", "test"}
    macro = next(m for m in by_split["test"] if m["name"].startswith("Macro F1"))
    assert macro["value"] == pytest.approx(results["test_macro_f1"], abs=1e-4)
    for label in LABELS:
        assert f"| {label} |" in card
    assert f"| test | macro_f1 | {results['test_macro_f1']:.4f} |" in card
    # data files with row counts: 200 lines, 170 kept for train (64 used), 30 held out, 60 test rows
    assert re.search(r"\| train \| `.*example\.jsonl` \| 200 \| 64 \|", card)
    assert re.search(r"\| validation \(held out of train\) \| `.*example\.jsonl` \| 200 \| 30 \|", card)
    assert re.search(r"\| test \| `.*example_test\.jsonl` \| 60 \| 60 \|", card)


def test_model_card_reproduces_the_run_and_keeps_the_token_secret(run):
    card = (run / "README.md").read_text(encoding="utf-8")
    command = card.split("## Reproduce")[1].split("```bash\n")[1].split("\n```")[0]
    assert command.startswith("python ") and "base.yaml" in command and "--eval_steps 4" in command
    assert "--token '<redacted>'" in command
    for path in run.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".txt", ".yaml"):
            assert SECRET not in path.read_text(encoding="utf-8", errors="replace"), path
    # the resolved config (file + command line), saved as YAML, parses back to the arguments the run used
    from seqcls.arguments import parse_args, to_loggable_dict

    config = yaml.safe_load(card.split("```yaml\n")[1].split("\n```")[0])
    assert config["learning_rate"] == pytest.approx(3e-3) and config["eval_steps"] == 4 and config["seed"] == 3
    assert "token" not in config
    path = run.parent / "resolved.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    used = json.loads((run / "run_args.json").read_text())
    again = to_loggable_dict(*parse_args([str(path)]))
    for key in config:
        assert again[key] == used[key], key


def test_report_regenerates_without_retraining(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.safetensors", "runs", "checkpoint-*"))
    for name in ("confusion_matrix.png", "training_curves.png", "README.md"):
        (copy / name).unlink()
    proc = run_cli("-m", "seqcls.report", str(copy))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_png(copy / "confusion_matrix.png")
    assert_png(copy / "training_curves.png")
    assert (copy / "README.md").read_text(encoding="utf-8") == (run / "README.md").read_text(encoding="utf-8")
    proc = run_cli("-m", "seqcls.report", str(tmp_path / "nothing-here"))
    assert proc.returncode == 2 and "no finished training run" in proc.stderr


def test_a_plot_that_fails_only_warns(run, tmp_path, caplog):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.safetensors", "runs", "checkpoint-*", "*.png"))
    (copy / "trainer_state.json").write_text("{\"log_history\": [5]}")  # not a log entry: the plot raises
    with caplog.at_level("WARNING"):
        problems = report.write_report(copy, argv=["--output_dir", str(copy)])
    assert len(problems) == 1 and problems[0].startswith("training_curves.png")
    assert "could not write training_curves.png" in caplog.text
    assert (copy / "confusion_matrix.png").is_file() and not (copy / "training_curves.png").exists()
    card = (copy / "README.md").read_text(encoding="utf-8")
    assert "confusion_matrix.png" in card and "training_curves.png" not in card


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed (pip install 'seqcls[tensorboard]')")
def test_tensorboard_logs_the_run(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = run.glob("runs/*/events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "eval/macro_f1"} <= tags, tags
    assert [e.step for e in acc.Scalars("eval/macro_f1")] == [4, 8]


def test_confusion_matrix_per_label_for_multi_label(tmp_path):
    space = LabelSpace(MULTI, ("sports", "tech", "finance", "health", "travel"))
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 5)) > 0.6).astype(np.float32)
    rep = classification_report(space, rng.normal(size=(40, 5)), labels)
    assert report.plot_confusion_matrix(rep, tmp_path / "cm.png", "multi") is False  # ASCII names: drawn as names
    assert_png(tmp_path / "cm.png")


def test_label_ids_stand_in_only_for_names_no_font_can_draw(tmp_path):
    """Per label: an ASCII name is always drawn as itself, even beside a name no installed font has glyphs for."""
    names = ("positive", LABELS[0], "neutral")
    cjk_drawable = report.font_for(LABELS[0]) is not None
    ticks = report.TickLabels.for_names(names)
    assert ticks.texts == ["positive", LABELS[0] if cjk_drawable else "1", "neutral"]
    assert report.labels_shown_by_id(names) == ([] if cjk_drawable else [1])
    space = LabelSpace(SINGLE, names)
    rep = classification_report(space, np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 2, 1]))
    assert report.plot_confusion_matrix(rep, tmp_path / "cm.png", "mixed") == (not cjk_drawable)
    assert_png(tmp_path / "cm.png")


def test_tokens_are_redacted_from_the_command_line():
    argv = ["run_classification.py", "--token", "abc", "--hub_token=def", "--pad_token", "<|endoftext|>"]
    assert report.redact_argv(argv) == ["run_classification.py", "--token", "<redacted>", "--hub_token=<redacted>",
                                        "--pad_token", "<|endoftext|>"]


def test_resolved_config_is_what_the_parser_recorded(tmp_path):
    """The card's resolved config comes from the parser's record (file keys, command-line keys in any spelling it
    accepts), not from parsing argv again; tokens are left out."""
    from seqcls.arguments import parse_args, to_loggable_dict

    config = tmp_path / "c.yaml"
    config.write_text("model_name_or_path: m\ntrain_file: t.jsonl\nlearning_rate: 1e-3\n", encoding="utf-8")
    parsed = parse_args([str(config), "--output_dir", "o", "--seed=5", "--max-seq-length", "32", "--token", SECRET])
    given = parsed[-1].given_options
    assert given.config_file == str(config)
    file, resolved = report.resolved_config(given, to_loggable_dict(*parsed))
    assert file == str(config)
    assert resolved == {"model_name_or_path": "m", "max_seq_length": 32, "train_file": "t.jsonl",
                        "output_dir": "o", "learning_rate": 1e-3, "seed": 5}  # no token
