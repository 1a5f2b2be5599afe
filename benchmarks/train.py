"""Training speed: our defaults against the official transformers recipe, on the same Trainer, rows and budget.

    python benchmarks/train.py                      # everything (tiny and small model, waimai_10k and goemotions)
    python benchmarks/train.py --models small --datasets waimai_10k --seeds 0
    python benchmarks/train.py --parts evaluation tokenization
    python benchmarks/train.py --profile "small|waimai_10k|ours"     # a step's phases (CPU s), MFU, torch.profiler

Arms, each trained in its own subprocess (peak RSS is per arm) with the same seed, epochs, learning rate and
per-device batch size (32 rows, max_seq_length 128, 1 epoch, first 3000 train / 1000 validation rows):

  (b) official-default  the official run_classification.py's default data path: static padding to
                        max_seq_length 128 (`pad_to_max_length` defaults to true there), random batches
  (c) official-best     the official script at its best flags: dynamic padding, `train_sampling_strategy
                        group_by_length`
  (a) ours              our defaults: packing auto (on: these models give the same logits packed), random
                        batches of 32 rows as (b) (the same optimisation, without the padding), length-sorted
                        evaluation, embedding_update auto (sparse here: gradients and AdamW steps only for the
                        embedding rows the data has touched, seqcls/embedding.py)
  ours+dense_embedding  ours with embedding_update dense: every embedding row every step (same results as ours)
  ours+budget           max_tokens_per_batch auto: packed random batches of 32 x the 95th-percentile length in
                        tokens (more rows per step when texts are short: fewer, fuller steps)
  ours-packing_off      packing false, train_sampling_strategy group_by_length: padded length-grouped batches of
                        32 rows (the fastest padded setting, for a model that cannot be packed)
  ours+freeze           freeze_embeddings true
  ours+flash            attn_implementation flash_attention_2 (GPU with flash-attn only)

(b) and (c) are emulated with our own CLI flags (`--pad_to_max_length true --train_sampling_strategy random`,
`--train_sampling_strategy group_by_length`, and packing, token budget, length-sorted evaluation and the sparse
embedding update off): the
official script is not installed here, and its training data path is the same Trainer, the same `Dataset.map`
tokenization and the same padding collator; its loss equals ours without gradient accumulation.

For each arm: train samples/s and real (non-pad) tokens/s, the fraction of executed tokens that are padding,
peak RSS (GPU: peak GPU memory), final eval accuracy (multi-label: subset accuracy), macro-F1 and loss (mean and
range over seeds), ratios against (b) and (c), and MFU: (6 x non-embedding parameters x real tokens + 12 x
layers x hidden x sum of squared real lengths) / time / the matmul ceiling measured in this run (fp32 with the
same thread count on a CPU, bf16 on a GPU, where MFU against the datasheet's dense bf16 peak is added).
On a CPU every arm runs one intra-op thread (`--threads`) and rates are taken over the CPU seconds of its
training loop: the machine is shared, and wall-clock rates of the same arm swung 2-3x with the other jobs'
load while CPU-second rates held; the wall-clock rate is reported beside them.

A second part times the steps before training on a 100,000-row JSONL file (waimai_10k rows repeated) with
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
OFFICIAL = ["--sort_eval_by_length", "false", "--max_tokens_per_batch", "off", "--packing", "false",
            "--embedding_update", "dense"]
ARMS = {
    "official-default": ["--pad_to_max_length", "true", "--train_sampling_strategy", "random", *OFFICIAL],
    "official-best": ["--pad_to_max_length", "false", "--train_sampling_strategy", "group_by_length", *OFFICIAL],
    "ours": [],  # packed random batches of 32 rows (what (b) computes, unpadded), length-sorted evaluation
    # our defaults with the embedding trained densely (every row every step): what "ours" equals bit for bit
    "ours+dense_embedding": ["--embedding_update", "dense"],
    "ours+budget": ["--max_tokens_per_batch", "auto"],  # packed random batches of 32 x the 95th-percentile length
    # padded length-grouped batches: the fastest padded setting, for models that cannot be packed
    "ours-packing_off": ["--packing", "false", "--train_sampling_strategy", "group_by_length"],
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
    original_train = recipe.ClassificationTrainer.train

    def timed_train(self, *args, **kwargs):
        # CPU time of this process: on a shared machine a one-thread process's CPU seconds barely depend on how
        # many other processes compete for the cores, where its wall-clock seconds swing with them
        start = time.process_time()
        try:
            return original_train(self, *args, **kwargs)
        finally:
            counts["train_cpu_s"] = time.process_time() - start

    recipe.ClassificationTrainer.train = timed_train
    if spec.get("profile_steps"):
        profile_training_steps(recipe, spec["profile_steps"])
    results = recipe.main(spec["argv"])
    out = {**counts, "results": results, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    Path(spec["result_file"]).write_text(json.dumps(out))


SPARSE_ROWS = "(of the optimizer step: the sparse embedding's rows)"


def profile_training_steps(recipe, steps: int) -> None:
    """Where a training step's time goes: after 2 warm-up steps, `steps` whole optimizer steps timed by phase in CPU
    seconds (forward, backward, gradient norm and clipping, optimizer step, zero_grad; the sparse embedding's row
    step apart), with the real tokens they held; then `steps` more under torch.profiler (operators by self CPU
    time). Printed as JSON lines ("PROFILE {...}") and tables; the parent adds MFU against its matmul ceiling."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from seqcls.embedding import RowSparseAdamW

    window = {"n": 0, "timing": False, "prof": None, "phases": {}, "tokens": 0, "sum_sq": 0, "cpu": 0.0}

    active: set[str] = set()

    def timed(owner, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            if not window["timing"] or phase in active:  # a nested call of the same phase counts once
                return original(*args, **kwargs)
            active.add(phase)
            t = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                active.discard(phase)
                window["phases"][phase] = window["phases"].get(phase, 0.0) + time.process_time() - t
        setattr(owner, name, wrapper)

    trainer_cls = recipe.ClassificationTrainer
    timed(trainer_cls, "compute_loss", "forward (incl. loss)")
    timed(trainer_cls, "_clip_grad_norm", "gradient norm + clipping")
    timed(trainer_cls, "_get_grad_norm", "gradient norm + clipping")
    timed(RowSparseAdamW, "_step_rows", SPARSE_ROWS)
    timed(RowSparseAdamW, "step", "optimizer step")
    timed(torch.optim.AdamW, "step", "optimizer step")
    timed(torch.nn.Module, "zero_grad", "zero_grad")
    import accelerate

    timed(accelerate.Accelerator, "backward", "backward")
    original = trainer_cls.training_step

    def real_lengths(inputs: dict, pad_id: int) -> list[int]:
        ids = inputs["input_ids"]
        if "position_ids" in inputs:  # packed: an example per run of positions from 0; the all-pad tail left out
            lengths = []
            for row, pos in zip(ids, inputs["position_ids"]):
                starts = (pos == 0).nonzero().squeeze(1).tolist() + [len(pos)]
                lengths += [b - a for a, b in zip(starts, starts[1:]) if (row[a:b] != pad_id).any()]
            return lengths
        return inputs["attention_mask"].sum(dim=1).tolist()

    def report() -> None:
        total = window["cpu"]
        phases = dict(window["phases"])
        accounted = sum(v for k, v in phases.items() if k != SPARSE_ROWS)
        phases["rest (dataloader, collator, Trainer loop, logging)"] = total - accounted
        print("PROFILE " + json.dumps({"steps": steps, "cpu_s": total, "real_tokens": window["tokens"],
                                       "sum_sq": window["sum_sq"], "phases": phases}), flush=True)

    def training_step(self, model, inputs, *args, **kwargs):
        window["n"] += 1
        n = window["n"]
        if n == 3:  # whole steps 3 .. 2 + steps, timed by phase
            window["timing"], window["cpu0"] = True, time.process_time()
        if n == 3 + steps:
            window["cpu"] = time.process_time() - window["cpu0"]
            window["timing"] = False
            report()
            window["prof"] = profile(activities=[ProfilerActivity.CPU]).__enter__()
        if n == 3 + 2 * steps and window["prof"] is not None:
            prof, window["prof"] = window["prof"], None
            prof.__exit__(None, None, None)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=48),
                  flush=True)
        if window["timing"]:
            lengths = real_lengths(inputs, self.model.config.pad_token_id)
            window["tokens"] += sum(lengths)
            window["sum_sq"] += sum(x * x for x in lengths)
        return original(self, model, inputs, *args, **kwargs)

    trainer_cls.training_step = training_step


