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
import importlib.util
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
    "--do_train", "--do_eval",
    "--save_strategy", "no",
    "--eval_strategy", "no",
    "--logging_strategy", "no",
    "--report_to", "none",
    "--disable_tqdm", "true",
    "--dataloader_num_workers", "0",
    "--overwrite_output_dir", "true",
    "--log_level", "warning",
]
# none of our throughput options: the official script's data path
OFFICIAL = ["--sort_eval_by_length", "false", "--max_tokens_per_batch", "off", "--packing", "false"]
ARMS = {
    "official-default": ["--pad_to_max_length", "true", "--train_sampling_strategy", "random", *OFFICIAL],
    "official-best": ["--pad_to_max_length", "false", "--train_sampling_strategy", "group_by_length", *OFFICIAL],
    "ours": [],  # packed random rows under the auto token budget, length-sorted evaluation
    "ours-budget_off": ["--max_tokens_per_batch", "off"],  # packed random batches of 32 rows
    "ours-packing_off": ["--packing", "false"],  # padded length-grouped batches under the auto token budget
    "ours+freeze": ["--freeze_embeddings", "true"],
    "ours+flash": ["--attn_implementation", "flash_attention_2"],  # GPU with flash-attn: variable-length packing
}
DEVICE_ARGS = {"cpu": ["--use_cpu", "true"], "cuda": ["--bf16", "true"]}
MAIN_ARMS = ("official-default", "official-best", "ours")
LEARNING_RATE = {"tiny": "3e-3", "small": "1e-3", "qwen2-0.5b": "1e-4"}
# Qwen2-0.5B / Qwen2.5-0.5B's shape (494M parameters, 136M of them the tied embedding), randomly initialised
QWEN2_05B = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
             "intermediate_size": 4864, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
             "tie_word_embeddings": True}
# dense bf16 tensor-core peaks (TFLOP/s, datasheets; SXM parts unless named)
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "A100": 312.0,
                    "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


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
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
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


def matmul_ceiling(threads: int, device: str = "cpu", seconds: float = 3.0) -> float:
    """Best GFLOP/s of torch.mm over square sizes: fp32 with `threads` intra-op threads on the CPU, bf16 on a GPU."""
    import torch

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    sizes = (4096, 8192) if device == "cuda" else (512, 1024, 2048)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)
        end = time.perf_counter() + seconds / len(sizes)
        while time.perf_counter() < end:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(3):
                torch.mm(a, b)
            if device == "cuda":
                torch.cuda.synchronize()
            best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def datasheet_peak_gflops() -> float | None:
    """The GPU's dense bf16 peak from BF16_PEAK_TFLOPS, matched on its name (None when unknown)."""
    import torch

    name = torch.cuda.get_device_name(0)
    for key, tflops in BF16_PEAK_TFLOPS.items():  # longer names first where they share a prefix (H100 PCIe, H100)
        if key in name:
            return tflops * 1e3
    return None


def build_model(name: str) -> Path:
    """The benchmark's model: the embedded tiny/small Qwen2, or a random Qwen2-0.5B-shaped one (built once)."""
    from seqcls import tiny

    if name in tiny.SIZES:
        return tiny.build(ROOT / "models" / f"bench-{name}", size=name, seed=0)
    out = ROOT / "models" / f"bench-{name}"
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=tiny.VOCAB_SIZE, bos_token_id=tiny.SPECIAL_TOKENS[tiny.ENDOFTEXT],
                         eos_token_id=tiny.SPECIAL_TOKENS[tiny.ENDOFTEXT], **QWEN2_05B)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tiny.build_tokenizer().save_pretrained(tmp)
    tmp.rename(out)
    return out


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


def arm_argv(model_dir: Path, dataset: str, arm: str, out: Path, model: str, seed: int = 0,
             device: str = "cpu", train_rows: int = 3000, eval_rows: int = 1000) -> list[str]:
    return [
        "--max_train_samples", str(train_rows),
        "--max_eval_samples", str(eval_rows),
        "--seed", str(seed),
        "--model_name_or_path", str(model_dir),
        "--train_file", str(DATA / dataset / "train.jsonl"),
        "--validation_file", str(DATA / dataset / "validation.jsonl"),
        "--output_dir", str(out),
        "--learning_rate", LEARNING_RATE[model],
        *COMMON, *DEVICE_ARGS[device], *ARMS[arm],
    ]


