"""Training speed: our defaults against the official transformers recipe, on the same Trainer, rows and budget.

    python benchmarks/train.py                      # everything (tiny and small model, waimai_10k and goemotions)
    python benchmarks/train.py --models small --datasets waimai_10k --seeds 0
    python benchmarks/train.py --tokenization-only

Arms, each trained in its own subprocess (peak RSS is per arm) with the same seed, epochs, learning rate and
per-device batch size:

  (b) official-default  the official run_classification.py's default data path: static padding to
                        max_seq_length 128 (`pad_to_max_length` defaults to true there), random batches
  (c) official-best     the official script at its best flags: dynamic padding, `train_sampling_strategy
                        group_by_length`
  (a) ours              our defaults (no throughput flag given)
  options               ours plus one option each: packing, max_tokens_per_batch, freeze_embeddings

(b) and (c) are emulated with our own CLI flags (`--pad_to_max_length true --train_sampling_strategy random`,
`--train_sampling_strategy group_by_length`, and `--sort_eval_by_length false` for both): the official script
is not installed here, and its training data path is the same Trainer, the same `Dataset.map` tokenization and
the same padding collator; its loss equals ours when there is no gradient accumulation. Only the flags differ.

For each arm: train samples/s and real (non-pad) tokens/s over the Trainer's train_runtime, the fraction of
executed tokens that are padding, peak RSS, final eval accuracy and macro-F1 (multi-label: subset accuracy),
ratios against (b) and (c), and MFU: (6 x non-embedding parameters x real tokens + 12 x layers x hidden x
sum of squared real lengths) / train_runtime / the fp32 matmul ceiling measured in this run with the same
thread count. Every arm runs with `--threads` intra-op threads (default 1: on a shared machine OpenMP threads
that wait on each other under load make two-thread timings swing by 3x; one thread per arm is stable).

A second part times the tokenization of a 100,000-row JSONL file (waimai_10k rows repeated) with
`preprocessing_num_workers` 1 and 2, and the rerun that reuses the datasets cache.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEQCLS_SHARED_DATA", ROOT.parent.parent / "shared" / "data"))
if not DATA.is_dir():
    DATA = Path("/work/shared/data")

COMMON = [
    "--max_seq_length", "128",
    "--per_device_train_batch_size", "32",
    "--per_device_eval_batch_size", "64",
    "--num_train_epochs", "1",
    "--max_train_samples", "3000",
    "--max_eval_samples", "1000",
    "--do_train", "--do_eval",
    "--save_strategy", "no",
    "--eval_strategy", "no",
    "--logging_strategy", "no",
    "--report_to", "none",
    "--use_cpu", "true",
    "--disable_tqdm", "true",
    "--dataloader_num_workers", "0",
    "--overwrite_output_dir", "true",
    "--log_level", "warning",
]
OFFICIAL = ["--sort_eval_by_length", "false", "--max_tokens_per_batch", "off"]  # none of our throughput options
ARMS = {
    "official-default": ["--pad_to_max_length", "true", "--train_sampling_strategy", "random", *OFFICIAL],
    "official-best": ["--pad_to_max_length", "false", "--train_sampling_strategy", "group_by_length", *OFFICIAL],
    "ours": [],
    "ours+packing": ["--packing", "true"],
    "ours+freeze": ["--freeze_embeddings", "true"],
}
MAIN_ARMS = ("official-default", "official-best", "ours")
LEARNING_RATE = {"tiny": "3e-3", "small": "1e-3"}


# ----------------------------------------------------------------------------------------------------------
# Worker side: one arm in this process


def worker(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    from seqcls import train as recipe

    counts = {"executed_tokens": 0, "micro_batches": 0}
    original = recipe.ClassificationTrainer.compute_loss

    def counting_compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:  # prediction_step calls compute_loss too
            counts["executed_tokens"] += int(inputs["input_ids"].numel())
            counts["micro_batches"] += 1
        return original(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    recipe.ClassificationTrainer.compute_loss = counting_compute_loss
    if spec.get("profile_steps"):
        profile_training_steps(recipe, spec["profile_steps"])
    results = recipe.main(spec["argv"])
    out = {**counts, "results": results, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(spec["result_file"]).write_text(json.dumps(out))


def profile_training_steps(recipe, steps: int) -> None:
    """Profile training steps 3..3+steps with torch.profiler and print the operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    original = recipe.ClassificationTrainer.training_step
    state = {"n": 0, "prof": None}

    def training_step(self, *args, **kwargs):
        state["n"] += 1
        if state["n"] == 3:
            state["prof"] = profile(activities=[ProfilerActivity.CPU], record_shapes=True).__enter__()
        try:
            return original(self, *args, **kwargs)
        finally:
            if state["n"] == 2 + steps and state["prof"] is not None:
                prof, state["prof"] = state["prof"], None
                prof.__exit__(None, None, None)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20,
                                                max_name_column_width=40), flush=True)
                print(prof.key_averages(group_by_input_shape=True).table(
                    sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=30,
                    max_shapes_column_width=60), flush=True)

    recipe.ClassificationTrainer.training_step = training_step


