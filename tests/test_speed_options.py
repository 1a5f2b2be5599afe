"""The throughput options end to end: each changes speed, not results (or only as documented). The runs call the
training entry point in-process (`seqcls.train.main`, what `run_classification.py` runs): the claims are about what
training computes, and tests/test_train.py runs the real CLI."""
import json

import pytest
from safetensors.torch import load_file

from conftest import train_args


def run(model_dir, out, *extra):
    from seqcls.train import main

    main(train_args(model_dir, out, "--eval_strategy", "epoch", "--logging_steps", "1", *extra)[1:])
    return {
        "results": json.loads((out / "all_results.json").read_text()),
        "args": json.loads((out / "run_args.json").read_text()),
        "state": json.loads((out / "trainer_state.json").read_text()),
        "predictions": (out / "predict_results.jsonl").read_text(),
    }


@pytest.fixture(scope="module")
def padded_run(tiny_model_dir, tmp_path_factory):
    """Random batches of 16 rows, padded: the reference for packing (and the official script's default order)."""
    return run(tiny_model_dir, tmp_path_factory.mktemp("padded") / "run", "--packing", "false",
               "--train_sampling_strategy", "random")


@pytest.fixture(scope="module")
def packed_run(tiny_model_dir, tmp_path_factory):
    """Our defaults (packing auto, random order, batches of 16 rows) with unsorted evaluation."""
    return run(tiny_model_dir, tmp_path_factory.mktemp("packed") / "run", "--sort_eval_by_length", "false")


def test_defaults_pack_random_rows_of_the_given_batch_size(packed_run):
    from seqcls.arguments import parse_args

    args = packed_run["args"]
    assert args["packing"] is True and args["train_sampling_strategy"] == "random"
    assert args["max_tokens_per_batch"] == "off"
    assert packed_run["state"]["global_step"] == -(-packed_run["results"]["train_samples"] // 16)
    *_, training_args = parse_args(["--model_name_or_path", "m", "--train_file", "t.jsonl", "--output_dir", "o",
                                    "--train_sampling_strategy", "sequential"])
    assert training_args.train_sampling_strategy == "sequential"  # the user's choice wins


def test_auto_token_budget_makes_fewer_fuller_batches(tiny_model_dir, tmp_path):
    result = run(tiny_model_dir, tmp_path / "run", "--max_tokens_per_batch", "auto")
    assert isinstance(result["args"]["max_tokens_per_batch"], int)
    # auto: 16 rows of the 95th-percentile length per batch, so batches of short rows hold more than 16
    assert result["state"]["global_step"] < -(-result["results"]["train_samples"] // 16)


def test_packing_and_unsorted_eval_change_nothing(padded_run, packed_run):
    a, b = padded_run["results"], packed_run["results"]
    assert padded_run["args"]["packing"] is False and packed_run["args"]["packing"] is True
    assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
    losses = [[h["loss"] for h in run["state"]["log_history"] if "loss" in h] for run in (padded_run, packed_run)]
    assert losses[1] == pytest.approx(losses[0], abs=1e-4)
    for key in ("eval_accuracy", "eval_macro_f1", "test_macro_f1"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    assert b["eval_loss"] == pytest.approx(a["eval_loss"], abs=1e-4)
    evals = [[h["eval_loss"] for h in run["state"]["log_history"] if "eval_loss" in h] for run in (padded_run, packed_run)]
    assert evals[1] == pytest.approx(evals[0], abs=1e-4)  # the eval during training, sorted or not


def test_token_budget_below_the_longest_row_is_one_line(tiny_model_dir, tmp_path, capsys):
    from seqcls.train import cli

    out = tmp_path / "run"
    assert cli(train_args(tiny_model_dir, out, "--max_tokens_per_batch", "4")[1:]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: max_tokens_per_batch 4 is smaller than the longest training row (")


def test_freeze_embeddings_under_padded_length_grouped_budget(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    result = run(tiny_model_dir, out, "--freeze_embeddings", "true", "--packing", "false",
                 "--train_sampling_strategy", "group_by_length", "--max_tokens_per_batch", "auto")
    assert result["args"]["train_sampling_strategy"] == "group_by_length"
    assert isinstance(result["args"]["max_tokens_per_batch"], int)
    base = load_file(tiny_model_dir / "model.safetensors")
    trained = load_file(out / "model.safetensors")
    assert (trained["model.embed_tokens.weight"] == base["model.embed_tokens.weight"]).all()
    changed = [k for k in trained if k in base and k != "model.embed_tokens.weight"
               and not (trained[k] == base[k]).all()]
    assert len(changed) >= len(base) - 2  # every layer moved (norm weights included)
