"""int8 quality on real data: the torch Classifier vs an ONNX export of it, on the first N rows of a labelled file.

    python benchmarks/export_quality.py runs/x runs/x-onnx-int8 ../shared/data/goemotions/test.jsonl --rows 2000

Prints label agreement (exact label sets for multi-label), the largest probability difference, and per model the
data's metric (benchmarks/export.py's `quality`: accuracy and macro-F1, or micro- and macro-F1 of label sets with
the model's saved thresholds).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from export import agreement, quality  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("torch_dir")
    p.add_argument("onnx_dir")
    p.add_argument("data")
    p.add_argument("--rows", type=int, default=2000)
    args = p.parse_args()
    from seqcls import Classifier

    rows = [json.loads(line) for line in open(args.data, encoding="utf-8") if line.strip()][:args.rows]
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    out = {}
    for name, model_dir in (("torch fp32", args.torch_dir), ("onnx", args.onnx_dir)):
        clf = Classifier.from_pretrained(model_dir, device="cpu")
        out[name] = clf.predict(texts, batch_size=64)
    names = list(clf.label_space.names)
    probs = {k: np.array([[r["probabilities"][n] for n in names] for r in v]) for k, v in out.items()}
    labels = {k: [r["label"] for r in v] for k, v in out.items()}
    print(f"{args.data}: {len(texts)} rows; agreement {agreement(labels['onnx'], labels['torch fp32']):.4f}; "
          f"max |prob diff| {np.abs(probs['onnx'] - probs['torch fp32']).max():.3g}")
    for k in out:
        print(f"  {k}: {quality(labels[k], gold, names)}")


if __name__ == "__main__":
    main()
