"""Benchmark: torch Classifier vs ONNX fp32 vs ONNX int8 vs transformers pipeline, one run, rotated order.

    python benchmarks/export.py --models runs/i18/minilm-goemotions1 runs/i18/small/clf \
        --data runs/i18/goemotions1/test.jsonl ../shared/data/waimai_10k/test.jsonl --max_rows 300 --threads 1 2

Exports each model dir (fp32 and int8) next to it once (MODEL-onnx, MODEL-onnx-int8), then, per model and data
file, runs each arm in its own subprocess (its own peak RSS) per round, the order of the arms and of the thread
counts rotating between rounds. In a worker, each thread count gets its own model (torch threads, or an ONNX
Runtime session with that many intra-op threads), a warm-up batch, then the timed prediction (model loading not
timed). Reports per model, data and thread count: texts/s (wall), texts per CPU-second (time.process_time, all
threads), the ratio to the torch Classifier, peak RSS, model size on disk, label agreement with torch, and
quality against the data's labels when they are the model's (single-label: accuracy and macro-F1; multi-label:
micro- and macro-F1 of the label sets, with the model's saved thresholds; `pipeline` uses 0.5).
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

    texts = read_texts(Path(args.data), args.max_rows)
    out = {"runs": {}}
    for threads in [int(t) for t in args.threads]:
        torch.set_num_threads(threads)
        if args.worker == "pipeline":
            run = arm_pipeline(args.model, args.max_length, args.batch_size)
        else:
            from seqcls import Classifier

            clf = Classifier.from_pretrained(args.model, max_length=args.max_length, device="cpu",
                                             num_threads=threads if args.worker != "torch" else None)
            run = lambda t, c=clf: [r["label"] for r in c.predict(t, batch_size=args.batch_size)]  # noqa: E731
        run(texts[:args.batch_size])  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        labels = run(texts)
        out["runs"][threads] = {"n": len(texts), "seconds": time.perf_counter() - start,
                                "cpu": time.process_time() - cpu}
        out["labels"] = labels
    out["rss"] = peak_rss_mb()
    print(json.dumps(out, ensure_ascii=False))


def size_mb(path: Path) -> float:
    files = [path / "model.onnx"] if (path / "model.onnx").is_file() else list(path.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) / 1e6


def quality(labels: list, gold: list, names: list[str]) -> str:
    """accuracy / macro-F1 (single-label) or micro / macro-F1 of label sets (multi-label), scikit-learn; n/a when
    the data's labels are not the model's."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    if isinstance(gold[0], list):
        if not {g for row in gold for g in row} <= set(names):
            return "n/a"
        binarizer = MultiLabelBinarizer(classes=names)
        truth, pred = binarizer.fit_transform(gold), binarizer.transform(labels)
        return (f"micro-F1 {f1_score(truth, pred, average='micro', zero_division=0):.4f}, "
                f"macro-F1 {f1_score(truth, pred, average='macro', zero_division=0):.4f}")
    gold = [str(g) for g in gold]
    if not set(gold) <= set(names):
        return "n/a"
    return (f"accuracy {accuracy_score(gold, labels):.4f}, "
            f"macro-F1 {f1_score(gold, labels, average='macro', labels=names, zero_division=0):.4f}")


def agreement(labels: list, ref: list) -> float:
    norm = lambda x: tuple(sorted(x)) if isinstance(x, list) else x  # noqa: E731
    return sum(norm(a) == norm(b) for a, b in zip(labels, ref)) / len(ref)


def bench(model: Path, data: Path, args, env: dict) -> None:
    from seqcls.export import export
    from seqcls.model_dir import read_settings

    dirs = {"torch": model, "pipeline": model, "onnx_fp32": model.with_name(model.name + "-onnx"),
            "onnx_int8": model.with_name(model.name + "-onnx-int8")}
    for arm, q in (("onnx_fp32", None), ("onnx_int8", "int8")):
        if not dirs[arm].exists():
            export(model, dirs[arm], quantize=q)
    results = {a: [] for a in ARMS}
    loads = []
    for r in range(args.rounds):
        threads = args.threads[r % len(args.threads):] + args.threads[:r % len(args.threads)]
        for arm in ARMS[r % len(ARMS):] + ARMS[:r % len(ARMS)]:
            cmd = [sys.executable, __file__, "--worker", arm, "--models", str(dirs[arm]), "--data", str(data),
                   "--threads", *map(str, threads), "--batch_size", str(args.batch_size),
                   "--max_length", str(args.max_length), "--max_rows", str(args.max_rows)]
            loads.append(os.getloadavg()[0])
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                sys.exit(f"{arm}: {proc.stderr[-2000:]}")
            results[arm].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    names = list(read_settings(model).label_space.names)
    gold = [json.loads(line)["label"] for line in open(data, encoding="utf-8") if line.strip()][:args.max_rows]
    ref = results["torch"][0]["labels"]
    scores = ", ".join(f"{a} {quality(results[a][0]['labels'], gold, names)}" for a in ARMS)
    print(f"\n{model.name} on {data.parent.name}/{data.name}: {len(gold)} rows, batch {args.batch_size}, "
          f"max_length {args.max_length}, {args.rounds} rounds (median), load average {min(loads):.1f}-"
          f"{max(loads):.1f}; quality: {scores}")
    print("| threads | arm | texts/s | texts/CPU-s | x torch (CPU-s) | x torch (wall) | peak RSS MB | size MB | "
          "agree w/ torch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        def rate(arm, key):
            return statistics.median(x["runs"][str(threads)]["n"] / x["runs"][str(threads)][key] for x in results[arm])
        base_cpu, base_wall = rate("torch", "cpu"), rate("torch", "seconds")
        for arm in ARMS:
            cpu, wall = rate(arm, "cpu"), rate(arm, "seconds")
            print(f"| {threads} | {arm} | {wall:.0f} | {cpu:.0f} | {cpu / base_cpu:.2f} | {wall / base_wall:.2f} | "
                  f"{max(x['rss'] for x in results[arm]):.0f} | {size_mb(dirs[arm]):.1f} | "
                  f"{agreement(results[arm][0]['labels'], ref):.4f} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--max_rows", type=int, default=400)
    p.add_argument("--worker")
    args = p.parse_args()
    if args.worker:
        args.model, args.data = args.models[0], args.data[0]
        return worker(args)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
           "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("OMP_NUM_THREADS", None)  # each worker sets its own thread counts
    print(f"{os.cpu_count()} CPUs; arms in rotated order, each in its own subprocess")
    for model in args.models:
        for data in args.data:
            bench(Path(model), Path(data), args, env)


if __name__ == "__main__":
    main()
