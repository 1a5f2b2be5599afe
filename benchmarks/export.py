"""Benchmark: torch Classifier vs ONNX fp32 vs ONNX int8 vs transformers pipeline, one run, rotated order.

    python benchmarks/export.py --model runs/minilm-waimai --data ../shared/data/waimai_10k/test.jsonl

Exports the model dir (fp32 and int8) next to it once, then runs each arm in its own subprocess (its own peak
RSS) per round, the order rotating between rounds; reports texts/s (wall), texts per CPU-second, peak RSS, model
size on disk, label agreement with torch and accuracy against the data's labels (single-label data).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from predict import arm_pipeline, peak_rss_mb, read_texts  # noqa: E402

ARMS = ("torch", "onnx_fp32", "onnx_int8", "pipeline")


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    texts = read_texts(Path(args.data), args.max_rows)
    if args.worker == "pipeline":
        run = arm_pipeline(args.model, args.max_length, args.batch_size)
    else:
        from seqcls import Classifier

        clf = Classifier.from_pretrained(args.model, max_length=args.max_length, num_threads=args.threads) \
            if args.worker != "torch" else Classifier.from_pretrained(args.model, max_length=args.max_length)
        run = lambda t: [r["label"] for r in clf.predict(t, batch_size=args.batch_size)]  # noqa: E731
    run(texts[:args.batch_size])
    start, cpu = time.perf_counter(), time.process_time()
    labels = run(texts)
    print(json.dumps({"n": len(texts), "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                      "rss": peak_rss_mb(), "labels": labels}, ensure_ascii=False))


def size_mb(path: Path) -> float:
    files = [path / "model.onnx"] if (path / "model.onnx").is_file() else list(path.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) / 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--max_rows", type=int)
    p.add_argument("--worker")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    from seqcls.export import export

    model = Path(args.model)
    dirs = {"torch": model, "pipeline": model, "onnx_fp32": model.with_name(model.name + "-onnx"),
            "onnx_int8": model.with_name(model.name + "-onnx-int8")}
    for arm, q in (("onnx_fp32", None), ("onnx_int8", "int8")):
        if not dirs[arm].exists():
            export(model, dirs[arm], quantize=q)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    results = {a: [] for a in ARMS}
    for r in range(args.rounds):
        for arm in ARMS[r % len(ARMS):] + ARMS[:r % len(ARMS)]:
            cmd = [sys.executable, __file__, "--worker", arm, "--model", str(dirs[arm]), "--data", args.data,
                   "--threads", str(args.threads), "--batch_size", str(args.batch_size),
                   "--max_length", str(args.max_length)] + (["--max_rows", str(args.max_rows)] if args.max_rows else [])
            load = os.getloadavg()[0]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                sys.exit(f"{arm}: {proc.stderr[-2000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["load"] = load
            results[arm].append(res)
    gold = [json.loads(line)["label"] for line in open(args.data, encoding="utf-8") if line.strip()][:results["torch"][0]["n"]]
    ref = results["torch"][0]["labels"]
    base = statistics.median(x["n"] / x["cpu"] for x in results["torch"])
    print(f"| arm | texts/s | texts/CPU-s | x torch (CPU-s) | peak RSS MB | size MB | agree w/ torch | accuracy | "
          f"load 1-min |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm in ARMS:
        rs = results[arm]
        wall = statistics.median(x["n"] / x["seconds"] for x in rs)
        cpu = statistics.median(x["n"] / x["cpu"] for x in rs)
        labels = rs[0]["labels"]
        agree = sum(a == b for a, b in zip(labels, ref)) / len(ref)
        acc = sum(a == b for a, b in zip(labels, gold)) / len(gold)
        print(f"| {arm} | {wall:.0f} | {cpu:.0f} | {cpu / base:.2f} | {max(x['rss'] for x in rs):.0f} | "
              f"{size_mb(dirs[arm]):.1f} | {agree:.4f} | {acc:.4f} | {min(x['load'] for x in rs):.1f}-"
              f"{max(x['load'] for x in rs):.1f} |")


if __name__ == "__main__":
    main()
