"""Batches of sentence pairs of long-ish texts: what `seqcls.data.encode_texts` costs against the tokenizer's own
"longest_first" truncation, by text length, language and max_length (where `cut_long_pairs` should take over).

    python benchmarks/pair_lengths.py                       # 100 pairs per cell, English (GoEmotions) and Chinese
    python benchmarks/pair_lengths.py --chars 600 3000 --max_lengths 128

Each cell tokenizes the same 100 pairs (the second text 90% as long as the first, texts run together from real
rows) both ways in one process, rotating which goes first, and reports CPU seconds (the machine is shared: wall
clock misleads) and whether the ids are identical. The tokenizer's own arm is skipped where it would run out of
memory (the pairing of overflowing windows grows with the product of the two lengths).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = {"en": Path("/work/shared/data/goemotions/train.jsonl"), "zh": Path("/work/shared/data/waimai_10k/train.jsonl")}
FALLBACK = {"en": ["The soup was cold and the rice was fine.", "Great service, will order again!"],
            "zh": ["好吃，还会再来。", "太难吃了，送餐也慢！"]}


def texts(lang: str, chars: int, n: int, rng: random.Random) -> list[str]:
    path = DATA[lang]
    rows = [json.loads(line)["text"] for line in path.open(encoding="utf-8")][:5000] if path.exists() else FALLBACK[lang]
    out = []
    for _ in range(n):
        text = ""
        while len(text) < chars:
            text += rng.choice(rows) + " "
        out.append(text[:chars])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chars", type=int, nargs="+", default=[600, 1500, 3000, 8000])
    parser.add_argument("--max_lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--skip_whole_over", type=int, default=40, help="skip the tokenizer's arm past chars/max_length")
    parser.add_argument("--model", default=None, help="a model directory (default: the tiny Qwen2, real tokenizer)")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from seqcls.data import encode_texts

    if args.model is None:
        from seqcls import tiny

        args.model = str(tiny.build(ROOT / "models" / "bench" / "qwen2-tiny", size="tiny", seed=0))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    encode_texts(tokenizer, ["warm up"], ["the vocabulary scan"], 8)
    print("| text | chars | max_length | tokenizer CPU s | seqcls CPU s | ratio | ids identical |")
    print("|---|---:|---:|---:|---:|---:|---|")
    cell = 0
    for lang in ("en", "zh"):
        for chars in args.chars:
            rng = random.Random(chars)
            firsts, seconds = texts(lang, chars, args.pairs, rng), texts(lang, chars * 9 // 10, args.pairs, rng)
            for max_length in args.max_lengths:
                arms = {"seqcls": lambda: encode_texts(tokenizer, firsts, seconds, max_length)["input_ids"]}
                if chars <= args.skip_whole_over * max_length:
                    arms["tokenizer"] = lambda: tokenizer(firsts, seconds, truncation="longest_first",
                                                          max_length=max_length)["input_ids"]
                order = list(arms) if cell % 2 == 0 else list(reversed(arms))
                cell += 1
                cpu, ids = {}, {}
                for arm in order:
                    start = time.process_time()
                    ids[arm] = arms[arm]()
                    cpu[arm] = time.process_time() - start
                ours, whole = cpu["seqcls"], cpu.get("tokenizer")
                cells = ["skipped", "", ""] if whole is None else [
                    f"{whole:.2f}", f"{whole / ours:.1f}x", str(ids["seqcls"] == ids["tokenizer"])]
                print(f"| {lang} | {chars} | {max_length} | {cells[0]} | {ours:.2f} | {cells[1]} | {cells[2]} |",
                      flush=True)


if __name__ == "__main__":
    main()