def tokenize_worker(spec: dict) -> None:
    """Time the recipe's own load + tokenize of one file (what `main` does before training)."""
    from seqcls.arguments import parse_args
    from seqcls.data import Columns, load_raw_datasets, tokenize
    from seqcls.labels import build_label_space
    from seqcls.modeling import load_tokenizer

    start = time.perf_counter()
    model_args, data_args, training_args = parse_args(spec["argv"])
    cols = Columns.from_args(data_args)
    raw, sources = load_raw_datasets(data_args, seed=0)
    loaded = time.perf_counter()
    label_space = build_label_space(raw["train"][cols.label], where=sources["train"].name)
    tokenizer = load_tokenizer(model_args)
    ready = time.perf_counter()
    tokenized = tokenize(raw, tokenizer, label_space, cols, 128, False, data_args.preprocessing_num_workers)
    done = time.perf_counter()
    Path(spec["result_file"]).write_text(json.dumps({
        "rows": len(tokenized["train"]), "load_s": loaded - start, "tokenize_s": done - ready,
        "total_s": done - start, "cache_files": len(tokenized["train"].cache_files),
    }))


# ----------------------------------------------------------------------------------------------------------
# Parent side


def run_worker(kind: str, spec: dict, env: dict, log: Path) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        spec = {**spec, "result_file": f.name}
    with open(log, "a", encoding="utf-8") as out:
        proc = subprocess.run([sys.executable, __file__, f"--{kind}", json.dumps(spec)], cwd=ROOT, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed (exit {proc.returncode}); see {log}")
    result = json.loads(Path(spec["result_file"]).read_text())
    os.unlink(spec["result_file"])
    return result


def worker_env(threads: int, hf_home: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(hf_home), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    return env


def matmul_ceiling(threads: int, seconds: float = 3.0) -> float:
    """Best fp32 GFLOP/s of torch.mm over square sizes, with `threads` intra-op threads."""
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        end = time.perf_counter() + seconds / 3
        while time.perf_counter() < end:
            t = time.perf_counter()
            for _ in range(3):
                torch.mm(a, b)
            best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def model_shape(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        total = sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    embedding = config["vocab_size"] * config["hidden_size"]
    return {"layers": config["num_hidden_layers"], "hidden": config["hidden_size"], "params": total,
            "non_embedding_params": total - embedding}


def token_stats(model_dir: Path, dataset: str, rows: int, max_length: int = 128) -> dict:
    """Real tokens of the train rows the arms use (same tokenizer and truncation as the recipe)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = []
    with open(DATA / dataset / "train.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
            if len(texts) == rows:
                break
    lengths = [len(x) for x in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    return {"rows": len(lengths), "real_tokens": sum(lengths), "sum_sq": sum(n * n for n in lengths),
            "mean_length": sum(lengths) / len(lengths), "over_max": sum(n >= max_length for n in lengths)}


def arm_argv(model_dir: Path, dataset: str, arm: str, out: Path, model: str, seed: int = 0) -> list[str]:
    return [
        "--seed", str(seed),
        "--model_name_or_path", str(model_dir),
        "--train_file", str(DATA / dataset / "train.jsonl"),
        "--validation_file", str(DATA / dataset / "validation.jsonl"),
        "--output_dir", str(out),
        "--learning_rate", LEARNING_RATE[model],
        *COMMON, *ARMS[arm],
    ]


def summarize(record: dict, shape: dict, stats: dict, ceiling: float) -> dict:
    r = record["results"]
    runtime = r["train_runtime"]
    epochs = 1
    real = stats["real_tokens"] * epochs
    flops = 6 * shape["non_embedding_params"] * real + 12 * shape["layers"] * shape["hidden"] * stats["sum_sq"] * epochs
    accuracy = r.get("eval_accuracy", r.get("eval_subset_accuracy"))
    return {
        "samples_per_s": r["train_samples"] * epochs / runtime,
        "real_tokens_per_s": real / runtime,
        "pad_fraction": 1 - real / record["executed_tokens"],
        "peak_rss_mb": record["peak_rss_mb"],
        "accuracy": accuracy,
        "macro_f1": r["eval_macro_f1"],
        "micro_f1": r.get("eval_micro_f1"),
        "train_runtime": runtime,
        "micro_batches": record["micro_batches"],
        "mfu": flops / runtime / (ceiling * 1e9),
        "gflops": flops / runtime / 1e9,
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    import torch

    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def benchmark_training(args, work: Path, log: Path) -> dict:
    from seqcls import tiny

    env = worker_env(args.threads, work / "hf_home")
    models = {m: tiny.build(ROOT / "models" / f"bench-{m}", size=m, seed=0) for m in args.models}
    shapes = {m: model_shape(models[m]) for m in args.models}
    stats = {d: token_stats(models[args.models[0]], d, 3000) for d in args.datasets}
    ceilings = [matmul_ceiling(args.threads)]
    runs: dict[str, list[dict]] = {}
    for n, seed in enumerate(args.seeds):
        for m in args.models:
            for d in args.datasets:
                arms = list(args.arms)
                shift = n % len(arms)  # rotate the order each seed: drifting load hits every arm alike
                for arm in arms[shift:] + arms[:shift]:
                    key = f"{m}|{d}|{arm}"
                    print(f"[{time.strftime('%H:%M:%S')}] load {load_average()}  seed {seed}: {key}", flush=True)
                    spec = {"argv": arm_argv(models[m], d, arm, work / "out" / key.replace("|", "-"), m, seed),
                            "threads": args.threads}
                    runs.setdefault(key, []).append(run_worker("worker", spec, env, log))
    ceilings.append(matmul_ceiling(args.threads))
    ceiling = max(ceilings)
    table = {}
    for key, records in runs.items():
        m, d, _ = key.split("|")
        rows = [summarize(r, shapes[m], stats[d], ceiling) for r in records]
        # speed: the median over seeds (each seed is also a repeat); quality: the mean over seeds
        merged = {k: statistics.median([row[k] for row in rows]) for k in rows[0] if rows[0][k] is not None}
        for k in ("accuracy", "macro_f1", "micro_f1"):
            if rows[0][k] is not None:
                merged[k] = statistics.mean(row[k] for row in rows)
                merged[f"{k}_all"] = [round(row[k], 4) for row in rows]
        merged["samples_per_s_all"] = [round(row["samples_per_s"], 2) for row in rows]
        table[key] = merged
    return {"ceiling_gflops": ceilings, "shapes": shapes, "token_stats": stats, "arms": table}


def benchmark_tokenization(args, work: Path, log: Path) -> dict:
    from seqcls import tiny

    model_dir = tiny.build(ROOT / "models" / "bench-tiny", size="tiny", seed=0)
    big = work / "tok" / "train_100k.jsonl"
    big.parent.mkdir(parents=True, exist_ok=True)
    lines = [line for line in (DATA / "waimai_10k" / "train.jsonl").read_text(encoding="utf-8").splitlines() if line]
    with open(big, "w", encoding="utf-8") as f:
        for i in range(100_000):
            f.write(lines[i % len(lines)] + "\n")
    results = {}
    for workers in (1, 2):
        env = worker_env(args.threads, work / f"tok_home_{workers}")  # a fresh datasets cache per setting
        argv = ["--model_name_or_path", str(model_dir), "--train_file", str(big), "--output_dir", str(work / "tok_out"),
                "--preprocessing_num_workers", str(workers)]
        for attempt in ("cold", "rerun"):
            print(f"[{time.strftime('%H:%M:%S')}] load {load_average()}  tokenization workers={workers} {attempt}",
                  flush=True)
            t = time.perf_counter()
            result = run_worker("tokenize-worker", {"argv": argv}, env, log)
            result["process_s"] = time.perf_counter() - t
            results[f"workers={workers} {attempt}"] = result
    return results


def spread(arm: dict, key: str) -> str:
    """Mean over seeds, with the range when there are several."""
    values = arm.get(f"{key}_all", [arm[key]])
    if len(values) == 1:
        return f"{arm[key]:.3f}"
    return f"{arm[key]:.3f} ({min(values):.3f}–{max(values):.3f})"


def markdown(report: dict) -> str:
    lines = []
    if "training" in report:
        tr = report["training"]
        lines += [f"fp32 matmul ceiling ({report['threads']} thread(s)): "
                  + ", ".join(f"{c:.0f}" for c in tr["ceiling_gflops"]) + " GFLOP/s (start, end; the max is used)",
                  ""]
        for d, s in tr["token_stats"].items():
            lines.append(f"- {d}: {s['rows']} train rows, mean {s['mean_length']:.1f} real tokens, "
                         f"{s['over_max']} at or over 128")
        lines += ["", "| model | data | arm | samples/s | real tok/s | pad | peak RSS MB | acc | macro-F1 "
                  "| vs (b) | vs (c) | MFU |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, a in tr["arms"].items():
            m, d, arm = key.split("|")
            b = tr["arms"].get(f"{m}|{d}|official-default")
            c = tr["arms"].get(f"{m}|{d}|official-best")
            vs_b = f"{a['samples_per_s'] / b['samples_per_s']:.2f}x" if b else "-"
            vs_c = f"{a['samples_per_s'] / c['samples_per_s']:.2f}x" if c else "-"
            label = {"official-default": "(b) official default", "official-best": "(c) official best",
                     "ours": "(a) ours"}.get(arm, arm)
            lines.append(
                f"| {m} | {d} | {label} | {a['samples_per_s']:.1f} | {a['real_tokens_per_s']:.0f} "
                f"| {a['pad_fraction']:.0%} | {a['peak_rss_mb']:.0f} | {spread(a, 'accuracy')} | {spread(a, 'macro_f1')} "
                f"| {vs_b} | {vs_c} | {a['mfu']:.1%} |")
    if "tokenization" in report:
        lines += ["", "| 100,000-row JSONL | load s | tokenize s | whole process s |", "|---|---|---|---|"]
        for key, r in report["tokenization"].items():
            lines.append(f"| {key} | {r['load_s']:.1f} | {r['tokenize_s']:.1f} | {r['process_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("--worker", "--tokenize-worker"):
        spec = json.loads(sys.argv[2])
        (worker if sys.argv[1] == "--worker" else tokenize_worker)(spec)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "small"], choices=["tiny", "small"])
    parser.add_argument("--datasets", nargs="+", default=["waimai_10k", "goemotions"])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="one run of every arm per seed: speed is the median, accuracy the mean")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per arm (default 1)")
    parser.add_argument("--no-tokenization", action="store_true", help="skip the 100,000-row tokenization timing")
    parser.add_argument("--tokenization-only", action="store_true")
    parser.add_argument("--profile", metavar="MODEL|DATASET|ARM", help="profile 4 training steps of one arm and exit")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="seqcls-bench-train-"))
    log = work / "arms.log"
    print(f"machine: {machine()}\nload at start: {load_average()}\nwork dir and arm logs: {work}", flush=True)
    try:
        if args.profile:
            from seqcls import tiny

            m, d, arm = args.profile.split("|")
            model_dir = tiny.build(ROOT / "models" / f"bench-{m}", size=m, seed=0)
            spec = {"argv": arm_argv(model_dir, d, arm, work / "out", m, args.seeds[0]), "threads": args.threads,
                    "profile_steps": 4}
            run_worker("worker", spec, worker_env(args.threads, work / "hf_home"), log)
            print(log.read_text(encoding="utf-8")[-12000:])
            return
        report: dict = {"machine": machine(), "threads": args.threads, "load_start": load_average(),
                        "command": " ".join(["python", "benchmarks/train.py", *sys.argv[1:]])}
        if not args.tokenization_only:
            report["training"] = benchmark_training(args, work, log)
        if args.tokenization_only or not args.no_tokenization:
            report["tokenization"] = benchmark_tokenization(args, work, log)
        report["load_end"] = load_average()
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        print(f"\nload at start {report['load_start']}, at end {report['load_end']}\n")
        print(markdown(report))
    finally:
        shutil.rmtree(work / "out", ignore_errors=True)
        for p in work.glob("tok*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()


if __name__ == "__main__":
    main()
