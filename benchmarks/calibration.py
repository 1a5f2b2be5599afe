"""Calibration before/after temperature scaling on real data: ECE, Brier, NLL with accuracy and macro-F1.

waimai_10k with the small random Qwen2 (a subset, 1 epoch): `python benchmarks/calibration.py --train_rows 1000`.
The temperature is fitted on the validation rows and the figures are those of the held-out test rows (before:
the trained logits; after: the folded model), so a gain here is not the fit reading its own data.
No pretrained decoder LLM exists on the benchmark machine: the figures describe a small random-init model.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

DATA = Path("/work/shared/data")


def subset(src: Path, dst: Path, rows: int) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines()[:rows]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="waimai_10k")
    parser.add_argument("--train_rows", type=int, default=1000)
    parser.add_argument("--eval_rows", type=int, default=400)
    parser.add_argument("--max_seq_length", type=int, default=64)
    args = parser.parse_args()
    from seqcls import tiny
    from seqcls.train import main as train

    root = Path(tempfile.mkdtemp(prefix="calib-bench-"))
    model = tiny.build(root / "small-qwen2", size="small", seed=0)
    d = DATA / args.data
    t0, c0 = time.time(), time.process_time()
    train(["--model_name_or_path", str(model), "--output_dir", str(root / "run"), "--do_train", "--do_eval",
           "--do_predict", "--train_file", str(subset(d / "train.jsonl", root / "train.jsonl", args.train_rows)),
           "--validation_file", str(subset(d / "validation.jsonl", root / "val.jsonl", args.eval_rows)),
           "--test_file", str(subset(d / "test.jsonl", root / "test.jsonl", args.eval_rows)),
           "--max_seq_length", str(args.max_seq_length), "--num_train_epochs", "1", "--learning_rate", "3e-4",
           "--per_device_train_batch_size", "16", "--use_cpu", "true", "--report_to", "none",
           "--save_strategy", "no", "--seed", "0", "--calibration", "temperature"])
    wall, cpu = time.time() - t0, time.process_time() - c0
    test = json.loads((root / "run" / "test_results.json").read_text())
    record = json.loads((root / "run" / "seqcls.json").read_text())["calibration"]
    keys = ["test_accuracy", "test_macro_f1"] + [f"test_{k}{s}" for k in ("ece", "brier", "nll")
                                                 for s in ("_before_calibration", "")]
    print(json.dumps({"data": args.data, "train_rows": args.train_rows, "eval_rows": args.eval_rows,
                      "temperatures": record["temperatures"], **{k: round(test[k], 4) for k in keys},
                      "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load1": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
