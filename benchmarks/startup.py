"""Start-up time: `run_classification.py --help`, the same help built from seqcls.arguments alone (the floor without
the training stack: TrainingArguments pulls in torch and, through transformers.trainer_utils, peft), `import
seqcls.train`, and `import torch, transformers, datasets` as the reference; then the floor's parts
(`from transformers import TrainingArguments`, `import torch`, `import peft`), the other commands' --help, and
the interpreter alone.

    python benchmarks/startup.py --repeats 3

Arms run in rotated order in one process; wall clock and CPU seconds (user+sys of the child) per run, median.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "run_classification.py --help (baseline)": [str(ROOT / "run_classification.py"), "--help"],
    "help from seqcls.arguments only": ["-c", "from seqcls.arguments import make_parser; make_parser().format_help()"],
    "import seqcls.train": ["-c", "import seqcls.train"],
    "import torch, transformers, datasets": ["-c", "import torch, transformers, datasets"],
    "from transformers import TrainingArguments": ["-c", "from transformers import TrainingArguments"],
    "import torch": ["-c", "import torch"],
    "import peft": ["-c", "import peft"],
    "seqcls-predict --help": ["-m", "seqcls.predict", "--help"],
    "seqcls-export --help": ["-m", "seqcls.export", "--help"],
    "seqcls-merge --help": ["-m", "seqcls.merge", "--help"],
    "python -c pass": ["-c", "pass"],
}


def timed(args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   stdout=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    names = list(ARMS)
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotated order
            results[name].append(timed(ARMS[name]))
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, {args.repeats} runs each, median")
    base = statistics.median(w for w, _ in results[names[0]])
    for name in names:
        wall = statistics.median(w for w, _ in results[name])
        cpu = statistics.median(c for _, c in results[name])
        print(f"{name:45s} wall {wall:5.2f} s  cpu {cpu:5.2f} s  ({wall / base:.2f}x the baseline help)")


if __name__ == "__main__":
    main()
