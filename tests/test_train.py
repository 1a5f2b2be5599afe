"""End to end: the real CLI in a subprocess on the tiny model, as a user runs it."""
import json

from conftest import ROOT, run_cli, train_args


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_single_label_run_writes_every_output(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*train_args(tiny_model_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
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
