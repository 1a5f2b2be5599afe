"""The trained output directory as a contract: every consumer gives the run's own predictions.

A parity matrix on the tiny model: each variant is trained once (in-process, a few steps), then the run's
`predict_results.jsonl`, `Classifier.predict`, the `seqcls-predict` code path and, where it can represent the
input, transformers' `pipeline` must give the same labels and probabilities (fp32, 1e-5; the results file rounds
to 6 decimals). Then the checks on `seqcls.json` itself: missing, contradictory or newer fields are one line naming
the file and the field.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_entry_point
from seqcls import model_dir
from seqcls.errors import UsageError
from seqcls.labels import MULTI, REGRESSION, SINGLE

TOL = 1e-5


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> dict[str, Path]:
    """Test files for the variants that need their own: over-long texts, two text columns."""
    root = tmp_path_factory.mktemp("parity-data")
    train = read_jsonl(ROOT / "data/example.jsonl")
    test = read_jsonl(ROOT / "data/example_test.jsonl")
    long = [{"text": (r["text"] + "，") * 6, "label": r["label"]} for r in test[:24]]

    def split(row):  # two columns from one text: a title and a body
        half = max(1, len(row["text"]) // 3)
        return {"title": row["text"][:half], "body": row["text"][half:], "label": row["label"]}

    return {
        "long_test": write_jsonl(root / "long_test.jsonl", long),
        "two_train": write_jsonl(root / "two_train.jsonl", [split(r) for r in train]),
        "two_test": write_jsonl(root / "two_test.jsonl", [split(r) for r in test]),
    }


def variant_args(name: str, data: dict[str, Path]) -> tuple[list[str], Path]:
    """The command-line options of one variant, and its test file."""
    single = ["--train_file", str(ROOT / "data/example.jsonl")]
    test = ROOT / "data/example_test.jsonl"
    table = {
        "plain": (single, test),
        "lora": (single + ["--use_lora", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"], test),
        "append_eos": (single + ["--append_eos", "true"], test),
        "cls_token": (single + ["--cls_token", "<|im_end|>"], test),
        "truncation_left": (single + ["--truncation_side", "left", "--append_eos", "true", "--max_seq_length", "12"],
                            data["long_test"]),
        "multi_label": (["--train_file", str(ROOT / "data/example_multilabel.jsonl"), "--tune_thresholds", "true",
                         "--validation_split_percentage", "30", "--learning_rate", "1e-2"],
                        ROOT / "data/example_multilabel.jsonl"),
        "pair_regression": (["--train_file", str(ROOT / "data/example_pair.jsonl"), "--text_pair_column_name",
                             "text_pair"], ROOT / "data/example_pair.jsonl"),
        "calibrated": (single + ["--calibration", "temperature", "--validation_split_percentage", "20"], test),
        "calibrated_lora": (single + ["--calibration", "temperature", "--validation_split_percentage", "20",
                                      "--use_lora", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout",
                                      "0"], test),
        "two_columns": (["--train_file", str(data["two_train"]), "--text_column_names", "title,body",
                         "--text_column_delimiter", " | "], data["two_test"]),
        "prompt": (single + ["--prompt_template", "评论：{text}\n情感：", "--max_seq_length", "128"], test),
    }
    extra, test_file = table[name]
    return extra, test_file


@pytest.fixture(scope="session")
def trained(tiny_model_dir, data, tmp_path_factory):
    """Train a variant once per session (in-process: the import of torch and transformers is paid once)."""
    from seqcls.train import main

    runs: dict[str, tuple[Path, Path]] = {}
    root = tmp_path_factory.mktemp("parity")

    def get(name: str) -> tuple[Path, Path]:
        if name in ("merged", "calibrated_merged") and name not in runs:
            lora, test_file = get(name.replace("merged", "lora"))
            from seqcls.merge import merge

            runs[name] = (merge(lora, root / name), test_file)
        if name not in runs:
            extra, test_file = variant_args(name, data)
            out = root / name
            main(["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--do_train",
                  "--do_predict", "--test_file", str(test_file), "--max_seq_length", "32", "--max_steps", "4",
                  "--per_device_train_batch_size", "16", "--learning_rate", "3e-3", "--use_cpu", "true",
                  "--report_to", "none", "--save_strategy", "no", "--seed", "0", *extra])
            runs[name] = (out, test_file)
        return runs[name]

    return get


def probabilities(row: dict, names: list[str]) -> np.ndarray:
    return np.array([row["probabilities"][n] for n in names])


def assert_same_rows(expected: list[dict], got: list[dict], names: list[str], what: str) -> None:
    assert len(expected) == len(got), what
    for i, (a, b) in enumerate(zip(expected, got)):
        if names:
            assert a["label"] == b["label"], f"{what}: row {i}: {a['label']} vs {b['label']}"
            np.testing.assert_allclose(probabilities(b, names), probabilities(a, names), atol=TOL, err_msg=what)
        else:
            assert math.isclose(a["label"], b["label"], abs_tol=TOL), f"{what}: row {i}"


def consumer_rows_cli(run: Path, test_file: Path, tmp_path: Path, clf, monkeypatch) -> list[dict]:
    """The seqcls-predict code path (its reader, column joining, batching and writer), in-process, with the
    Classifier just loaded from `run` (a second load would only repeat the 3 s of reading the Qwen2 tokenizer)."""
    from seqcls import predict

    monkeypatch.setattr(predict.Classifier, "from_pretrained", classmethod(lambda cls, path, **kw: clf))
    out = tmp_path / f"{run.name}-predictions.jsonl"
    args: argparse.Namespace = predict.build_parser().parse_args([str(run), str(test_file), "-o", str(out),
                                                                  "--device", "cpu", "--batch_size", "7"])
    predict.run(args)
    return read_jsonl(out)


def pipeline_rows(run: Path, test_file: Path, settings: model_dir.ModelSettings) -> list[dict]:
    """What `pipeline` gives when called as the model card says, turned into our rows."""
    from transformers import pipeline

    space, cols = settings.label_space, settings.columns
    function = {SINGLE: "softmax", MULTI: "sigmoid", REGRESSION: "none"}[space.problem_type]
    pipe = pipeline("text-classification", model=str(run), top_k=None, function_to_apply=function, device="cpu")
    rows = read_jsonl(test_file)
    texts = [cols.delimiter.join(r[c] for c in cols.text) for r in rows]
    if cols.prompt.active:  # what the model card says to send: the filled template
        from seqcls.prompts import fill

        texts = [fill(cols.prompt.resolve(pipe.tokenizer), {**r, "text": t}) for t, r in zip(texts, rows)]
    inputs = [{"text": t, "text_pair": r[cols.pair]} for t, r in zip(texts, rows)] if cols.pair else texts
    results = pipe(inputs, truncation=True, batch_size=1)
    out = []
    for result in results:
        scores = {d["label"]: d["score"] for d in result}
        if space.problem_type == REGRESSION:
            out.append({"label": scores["score"]})
        elif space.problem_type == MULTI:
            thresholds = settings.thresholds or [0.5] * space.num_labels
            out.append({"label": [n for n, t in zip(space.names, thresholds) if scores[n] >= t],
                        "probabilities": scores})
        else:
            out.append({"label": max(scores, key=scores.get), "probabilities": scores})
    return out


VARIANTS = ["plain", "lora", "merged", "append_eos", "cls_token", "truncation_left", "multi_label",
            "pair_regression", "two_columns", "calibrated", "calibrated_lora", "calibrated_merged", "prompt"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_consumer_gives_the_runs_predictions(trained, variant, tmp_path, monkeypatch):
    from seqcls import Classifier

    run, test_file = trained(variant)
    written_by = trained(variant.replace("merged", "lora"))[0] if variant.endswith("merged") else run  # the merged model gives the adapter's results
    expected = read_jsonl(written_by / "predict_results.jsonl")
    settings = model_dir.read_settings(run)
    names = list(settings.label_space.names)

    clf = Classifier.from_pretrained(run, device="cpu")
    rows = read_jsonl(test_file)
    cols = settings.columns
    texts = [cols.delimiter.join(r[c] for c in cols.text) for r in rows]
    pairs = [r[cols.pair] for r in rows] if cols.pair else None
    assert_same_rows(expected, clf.predict(texts, pairs, batch_size=5), names, f"{variant}: Classifier")
    assert_same_rows(expected, consumer_rows_cli(run, test_file, tmp_path, clf, monkeypatch), names, f"{variant}: seqcls-predict")
    if not variant.endswith("lora"):  # pipeline cannot load an adapter directory: the card says to merge it (the "merged" row)
        assert_same_rows(expected, pipeline_rows(run, test_file, settings), names, f"{variant}: pipeline")


def test_variants_save_what_they_change(trained):
    """The saved files carry each option: the tokenizer appends the marker, cuts where training cut, and the
    settings and model card say what a consumer must pass."""
    from transformers import AutoTokenizer

    run, _ = trained("truncation_left")
    tok = AutoTokenizer.from_pretrained(run)
    assert tok.model_max_length == 12 and tok.truncation_side == "left"
    ids = tok("很好吃，" * 40, truncation=True)["input_ids"]
    assert len(ids) == 12 and ids[-1] == tok.convert_tokens_to_ids("<|endoftext|>") != tok.pad_token_id
    card = (run / "README.md").read_text(encoding="utf-8")
    assert "truncation=True" in card and "on the left" in card and "`<|endoftext|>`" in card
    assert "--max-model-len 12" in card

    run, _ = trained("multi_label")
    settings = model_dir.read_settings(run)
    assert settings.thresholds is not None and len(settings.thresholds) == settings.label_space.num_labels
    card = (run / "README.md").read_text(encoding="utf-8")
    assert "function_to_apply=\"sigmoid\"" in card and "apply these thresholds" in card

    run, _ = trained("two_columns")
    assert 'title + " | " + body' in (run / "README.md").read_text(encoding="utf-8")
    run, _ = trained("pair_regression")
    card = (run / "README.md").read_text(encoding="utf-8")
    assert '"text_pair"' in card and 'function_to_apply="none"' in card


def test_evaluation_only_run_uses_the_trained_settings(trained, tmp_path):
    """A predict-only run from a trained dir reads its marker and truncation side from the directory (no options)
    and writes the same predictions; a contradicting pooling option is refused."""
    from seqcls.train import main

    run, test_file = trained("truncation_left")
    again = tmp_path / "again"
    main(["--model_name_or_path", str(run), "--output_dir", str(again), "--do_predict", "--test_file", str(test_file),
          "--use_cpu", "true", "--report_to", "none"])
    assert (again / "predict_results.jsonl").read_text() == (run / "predict_results.jsonl").read_text()
    with pytest.raises(UsageError, match="trained with '<|endoftext|>'.*pooling_token"):
        main(["--model_name_or_path", str(run), "--output_dir", str(tmp_path / "x"), "--do_predict", "--test_file",
              str(test_file), "--use_cpu", "true", "--report_to", "none", "--cls_token", "<|im_end|>"])


def test_format_1_directory_still_gives_its_predictions(trained, tmp_path):
    """A directory written before the tokenizer carried the marker (seqcls.json without `format`, a tokenizer
    without the marker in its post-processor): loading appends the marker as training did."""
    import shutil

    from transformers import AutoTokenizer

    from seqcls import Classifier

    run, test_file = trained("append_eos")
    old = tmp_path / "old"
    shutil.copytree(run, old)
    tok = AutoTokenizer.from_pretrained(run)
    tok.backend_tokenizer.post_processor = None  # as seqcls 0.1 saved it: marker not appended by the tokenizer
    tok.save_pretrained(old)
    saved = json.loads((old / "seqcls.json").read_text())
    for key in ("format", "padding_side"):
        saved.pop(key)
    (old / "seqcls.json").write_text(json.dumps(saved))
    texts = [r["text"] for r in read_jsonl(test_file)]
    names = list(model_dir.read_settings(old).label_space.names)
    assert_same_rows(read_jsonl(run / "predict_results.jsonl"),
                     Classifier.from_pretrained(old, device="cpu").predict(texts), names, "format 1")


# ----------------------------------------------------------------------------------------------------------
# seqcls.json: bad files are one line naming the file and the field

GOOD = {"format": 2, "label_space": {"problem_type": MULTI, "names": ["a", "b"]}, "text_column_names": ["text"],
        "max_seq_length": 32, "truncation_side": "right", "pooling_token": None, "thresholds": [0.3, 0.6]}


@pytest.mark.parametrize("change, field", [
    ({"format": 99}, "newer than this seqcls"),
    ({"label_space": None}, "'label_space' is missing"),
    ({"label_space": {"problem_type": "ranking", "names": ["a"]}}, "'label_space.problem_type'"),
    ({"label_space": {"problem_type": SINGLE, "names": []}}, "'label_space.names' is empty"),
    ({"thresholds": [0.3]}, "'thresholds' must be 2 numbers between 0 and 1"),
    ({"thresholds": [0.3, 1.5]}, "'thresholds' must be 2 numbers between 0 and 1"),
    ({"thresholds": {"a": 0.2, "zzz": 0.1}}, "'thresholds' names unknown label"),
    ({"label_space": {"problem_type": SINGLE, "names": ["a", "b"]}}, "'thresholds' is given for a single_label"),
    ({"max_seq_length": 0}, "'max_seq_length' is 0"),
    ({"truncation_side": "middle"}, "'truncation_side' is 'middle'"),
    ({"text_column_names": []}, "'text_column_names' must be a non-empty list"),
])
def test_bad_settings_name_the_file_and_field(change, field):
    with pytest.raises(UsageError, match=field) as e:
        model_dir.ModelSettings.from_dict({**GOOD, **change}, "runs/x/seqcls.json")
    assert str(e.value).startswith("runs/x/seqcls.json:") and "\n" not in str(e.value)


def test_settings_round_trip():
    settings = model_dir.ModelSettings.from_dict(GOOD, "x")
    assert model_dir.ModelSettings.from_dict(settings.to_dict(), "x") == settings
    assert settings.thresholds == (0.3, 0.6) and settings.columns.text == ["text"]


def test_directory_that_is_not_a_trained_classifier(tiny_model_dir, trained, tmp_path, capfd):
    from seqcls import Classifier

    with pytest.raises(UsageError, match="has no trained classification head .score.weight is not in its weights"):
        Classifier.from_pretrained(tiny_model_dir, device="cpu")  # a base model: no trained head
    with pytest.raises(UsageError, match="not a model directory"):
        Classifier.from_pretrained(tmp_path, device="cpu")
    run, _ = trained("plain")
    settings = json.loads((run / "seqcls.json").read_text())
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(run, broken)
    settings["label_space"]["names"] = ["only", "two"]  # the model has three outputs
    (broken / "seqcls.json").write_text(json.dumps(settings))
    with pytest.raises(UsageError, match="field 'label_space' has 2 label"):
        Classifier.from_pretrained(broken, device="cpu")
    # the CLI's entry point (in-process; test_predict runs the real process on a bad model directory): one line,
    # exit 2, no output written
    out = tmp_path / "p.jsonl"
    proc = run_entry_point(["-m", "seqcls.predict", str(broken), str(ROOT / "data/example_test.jsonl"), "-o",
                            str(out)], capfd)
    assert proc.returncode == 2 and "seqcls.json: field 'label_space'" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_run_killed_during_its_final_save_says_to_rerun_training(trained, tmp_path):
    """Trainer.save_model writes model.safetensors in place: a kill during the final save leaves it cut short (and
    the tokenizer not yet written), in an output_dir whose run identity is not marked finished."""
    import shutil

    from seqcls import Classifier

    run, _ = trained("plain")
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    weights = (killed / "model.safetensors").read_bytes()
    (killed / "model.safetensors").write_bytes(weights[:len(weights) // 3])
    record = json.loads((killed / "run_identity.json").read_text())
    assert record["finished"] is True  # the copy of a finished run: a cut file alone is a damaged directory
    with pytest.raises(UsageError, match="could not be loaded") as damaged:
        Classifier.from_pretrained(killed, device="cpu")
    assert "did not finish" not in str(damaged.value)
    (killed / "run_identity.json").write_text(json.dumps({**record, "finished": False}))
    with pytest.raises(UsageError, match="did not finish saving .its run_identity.json is not marked finished.*"
                                         "rerun the same training command"):
        Classifier.from_pretrained(killed, device="cpu")
    # a run from before identities: its checkpoint says it; killed before the tokenizer was saved (the CLI prints
    # a UsageError as one line with exit 2: test_directory_that_is_not_a_trained_classifier)
    (killed / "run_identity.json").unlink()
    (killed / "tokenizer.json").unlink()
    (killed / "checkpoint-4").mkdir()
    with pytest.raises(UsageError, match="did not finish saving .it still holds checkpoint-4.") as unfinished:
        Classifier.from_pretrained(killed, device="cpu")
    assert "\n" not in str(unfinished.value)
    (killed / "config.json").unlink()  # killed before anything of the final save was written
    with pytest.raises(UsageError, match="did not finish saving .it still holds checkpoint-4.: no config.json yet"):
        Classifier.from_pretrained(killed, device="cpu")
