"""Benchmark: seqcls-predict on 1 process against 2 (torchrun, gloo), file to file, in one run.

    python benchmarks/predict_distributed.py                         # tiny + small Qwen2, waimai_10k (all splits)
    python benchmarks/predict_distributed.py --sizes tiny --rows 2400 --rounds 1   # a quick look

Each arm is `torchrun --standalone --nproc_per_node N benchmarks/predict_distributed.py --child ...`: every
process runs `seqcls.predict.cli` (model loading, reading, tokenizing, the forward, writing its chunk files; the
main process also assembles the output) and reports its own CPU seconds and peak RSS (VmHWM). The arms alternate,
the order rotating from round to round. Reported: wall seconds, texts per wall second, texts per CPU second (the
work done, summed over the processes: what another machine's load disturbs least), and the peak RSS of each process.
Every process runs one torch thread (--threads), so 2 processes use the 2 cores that 1 process x 2 threads would:
the comparison is "processes vs nothing", not "processes vs threads". Start-up CPU-s is the same arm on a
one-row input (interpreter, imports, model loading, summed over the processes); "after start-up" divides the rows
by the CPU seconds beyond it: the rate a long job converges to. The outputs of the arms are compared byte for
byte. The models are the embedded random Qwen2s (`seqcls.tiny`) with a seeded head: speed does not depend on what
the head learned.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from predict import DATA, SHARED, build_classifier, peak_rss_mb  # noqa: E402  (benchmarks/predict.py)


def child(args: argparse.Namespace, rest: list[str]) -> None:
    """One process of an arm: seqcls-predict, then this process's CPU seconds and peak RSS as a JSON file."""
    from seqcls.predict import cli

    code = cli(rest)
    rank = os.environ.get("RANK", "0")
    Path(args.child, f"rank{rank}.json").write_text(json.dumps(
        {"code": code, "cpu_seconds": time.process_time(), "peak_rss_mb": peak_rss_mb()}))


def run_arm(processes: int, model: Path, data: Path, args: argparse.Namespace, tmp: Path) -> dict:
    stats = tmp / f"stats-{processes}-{data.stem}"
    stats.mkdir(exist_ok=True)
    out = tmp / f"out-{processes}-{data.stem}.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           __file__, "--child", str(stats), "--", str(model), str(data), "-o", str(out),
           "--num_threads", str(args.threads), "--batch_size", str(args.batch_size), "--chunk_rows",
           str(args.chunk_rows)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{processes} process(es) failed:\n{proc.stderr[-3000:]}")
    ranks = [json.loads((stats / f"rank{r}.json").read_text()) for r in range(processes)]
    return {"seconds": seconds, "cpu_seconds": sum(r["cpu_seconds"] for r in ranks),
            "rss": [r["peak_rss_mb"] for r in ranks], "load": (load, os.getloadavg()[0]),
            "bytes": out.read_bytes()}


def main() -> None:
    if "--child" in sys.argv:
        at = sys.argv.index("--")
        p = argparse.ArgumentParser()
        p.add_argument("--child")
        child(p.parse_args(sys.argv[1:at]), sys.argv[at + 1:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=["tiny", "small"])
    p.add_argument("--rows", type=int, default=4800, help="rows of waimai_10k (train, then the others) to classify")
    p.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--chunk_rows", type=int, default=512)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--data_dir", default=str(SHARED))
    args = p.parse_args()

    from seqcls import tiny

    folder = Path(args.data_dir) / DATA["waimai"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; shared with other "
          f"jobs (load average {os.getloadavg()[0]:.1f} at the start); {args.threads} torch thread(s) per process; "
          f"{args.rows} waimai_10k rows, chunks of {args.chunk_rows}, batch {args.batch_size}, "
          f"max_length {args.max_length}\n")
    print("| model | processes | wall s | texts/s | texts/CPU-s | start-up CPU-s | texts/CPU-s after start-up | "
          "peak RSS per process (MB) | load (1 min) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "input.jsonl"
        with open(data, "w", encoding="utf-8") as f:
            n = 0
            for split in ("train", "validation", "test"):
                for line in open(folder / f"{split}.jsonl", encoding="utf-8"):
                    if n < args.rows:
                        f.write(json.dumps({"text": json.loads(line)["text"]}, ensure_ascii=False) + "\n")
                        n += 1
        one_row = tmp / "one_row.jsonl"  # the fixed cost of an arm: start, imports, model loading, one row
        one_row.write_text(data.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
        for size in args.sizes:
            base = tiny.build(tmp / f"qwen2-{size}", size=size, seed=0)
            model = build_classifier(base, tmp / f"qwen2-{size}-waimai", folder, args.max_length)
            results: dict[int, list[dict]] = {k: [] for k in args.processes}
            for round_ in range(args.rounds):
                order = args.processes[round_ % len(args.processes):] + args.processes[:round_ % len(args.processes)]
                for k in order:
                    results[k].append(run_arm(k, model, data, args, tmp))
            startup = {k: run_arm(k, model, one_row, args, tmp)["cpu_seconds"] for k in args.processes}
            outputs = {r["bytes"] for rs in results.values() for r in rs}
            for k, rs in results.items():
                wall = statistics.median(r["seconds"] for r in rs)
                cpu = statistics.median(r["cpu_seconds"] for r in rs)
                rss = [max(r["rss"][i] for r in rs) for i in range(k)]
                loads = [x for r in rs for x in r["load"]]
                print(f"| {size} | {k} | {wall:.1f} | {n / wall:.0f} | {n / cpu:.0f} | {startup[k]:.1f} | "
                      f"{n / max(cpu - startup[k], 1e-9):.0f} | {' / '.join(f'{x:.0f}' for x in rss)} | "
                      f"{min(loads):.1f}-{max(loads):.1f} |", flush=True)
            print(f"| {size} | outputs byte-identical across arms and rounds: {len(outputs) == 1} | | | | | | | |")


if __name__ == "__main__":
    main()
