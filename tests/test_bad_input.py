"""Bad input: every mistake a user makes in data files, configs and options gives one line that says what is
wrong, where (file:line or key) and how to fix it; exit status 2; no traceback; nothing written.

Table-driven: each case writes its files into a fresh directory, runs the CLI's entry point (`seqcls.train.cli`,
`seqcls.predict.cli`) once and checks the message, the exit status, stderr and the output directory. The cases run
in-process (a subprocess would spend seconds importing torch only to fail in argument parsing); the ones in
SUBPROCESS run the real command in a subprocess, so the exit status and stderr of the process itself stay checked.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from conftest import ROOT, run_cli, run_entry_point

# cases run as a real process (exit status of the program, nothing on stderr but the one line): one per command
# (training and prediction both have an invalid_json_line case); the others run the same entry point in-process,
# where each real process would first spend about 7 CPU-s importing torch and transformers
SUBPROCESS = {"invalid_json_line"}


GOOD = '{"text": "好吃，还会再来", "label": "积极"}'
BAD = '{"text": "太难吃了", "label": "消极"}'
TRAIN = "\n".join([GOOD, BAD, GOOD, BAD]) + "\n"


@dataclass
class Case:
    """One bad input. `files` are written into the case's directory {d}; `args` and `expect` may use {d}, {out}
    and {tiny}. `setup(d, tiny)` builds what plain files cannot (a model directory, a read-only folder)."""

    files: dict[str, str | bytes] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)
    setup: Callable[[Path, Path], None] | None = None
    base: bool = True  # start from the fast training command line below
    output_dir: str = "{out}"  # the output_dir that must stay as it was


def base_args(d: Path, out: Path, tiny: Path) -> list[str]:
    return [str(ROOT / "run_classification.py"), "--model_name_or_path", str(tiny), "--output_dir", str(out),
            "--train_file", str(d / "train.jsonl"), "--do_train", "--max_seq_length", "64", "--max_steps", "1",
            "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no"]


# --- setups that plain files cannot express ------------------------------------------------------------------

def model_without_label_map(d: Path, tiny: Path) -> None:
    shutil.copytree(tiny, d / "model")  # the base model: weights, no classification head, no label map


def model_without_score_head(d: Path, tiny: Path) -> None:
    shutil.copytree(tiny, d / "model")
    config = json.loads((d / "model/config.json").read_text())
    config.update(problem_type="single_label_classification", id2label={"0": "消极", "1": "积极"},
                  label2id={"消极": 0, "积极": 1})
    (d / "model/config.json").write_text(json.dumps(config))


def model_with_bin_weights_only(d: Path, tiny: Path) -> None:
    import torch
    from safetensors.torch import load_file

    (d / "model").mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, d / "model" / name)
    torch.save(load_file(tiny / "model.safetensors"), d / "model/pytorch_model.bin")


def adapter_without_base(d: Path, tiny: Path) -> None:
    # the files a LoRA run saves, pointing at a base model that has been moved or deleted
    (d / "adapter").mkdir()
    (d / "adapter/adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": str(d / "missing-base"), "peft_type": "LORA", "task_type": "SEQ_CLS", "r": 8,
        "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["score"]}))


def finished_run(d: Path, tiny: Path) -> None:
    (d / "out").mkdir()
    (d / "out/all_results.json").write_text('{"eval_accuracy": 0.9}\n')
    (d / "out/model.safetensors").write_bytes(b"weights of a finished run")


def incomplete_checkpoint(d: Path, tiny: Path) -> None:
    ckpt = d / "out/checkpoint-4"  # killed while saving: weights written, trainer_state.json (written last) not
    ckpt.mkdir(parents=True)
    shutil.copy(tiny / "config.json", ckpt / "config.json")
    (ckpt / "model.safetensors").write_bytes(b"half a file")


def output_dir_is_a_file(d: Path, tiny: Path) -> None:
    (d / "out").write_text("my notes, not a directory\n")


def unwritable_parent(d: Path, tiny: Path) -> None:
    (d / "locked").mkdir()
    os.chmod(d / "locked", 0o555)


# evaluate/predict with an existing model, no training
PREDICT_WITH = ["--model_name_or_path", "{d}/model", "--output_dir", "{out}",
                "--test_file", "{d}/test.jsonl", "--do_predict", "--max_seq_length", "64", "--use_cpu", "true",
                "--report_to", "none"]

UNWRITABLE = "{d}/locked/out" if os.geteuid() != 0 else "/sys/seqcls-test/out"  # root writes through chmod 555


CASES: dict[str, Case] = {
    # --- data files ------------------------------------------------------------------------------------------
    "invalid_json_line": Case(
        files={"train.jsonl": GOOD + '\n{"text": "差", "label": }\n'},
        expect=["{d}/train.jsonl:2: invalid JSON (Expecting value at column 24); one JSON object per line"]),
    "json_line_not_an_object": Case(
        files={"train.jsonl": GOOD + '\n["太难吃了", "消极"]\n'},
        expect=["{d}/train.jsonl:2: expected a JSON object {...}, got list"]),
    "non_utf8_byte": Case(
        files={"train.jsonl": (GOOD + "\n").encode() + b'{"text": "caf\xe9", "label": "x"}\n'},
        expect=["{d}/train.jsonl:2: byte 0xe9 at column 14 is not UTF-8; save the file as UTF-8"]),
    "empty_file": Case(files={"train.jsonl": ""}, expect=["{d}/train.jsonl: the file is empty"]),
    "only_blank_lines": Case(
        files={"train.jsonl": "\n  \n"},
        expect=["{d}/train.jsonl: the file has no rows; give it at least one JSON object per line"]),
    "empty_text": Case(
        files={"train.jsonl": GOOD + "\n" + BAD + '\n{"text": "  ", "label": "积极"}\n'},
        expect=["{d}/train.jsonl:3: the text ('text') is empty; fill it in or remove the row"]),
    "null_label": Case(
        files={"train.jsonl": GOOD + '\n{"text": "一般", "label": null}\n'},
        expect=["{d}/train.jsonl:2: the label is null; give every row a label or remove the row"]),
    "list_label_in_single_label_file": Case(
        files={"train.jsonl": TRAIN + '{"text": "还行", "label": ["积极"]}\n'},
        expect=["{d}/train.jsonl:5: label ['积极'] is a list, but 4 row(s) (first on line 1) have a str label; "
                "use one type per file"]),
    "mixed_int_and_str_labels": Case(
        files={"train.jsonl": TRAIN + '{"text": "还行", "label": 2}\n'},
        expect=["{d}/train.jsonl:5: label 2 is a number, but 4 row(s) (first on line 1) have a str label; "
                "use one type per file: strings or integers for single-label"]),
    "label_unseen_in_train": Case(
        files={"train.jsonl": TRAIN, "dev.jsonl": GOOD + '\n{"text": "一般般", "label": "中立"}\n'},
        args=["--validation_file", "{d}/dev.jsonl", "--do_eval"],
        expect=["{d}/dev.jsonl:2: label '中立' is not among the train labels ['消极', '积极']; fix the row, or list "
                "every label with class_names"]),
    "label_missing_from_class_names": Case(
        files={"train.jsonl": TRAIN}, args=["--class_names", "积极", "中立"],
        expect=["label(s) ['消极'] are not in class_names ['积极', '中立']; add them to class_names"]),
    "text_is_a_number": Case(
        files={"train.jsonl": GOOD + '\n{"text": 12345, "label": "消极"}\n'},
        expect=["{d}/train.jsonl:2: column 'text' holds 12345 (int), not text; quote it as a string"]),
    "missing_text_column": Case(
        files={"train.jsonl": '{"sentence": "好吃", "label": "积极"}\n'},
        expect=["{d}/train.jsonl:1: no column 'text'; columns there: sentence, label. Set text_column_names"]),
    "missing_label_column": Case(
        files={"train.jsonl": '{"text": "好吃", "y": "积极"}\n'},
        expect=["{d}/train.jsonl:1: no label column 'label'; columns there: text, y. Set label_column_name"]),
    "regression_label_not_a_number": Case(
        files={"train.jsonl": '{"text": "a", "label": 0.5}\n{"text": "b", "label": 1.5}\n'
                              '{"text": "c", "label": "high"}\n'},
        args=["--problem_type", "regression"],
        expect=["{d}/train.jsonl:3: label 'high' is a str, but 2 row(s) (first on line 1) have a number label; "
                "use one type per file", "numbers for regression"]),
    "regression_label_nan": Case(
        files={"train.jsonl": '{"text": "a", "label": 0.5}\n{"text": "b", "label": NaN}\n'},
        expect=["{d}/train.jsonl:2: label nan is not a finite number; fix or remove the row"]),
    "regression_label_infinite": Case(
        files={"train.jsonl": '{"text": "a", "label": 0.5}\n{"text": "b", "label": -Infinity}\n'},
        expect=["{d}/train.jsonl:2: label -inf is not a finite number; fix or remove the row"]),
    "csv_ragged_row": Case(
        files={"train.csv": "text,label\n好吃,积极\n难吃,还贵,消极\n"},
        args=["--train_file", "{d}/train.csv"],
        expect=["{d}/train.csv:3: 3 fields where the header has 2; quote fields that contain the delimiter"]),
    "csv_empty_text": Case(
        files={"train.csv": 'text,label\n好吃,积极\n"",消极\n'},
        args=["--train_file", "{d}/train.csv"],
        expect=["{d}/train.csv:3: the text ('text') is empty; fill it in or remove the row"]),
    "missing_data_file": Case(
        args=["--train_file", "{d}/trian.jsonl"], expect=["data file {d}/trian.jsonl does not exist"]),
    "data_files_mix_formats": Case(
        files={"train.jsonl": TRAIN, "dev.csv": "text,label\n好吃,积极\n"},
        args=["--validation_file", "{d}/dev.csv", "--do_eval"],
        expect=["data files mix formats", "use one format for all splits"]),
    # --- config files and command-line options ----------------------------------------------------------------
    "config_unknown_key": Case(
        files={"train.jsonl": TRAIN, "config.yaml": "model_name_or_path: {tiny}\ntrain_file: {d}/train.jsonl\n"
               "output_dir: {out}\nlearnin_rate: 1e-3\n"},
        args=["{d}/config.yaml"], base=False,
        expect=["{d}/config.yaml: unknown key(s): learnin_rate (did you mean learning_rate?) (see `python "
                "run_classification.py --help`"]),
    "config_wrong_type": Case(
        files={"train.jsonl": TRAIN, "config.yaml": "model_name_or_path: {tiny}\ntrain_file: {d}/train.jsonl\n"
               "output_dir: {out}\nlearning_rate: fast\n"},
        args=["{d}/config.yaml"], base=False,
        expect=["{d}/config.yaml: learning_rate: 'fast' is not a valid float; write a number such as 2e-5"]),
    "config_not_yaml": Case(
        files={"train.jsonl": TRAIN, "config.yaml": "model_name_or_path: {tiny}\nlearning_rate: [1e-3\n"},
        args=["{d}/config.yaml"], base=False,
        expect=["{d}/config.yaml:3: not valid YAML"]),
    "cli_wrong_type": Case(
        files={"train.jsonl": TRAIN}, args=["--learning_rate", "fast"],
        expect=["command line: argument --learning_rate: invalid float value: 'fast' (see --help)"]),
    "cli_unknown_option": Case(
        files={"train.jsonl": TRAIN}, args=["--learnin_rate", "1e-3"],
        expect=["command line: unknown option --learnin_rate (did you mean --learning_rate?) (see --help)"]),
    "negative_batch_size": Case(
        files={"train.jsonl": TRAIN}, args=["--per_device_train_batch_size", "-8"],
        expect=["per_device_train_batch_size must be at least 1, got -8; give a whole number of 1 or more"]),
    "max_seq_length_beyond_the_model": Case(
        files={"train.jsonl": TRAIN}, args=["--max_seq_length", "5000"],
        expect=["max_seq_length 5000 is beyond the model's limit of 1024 positions; use at most 1024"]),
    # --- output directory -------------------------------------------------------------------------------------
    "output_dir_is_a_file": Case(
        files={"train.jsonl": TRAIN}, setup=output_dir_is_a_file,
        expect=["output_dir {out} is a file; choose a directory path"]),
    "output_dir_unwritable": Case(
        files={"train.jsonl": TRAIN}, setup=unwritable_parent, args=["--output_dir", UNWRITABLE],
        output_dir=UNWRITABLE,
        expect=[f"output_dir {UNWRITABLE} is not writable (", "choose a directory you can write to, or fix its "
                "permissions"]),
    "output_dir_holds_a_finished_run": Case(
        files={"train.jsonl": TRAIN}, setup=finished_run,
        expect=["output_dir {out} already holds a finished run (all_results.json); use another output_dir, or "
                "--overwrite_output_dir true to replace it"]),
    "resume_from_incomplete_checkpoint": Case(
        files={"train.jsonl": TRAIN}, setup=incomplete_checkpoint,
        args=["--resume_from_checkpoint", "{out}/checkpoint-4"],
        expect=["resume_from_checkpoint {out}/checkpoint-4 is incomplete (no trainer_state.json (it is written "
                "last)); give a complete checkpoint-N directory"]),
    # --- models -----------------------------------------------------------------------------------------------
    "model_dir_missing": Case(
        files={"train.jsonl": TRAIN}, args=["--model_name_or_path", "{d}/no-such-model"],
        expect=["model_name_or_path {d}/no-such-model: no such directory; give a model directory (with "
                "config.json) or a Hub id"]),
    "model_without_label_map": Case(
        files={"test.jsonl": TRAIN}, setup=model_without_label_map,
        args=PREDICT_WITH, base=False,
        expect=["model_name_or_path {d}/model has no label map (no problem_type in its config.json): it is a base "
                "model, not a trained classifier; give the output_dir of a training run"]),
    "model_without_score_head": Case(
        files={"test.jsonl": TRAIN}, setup=model_without_score_head,
        args=PREDICT_WITH, base=False,
        expect=["model_name_or_path {d}/model has no trained classification head (score.weight is not in its "
                "weights), so its predictions would be random"]),
    "lora_adapter_without_base_model": Case(
        files={"train.jsonl": TRAIN}, setup=adapter_without_base, args=["--model_name_or_path", "{d}/adapter"],
        expect=["model_name_or_path {d}/adapter is a LoRA adapter whose base model {d}/missing-base is missing "
                "(adapter_config.json: base_model_name_or_path)"]),
    "pickle_weights_only": Case(
        files={"train.jsonl": TRAIN}, setup=model_with_bin_weights_only, args=["--model_name_or_path", "{d}/model"],
        expect=["model_name_or_path {d}/model has only pickle weights (pytorch_model.bin), which can run code when "
                "loaded; convert them to safetensors, or pass --use_safetensors false if you trust the file"]),
}


# --- issue 13: what datasets refused without a line number, and what was silently accepted ----------------------
CASES.update({
    "json_duplicate_key": Case(
        files={"train.jsonl": TRAIN + '{"text": "还行", "label": "积极", "label": "消极"}\n'},
        expect=["{d}/train.jsonl:5: key 'label' appears twice in one object (datasets would refuse the file); keep "
                "one of them"]),
    "json_lone_surrogate_escape": Case(
        files={"train.jsonl": TRAIN + '{"text": "还行\\ud800", "label": "积极"}\n'},
        expect=["{d}/train.jsonl:5: column 'text' holds the escape \\ud800, half of a UTF-16 surrogate pair without "
                "its other half, which is not text"]),
    "label_types_differ_across_files": Case(
        files={"train.jsonl": TRAIN, "dev.jsonl": '{"text": "好吃", "label": 1}\n{"text": "难吃", "label": 0}\n'},
        args=["--validation_file", "{d}/dev.jsonl", "--do_eval"],
        expect=["{d}/dev.jsonl:1: label 1 is an integer, but the train labels are strings ['消极', '积极']; use one "
                "label type in every file"]),
    "empty_string_label": Case(
        files={"train.jsonl": TRAIN + '{"text": "还行", "label": ""}\n'},
        expect=["{d}/train.jsonl:5: the label is empty (''); give every row a label or remove the row"]),
    "nested_list_label": Case(
        files={"train.jsonl": '{"text": "a", "label": [["x"]]}\n{"text": "b", "label": [["y"]]}\n'},
        expect=["{d}/train.jsonl:1: label [['x']] holds ['x'] (list); a multi-label row is a flat list of label "
                "names"]),
    "empty_name_in_a_label_list": Case(
        files={"train.jsonl": '{"text": "a", "label": ["x"]}\n{"text": "b", "label": ["y", " "]}\n'},
        expect=["{d}/train.jsonl:2: label ['y', ' '] holds an empty name; remove it from the list"]),
    "parquet_file_that_is_not_parquet": Case(
        files={"train.parquet": "not parquet at all\n"}, args=["--train_file", "{d}/train.parquet"],
        expect=["{d}/train.parquet: datasets could not read the file (Parquet magic bytes not found in footer.",
                "fix the file, or convert it to JSON lines"]),
    "config_list_where_a_number_belongs": Case(
        files={"train.jsonl": TRAIN, "config.yaml": "model_name_or_path: {tiny}\ntrain_file: {d}/train.jsonl\n"
               "output_dir: {out}\nlearning_rate: [1e-3, 2e-3]\n"},
        args=["{d}/config.yaml"], base=False,
        expect=["{d}/config.yaml: learning_rate: expected a number, got a list ['1e-3', '2e-3']; give one value"]),
    "config_duplicate_key": Case(
        files={"train.jsonl": TRAIN, "config.yaml": "model_name_or_path: {tiny}\ntrain_file: {d}/train.jsonl\n"
               "output_dir: {out}\nlearning_rate: 1e-3\nseed: 1\nlearning_rate: 2e-3\n"},
        args=["{d}/config.yaml"], base=False,
        expect=["{d}/config.yaml:6: key learning_rate is given twice (first on line 4); keep one of them"]),
    "max_train_samples_zero": Case(
        files={"train.jsonl": TRAIN}, args=["--max_train_samples", "0"],
        expect=["max_train_samples must be at least 1, got 0; leave it out to use every row"]),
    "max_predict_samples_zero": Case(
        files={"train.jsonl": TRAIN}, args=["--test_file", "{d}/train.jsonl", "--do_predict",
                                            "--max_predict_samples", "0"],
        expect=["max_predict_samples must be at least 1, got 0"]),
    "label_column_is_the_text_column": Case(
        files={"train.jsonl": TRAIN}, args=["--label_column_name", "text"],
        expect=["label_column_name 'text' is also a text column (text_column_names / text_pair_column_name): the "
                "model would read its own label; name the column that holds the labels"]),
})

def fill(text: str, d: Path, out: Path, tiny: Path) -> str:
    return text.replace("{d}", str(d)).replace("{out}", str(out)).replace("{tiny}", str(tiny))


def snapshot(path: Path) -> dict | str | None:
    """What a path holds: None if absent, a file's hash, or every file under a directory with its hash."""
    if not path.exists():
        return None
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return {str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(path.rglob("*"))}


