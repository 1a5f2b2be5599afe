"""What limits ONNX Runtime int8 serving: graph and quantization variants of one model, in one process, one thread.

    python benchmarks/onnx_profile.py --model runs/i18/minilm-goemotions --data ../shared/data/goemotions/test.jsonl

Builds (once, beside MODEL as MODEL-profile/) the fp32 graph seqcls-export writes and variants of it: ONNX
Runtime's offline transformer fusions (onnxruntime.transformers.optimizer, model type from the config), and
dynamic int8 quantizations of both (per-tensor / per-channel weights, reduce_range, with or without the embedding
Gather). Then, on the same length-sorted, padded batches (pre-tokenized: tokenization is timed on its own), it
times the torch forward and every session (arms in rotated order over the rounds, CPU seconds via
time.process_time and wall), and prints per arm: texts per CPU-second, the ratio to torch, the largest
probability difference and label agreement with torch, the size on disk and the op types that dominate the graph.
Session options are tried on the best int8 graph: graph optimization level, and the memory arena.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_texts(path: Path, n: int) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows[:n]]


def op_summary(file: Path, top: int = 6) -> str:
    import onnx

    graph = onnx.load(str(file), load_external_data=False).graph
    counts = collections.Counter(n.op_type for n in graph.node)
    return ", ".join(f"{op} {c}" for op, c in counts.most_common(top))


def build_variants(model: Path, work: Path, fusion: str | None) -> dict[str, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from seqcls.export import QUANTIZED_OPS, export

    fp32_dir = work / "fp32"
    if not fp32_dir.exists():
        export(model, fp32_dir)
    files = {"onnx fp32 (as exported)": fp32_dir / "model.onnx"}
    if fusion:
        from onnxruntime.transformers.optimizer import optimize_model

        fused = work / "fused.onnx"
        if not fused.exists():
            optimize_model(str(files["onnx fp32 (as exported)"]), model_type=fusion, opt_level=0).save_model_to_file(
                str(fused))
        files["onnx fp32 fused"] = fused
    quantizations = {
        "int8 (seqcls default)": dict(op_types_to_quantize=QUANTIZED_OPS),
        "int8 per-channel": dict(op_types_to_quantize=QUANTIZED_OPS, per_channel=True),
        "int8 reduce_range": dict(op_types_to_quantize=QUANTIZED_OPS, reduce_range=True),
        "int8 MatMul only": dict(op_types_to_quantize=["MatMul", "Gemm"]),
        "int8 every op type": dict(),  # quantize_dynamic's default: also Attention, EmbedLayerNormalization
    }
    plan = [("onnx fp32 (as exported)", q) for q in quantizations if q != "int8 every op type"]
    if fusion:  # the fused graph's QKV projections sit inside Attention nodes: quantized only when it is listed
        plan += [("onnx fp32 fused", "int8 (seqcls default)"), ("onnx fp32 fused", "int8 every op type")]
    for src_name, q_name in plan:
        name = f"{q_name}{' of fused' if 'fused' in src_name else ''}"
        dst = work / (name.replace(" ", "_").replace("(", "").replace(")", "") + ".onnx")
        if not dst.exists():
            quantize_dynamic(str(files[src_name]), str(dst), weight_type=QuantType.QInt8, **quantizations[q_name])
        files[name] = dst
    return files


def session(file: Path, threads: int, level: str = "ORT_ENABLE_ALL", arena: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.enable_cpu_mem_arena = arena
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    import torch

    from seqcls import Classifier
    from seqcls.data import encode_texts
    from seqcls.predict import quiet_transformers

    torch.set_num_threads(args.threads)
    quiet_transformers()
    model = Path(args.model)
    clf = Classifier.from_pretrained(model, device="cpu", dtype="float32")
    fusion = {"bert": "bert", "qwen2": None}.get(clf.backend.config.model_type)
    work = model.with_name(model.name + "-profile")
    work.mkdir(exist_ok=True)
    files = build_variants(model, work, fusion)

    texts = read_texts(Path(args.data), args.rows)
    cpu, wall = time.process_time(), time.perf_counter()
    encoded = encode_texts(clf.tokenizer, texts, None, clf.max_length)
    tokenize = (time.process_time() - cpu, time.perf_counter() - wall)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in clf.backend.input_names
             and n in encoded]
    lengths = np.array([len(x) for x in encoded["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    batches = [(order[s:s + args.batch_size], clf._pad(encoded, names, order[s:s + args.batch_size],
                                                       int(lengths[order[s]])))
               for s in range(0, len(order), args.batch_size)]

    def run_torch(batches=batches):
        out = np.empty((len(texts), clf.label_space.num_labels), np.float32)
        with torch.inference_mode():
            for rows, batch in batches:
                out[rows] = clf.backend.forward(batch)
        return out

    def run_ort(sess, batches=batches):
        feed = [i.name for i in sess.get_inputs()]
        out = np.empty((len(texts), clf.label_space.num_labels), np.float32)
        for rows, batch in batches:
            out[rows] = sess.run(["logits"], {k: batch[k] for k in feed})[0]
        return out

    arms = {"torch fp32 Classifier backend": run_torch}
    for name, file in files.items():
        sess = session(file, args.threads)
        arms[name] = lambda b=batches, s=sess: run_ort(s, b)
    best = files.get("int8 (seqcls default) of fused", files["int8 (seqcls default)"])
    for label, kw in (("  session: ORT_ENABLE_BASIC", dict(level="ORT_ENABLE_BASIC")),
                      ("  session: ORT_ENABLE_EXTENDED", dict(level="ORT_ENABLE_EXTENDED")),
                      ("  session: no memory arena", dict(arena=False))):
        sess = session(best, args.threads, **kw)
        arms[label] = lambda b=batches, s=sess: run_ort(s, b)

    for fn in arms.values():  # warm-up: the first (longest) batch
        fn(batches[:1])
    outputs, times = {}, {n: [] for n in arms}
    names_ = list(arms)
    for r in range(args.rounds):
        for name in names_[r % len(names_):] + names_[:r % len(names_)]:
            cpu, wall = time.process_time(), time.perf_counter()
            outputs[name] = arms[name]()
            times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    problem = clf.label_space.problem_type
    to_prob = (lambda z: 1 / (1 + np.exp(-z))) if problem == "multi_label_classification" else \
        (lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    ref = to_prob(outputs[names_[0]])
    base = statistics.median(len(texts) / c for c, _ in times[names_[0]])
    import os

    print(f"{model.name}: {len(texts)} rows of {args.data}, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.rounds} rounds (median), load average {os.getloadavg()[0]:.1f}; tokenizing them: "
          f"{tokenize[0]:.3f} CPU-s ({len(texts) / tokenize[0]:.0f} texts/CPU-s)")
    print("| arm | texts/CPU-s | x torch | texts/s wall | max |prob diff| | agree | size MB | ops |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names_:
        c = statistics.median(len(texts) / c for c, _ in times[name])
        w = statistics.median(len(texts) / w for _, w in times[name])
        prob = to_prob(outputs[name])
        if problem == "multi_label_classification":
            agree = float(((prob >= 0.5) == (ref >= 0.5)).all(1).mean())
        else:
            agree = float((prob.argmax(1) == ref.argmax(1)).mean())
        file = files.get(name.strip())
        size = (file.stat().st_size / 1e6) if file else float("nan")
        ops = op_summary(file) if file else ""
        print(f"| {name} | {c:.0f} | {c / base:.2f} | {w:.0f} | {np.abs(prob - ref).max():.2g} | {agree:.4f} | "
              f"{size:.1f} | {ops} |")


if __name__ == "__main__":
    main()
