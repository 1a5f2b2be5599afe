import pytest

from seqcls.arguments import parse_args, to_loggable_dict
from seqcls.errors import UsageError

BASE = ["--model_name_or_path", "m", "--train_file", "t.jsonl", "--output_dir", "out"]


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_official_command_line_parses():
    model, data, train = parse_args(BASE + ["--text_column_names", "title,body", "--max_seq_length", "64",
                                            "--do_train", "--learning_rate", "2e-5", "--pad_to_max_length", "true"])
    assert model.model_name_or_path == "m"
    assert data.max_seq_length == 64 and data.pad_to_max_length is True
    assert train.learning_rate == 2e-5 and train.do_train


def test_yaml_config_then_cli_overrides(tmp_path):
    cfg = write(tmp_path, "model_name_or_path: m\ntrain_file: t.jsonl\nlearning_rate: 5e-4\n"
                          "num_train_epochs: 2\nclass_names: [积极, 消极, 中立]\noutput_dir: o\n")
    model, data, train = parse_args([cfg, "--num_train_epochs", "3"])
    # YAML reads 5e-4 as a string: it must arrive as a float
    assert isinstance(train.learning_rate, float) and train.learning_rate == 5e-4
    assert train.num_train_epochs == 3
    assert data.class_names == ["积极", "消极", "中立"]


def test_json_config(tmp_path):
    cfg = write(tmp_path, '{"model_name_or_path": "m", "train_file": "t.jsonl", "output_dir": "o"}', "c.json")
    model, _, _ = parse_args([cfg])
    assert model.model_name_or_path == "m"


def test_unknown_config_keys_are_listed(tmp_path):
    cfg = write(tmp_path, "model_name_or_path: m\ntrain_file: t.jsonl\nlearnin_rate: 1\nfoo: 2\n")
    with pytest.raises(UsageError, match=r"c.yaml: unknown key\(s\): foo, learnin_rate"):
        parse_args([cfg])


def test_wrong_type_in_config_names_key_and_file(tmp_path):
    cfg = write(tmp_path, "model_name_or_path: m\ntrain_file: t.jsonl\nlearning_rate: fast\n")
    with pytest.raises(UsageError, match=r"c.yaml: learning_rate: 'fast' is not a valid float"):
        parse_args([cfg])


def test_unknown_cli_option_is_an_error():
    with pytest.raises(UsageError, match="--no_such_option"):
        parse_args(BASE + ["--no_such_option", "1"])


def test_typo_suggests_the_nearest_option():
    with pytest.raises(UsageError, match=r"unknown option --learnin_rate \(did you mean --learning_rate\?\)"):
        parse_args(BASE + ["--learnin_rate", "1e-3"])


def test_config_typo_suggests_the_nearest_key(tmp_path):
    cfg = write(tmp_path, "model_name_or_path: m\ntrain_file: t.jsonl\noutput_dir: o\nnum_train_epoch: 1\n")
    with pytest.raises(UsageError, match=r"num_train_epoch \(did you mean num_train_epochs\?\)"):
        parse_args([cfg])


def test_abbreviations_are_not_taken_for_another_option():
    """argparse would read --max_seq_len as --max_seq_length: a prefix must not silently set another option."""
    with pytest.raises(UsageError, match="did you mean --max_seq_length"):
        parse_args(BASE + ["--max_seq_len", "64"])


def test_negative_batch_size_is_an_error():
    with pytest.raises(UsageError, match="per_device_train_batch_size must be at least 1"):
        parse_args(BASE + ["--per_device_train_batch_size", "-4"])


def test_label_names_of_transformers_is_not_the_class_order():
    with pytest.raises(UsageError, match="use class_names"):
        parse_args(BASE + ["--label_names", "a", "b"])


def test_output_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        parse_args(["--model_name_or_path", "m", "--train_file", "t.jsonl", "--output_dir", str(f)])


def test_token_is_redacted_from_loggable_args():
    args = parse_args(BASE + ["--token", "hf_secret123"])
    flat = to_loggable_dict(*args)
    assert "hf_secret123" not in repr(flat)


def test_hub_token_is_refused_because_checkpoints_pickle_it():
    """The Trainer saves its arguments, hub_token included, into every training_args.bin: refuse it up front."""
    with pytest.raises(UsageError, match="HF_TOKEN environment variable"):
        parse_args(BASE + ["--hub_token", "hf_secret123"])


# Every option of transformers' examples/pytorch/text-classification/run_classification.py (ModelArguments and
# DataTrainingArguments; TrainingArguments is transformers' own class here).
OFFICIAL_OPTIONS = [
    "model_name_or_path", "config_name", "tokenizer_name", "cache_dir", "use_fast_tokenizer", "model_revision",
    "token", "trust_remote_code", "ignore_mismatched_sizes",
    "dataset_name", "dataset_config_name", "do_regression", "text_column_names", "text_column_delimiter",
    "train_split_name", "validation_split_name", "test_split_name", "remove_splits", "remove_columns",
    "label_column_name", "max_seq_length", "preprocessing_num_workers", "overwrite_cache", "pad_to_max_length",
    "shuffle_train_dataset", "shuffle_seed", "max_train_samples", "max_eval_samples", "max_predict_samples",
    "metric_name", "train_file", "validation_file", "test_file",
]


def test_every_official_option_is_an_option_here():
    from seqcls.arguments import make_parser

    dests = {a.dest for a in make_parser()._actions}
    assert [name for name in OFFICIAL_OPTIONS if name not in dests] == []