def assert_one_clean_error(proc, expect: list[str]) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for part in expect:
        assert part in errors[0], f"expected {part!r} in\n{errors[0]}"
    print(errors[0])  # pytest -s -k bad_input lists every message a user sees
    return errors[0]


@pytest.mark.parametrize("name", list(CASES))
def test_training_bad_input(name, tmp_path, tiny_model_dir, capfd):
    case = CASES[name]
    d = tmp_path
    out = d / "out"
    for fname, content in case.files.items():
        path = d / fname
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(fill(content, d, out, tiny_model_dir), encoding="utf-8")
    if case.setup:
        case.setup(d, tiny_model_dir)
    args = (base_args(d, out, tiny_model_dir) if case.base else [str(ROOT / "run_classification.py")])
    args += [fill(a, d, out, tiny_model_dir) for a in case.args]
    watched = Path(fill(case.output_dir, d, out, tiny_model_dir))
    before = snapshot(watched)
    try:
        proc = run_cli(*args) if name in SUBPROCESS else run_entry_point(args, capfd)
    finally:
        if (d / "locked").exists():
            os.chmod(d / "locked", 0o755)
    assert_one_clean_error(proc, [fill(e, d, out, tiny_model_dir) for e in case.expect])
    assert snapshot(watched) == before, f"{watched} changed"


