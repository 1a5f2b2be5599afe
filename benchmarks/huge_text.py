"""One huge text: seconds and peak memory to tokenize it with truncation, with and without the raw-text cut.

    python benchmarks/huge_text.py --mb 50 --max_length 32
    python benchmarks/huge_text.py --mb 20 --max_length 32 --pair short   # the huge text with a short second text
    python benchmarks/huge_text.py --mb 0.2 --max_length 512 --pair long  # two long texts in one pair
    python benchmarks/huge_text.py --mb 20 --max_length 512 --pair long --whole rule  # too big for a whole pair
    python benchmarks/huge_text.py --mb 20 --max_length 32 --template "Review: {text}\nSentiment:"  # inside a prompt

Each arm runs `seqcls.data.encode_texts` (cut: what training and prediction run) or the tokenizer on the whole
text (whole: what they ran before; with --template, `seqcls.prompts.encode_with_template` without its cutter, which
measures and cuts the whole filled row), in its own subprocess so that its peak RSS is its own; both arms on the same
text (Chinese reviews from waimai_10k, or generated text when the data is absent), order rotated by round. The
kept ids of the two arms are compared. With `--whole rule` the whole arm tokenizes each text alone and keeps what
"longest_first" keeps of them (`seqcls.data.pair_keeps`, checked against the tokenizer in tests/test_data.py): the
reference ids where the tokenizer on a whole pair of long texts would need more memory than the machine has.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data/waimai_10k/train.jsonl")


def make_text(mb: float, start: int = 0) -> str:
    if DATA.exists():
        rows = [json.loads(line)["text"] for line in DATA.open(encoding="utf-8")][:2000]
    else:
        rows = ["好吃，还会再来。", "太难吃了，送餐也慢！", "The soup was cold and the rice was fine."]
    out, size, i = [], 0, start
    while size < mb * 1_000_000:
        out.append(rows[i % len(rows)])
        size += len(rows[i % len(rows)].encode("utf-8"))
        i += 1
    return "".join(out)


PAIR = "这家店的外卖怎么样？"  # --pair short: a question as the second text ("longest_first" truncation)


def child(arm: str, model: str, mb: float, max_length: int, side: str, pair: str, whole: str,
          template: str | None) -> None:
    from transformers import AutoTokenizer

    from seqcls.data import encode_texts
    from seqcls.prompts import Prompt, encode_with_template

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.truncation_side = side
    text = make_text(mb)
    pairs = {"none": None, "short": [PAIR], "long": [make_text(mb, start=1000)]}[pair]
    start, cpu = time.perf_counter(), time.process_time()
    if template is not None and arm == "cut":
        ids = encode_texts(tokenizer, [text], pairs, max_length, prompt=Prompt(template))["input_ids"][0]
    elif template is not None:
        ids = encode_with_template(tokenizer, template, [text], pairs, None, max_length)["input_ids"][0]
    elif arm == "cut":
        ids = encode_texts(tokenizer, [text], pairs, max_length)["input_ids"][0]
    elif whole == "rule":
        from seqcls.data import pair_keeps

        assert pairs is not None and tokenizer.num_special_tokens_to_add(pair=True) == 0, "--whole rule: Qwen2 pairs"
        own = [tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"] for t in (text, pairs[0])]
        keeps = pair_keeps(len(own[0]), len(own[1]), max_length)
        ids = [i for x, k in zip(own, keeps) for i in (x[len(x) - k:] if side == "left" else x[:k])]
    else:
        ids = tokenizer([text], pairs, truncation=True if pairs is None else "longest_first",
                        max_length=max_length)["input_ids"][0]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"arm": arm, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak, "ids": ids}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--max_length", type=int, default=32)
    parser.add_argument("--side", default="right", choices=["right", "left"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pair", default="none", choices=["none", "short", "long"],
                        help="short: a short second text; long: a second text as long as the first")
    parser.add_argument("--whole", default="tokenizer", choices=["tokenizer", "rule"],
                        help="the reference arm: the tokenizer on the whole texts, or each text alone + the rule")
    parser.add_argument("--template", default=None, help='a prompt_template, e.g. "Review: {text}\\nSentiment:"')
    parser.add_argument("--model", default=None, help="a model directory (default: the tiny Qwen2, real tokenizer)")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.template and ("{text_pair}" in args.template) != (args.pair == "short"):
        parser.error("--template places {text_pair} exactly when --pair short gives a second text")
    if args.model is None:
        from seqcls import tiny

        args.model = str(tiny.build(ROOT / "models" / "bench" / "qwen2-tiny", size="tiny", seed=0))
    if args.child:
        return child(args.child, args.model, args.mb, args.max_length, args.side, args.pair, args.whole,
                     args.template)
    results: dict[str, list] = {"cut": [], "whole": []}
    for r in range(args.rounds):
        for arm in (["cut", "whole"] if r % 2 == 0 else ["whole", "cut"]):
            proc = subprocess.run([sys.executable, __file__, "--child", arm, "--model", args.model,
                                   "--mb", str(args.mb), "--max_length", str(args.max_length), "--side", args.side,
                                   "--pair", args.pair, "--whole", args.whole]
                                  + (["--template", args.template] if args.template else []),
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            results[arm].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    same = results["cut"][0]["ids"] == results["whole"][0]["ids"]
    base = min(x["wall_s"] for x in results["whole"])
    second = {"none": "", "short": " with a short second text", "long": " with a second text as long"}[args.pair]
    if args.whole == "rule":
        second += " (whole: each text alone + the longest_first rule)"
    second += f" in the template {args.template!r}" if args.template else ""
    print(f"{args.mb} MB line{second}, max_length {args.max_length}, truncation {args.side}; kept ids identical: {same}; "
          f"load avg {os.getloadavg()[0]:.1f}")
    base_cpu = min(x["cpu_s"] for x in results["whole"])
    print("| arm | wall s | CPU s | peak RSS MB | vs whole (wall) | vs whole (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for arm, runs in results.items():
        wall, cpu = min(x["wall_s"] for x in runs), min(x["cpu_s"] for x in runs)
        print(f"| {arm} | {wall:.2f} | {cpu:.2f} | {max(x['peak_rss_mb'] for x in runs):.0f} | "
              f"{base / wall:.1f}x faster | {base_cpu / cpu:.1f}x less |")


if __name__ == "__main__":
    main()
