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