def test_pickle_weights_load_when_the_user_opts_in(tmp_path, tiny_model_dir):
    """--use_safetensors false lets a .bin-only model load (here the run then stops at a later, cheap check)."""
    model_with_bin_weights_only(tmp_path, tiny_model_dir)
    (tmp_path / "train.jsonl").write_text(TRAIN, encoding="utf-8")
    args = base_args(tmp_path, tmp_path / "out", tiny_model_dir)
    proc = run_cli(*args, "--model_name_or_path", str(tmp_path / "model"), "--use_safetensors", "false",
                   "--max_seq_length", "5000")
    assert_one_clean_error(proc, ["max_seq_length 5000 is beyond the model's limit"])


# --- Safe fix-ups: a byte-order mark and CRLF line ends are accepted, the rows read as they should, and logged --

def data_args(train_file: str) -> SimpleNamespace:
    return SimpleNamespace(dataset_name=None, train_file=train_file, validation_file=None, test_file=None,
                           text_column_names="text", text_column_delimiter=" ", text_pair_column_name=None,
                           label_column_name="label", id_column=None, validation_split_percentage=None)


@pytest.mark.parametrize("name, content", [
    ("bom_crlf.jsonl", "\ufeff" + TRAIN.replace("\n", "\r\n")),
    ("bom_crlf.csv", "\ufefftext,label\r\n" + "好吃，还会再来,积极\r\n太难吃了,消极\r\n" * 2),
])
def test_bom_and_crlf_are_accepted_and_logged(name, content, tmp_path, caplog):
    from seqcls.data import load_raw_datasets

    path = tmp_path / name
    path.write_bytes(content.encode("utf-8"))
    with caplog.at_level(logging.INFO, logger="seqcls"):
        raw, sources = load_raw_datasets(data_args(str(path)))
    train = raw["train"]
    assert train.column_names == ["text", "label"]  # no "\ufefftext" column
    assert train["text"] == ["好吃，还会再来", "太难吃了"] * 2  # no "\r" left in the text
    assert train["label"] == ["积极", "消极"] * 2
    assert sources["train"].lines == [1, 2, 3, 4] if name.endswith(".jsonl") else [2, 3, 4, 5]
    assert f"{path}: a UTF-8 byte-order mark and CRLF line ends, accepted" in caplog.text