def profile_summary(record: dict, shape: dict, ceilings: list[float]) -> str:
    """The profiled steps' phases as a table, with the window's real-token MFU against the best matmul ceiling."""
    total = record["cpu_s"]
    flops = 6 * shape["non_embedding_params"] * record["real_tokens"] + 12 * shape["layers"] * shape["hidden"] * \
        record["sum_sq"]
    lines = [f"{record['steps']} whole steps, {total:.2f} CPU s, {record['real_tokens']} real tokens; matmul ceiling "
             + ", ".join(f"{c:.0f}" for c in ceilings) + " GFLOP/s (before, after; the max is used); model "
             f"{flops / total / 1e9:.1f} GFLOP/s, real-token MFU {flops / total / (max(ceilings) * 1e9):.1%}",
             "", "| phase | CPU s per step | share |", "|---|---|---|"]
    for phase, seconds in sorted(record["phases"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {phase} | {seconds / record['steps']:.3f} | {seconds / total:.1%} |")
    return "\n".join(lines)


def tokenize_worker(spec: dict) -> None:
    """Time the recipe's own steps before training on one file: imports, load (scan + Arrow), label space,
    tokenizer, tokenize (`Dataset.map`, cached)."""
    start = time.perf_counter()
    from seqcls.arguments import parse_args
    from seqcls.data import Columns, load_raw_datasets, tokenize
    from seqcls.labels import build_label_space
    from seqcls.modeling import load_tokenizer

    model_args, data_args, training_args = parse_args(spec["argv"])
    times = {"imports_s": time.perf_counter() - start}
    t = time.perf_counter()
    cols = Columns.from_args(data_args)
    raw, sources = load_raw_datasets(data_args, seed=0)
    times["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    label_space = build_label_space(raw["train"][cols.label], where=sources["train"].name)
    times["labels_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tokenizer = load_tokenizer(model_args)
    times["tokenizer_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tokenized = tokenize(raw, tokenizer, label_space, cols, 128, False, data_args.preprocessing_num_workers)
    times["tokenize_s"] = time.perf_counter() - t
    Path(spec["result_file"]).write_text(json.dumps({
        **times, "rows": len(tokenized["train"]), "total_s": time.perf_counter() - start,
        "cache_files": len(tokenized["train"].cache_files),
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
    """Best GFLOP/s of torch.mm over square sizes: fp32 with `threads` intra-op threads on the CPU, bf16 on a GPU.
    On the CPU per CPU second of this process, like the arms' rates (wall clock would read the other jobs' load
    on a shared machine as a lower ceiling)."""
    import torch

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    sizes = (4096, 8192) if device == "cuda" else (512, 1024, 2048)
    clock = time.perf_counter if device == "cuda" else time.process_time
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)
        end = time.perf_counter() + seconds / len(sizes)
        while time.perf_counter() < end:
            if device == "cuda":
                torch.cuda.synchronize()
            t = clock()
            for _ in range(3):
                torch.mm(a, b)
            if device == "cuda":
                torch.cuda.synchronize()
            best = max(best, 3 * 2 * n**3 / (clock() - t) / 1e9)
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


def summarize(record: dict, shape: dict, stats: dict, ceiling: float, peak: float | None = None,
              basis: str = "wall") -> dict:
    r = record["results"]
    wall = r["train_runtime"]
    runtime = record["train_cpu_s"] if basis == "cpu" else wall
    epochs = 1
    real = stats["real_tokens"] * epochs
    flops = 6 * shape["non_embedding_params"] * real + 12 * shape["layers"] * shape["hidden"] * stats["sum_sq"] * epochs
    accuracy = r.get("eval_accuracy", r.get("eval_subset_accuracy"))
    return {
        "samples_per_s": r["train_samples"] * epochs / runtime,
        "wall_samples_per_s": r["train_samples"] * epochs / wall,
        "eval_samples_per_s": r.get("eval_samples_per_second"),
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
    basis = "cpu" if args.device == "cpu" and args.threads == 1 else "wall"
    table = {}
    summaries = {key: [summarize(r, shapes[key.split("|")[0]], stats[key.split("|")[1]], ceiling, peak, basis)
                       for r in records] for key, records in runs.items()}
    for key, rows in summaries.items():
        m, d, _ = key.split("|")
        # speed: the median over seeds (each seed is also a repeat); quality: the mean over seeds
        merged = {k: statistics.median([row[k] for row in rows]) for k in rows[0] if rows[0][k] is not None}
        for k in ("accuracy", "macro_f1", "micro_f1", "eval_loss"):
            if rows[0][k] is not None:
                merged[k] = statistics.mean(row[k] for row in rows)
                merged[f"{k}_all"] = [round(row[k], 4) for row in rows]
        merged["samples_per_s_all"] = [round(row["samples_per_s"], 2) for row in rows]
        for ref in ("official-default", "official-best"):  # ratios within each seed (the runs closest in time)
            base = summaries.get(f"{m}|{d}|{ref}")
            if base:
                ratios = [row["samples_per_s"] / b["samples_per_s"] for row, b in zip(rows, base)]
                merged[f"vs_{ref}"] = statistics.median(ratios)
                merged[f"vs_{ref}_all"] = [round(x, 2) for x in ratios]
        merged["wall_samples_per_s_all"] = [round(row["wall_samples_per_s"], 2) for row in rows]
        table[key] = merged
    return {"ceiling_gflops": ceilings, "datasheet_peak_gflops": peak, "shapes": shapes, "token_stats": stats,
            "time_basis": basis, "arms": table}


def eval_worker(spec: dict) -> None:
    """Evaluate a model on validation rows in their own order and sorted by length, alternating; CPU seconds on a
    CPU, wall-clock seconds on a GPU (predictions end on the host, so the GPU's work is done)."""
    import torch

    torch.set_num_threads(spec["threads"])
    from seqcls import train as recipe

    times: dict[str, list[float]] = {"in input order": [], "sorted by length": []}
    clock = time.perf_counter if torch.cuda.is_available() else time.process_time
    original_main_predict = recipe.predict_in_order

    def timed(trainer, ds, prefix, sort=True):
        for _ in range(spec["repeats"]):
            for label, flag in (("in input order", False), ("sorted by length", True)):
                start = clock()
                result = original_main_predict(trainer, ds, prefix, sort=flag)
                times[label].append(clock() - start)
        return result

    recipe.predict_in_order = timed
    recipe.main(spec["argv"])
    rows = spec["rows"]
    Path(spec["result_file"]).write_text(json.dumps(
        {label: {"rows_per_s": rows / min(values), "seconds": values} for label, values in times.items()}))


def benchmark_eval(args, work: Path, log: Path) -> dict:
    """Evaluation in input order (the official script without group_by_length) against length-sorted batches."""
    model = args.models[-1]
    model_dir = build_model(model)
    # 64 train rows: the head needs a label space; an all but untrained model reads the rows just as fast
    argv = arm_argv(model_dir, "waimai_10k", "ours", work / "out" / "eval", model, 0, args.device, 64,
                    args.eval_rows)
    spec = {"argv": argv, "threads": args.threads, "repeats": 2, "rows": args.eval_rows}
    print(f"[{time.strftime('%H:%M:%S')}] load {load_average()}  evaluation order, {model}", flush=True)
    return {"model": model, **run_worker("eval-worker", spec, worker_env(args.threads, work / "hf_home"), log)}


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
        env.pop("TOKENIZERS_PARALLELISM")  # as a user runs it: the Rust tokenizer may use every core in one process
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
        kind = "bf16" if tr.get("datasheet_peak_gflops") is not None else "fp32"
        lines += [f"{kind} matmul ceiling ({report['threads']} thread(s)): "
                  + ", ".join(f"{c:.0f}" for c in tr["ceiling_gflops"]) + " GFLOP/s (start, end; the max is used)",
                  "speeds and MFU over " + ("the training loop's CPU seconds (one thread per arm; wall-clock "
                                            "samples/s in the last column)" if tr.get("time_basis") == "cpu"
                                            else "the Trainer's train_runtime"), ""]
        for d, s in tr["token_stats"].items():
            lines.append(f"- {d}: {s['rows']} train rows, mean {s['mean_length']:.1f} real tokens, "
                         f"{s['over_max']} at or over 128")
        gpu = tr.get("datasheet_peak_gflops") is not None or any(a.get("peak_gpu_mb") for a in tr["arms"].values())
        if tr.get("datasheet_peak_gflops"):
            lines.append(f"datasheet dense bf16 peak: {tr['datasheet_peak_gflops'] / 1e3:.0f} TFLOP/s")
        memory = "peak GPU MB" if gpu else "peak RSS MB"
        extra = (" | MFU vs datasheet" if gpu else "") + " | wall samples/s"
        lines += ["", f"| model | data | arm | samples/s | real tok/s | pad | {memory} | acc | macro-F1 | eval loss "
                  f"| vs (b) | vs (c) | MFU{extra} |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                  + ("---|" if gpu else "")]
        for key, a in tr["arms"].items():
            m, d, arm = key.split("|")
            vs_b = f"{a['vs_official-default']:.2f}x" if "vs_official-default" in a else "-"
            vs_c = f"{a['vs_official-best']:.2f}x" if "vs_official-best" in a else "-"
            label = {"official-default": "(b) official default", "official-best": "(c) official best",
                     "ours": "(a) ours"}.get(arm, arm)
            lines.append(
                f"| {m} | {d} | {label} | {a['samples_per_s']:.1f} | {a['real_tokens_per_s']:.0f} "
                f"| {a['pad_fraction']:.0%} | {a['peak_gpu_mb' if gpu else 'peak_rss_mb'] or 0:.0f} "
                f"| {spread(a, 'accuracy')} | {spread(a, 'macro_f1')} "
                f"| {spread(a, 'eval_loss')} "
                f"| {vs_b} | {vs_c} | {a['mfu']:.1%} |"
                + (f" {a['mfu_vs_datasheet']:.1%} |" if gpu and a.get("mfu_vs_datasheet") is not None else
                   (" - |" if gpu else ""))
                + f" {a['wall_samples_per_s']:.1f} |")
    if "evaluation" in report:
        ev = report["evaluation"]
        lines += ["", f"| evaluation, {ev['model']} model, waimai_10k validation (dynamic padding) | rows/s "
                  f"({'CPU seconds' if report.get('device', 'cpu') == 'cpu' else 'wall clock'}) |", "|---|---|"]
        for label in ("in input order", "sorted by length"):
            lines.append(f"| {label} | {ev[label]['rows_per_s']:.0f} |")
    if "tokenization" in report:
        lines += ["", "| 100,000-row JSONL, preprocessing_num_workers | imports s | load s | label space s "
                  "| tokenizer s | tokenize s | whole process s |", "|---|---|---|---|---|---|---|"]
        for key, r in report["tokenization"].items():
            lines.append(f"| {key} | {r['imports_s']:.1f} | {r['load_s']:.1f} | {r['labels_s']:.1f} "
                         f"| {r['tokenizer_s']:.1f} | {r['tokenize_s']:.1f} | {r['process_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    workers = {"--worker": worker, "--tokenize-worker": tokenize_worker, "--eval-worker": eval_worker}
    if len(sys.argv) == 3 and sys.argv[1] in workers:
        workers[sys.argv[1]](json.loads(sys.argv[2]))
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
    parser.add_argument("--parts", nargs="+", default=["training", "evaluation", "tokenization"],
                        choices=["training", "evaluation", "tokenization"],
                        help="training: the arms; evaluation: input order vs length-sorted; tokenization: 100,000 rows")
    parser.add_argument("--profile", metavar="MODEL|DATASET|ARM", help="one arm: 4 whole steps timed by phase (CPU s) with their MFU, then 4 under "
                        "torch.profiler; exit")
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
            steps = 4
            spec = {"argv": arm_argv(model_dir, d, arm, work / "out", m, args.seeds[0], args.device,
                                     min(args.train_rows, (3 + 2 * steps) * 32), 32),
                    "threads": args.threads,
                    "profile_steps": steps}
            ceilings = [matmul_ceiling(args.threads, args.device)]
            run_worker("worker", spec, worker_env(args.threads, work / "hf_home"), log)
            ceilings.append(matmul_ceiling(args.threads, args.device))
            text = log.read_text(encoding="utf-8")
            print(text[text.rindex("PROFILE "):][:14000])
            print(profile_summary(json.loads(text[text.rindex("PROFILE ") + 8:].splitlines()[0]),
                                  model_shape(model_dir), ceilings))
            print(f"load at end: {load_average()}")
            return
        report: dict = {"machine": machine(), "device": args.device, "threads": args.threads,
                        "load_start": load_average(),
                        "command": " ".join(["python", "benchmarks/train.py", *sys.argv[1:]])}
        if "training" in args.parts:
            report["training"] = benchmark_training(args, work, log)
        if "evaluation" in args.parts:
            report["evaluation"] = benchmark_eval(args, work, log)
        if "tokenization" in args.parts:
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
