"""Cost and effect of a prompt template: the same training budget with and without "评论：{text}\\n情感：".

Runs seqcls.train.main in-process on the small random Qwen2 (`python -m seqcls.tiny models/small-qwen2 --size
small`) with packing on, arms in rotated order (ABBA), and prints per arm: mean tokens per training row, training
wall seconds, process CPU seconds, eval macro-F1. The model is RANDOM: a template cannot help it (it has no notion
of what 情感 means); the quality column only shows the template does not break training. MiniLM has no LM head.

    python benchmarks/prompts.py [--steps 25] [--train 800] [--eval 400]
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

DATA = Path("/work/shared/data/waimai_10k")
TEMPLATE = "评论：{text}\n情感："


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(arm: str, model: str, out: Path, a) -> dict:
    from seqcls.train import main

    extra = ["--prompt_template", TEMPLATE] if arm == "template" else []
    wall, cpu = time.perf_counter(), cpu_seconds()
    res = main(["--model_name_or_path", model, "--train_file", str(DATA / "train.jsonl"), "--validation_file",
                str(DATA / "validation.jsonl"), "--output_dir", str(out), "--do_train", "--do_eval",
                "--max_train_samples", str(a.train), "--max_eval_samples", str(a.eval), "--max_seq_length", "128",
                "--max_steps", str(a.steps), "--per_device_train_batch_size", "16", "--learning_rate", "5e-4",
                "--packing", "true", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no",
                "--eval_strategy", "no", "--seed", "0", *extra])
    return {"arm": arm, "train_s": res["train_runtime"], "wall_s": time.perf_counter() - wall,
            "cpu_s": cpu_seconds() - cpu, "macro_f1": res.get("eval_macro_f1", res.get("eval_f1"))}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="models/small-qwen2")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--train", type=int, default=800)
    p.add_argument("--eval", type=int, default=400)
    a = p.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.model)
    texts = [json.loads(line)["text"] for line in (DATA / "train.jsonl").open(encoding="utf-8")][:a.train]
    plain = sum(min(len(ids), 128) for ids in tok(texts)["input_ids"]) / len(texts)
    templ = sum(min(len(ids), 128) for ids in tok([TEMPLATE.format(text=t) for t in texts])["input_ids"]) / len(texts)
    print(f"mean tokens per row (cut at 128): none {plain:.1f}, template {templ:.1f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, arm in enumerate(["none", "template", "template", "none"]):
            rows.append(run(arm, a.model, Path(tmp) / f"{i}-{arm}", a))
            print(json.dumps(rows[-1]), flush=True)
    for arm in ("none", "template"):
        mine = [r for r in rows if r["arm"] == arm]
        print(arm, {k: round(sum(r[k] for r in mine) / len(mine), 4) for k in ("train_s", "cpu_s", "macro_f1")})


if __name__ == "__main__":
    main()