# --- Prediction CLI (issue 3): the same rules -------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A classifier from a two-step training run on the example data (the output_dir is the model)."""
    from seqcls.train import main  # in-process: the model is what the tests need, not the process

    out = tmp_path_factory.mktemp("trained") / "model"
    main(["--model_name_or_path", str(tiny_model_dir), "--train_file", str(ROOT / "data/example.jsonl"),
          "--output_dir", str(out), "--do_train", "--max_seq_length", "64", "--max_steps", "2", "--use_cpu", "true",
          "--report_to", "none", "--save_strategy", "no", "--seed", "0"])
    return out


PREDICT_CASES: dict[str, tuple[dict, list[str], list[str]]] = {
    # name: (files, extra args with {model}/{d}, expected parts of the one error line)
    "invalid_json_line": ({"in.jsonl": '{"text": "好吃"}\n{"text": \n'}, [], ["{d}/in.jsonl:2"]),
    "empty_line_in_text_file": ({"in.txt": "好吃\n\n难吃\n"}, [], ["{d}/in.txt:2"]),
    "empty_text": ({"in.jsonl": '{"text": "好吃"}\n{"text": ""}\n'}, [], ["{d}/in.jsonl:2"]),
    "missing_column": ({"in.jsonl": '{"sentence": "好吃"}\n'}, [], ["{d}/in.jsonl:1", "'text'"]),
    "text_is_a_number": ({"in.jsonl": '{"text": "好吃"}\n{"text": 5}\n'}, [], ["{d}/in.jsonl:2"]),
    "non_utf8_byte": ({"in.jsonl": b'{"text": "ok"}\n{"text": "caf\xe9"}\n'}, [], ["{d}/in.jsonl:2", "UTF-8"]),
    "csv_ragged_row": ({"in.csv": "text,id\n好吃,1\n难吃,2,3\n"}, [], ["{d}/in.csv:3"]),
    "input_missing": ({}, [], ["{d}/in.jsonl"]),
    "output_is_a_directory": ({"in.jsonl": '{"text": "好吃"}\n', "pred.jsonl/keep": ""}, [], ["{d}/pred.jsonl"]),
    "model_dir_missing": ({"in.jsonl": '{"text": "好吃"}\n'}, ["model={d}/no-such-model"], ["{d}/no-such-model"]),
    "model_without_label_map": ({"in.jsonl": '{"text": "好吃"}\n'}, ["model={d}/model", "setup=no_label_map"],
                                ["{d}/model"]),
    "model_without_score_head": ({"in.jsonl": '{"text": "好吃"}\n'}, ["model={d}/model", "setup=no_head"],
                                 ["{d}/model"]),
    "lora_adapter_without_base_model": ({"in.jsonl": '{"text": "好吃"}\n'}, ["model={d}/adapter", "setup=adapter"],
                                        ["{d}/missing-base"]),
    "pickle_weights_only": ({"in.jsonl": '{"text": "好吃"}\n'}, ["model={d}/model", "setup=bin_only"],
                            ["{d}/model has only pickle weights (pytorch_model.bin)", "--use_safetensors false"]),
}
def trained_with_bin_weights_only(d: Path, trained: Path) -> None:
    """A trained classifier whose weights are only a pickle file (as an older tool may have saved it)."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(trained, d / "model", ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(trained / "model.safetensors"), d / "model/pytorch_model.bin")


PREDICT_SETUPS = {"no_label_map": model_without_label_map, "no_head": model_without_score_head,
                  "adapter": adapter_without_base, "bin_only": trained_with_bin_weights_only}


@pytest.mark.parametrize("name", list(PREDICT_CASES))
def test_prediction_bad_input(name, tmp_path, tiny_model_dir, request, capfd):
    files, extra, expect = PREDICT_CASES[name]
    d = tmp_path
    for fname, content in files.items():
        path = d / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")
    options = dict(e.split("=", 1) for e in extra)
    if "setup" in options:  # the pickle case starts from a trained classifier, the others from the base model
        base = request.getfixturevalue("trained_model_dir") if options["setup"] == "bin_only" else tiny_model_dir
        PREDICT_SETUPS[options["setup"]](d, base)
    model = options["model"].replace("{d}", str(d)) if "model" in options \
        else str(request.getfixturevalue("trained_model_dir"))
    source = next((d / f for f in files if f.startswith("in.")), d / "in.jsonl")
    output = d / "pred.jsonl"
    before = snapshot(output)
    args = ["-m", "seqcls.predict", model, str(source), "-o", str(output)]
    proc = run_cli(*args) if name in SUBPROCESS else run_entry_point(args, capfd)
    assert_one_clean_error(proc, [e.replace("{d}", str(d)) for e in expect])
    assert snapshot(output) == before
    assert not list(d.glob(".pred.jsonl*")), "a temporary output file was left behind"


PREDICT_OPTION_CASES = {
    # name: (output, extra options, expected parts of the one error line); the input is a good one-row JSONL
    "max_seq_length_zero": ("pred.jsonl", ["--max_seq_length", "0"], ["--max_seq_length must be at least 1, got 0"]),
    "output_cannot_be_created": ("a_file/pred.jsonl", [], ["{d}/a_file", "cannot be created"]),
    "unknown_output_suffix": ("pred.xlsx", [], ["unknown suffix '.xlsx'", "--output_format"]),
    "chunk_rows_zero": ("pred.jsonl", ["--chunk_rows", "0"], ["--chunk_rows must be at least 1"]),
    "parquet_to_stdout": ("", ["--output_format", "parquet"], ["Parquet output needs -o"]),
}


@pytest.mark.parametrize("name", list(PREDICT_OPTION_CASES))
def test_prediction_bad_option(name, tmp_path, capfd, trained_model_dir):
    """Issue 13: options and output paths that used to be tracebacks (or JSONL in an .xlsx) are one line."""
    output, extra, expect = PREDICT_OPTION_CASES[name]
    (tmp_path / "in.jsonl").write_text('{"text": "好吃"}\n', encoding="utf-8")
    (tmp_path / "a_file").write_text("in the way of a directory", encoding="utf-8")
    before = snapshot(tmp_path)
    args = ["-m", "seqcls.predict", str(trained_model_dir), str(tmp_path / "in.jsonl"), *extra]
    args += ["-o", str(tmp_path / output)] if output else []
    assert_one_clean_error(run_entry_point(args, capfd), [e.replace("{d}", str(tmp_path)) for e in expect])
    assert snapshot(tmp_path) == before  # nothing written, no temporary file or work directory left


def test_prediction_parquet_input_is_read_as_parquet(tmp_path, capfd, trained_model_dir):
    """Issue 20: a Parquet input (which training accepts) is read as Parquet, not reported as "not UTF-8"; a
    Parquet file without the text column names the file and the columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["好吃", "太难吃了"]}), tmp_path / "in.parquet")
    pq.write_table(pa.table({"sentence": ["好吃"]}), tmp_path / "other.parquet")
    out = tmp_path / "pred.parquet"
    proc = run_entry_point(["-m", "seqcls.predict", str(trained_model_dir), str(tmp_path / "in.parquet"),
                            "-o", str(out)], capfd)
    assert proc.returncode == 0, proc.stderr
    assert pq.read_table(out).column("id").to_pylist() == [0, 1]
    proc = run_entry_point(["-m", "seqcls.predict", str(trained_model_dir), str(tmp_path / "other.parquet")], capfd)
    assert_one_clean_error(proc, [f"{tmp_path}/other.parquet: no column 'text'; columns there: sentence"])


