"""Benchmark: texts/s of `Classifier.predict` against `transformers.pipeline` and the naive loop, in one run.

    python benchmarks/predict.py                       # tiny + small Qwen2, waimai_10k test + goemotions test
    python benchmarks/predict.py --sizes small --datasets waimai --rounds 1 --repeats 1   # a quick look

Three ways to classify the same texts with the same model directory, each in its own subprocess (so that each
one's peak RSS is its own), each doing the same work per text (tokenize with truncation at --max_length, forward,
probabilities):

  ours      Classifier.from_pretrained(dir).predict(texts, batch_size=64)
  pipeline  pipeline("text-classification", model=dir, top_k=None)(texts, batch_size=64, truncation=True,
            max_length=L)
  naive     file order, batches of 64 padded to their longest text (truncation at L), softmax / sigmoid

The models are the embedded random Qwen2s (`seqcls.tiny`: "tiny" hidden 64 x 2 layers, "small" hidden 256 x 4
layers, 8 heads, 2 KV heads, intermediate 704, the real Qwen2 vocabulary and tokenizer) with a seeded random
classification head: speed does not depend on what the head learned. Every arm runs with the same number of
torch threads (--threads): on a machine shared with other jobs, 2 OpenMP threads on 2 busy cores can run 30x
slower than 1, so the default is 1. Each arm runs once per round (--rounds, the order rotating so that changes in
the machine's load do not fall on one arm), each run times --repeats passes after a warm-up; the median pass is
reported, by wall clock (texts/s) and by the process's CPU time (texts/CPU-s: with one thread, the work done,
which other jobs on the machine disturb much less than the wall clock).
The agreement column compares each arm's labels with the pipeline's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout (searched upwards, so a git worktree finds it too), or --data_dir
SHARED = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), ROOT.parent / "shared" / "data")
DATA = {"waimai": "waimai_10k", "goemotions": "goemotions"}
ARMS = ("ours", "pipeline", "naive")


def read_texts(path: Path, max_rows: int | None) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
            if max_rows and len(texts) >= max_rows:
                break
    return texts


# ------------------------------------------------------------------------------------------------ the arms


def arm_ours(model_dir: str, max_length: int, batch_size: int):
    from seqcls import Classifier

    clf = Classifier.from_pretrained(model_dir, max_length=max_length)
    return lambda texts: [r["label"] for r in clf.predict(texts, batch_size=batch_size)]


def arm_pipeline(model_dir: str, max_length: int, batch_size: int):
    from transformers import pipeline

    pipe = pipeline("text-classification", model=model_dir, top_k=None, device="cpu")
    multi = pipe.model.config.problem_type == "multi_label_classification"

    def run(texts):
        out = pipe(texts, batch_size=batch_size, truncation=True, max_length=max_length)
        if multi:
            return [sorted(d["label"] for d in row if d["score"] >= 0.5) for row in out]
        return [row[0]["label"] for row in out]

    return run


def arm_naive(model_dir: str, max_length: int, batch_size: int):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    multi = model.config.problem_type == "multi_label_classification"

    def run(texts):
        labels = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt")
                logits = model(**batch).logits
                if multi:
                    chosen = torch.sigmoid(logits) >= 0.5
                    labels += [sorted(names[j] for j in row.nonzero().flatten().tolist()) for row in chosen]
                else:
                    labels += [names[j] for j in torch.softmax(logits, -1).argmax(-1).tolist()]
        return labels

    return run


def cli_worker(args: argparse.Namespace) -> None:
    """seqcls-predict file to file (model loading included), in this process; print one JSON line."""
    import tempfile

    from seqcls.predict import cli

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        code = cli([args.model, args.data, "-o", f"{tmp}/out.jsonl", "--num_threads", str(args.threads),
                    "--batch_size", str(args.batch_size)])
        seconds = time.perf_counter() - start
        n = sum(1 for _ in open(f"{tmp}/out.jsonl", encoding="utf-8")) if code == 0 else 0
    print(json.dumps({"n": n, "seconds": [seconds], "cpu_seconds": [time.process_time()], "peak_rss_mb": peak_rss_mb(),
                      "labels": []}))


def worker(args: argparse.Namespace) -> None:
    """One arm in this process: load, warm up, time --repeats passes; print one JSON line."""
    import torch

    if args.worker == "cli":
        return cli_worker(args)
    torch.set_num_threads(args.threads)
    texts = read_texts(Path(args.data), args.max_rows)
    run = {"ours": arm_ours, "pipeline": arm_pipeline, "naive": arm_naive}[args.worker](
        args.model, args.max_length, args.batch_size)
    run(texts[:args.batch_size])  # warm-up: first-call allocations and lazy initialisation
    seconds, cpu_seconds, labels = [], [], None
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        labels = run(texts)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    print(json.dumps({"n": len(texts), "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb(),
                      "labels": labels}, ensure_ascii=False))


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork + exec, so a
    worker would report its parent's peak if that were higher."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ the driver


def build_classifier(base: Path, out: Path, dataset: Path, max_length: int) -> Path:
    """A classifier directory for `dataset` on a random base (seeded head), with its seqcls.json."""
    if (out / "seqcls.json").is_file():
        return out
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = [json.loads(line)["label"] for line in open(dataset / "train.jsonl", encoding="utf-8")]
    multi = isinstance(labels[0], list)
    names = sorted({n for label in labels for n in (label if multi else [label])})
    problem_type = "multi_label_classification" if multi else "single_label_classification"
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        problem_type=problem_type, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    from seqcls.labels import LabelSpace
    from seqcls.model_dir import ModelSettings, write_settings

    write_settings(out, ModelSettings(label_space=LabelSpace(problem_type, tuple(names)), max_seq_length=max_length))
    return out


def run_arm(arm: str, model_dir: Path, data: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", arm, "--model", str(model_dir), "--data", str(data),
           "--threads", str(args.threads), "--repeats", str(args.repeats), "--batch_size", str(args.batch_size),
           "--max_length", str(args.max_length)] + (["--max_rows", str(args.max_rows)] if args.max_rows else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{arm} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load"] = (load_before, os.getloadavg()[0])
    result["texts_per_s"] = result["n"] / statistics.median(result["seconds"])
    return result


def run_rounds(model_dir: Path, data: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Every arm once per round, the order rotating from round to round, so that a change in the machine's load
    (other jobs come and go) does not fall on one arm; texts/s is the median over all passes of all rounds."""
    results: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for arm in args.arms[round_ % len(args.arms):] + args.arms[:round_ % len(args.arms)]:
            r = run_arm(arm, model_dir, data, args)
            if arm not in results:
                results[arm] = {**r, "loads": [r["load"]]}
            else:
                kept = results[arm]
                kept["seconds"] += r["seconds"]
                kept["cpu_seconds"] += r["cpu_seconds"]
                kept["peak_rss_mb"] = max(kept["peak_rss_mb"], r["peak_rss_mb"])
                kept["loads"].append(r["load"])
    for r in results.values():
        r["texts_per_s"] = r["n"] / statistics.median(r["seconds"])
        r["texts_per_cpu_s"] = r["n"] / statistics.median(r["cpu_seconds"])
        loads = [x for pair in r.pop("loads") for x in pair]
        r["load"] = (min(loads), max(loads))
    return results


