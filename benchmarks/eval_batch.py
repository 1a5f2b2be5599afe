"""Evaluation batch size: Trainer.predict over length-sorted validation rows (as the recipe evaluates) with
per_device_eval_batch_size 8 (transformers' default) against larger batches, in one process, rotated order.

    python benchmarks/eval_batch.py --model models/tiny-qwen2-small --rows 512 --repeats 2

Prints wall clock and process CPU seconds per arm (median) and the ratio to batch 8.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, \
    TrainingArguments

from seqcls.batching import sorted_by_length


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="/work/shared/data/waimai_10k/validation.jsonl")
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 64])
    a = p.parse_args()
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=2)
    model.config.pad_token_id = tok.pad_token_id
    texts = [json.loads(line)["text"] for line in open(a.data, encoding="utf-8")][: a.rows]
    ds = Dataset.from_dict({"text": texts}).map(lambda b: tok(b["text"], truncation=True, max_length=256), batched=True,
                                                remove_columns=["text"])
    ds = sorted_by_length(ds)[0]
    times: dict[int, list[tuple[float, float]]] = {s: [] for s in a.sizes}
    for r in range(a.repeats):
        order = a.sizes[r % len(a.sizes):] + a.sizes[: r % len(a.sizes)]
        for size in order:
            args = TrainingArguments("/tmp/eval_batch_bench", per_device_eval_batch_size=size, use_cpu=True,
                                     report_to="none")
            trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tok))
            wall, cpu = time.perf_counter(), time.process_time()
            trainer.predict(ds)
            times[size].append((time.perf_counter() - wall, time.process_time() - cpu))
    import os

    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}, {a.rows} rows, "
          f"{a.repeats} runs each, median")
    base = statistics.median(w for w, _ in times[a.sizes[0]])
    for size in a.sizes:
        wall = statistics.median(w for w, _ in times[size])
        cpu = statistics.median(c for _, c in times[size])
        print(f"eval batch {size:3d}: wall {wall:6.2f} s  cpu {cpu:6.2f} s  rows/s {a.rows / wall:6.1f}  "
              f"({base / wall:.2f}x batch {a.sizes[0]})")


if __name__ == "__main__":
    main()