def summarize(record: dict, shape: dict, stats: dict, ceiling: float, peak: float | None = None) -> dict:
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
        "eval_loss": r["eval_loss"],
        "micro_f1": r.get("eval_micro_f1"),
        "train_runtime": runtime,
        "micro_batches": record["micro_batches"],
        "mfu": flops / runtime / (ceiling * 1e9),
        "mfu_vs_datasheet": None if peak is None else flops / runtime / (peak * 1e9),
        "peak_gpu_mb": record.get("peak_gpu_mb"),
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
    gpu = f", GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def benchmark_training(args, work: Path, log: Path) -> dict:
    env = worker_env(args.threads, work / "hf_home")
    models = {m: build_model(m) for m in args.models}
    shapes = {m: model_shape(models[m]) for m in args.models}
    stats = {d: token_stats(models[args.models[0]], d, args.train_rows) for d in args.datasets}
    ceilings = [matmul_ceiling(args.threads, args.device)]
    runs: dict[str, list[dict]] = {}
    for n, seed in enumerate(args.seeds):
        for m in args.models:
            for d in args.datasets:
                arms = list(args.arms)
                shift = n % len(arms)  # rotate the order each seed: drifting load hits every arm alike
                for arm in arms[shift:] + arms[:shift]:
                    key = f"{m}|{d}|{arm}"
                    print(f"[{time.strftime('%H:%M:%S')}] load {load_average()}  seed {seed}: {key}", flush=True)
                    spec = {"argv": arm_argv(models[m], d, arm, work / "out" / key.replace("|", "-"), m, seed,
                                             args.device, args.train_rows, args.eval_rows), "threads": args.threads}
                    runs.setdefault(key, []).append(run_worker("worker", spec, env, log))
    ceilings.append(matmul_ceiling(args.threads, args.device))
    ceiling = max(ceilings)
    peak = datasheet_peak_gflops() if args.device == "cuda" else None
    table = {}
    for key, records in runs.items():
        m, d, _ = key.split("|")
        rows = [summarize(r, shapes[m], stats[d], ceiling, peak) for r in records]
        # speed: the median over seeds (each seed is also a repeat); quality: the mean over seeds
        merged = {k: statistics.median([row[k] for row in rows]) for k in rows[0] if rows[0][k] is not None}
        for k in ("accuracy", "macro_f1", "micro_f1", "eval_loss"):
            if rows[0][k] is not None:
                merged[k] = statistics.mean(row[k] for row in rows)
                merged[f"{k}_all"] = [round(row[k], 4) for row in rows]
        merged["samples_per_s_all"] = [round(row["samples_per_s"], 2) for row in rows]
        table[key] = merged
    return {"ceiling_gflops": ceilings, "datasheet_peak_gflops": peak, "shapes": shapes, "token_stats": stats,
            "arms": table}


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
        gpu = tr.get("datasheet_peak_gflops") is not None or any(a.get("peak_gpu_mb") for a in tr["arms"].values())
        if tr.get("datasheet_peak_gflops"):
            lines.append(f"datasheet dense bf16 peak: {tr['datasheet_peak_gflops'] / 1e3:.0f} TFLOP/s")
        memory = "peak GPU MB" if gpu else "peak RSS MB"
        extra = " | MFU vs datasheet" if gpu else ""
        lines += ["", f"| model | data | arm | samples/s | real tok/s | pad | {memory} | acc | macro-F1 | eval loss "
                  f"| vs (b) | vs (c) | MFU{extra} |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                  + ("---|" if gpu else "")]
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
                f"| {a['pad_fraction']:.0%} | {a['peak_gpu_mb' if gpu else 'peak_rss_mb'] or 0:.0f} "
                f"| {spread(a, 'accuracy')} | {spread(a, 'macro_f1')} "
                f"| {spread(a, 'eval_loss')} "
                f"| {vs_b} | {vs_c} | {a['mfu']:.1%} |"
                + (f" {a['mfu_vs_datasheet']:.1%} |" if gpu and a.get("mfu_vs_datasheet") is not None else
                   (" - |" if gpu else "")))
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
    parser.add_argument("--models", nargs="+", default=["tiny", "small"], choices=["tiny", "small", "qwen2-0.5b"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: bf16 training (--bf16 true), MFU against the card's bf16 peak")
    parser.add_argument("--datasets", nargs="+", default=["waimai_10k", "goemotions"])
    parser.add_argument("--arms", nargs="+", default=[a for a in ARMS if a != "ours+flash"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="one run of every arm per seed: speed is the median, accuracy the mean")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per arm (default 1)")
    parser.add_argument("--train-rows", type=int, default=3000, help="first N train rows of each data set")
    parser.add_argument("--eval-rows", type=int, default=1000, help="first N validation rows")
    parser.add_argument("--no-tokenization", action="store_true", help="skip the 100,000-row tokenization timing")
    parser.add_argument("--tokenization-only", action="store_true")
    parser.add_argument("--profile", metavar="MODEL|DATASET|ARM", help="profile 4 training steps of one arm and exit")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    if "ours+flash" in args.arms and (args.device != "cuda" or importlib.util.find_spec("flash_attn") is None):
        print("arm ours+flash left out: it needs a CUDA GPU and the flash-attn package", flush=True)
        args.arms = [a for a in args.arms if a != "ours+flash"]

    work = Path(tempfile.mkdtemp(prefix="seqcls-bench-train-"))
    log = work / "arms.log"
    print(f"machine: {machine()}\nload at start: {load_average()}\nwork dir and arm logs: {work}", flush=True)
    try:
        if args.profile:
            m, d, arm = args.profile.split("|")
            model_dir = build_model(m)
            spec = {"argv": arm_argv(model_dir, d, arm, work / "out", m, args.seeds[0], args.device, args.train_rows,
                                     args.eval_rows),
                    "threads": args.threads,
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
