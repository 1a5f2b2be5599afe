"""End to end: the real CLI in a subprocess on the tiny model, as a user runs it (the single-label run, shared by
the tests that read its outputs); the other runs call the same entry point in-process (`seqcls.train.main`/`cli`):
their claims are about what training writes, and a subprocess would add about 7 CPU-s of imports to each."""
import json

import pytest

from conftest import ROOT, run_cli, run_entry_point, train_args


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def single_run(tiny_model_dir, tmp_path_factory):
    """`python run_classification.py ...` in a subprocess: train, evaluate, predict (single-label)."""
    out = tmp_path_factory.mktemp("train") / "run"
    proc = run_cli(*train_args(tiny_model_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_single_label_run_writes_every_output(single_run):
    out = single_run
    for name in ("model.safetensors", "config.json", "tokenizer.json", "train_results.json", "eval_results.json",
                 "all_results.json", "trainer_state.json", "predict_results.jsonl", "test_report.json",
                 "eval_report.json", "seqcls.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert set(config["id2label"].values()) == {"积极", "消极", "中立"}
    assert config["pad_token_id"] == 151643
    rows = read_jsonl(out / "predict_results.jsonl")
    test_rows = read_jsonl(ROOT / "data/example_test.jsonl")
    assert [r["id"] for r in rows] == list(range(len(test_rows)))
    assert all(r["label"] in {"积极", "消极", "中立"} for r in rows)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
    results = json.loads((out / "all_results.json").read_text())
    assert 0 <= results["eval_accuracy"] <= 1 and "eval_macro_f1" in results and "test_macro_f1" in results
    report = json.loads((out / "test_report.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == len(test_rows)


def test_multi_label_run(tiny_model_dir, tmp_path):
    from seqcls.train import main

    out = tmp_path / "ml"
    main([*train_args(tiny_model_dir, out, data="data/example_multilabel.jsonl",
                      test="data/example_multilabel.jsonl")[1:], "--max_predict_samples", "20"])
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert sorted(config["id2label"].values()) == ["account", "billing", "product_quality", "refund", "shipping"]
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_micro_f1", "eval_macro_f1", "eval_subset_accuracy"} <= set(results)
    rows = read_jsonl(out / "predict_results.jsonl")
    assert len(rows) == 20  # max_predict_samples cuts the split
    assert all(isinstance(r["label"], list) and len(r["probabilities"]) == 5 for r in rows)


def test_sentence_pair_regression_run(tiny_model_dir, tmp_path):
    from seqcls.train import main

    out = tmp_path / "reg"
    main(train_args(tiny_model_dir, out, "--text_pair_column_name", "text_pair", data="data/example_pair.jsonl",
                    test="data/example_pair.jsonl")[1:])
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_mse", "eval_mae", "eval_pearson", "eval_spearman"} <= set(results)
    rows = read_jsonl(out / "predict_results.jsonl")
    assert len(rows) == 120 and all(isinstance(r["label"], float) for r in rows)


def test_pipeline_loads_the_output_and_prints_label_names(single_run):
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(single_run), device="cpu")
    assert clf(["送餐很快，好吃"])[0]["label"] in {"积极", "消极", "中立"}


def train_steps(model_dir, out, batch, accumulation):
    from seqcls.train import main

    main(train_args(model_dir, out, "--per_device_train_batch_size", str(batch),
                    "--gradient_accumulation_steps", str(accumulation), "--max_steps", "3",
                    "--optim", "sgd", "--learning_rate", "0.5", "--logging_steps", "1",
                    "--lr_scheduler_type", "constant",
                    "--max_tokens_per_batch", "off",  # fixed rows: the claim is about 8 rows a step
                    test=None)[1:])


def test_gradient_accumulation_is_exact(tiny_model_dir, tmp_path):
    """8 x 1 and 2 x 4 see the same 8 rows per step: same loss, same weights (plain SGD, so a mis-scaled
    gradient would show: transformers issue 47688 gives 2 x 4 four times the gradient)."""
    import torch
    from safetensors.torch import load_file

    runs = {}
    for batch, accumulation in ((8, 1), (2, 4)):
        out = tmp_path / f"ga{batch}x{accumulation}"
        train_steps(tiny_model_dir, out, batch, accumulation)
        state = json.loads((out / "trainer_state.json").read_text())
        losses = [h["loss"] for h in state["log_history"] if "loss" in h]
        runs[batch] = (losses, load_file(out / "model.safetensors"))
    (loss_a, weights_a), (loss_b, weights_b) = runs[8], runs[2]
    assert len(loss_a) == 3
    assert loss_a == pytest.approx(loss_b, rel=1e-4)
    base = load_file(tiny_model_dir / "model.safetensors")["model.embed_tokens.weight"]
    assert not torch.allclose(weights_a["model.embed_tokens.weight"], base)  # training really moved the weights
    for name, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[name], tensor, atol=1e-5, rtol=1e-4)


def test_rerun_resumes_and_a_finished_run_is_not_clobbered(tiny_model_dir, tmp_path, capfd, caplog):
    """The entry point in-process (exit status, stderr and the log as the process would give them)."""
    out = tmp_path / "resume"
    argv = train_args(tiny_model_dir, out, "--save_strategy", "steps", "--save_steps", "5", "--max_steps", "5",
                      test=None)
    first = run_entry_point(argv, capfd)
    assert first.returncode == 0, first.stderr[-3000:]
    listing = sorted(p.name for p in out.iterdir())
    caplog.clear()
    again = run_entry_point(argv, capfd)
    # the same command again: a finished run is recognised (its checkpoint is not resumed past max_steps), nothing
    # is rewritten, and it succeeds, as sweeps rely on
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do" in caplog.text and "resuming from" not in caplog.text + again.stdout + again.stderr
    assert sorted(p.name for p in out.iterdir()) == listing
    # without checkpoints, a finished output_dir is refused, and left as it was
    for ckpt in out.glob("checkpoint-*"):
        import shutil

        shutil.rmtree(ckpt)
    listing = sorted(p.name for p in out.iterdir())
    refused = run_entry_point(train_args(tiny_model_dir, out, test=None), capfd)
    assert refused.returncode == 2
    assert "already holds a finished run" in refused.stderr and "--overwrite_output_dir true" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == listing
