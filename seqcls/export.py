"""Export a trained classifier to ONNX (optionally int8-quantized) for fast CPU serving with ONNX Runtime.

    seqcls-export runs/x runs/x-onnx --format onnx --quantize int8     (or: python -m seqcls.export ...)
    Classifier.from_pretrained("runs/x-onnx")                          # backend detected: ONNX Runtime
    seqcls-predict runs/x-onnx reviews.jsonl -o predictions.jsonl

OUT_DIR is itself a model directory: model.onnx (a graph with dynamic batch and sequence axes and one output,
`logits`), config.json, the tokenizer and seqcls.json (the training's settings, plus an `export` entry). The
model is loaded exactly as prediction loads it (`Classifier.from_pretrained`: a LoRA adapter directory is merged
into its base there), and its graph takes the inputs the torch forward takes: a causal decoder padded on the
right runs without an attention mask (pooling finds the last non-pad token from input_ids), an encoder keeps it.

Exporter: torch.onnx.export with the dynamo exporter (torch.export). optimum-onnx 0.1.0, the Hugging Face one,
requires transformers<4.58 and cannot run beside transformers 5.x; the legacy TorchScript exporter traces
transformers' Python branches on the example's shapes (it warns about `q_length == 1` in the attention
dispatch), the dynamo exporter keeps the axes symbolic. The graph is checked against the torch logits before it
is written. Quantization: onnxruntime.quantization.quantize_dynamic (int8 weights, activations quantized per
batch at run time) of the MatMul and Gemm nodes, where the FLOPs are, and of the embedding Gather.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
import numpy as np

from .cli import DEBUG_FLAG, DEBUG_HELP, log_progress, run_cli
from .errors import UsageError

logger = logging.getLogger("seqcls.export")

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
QUANTIZED_OPS = ["MatMul", "Gemm", "Gather"]  # the linear layers, and the embedding table (most of a small
# model with a large vocabulary: 39 MB -> 10 MB on the tiny Qwen2)
PARITY_TOLERANCE = 1e-3  # max |logit difference| of the fp32 graph on the probe batch; above it the export is wrong
PROBE_TEXTS = ["a short one", "a somewhat longer text, so that the batch is padded on the right", "x"]


def export(run_dir: str | Path, out_dir: str | Path, *, format: str = "onnx", quantize: str | None = None,
           opset: int | None = None) -> Path:
    """Write `run_dir` (a training run, a merged or LoRA adapter directory) as an ONNX model directory `out_dir`,
    atomically (a temporary directory renamed at the end)."""
    from .model_dir import read_settings, settings_from_config, write_settings
    from .outputs import atomic_dir
    from .predict import ONNX_MODEL, Classifier, quiet_transformers

    run, out = Path(run_dir), Path(out_dir)
    if format not in FORMATS:
        raise UsageError(f"--format {format!r} is not one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize {quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    if not run.is_dir():
        raise UsageError(f"run directory {run} does not exist; give the output_dir of a training run")
    if (run / ONNX_MODEL).is_file():
        raise UsageError(f"{run} is already an ONNX export; give the training run it came from")
    if out.exists():
        raise UsageError(f"{out} exists; choose another OUT_DIR or remove it")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UsageError("exporting to ONNX needs onnx and onnxruntime: pip install 'seqcls[onnx]'") from None

    quiet_transformers()
    clf = Classifier.from_pretrained(run, device="cpu", dtype="float32")
    names = input_names(clf)
    with atomic_dir(out) as tmp:
        fp32 = tmp / ("model_fp32.onnx" if quantize else ONNX_MODEL)
        export_graph(clf, names, fp32, opset)
        max_diff = check_parity(clf, fp32, names)
        if quantize:
            quantize_int8(fp32, tmp / ONNX_MODEL)
            fp32.unlink()
            for extra in tmp.glob("model_fp32.onnx*"):  # external weights of a graph over 2 GB
                extra.unlink()
        clf.backend.config.save_pretrained(str(tmp))
        clf.tokenizer.save_pretrained(str(tmp))
        settings = read_settings(run) or settings_from_config(clf.backend.config, str(run / "config.json"))
        write_settings(tmp, dataclasses.replace(settings, max_seq_length=clf.max_length, export={
            "format": format, "quantize": quantize, "inputs": names, "exported_from": str(run),
            "fp32_max_abs_logit_diff": max_diff, "quantized_ops": QUANTIZED_OPS if quantize else None}))
    logger.info("exported %s to %s (%s%s, inputs %s, fp32 max |diff| %.2g)", run, out, format,
                f", {quantize}" if quantize else "", ", ".join(names), max_diff)
    return out


def input_names(clf) -> list[str]:
    """The inputs the Classifier feeds this model, in a fixed order: what the tokenizer gives, less the attention
    mask for a causal decoder (mask-free, as the torch forward)."""
    from .data import encode_texts

    encoded = encode_texts(clf.tokenizer, PROBE_TEXTS[:1], None, clf.max_length)
    return [k for k in ("input_ids", "attention_mask", "token_type_ids")
            if k in encoded and k in clf.backend.input_names]


def export_graph(clf, names: list[str], file: Path, opset: int | None = None) -> None:
    """torch.onnx.export (dynamo) of the classifier's forward: int64 inputs (batch, seq), output logits."""
    import torch

    model = clf.model
    kwargs = clf.backend.forward_kwargs

    class Logits(torch.nn.Module):  # positional inputs in `names` order, one output
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs)), **kwargs).logits

    example = clf._pad(_encode(clf, PROBE_TEXTS), names, np.arange(len(PROBE_TEXTS)), _width(clf, PROBE_TEXTS))
    args = tuple(torch.from_numpy(example[n]) for n in names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    try:
        with torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(Logits().eval(), args, dynamo=True, input_names=names,
                                        output_names=["logits"], opset_version=opset,
                                        dynamic_shapes=(tuple({0: batch, 1: seq} for _ in names),), optimize=True,
                                        verbose=False)
    except Exception as e:  # torch.export / onnxscript raise many types for an operator or branch they cannot take
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        arch = ", ".join(getattr(model.config, "architectures", None) or [type(model).__name__])
        raise UsageError(f"the {arch} model could not be exported to ONNX ({first[:300]}); serve it with the torch "
                         "backend (seqcls-predict on the training run)") from None
    program.save(str(file))


def _encode(clf, texts: list[str]):
    from .data import encode_texts

    return encode_texts(clf.tokenizer, texts, None, clf.max_length)


def _width(clf, texts: list[str]) -> int:
    return max(len(ids) for ids in _encode(clf, texts)["input_ids"])


def check_parity(clf, file: Path, names: list[str]) -> float:
    """Max |logit difference| between the graph and the torch model on a padded probe batch; refuses a graph
    that does not compute the model."""
    import onnxruntime as ort
    import torch

    encoded = _encode(clf, PROBE_TEXTS)
    batch = clf._pad(encoded, names, np.arange(len(PROBE_TEXTS)), _width(clf, PROBE_TEXTS))
    with torch.inference_mode():
        expected = clf.backend.forward(batch)
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], batch)[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= PARITY_TOLERANCE:
        raise UsageError(f"the exported graph's logits differ from the model's by {diff:.3g} (more than "
                         f"{PARITY_TOLERANCE}); this architecture does not export faithfully: serve it with torch")
    return diff


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization of the weights of QUANTIZED_OPS (onnxruntime.quantization)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqcls-export",
        description="Export a trained classifier to ONNX (optionally int8) as a model directory that "
        "seqcls-predict and Classifier.from_pretrained serve with ONNX Runtime.",
        epilog="Example: seqcls-export runs/quickstart runs/quickstart-onnx --format onnx --quantize int8",
    )
    parser.add_argument("run_dir", help="output_dir of a training run (a LoRA adapter directory is merged first)")
    parser.add_argument("out_dir", help="where to write the ONNX model directory (must not exist)")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="export format (default onnx)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, help="int8: dynamic int8 quantization of the weights")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return parser


def main(argv: list[str]) -> int:
    args = make_parser().parse_args(argv)
    log_progress()
    for noisy in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    print(export(args.run_dir, args.out_dir, format=args.format, quantize=args.quantize, opset=args.opset))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """Console entry point `seqcls-export` (seqcls.cli: one line and exit 2 for a usage error)."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