def cli_section(args: argparse.Namespace, models: Path) -> None:
    import tempfile

    from seqcls import tiny

    base = tiny.build(models / "qwen2-tiny", size="tiny", seed=0)
    folder = Path(args.data_dir) / DATA["waimai"]
    model_dir = build_classifier(base, models / "qwen2-tiny-waimai", folder, args.max_length)
    texts = read_texts(folder / "test.jsonl", None)
    print("\nseqcls-predict, file to file (model loading included), tiny model, waimai test texts repeated:\n")
    print("| rows | seconds | texts/s | peak RSS (MB) | load avg (1 min, before -> after) |")
    print("|---:|---:|---:|---:|---|")
    for n in args.cli_rows:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "input.jsonl"
            with open(data, "w", encoding="utf-8") as f:
                for i in range(n):
                    f.write(json.dumps({"text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
            r = run_arm("cli", model_dir, data, args)
        if r["n"] != n:
            sys.exit(f"seqcls-predict wrote {r['n']} rows for {n}")
        print(f"| {n} | {r['seconds'][0]:.1f} | {n / r['seconds'][0]:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=["tiny", "small"])
    p.add_argument("--datasets", nargs="+", default=list(DATA), choices=list(DATA))
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--threads", type=int, default=1, help="torch threads in every arm (default 1)")
    p.add_argument("--rounds", type=int, default=2, help="runs of every arm, in rotating order (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="timed passes in each run, after a warm-up (default 2)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--max_rows", type=int, help="only the first N test rows (default: all)")
    p.add_argument("--data_dir", default=str(SHARED), help=f"holds waimai_10k/ and goemotions/ (default {SHARED})")
    p.add_argument("--models_dir", default=str(ROOT / "models" / "bench"))
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--cli_rows", type=int, nargs="*", default=[],
                   help="also run seqcls-predict file to file on inputs of these many rows (waimai test texts "
                        "repeated, tiny model): texts/s and peak RSS, to show that memory stays bounded")
    p.add_argument("--worker", choices=ARMS + ("cli",), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    import torch
    import transformers

    from seqcls import tiny

    transformers.utils.logging.set_verbosity_error()  # the new heads' "MISSING" notices are expected here

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, threads {args.threads}, batch {args.batch_size}, "
          f"max_length {args.max_length}, {args.rounds} rounds x {args.repeats} passes (median)")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    models = Path(args.models_dir)
    rows, everything = [], []
    for size in args.sizes:
        base = tiny.build(models / f"qwen2-{size}", size=size, seed=0)
        for dataset in args.datasets:
            folder = Path(args.data_dir) / DATA[dataset]
            model_dir = build_classifier(base, models / f"qwen2-{size}-{dataset}", folder, args.max_length)
            data = folder / "test.jsonl"
            results = run_rounds(model_dir, data, args)
            reference = results.get("pipeline")
            for arm, r in results.items():
                agree = (sum(a == b for a, b in zip(r["labels"], reference["labels"])) / r["n"]
                         if reference else float("nan"))
                ratio = r["texts_per_s"] / reference["texts_per_s"] if reference else float("nan")
                vs_naive = r["texts_per_s"] / results["naive"]["texts_per_s"] if "naive" in results else float("nan")
                cpu_ratio = r["texts_per_cpu_s"] / reference["texts_per_cpu_s"] if reference else float("nan")
                rows.append((dataset, size, r["n"], arm, r["texts_per_s"], ratio, vs_naive, r["texts_per_cpu_s"],
                             cpu_ratio, r["peak_rss_mb"], agree, r["load"]))
                everything.append({"dataset": dataset, "size": size, "arm": arm,
                                   **{k: v for k, v in r.items() if k != "labels"}})
                print(f"  {dataset:10s} {size:5s} {arm:8s} {r['texts_per_s']:8.1f} texts/s  x{ratio:.2f} pipeline  "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB  load {r['load'][0]:.1f}-{r['load'][1]:.1f}",
                      file=sys.stderr, flush=True)
    print()
    print("| data | model | texts | arm | texts/s | vs pipeline | vs naive | texts/CPU-s | vs pipeline (CPU) "
          "| peak RSS (MB) | labels = pipeline's | load avg (1 min, min - max) |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for dataset, size, n, arm, tps, ratio, vs_naive, cpu_tps, cpu_ratio, rss, agree, load in rows:
        print(f"| {dataset} | {size} | {n} | {arm} | {tps:.0f} | {ratio:.2f}x | {vs_naive:.2f}x | {cpu_tps:.0f} | "
              f"{cpu_ratio:.2f}x | {rss:.0f} | {agree:.1%} | {load[0]:.1f} - {load[1]:.1f} |")
    if args.cli_rows:
        cli_section(args, models)
    print(f"\n# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
