"""Cross-validation benchmark (issue 16): does the CV find planted label errors, and do they matter?

    OMP_NUM_THREADS=1 python benchmarks/cv.py [--rows 3000] [--k 5] [--size tiny] [--epochs 2]

1. The first ROWS training rows of waimai_10k; 5% of their labels flipped to the other label (seeded).
2. K-fold CV through scripts/cv.sh (the real user path) on the noisy rows: out-of-fold probabilities,
   cleanlab's flagged rows. Precision and recall of the flagged rows against the flipped ones.
3. The test macro-F1 (waimai_10k test) of a model trained on all noisy rows against one trained on the noisy
   rows without the flagged ones (same recipe, same epochs).
4. The fold ensemble (the K fold models averaged) against one model trained on all noisy rows for
   (K - 1) x EPOCHS epochs: the same number of training samples as the K fold runs together.

Wall clock and CPU seconds (of the child processes) are printed for every step. Data stays outside the repo
(runs/ is git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path("/work/shared/data/waimai_10k")


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(label: str, cmd: list[str], env: dict, log: Path) -> dict:
    t0, c0 = time.time(), child_cpu()
    with log.open("w") as f:
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    out = {"step": label, "wall_s": round(time.time() - t0, 1), "cpu_s": round(child_cpu() - c0, 1), "rc": rc}
    print(json.dumps(out), flush=True)
    if rc != 0:
        sys.exit(f"{label} failed, see {log}")
    return out


def macro_f1(pred_file: Path, truth: list[str]) -> float:
    from sklearn.metrics import f1_score

    preds = [json.loads(line)["label"] for line in pred_file.open(encoding="utf-8")]
    return float(f1_score(truth, preds, average="macro"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--size", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--test_rows", type=int, default=1200)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_cv"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(f"load at start: {os.getloadavg()}", flush=True)

    from seqcls import tiny

    model = out / f"{args.size}-qwen2"
    if not (model / "config.json").is_file():
        tiny.build(model, size=args.size, seed=0)

    # 1. noisy training rows
    rows = [json.loads(line) for line in (DATA / "train.jsonl").open(encoding="utf-8")][: args.rows]
    names = sorted({r["label"] for r in rows})
    rng = random.Random(0)
    flipped = set(rng.sample(range(len(rows)), round(args.noise * len(rows))))
    for i in flipped:
        rows[i]["label"] = next(n for n in names if n != rows[i]["label"])  # two labels: the other one
    noisy = out / "noisy_train.jsonl"
    noisy.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    test_rows = [json.loads(line) for line in (DATA / "test.jsonl").open(encoding="utf-8")][: args.test_rows]
    test = out / "test.jsonl"
    test.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test_rows), encoding="utf-8")
    truth = [r["label"] for r in test_rows]

    recipe = ["--model_name_or_path", str(model), "--max_seq_length", "128", "--per_device_train_batch_size", "16",
              "--learning_rate", "3e-3", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no",
              "--eval_strategy", "no", "--disable_tqdm", "true", "--seed", "0", "--warmup_steps", "20"]
    steps = []

    # 2. CV
    cv_dir = out / "cv"
    cv_env = {**env, "K": str(args.k), "CV_DIR": str(cv_dir), "PYTHON": sys.executable}
    steps.append(timed("cv", ["bash", str(ROOT / "scripts/cv.sh"), *recipe, "--train_file", str(noisy),
                              "--num_train_epochs", str(args.epochs)], cv_env, out / "cv.log"))
    issues = [json.loads(line) for line in (cv_dir / "label_issues.jsonl").open(encoding="utf-8")]
    flagged = {r["row"] for r in issues}
    hit = len(flagged & flipped)
    precision = hit / len(flagged) if flagged else 0.0
    recall = hit / len(flipped)
    top = [r["row"] for r in issues[: len(flipped)]]
    precision_at_n = len(set(top) & flipped) / len(flipped)
    oof = [json.loads(line) for line in (cv_dir / "oof_predictions.jsonl").open(encoding="utf-8")]
    oof_clean_acc = sum(o["predicted"] == o["label"] for i, o in enumerate(oof)
                        if i not in flipped) / (len(oof) - len(flipped))

    # 3. retrain without the flagged rows vs on the noisy rows
    clean = out / "cleaned_train.jsonl"
    clean.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for i, r in enumerate(rows)
                             if i not in flagged), encoding="utf-8")
    arms = {"noisy": (noisy, args.epochs), "cleaned": (clean, args.epochs),
            f"noisy_{(args.k - 1) * args.epochs}ep": (noisy, (args.k - 1) * args.epochs)}
    f1 = {}
    for arm, (train, epochs) in arms.items():
        d = out / arm
        steps.append(timed(arm, [sys.executable, str(ROOT / "run_classification.py"), *recipe, "--train_file",
                                 str(train), "--test_file", str(test), "--do_train", "--do_predict",
                                 "--num_train_epochs", str(epochs), "--output_dir", str(d),
                                 "--overwrite_output_dir", "true"], env, out / f"{arm}.log"))
        f1[arm] = macro_f1(d / "predict_results.jsonl", truth)

    # 4. the fold ensemble on the test rows
    ens = out / "ensemble_predictions.jsonl"
    steps.append(timed("ensemble_predict", [sys.executable, "-m", "seqcls.cv", "predict", "--cv_dir", str(cv_dir),
                                            str(test), "-o", str(ens)], env, out / "ensemble.log"))
    f1["fold_ensemble"] = macro_f1(ens, truth)
    cv_summary = (cv_dir / "cv_results.md").read_text(encoding="utf-8")

    result = {"rows": len(rows), "flipped": len(flipped), "flagged": len(flagged), "flagged_and_flipped": hit,
              "precision": round(precision, 4), "recall": round(recall, 4),
              "precision_at_n_flipped": round(precision_at_n, 4),
              "oof_accuracy_on_unflipped_rows": round(oof_clean_acc, 4),
              "test_macro_f1": {k: round(v, 4) for k, v in f1.items()}, "steps": steps,
              "load_at_end": os.getloadavg(), "args": vars(args)}
    (out / "result.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(cv_summary)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