# --- Safety defaults ----------------------------------------------------------------------------------------------

def test_safety_defaults():
    from seqcls.arguments import parse_args

    model_args, _, _ = parse_args(["--model_name_or_path", "m", "--train_file", "t.jsonl", "--output_dir", "o"])
    assert model_args.trust_remote_code is False
    assert model_args.use_safetensors is True


def test_yaml_config_cannot_run_code(tmp_path):
    """Configs are read with yaml.safe_load: a python tag is an error, not a call."""
    from seqcls.arguments import parse_args
    from seqcls.errors import UsageError

    marker = tmp_path / "pwned"
    config = tmp_path / "config.yaml"
    config.write_text(f'model_name_or_path: m\nlearning_rate: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(UsageError, match=r"config.yaml:2: not valid YAML"):
        parse_args([str(config)])
    assert not marker.exists()


def test_prediction_loads_pickle_weights_when_the_user_opts_in(tmp_path, trained_model_dir):
    """seqcls-predict loads what training loads: a .bin-only classifier only with --use_safetensors false."""
    from seqcls import predict

    trained_with_bin_weights_only(tmp_path, trained_model_dir)
    (tmp_path / "in.jsonl").write_text('{"text": "好吃"}\n', encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    assert predict.cli([str(tmp_path / "model"), str(tmp_path / "in.jsonl"), "-o", str(out),
                        "--use_safetensors", "false"]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["label"] in ("积极", "消极", "中立")