@pytest.mark.parametrize("name", ["evaluation_strategy", "use_auth_token", "no_cuda", "task_name"])
def test_old_or_foreign_options_are_refused_with_what_to_use(name):
    with pytest.raises(UsageError, match=r"command line: --\w+ .*(use|give) --"):
        parse_args(BASE + [f"--{name}", "x"])


def test_help_lists_our_sections_first_then_the_trainer():
    from seqcls.arguments import SECTIONS, make_parser

    text = make_parser().format_help()
    positions = [text.index(f"\n{title}:\n") for title in [*SECTIONS, "Trainer options (transformers.TrainingArguments)"]]
    assert positions == sorted(positions)
    assert "--learning-rate" not in text and "--no_use_fast_tokenizer sets it false" in text


def test_help_sections_hold_every_option_of_ours():
    """An option added to our dataclasses without a section would land among the Trainer's options."""
    import dataclasses

    import transformers

    from seqcls.arguments import SECTIONS, DataTrainingArguments, ModelArguments, TrainingArguments

    trainer = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    ours = {f.name for cls in (ModelArguments, DataTrainingArguments, TrainingArguments)
            for f in dataclasses.fields(cls)} - trainer
    placed = {name for names in SECTIONS.values() for name in names}
    assert sorted(ours - placed) == []


@pytest.mark.parametrize("extra, message", [
    (["--train_split_name", "foo"], "applies to --dataset_name only"),
    (["--validation_file", "v.jsonl", "--validation_split_percentage", "10"], "remove one of them"),
    (["--remove_columns", "label"], "that column is used"),
    (["--dataset_name", "x"], "not both"),
])
def test_options_that_would_do_nothing_are_errors(extra, message):
    with pytest.raises(UsageError, match=message):
        parse_args(BASE + extra)


def test_options_that_do_nothing_here_are_warned(caplog):
    with caplog.at_level("WARNING", logger="seqcls"):
        parse_args(BASE + ["--shuffle_seed", "3", "--lora_r", "8", "--text_column_delimiter", "|"])
    text = caplog.text
    assert "shuffle_seed does nothing" in text and "lora_r do(es) nothing" in text and "one column" in text


def test_short_run_defaults_and_overrides():
    _, _, train = parse_args(BASE)
    assert train.logging_steps == 0.02 and train.per_device_eval_batch_size == 32
    _, _, train = parse_args(BASE + ["--logging_steps", "10", "--per_device_eval_batch_size", "8"])
    assert train.logging_steps == 10 and train.per_device_eval_batch_size == 8


def test_builtin_metric_names_need_no_evaluate():
    _, data, _ = parse_args(BASE + ["--metric_name", "accuracy"])
    assert data.metric_name == "accuracy"


def test_evaluate_metric_is_checked_before_any_loading(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "evaluate", None)  # as without the package: import fails
    with pytest.raises(UsageError, match="needs the evaluate package"):
        parse_args(BASE + ["--metric_name", "matthews_correlation"])


def test_remove_splits_of_a_dataset_directory(tmp_path):
    """--dataset_name may be a local directory; --remove_splits drops one of its splits (the official reuters
    example drops its `unused` split this way)."""
    from seqcls.data import load_raw_datasets

    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    _, data, _ = parse_args(["--model_name_or_path", "m", "--dataset_name", str(tmp_path), "--output_dir",
                             str(tmp_path / "o"), "--remove_splits", "test"])
    raw, _ = load_raw_datasets(data)
    assert sorted(raw) == ["train", "validation"]


def amazon_like(path, n=48):
    import json

    rows = [{"review_title": f"title {i}", "review_body": ("good " if i % 2 else "bad ") * (1 + i % 5),
             "product_category": "home", "stars": 1 + i % 2 * 4} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_official_readme_examples_parse_and_one_runs(tmp_path, tiny_model_dir):
    """The official README's two run_classification.py command lines, with local files and the tiny model."""
    train = amazon_like(tmp_path / "train.jsonl")
    valid = amazon_like(tmp_path / "valid.jsonl", 16)
    amazon = ["--model_name_or_path", str(tiny_model_dir), "--train_file", train, "--validation_file", valid,
              "--shuffle_train_dataset", "--metric_name", "accuracy",
              "--text_column_name", "review_title,review_body,product_category", "--text_column_delimiter", "\\n",
              "--label_column_name", "stars", "--do_train", "--do_eval", "--max_seq_length", "512",
              "--per_device_train_batch_size", "32", "--learning_rate", "2e-5", "--num_train_epochs", "1",
              "--output_dir", str(tmp_path / "amazon")]
    multi = tmp_path / "multi.jsonl"
    multi.write_text('{"text": "oil prices", "topics": ["crude"]}\n{"text": "grain", "topics": ["grain", "wheat"]}\n')
    reuters = ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(multi), "--validation_file",
               str(multi), "--shuffle_train_dataset", "--metric_name", "f1", "--text_column_name", "text",
               "--label_column_name", "topics", "--do_train", "--do_eval", "--max_seq_length", "512",
               "--per_device_train_batch_size", "32", "--learning_rate", "2e-5", "--num_train_epochs", "15",
               "--output_dir", str(tmp_path / "reuters")]
    _, data, _ = parse_args(reuters)
    assert data.text_column_names == "text" and data.metric_name == "f1"

    from seqcls.train import main

    results = main(amazon + ["--use_cpu", "true", "--report_to", "none", "--save_strategy", "no", "--max_steps", "2"])
    assert 0 <= results["eval_accuracy"] <= 1
