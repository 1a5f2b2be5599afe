"""Prediction: the `Classifier` (Python API) and the `seqcls-predict` command line.

    from seqcls import Classifier
    clf = Classifier.from_pretrained("runs/x")
    clf.predict(["送餐很快，味道不错", "太难吃了"])   # -> [{"label": ..., "score": ..., "probabilities": {...}}, ...]

    seqcls-predict runs/x reviews.jsonl -o predictions.jsonl

Why it is fast: texts are tokenized once per chunk, batched, by the fast tokenizer; batches are formed from
texts sorted by token length (so there is almost no padding) and the results are put back in input order; the
forward runs under `torch.inference_mode()` without a KV cache. For causal decoders (Qwen2, Llama, ...) padded
on the right, the attention mask is left out: a token only attends to the tokens before it, so pads after the
last real token cannot change it, and the model can use its fused causal attention path without building a
padded mask. Inputs are read and processed in chunks, so memory stays bounded on any input size.

Many processes (torchrun / accelerate launch / srun, one per device): `Workers` reads rank and world size from the
environment; process r classifies chunks r, r + W, r + 2W, ... (`seqcls.corpus`), and the main process assembles
the chunk files in order, so the output is the one a single process writes. One process is the same code, W = 1.

Label maps, text joining and tokenization are the training code's (`seqcls.labels`, `seqcls.data`);
logits become rows through `seqcls.outputs.decode`, as in training's `predict_results.jsonl`.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from .corpus import (INPUT_FORMATS, OUTPUT_FORMATS, BadRow, ChunkStore, Corpus, Row, count_rows, format_header,
                     format_rows, format_skipped, input_files, output_format)
from .cli import DEBUG_FLAG, DEBUG_HELP, Stopped, run_cli
from .data import Columns, encode_texts, join_texts
from .errors import UsageError
from .labels import LabelSpace
from .outputs import atomic_open, decode_logits

if TYPE_CHECKING:  # torch and transformers are imported when a model is loaded: `--help` and input errors are instant
    import torch

logger = logging.getLogger(__name__)

CHUNK_SIZE = 8192  # rows read, tokenized and sorted at a time: bounds memory on inputs of any size
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
ONNX_MODEL = "model.onnx"  # written by seqcls-export (seqcls.export)
BACKENDS = ("auto", "torch", "onnx")


# ----------------------------------------------------------------------------------------------------------
# The Python API


class Classifier:
    """A trained sequence classifier ready to predict: model, tokenizer, label space and the training's settings."""

    def __init__(self, model, tokenizer, label_space: LabelSpace, *, max_length: int,
                 thresholds: Sequence[float] | None = None, columns: Columns | None = None):
        """`model`: a torch sequence-classification model, or a backend (`TorchBackend`, `OnnxBackend`)."""
        self.backend = model if isinstance(model, (TorchBackend, OnnxBackend)) else TorchBackend(model)
        self.model = getattr(self.backend, "model", None)  # the torch model; None on ONNX Runtime
        self.tokenizer = tokenizer
        self.label_space = label_space
        self.max_length = max_length
        self.thresholds = list(thresholds) if thresholds is not None else None
        self.columns = columns or Columns(text=["text"])
        config = self.backend.config
        if config.num_labels != label_space.num_labels:
            raise UsageError(
                f"the model has {config.num_labels} outputs but its label space has {label_space.num_labels} "
                f"labels {list(label_space.names)}; the model directory is inconsistent"
            )
        # Padding with the id the head looks for: it pools the last token that is not `config.pad_token_id`.
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id
        self.pad_values = {"input_ids": config.pad_token_id,
                           "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}
        self.mask_free = self.backend.mask_free

    @property
    def device(self) -> "torch.device | str":
        return self.backend.device

    @property
    def dtype(self) -> "torch.dtype | str":
        return self.backend.dtype

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, *, device: str | None = None, dtype: str | None = None,
                        max_length: int | None = None, attn_implementation: str | None = "sdpa",
                        trust_remote_code: bool = False, backend: str | None = None,
                        num_threads: int | None = None, use_safetensors: bool = True) -> "Classifier":
        """Load a model directory written by training (or any Hugging Face classifier directory, or a LoRA
        adapter directory whose base model is reachable).

        device: "cuda", "cpu", "cuda:1", ...; default CUDA when available, else CPU.
        dtype: "auto" (default: bfloat16 on a CUDA GPU that supports it, else float32), "float32", "bfloat16",
        "float16". max_length: truncation in tokens; default the one used in training (seqcls.json).
        backend: "torch", or "onnx" (ONNX Runtime on CPU, a directory written by seqcls-export); default "onnx"
        when the directory holds model.onnx, else "torch". num_threads: ONNX Runtime's intra-op threads.
        use_safetensors: refuse pickle-only weights (they can run code when loaded), as training does.
        """
        from .model_dir import load, read_settings

        path = Path(model_dir)
        backend = backend or "auto"
        if backend not in BACKENDS:
            raise UsageError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        if backend == "auto":
            backend = "onnx" if (path / ONNX_MODEL).is_file() else "torch"
        if backend == "onnx":
            if not path.is_dir():
                raise UsageError(f"model directory {model_dir} does not exist; give the output_dir of seqcls-export")
            return cls._from_onnx(path, read_settings(path), device, dtype, max_length, num_threads,
                                  trust_remote_code)
        if (path / ONNX_MODEL).is_file() and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise UsageError(f"{path} holds an ONNX model; load it with backend='onnx' (--backend onnx)")

        torch_device, torch_dtype = resolve_device_dtype(device, dtype)
        trained = load(model_dir, device=torch_device, dtype=torch_dtype, attn_implementation=attn_implementation,
                       trust_remote_code=trust_remote_code, max_length=max_length, use_safetensors=use_safetensors)
        settings = trained.settings
        clf = cls(trained.model, trained.tokenizer, settings.label_space, max_length=trained.max_length,
                  thresholds=settings.thresholds, columns=settings.columns)
        logger.info("loaded %s: %s, %d label(s), max length %d, pooling token %r, %s on %s, mask-free %s", model_dir,
                    settings.label_space.problem_type, settings.label_space.num_labels, clf.max_length,
                    settings.pooling_token, torch_dtype, torch_device, clf.mask_free)
        return clf

    @classmethod
    def _from_onnx(cls, path: Path, settings, device: str | None, dtype: str | None,
                   max_length: int | None, num_threads: int | None, trust_remote_code: bool) -> "Classifier":
        """A directory written by seqcls-export: model.onnx, config.json, the tokenizer and seqcls.json."""
        from .model_dir import SETTINGS_FILE, load_tokenizer

        if not (path / ONNX_MODEL).is_file():
            raise UsageError(f"{path} holds no {ONNX_MODEL}; export it first: seqcls-export {path} OUT_DIR --format onnx")
        if settings is None or not (path / "config.json").is_file():
            missing = SETTINGS_FILE if settings is None else "config.json"
            raise UsageError(f"{path} holds {ONNX_MODEL} but not its settings ({missing}); export the training run "
                             "again with seqcls-export, which writes them beside the model")
        if device not in (None, "cpu"):
            raise UsageError(f"the ONNX backend runs on CPU; drop device {device!r} (or use the torch model)")
        if dtype not in (None, "auto", "float32"):
            raise UsageError(f"the ONNX model's precision is fixed at export; drop dtype {dtype!r} "
                             "(seqcls-export --quantize int8 makes an int8 model)")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UsageError(f"{path} is an ONNX model; its backend needs onnxruntime: pip install 'seqcls[onnx]'") from None
        from transformers import AutoConfig

        from .modeling import max_length_for

        try:
            config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        except Exception as e:  # OSError, ValueError: an unreadable config.json
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"config of {path} could not be loaded ({first}); export the training run again with "
                             "seqcls-export") from None
        tokenizer = load_tokenizer(path, settings, trust_remote_code=trust_remote_code)
        label_space = settings.label_space
        quantized = (settings.export or {}).get("quantize") is not None
        backend = OnnxBackend(path / ONNX_MODEL, config, num_threads, quantized=quantized)
        requested = max_length if max_length is not None else settings.max_seq_length
        clf = cls(backend, tokenizer, label_space,
                  max_length=max_length_for(tokenizer, SimpleNamespace(config=config), requested),
                  thresholds=settings.thresholds, columns=settings.columns)
        logger.info("loaded %s: %s, %d label(s), max length %d, ONNX Runtime %s, mask-free %s", path,
                    label_space.problem_type, label_space.num_labels, clf.max_length, backend.dtype, clf.mask_free)
        return clf

    def predict(self, texts: str | Iterable[str], text_pairs: str | Iterable[str] | None = None, *,
                batch_size: int = 64, top_k: int | None = None) -> list[dict[str, Any]] | dict[str, Any]:
        """Classify texts (and optional second texts); one result per input, in input order.

        Each result has `label` (the name; a list of names for multi-label, chosen with the model's thresholds;
        the value for regression), `score` (its probability; for multi-label the lowest chosen probability, or
        1 - the highest when none is chosen) and `probabilities` (every label, highest first; `top_k` keeps
        the first k). A single string gives a single result.
        """
        single = isinstance(texts, str)
        if single:
            texts = [texts]
            text_pairs = [text_pairs] if isinstance(text_pairs, str) else text_pairs
        logits = self.predict_logits(texts, text_pairs, batch_size=batch_size)
        rows = decode_logits(self.label_space, logits, self.thresholds, top_k)
        return rows[0] if single else rows

    def predict_logits(self, texts: Iterable[str], text_pairs: Iterable[str] | None = None, *,
                       batch_size: int = 64, on_batch: Callable[[int], None] | None = None,
                       columns: dict[str, Sequence[Any]] | None = None) -> np.ndarray:
        """Raw logits (n, num_labels) in input order; `on_batch(n_texts)` is called after every batch.

        `texts` may be any iterable of strings (a list, a pandas Series, a generator). The model's prompt template
        (seqcls.json) is applied to each text; `columns` gives the values of its other {column} placeholders."""
        texts, text_pairs = _check_texts(texts, text_pairs, batch_size)
        out = [np.zeros((0, self.label_space.num_labels), dtype=np.float32)]
        for start in range(0, len(texts), CHUNK_SIZE):
            chunk = texts[start:start + CHUNK_SIZE]
            pairs = text_pairs[start:start + CHUNK_SIZE] if text_pairs is not None else None
            extra = {c: list(v)[start:start + CHUNK_SIZE] for c, v in (columns or {}).items()}
            encoded = encode_texts(self.tokenizer, chunk, pairs, self.max_length, False, self.columns.prompt, extra)
            out.append(self._forward_sorted(encoded, batch_size, on_batch))
        return np.concatenate(out)

    def _forward_sorted(self, encoded, batch_size: int, on_batch: Callable[[int], None] | None) -> np.ndarray:
        """Forward batches of texts sorted by token length (longest first: an out-of-memory shows at once)."""
        keys = [k for k in encoded.keys() if k in self.backend.input_names]
        lengths = np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64,
                              count=len(encoded["input_ids"]))
        order = np.argsort(-lengths, kind="stable")
        logits = np.empty((len(lengths), self.label_space.num_labels), dtype=np.float32)
        with self.backend.session():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                logits[rows] = self.backend.forward(self._pad(encoded, keys, rows, int(lengths[rows[0]])))
                if on_batch is not None:
                    on_batch(len(rows))
        return logits

    def _pad(self, encoded, keys: list[str], rows: np.ndarray, width: int) -> dict[str, np.ndarray]:
        """Pad on the right to the longest row of the batch, into int64 arrays."""
        batch = {}
        for key in keys:
            values = encoded[key]
            array = np.full((len(rows), width), self.pad_values.get(key, 0), dtype=np.int64)
            for i, row in enumerate(rows):
                seq = values[row]
                array[i, :len(seq)] = seq
            batch[key] = array
        return batch


# ----------------------------------------------------------------------------------------------------------
# Backends: the forward of one padded batch (int64 arrays by input name) to float32 logits. Tokenization,
# length sorting, padding and decoding are the Classifier's, the same for every backend.


class TorchBackend:
    """A torch model under `inference_mode`, without a KV cache; causal decoders run without the attention mask."""

    def __init__(self, model):
        self.model = model.eval()
        self.config = model.config
        self.mask_free = is_causal(model)
        self.forward_kwargs = {"use_cache": False} if self.mask_free else {}
        self.input_names = {"input_ids", "token_type_ids"} | (set() if self.mask_free else {"attention_mask"})

    @property
    def device(self) -> "torch.device":
        return self.model.device

    @property
    def dtype(self) -> "torch.dtype":
        return self.model.dtype

    def session(self):
        import torch

        return torch.inference_mode()

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        device = self.device
        tensors = {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.items()}
        return self.model(**tensors, **self.forward_kwargs).logits.float().cpu().numpy()


class OnnxBackend:
    """An ONNX Runtime session on CPU (a directory written by seqcls-export); its graph declares its inputs:
    no attention_mask for a causal decoder, exported mask-free as the torch forward runs."""

    device = "cpu"

    def __init__(self, model_file: Path, config, num_threads: int | None = None, quantized: bool = False):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        # Idle worker threads would otherwise spin between batches, burning CPU that other processes need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.ort_session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... for an unreadable graph
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"ONNX model {model_file} could not be loaded ({first}); export it again with "
                             "seqcls-export") from None
        self.config = config
        self.input_names = {i.name for i in self.ort_session.get_inputs()}
        self.mask_free = "attention_mask" not in self.input_names
        self.dtype = "int8" if quantized else "float32"

    def session(self):
        return contextlib.nullcontext()

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.ort_session.run(["logits"], batch)[0].astype(np.float32, copy=False)


def _check_texts(texts, text_pairs, batch_size: int) -> tuple[list[str], list[str] | None]:
    """The inputs as lists, checked: strings, one pair per text, no empty text."""
    if isinstance(texts, str):
        raise UsageError("texts must be a list of strings, not one string")
    texts = texts if isinstance(texts, list) else list(texts)
    if text_pairs is not None:
        text_pairs = text_pairs if isinstance(text_pairs, list) else list(text_pairs)
        if len(text_pairs) != len(texts):
            raise UsageError(f"text_pairs has {len(text_pairs)} items for {len(texts)} texts; give one per text")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
    for name, values in (("texts", texts), ("text_pairs", text_pairs or ())):
        for i, text in enumerate(values):
            if not isinstance(text, str):
                raise UsageError(f"{name}[{i}] is {type(text).__name__}, not a string")
            if name == "texts" and not text.strip():
                raise UsageError(f"texts[{i}] is empty; give every input some text")
    return texts, text_pairs


def is_causal(model) -> bool:
    """True when every attention layer declares itself causal (decoders: Qwen2, Llama, ...): then, padded on the
    right, a real token never sees a pad and the attention mask can be left out. Encoders (BERT) keep the mask."""
    flags = [m.is_causal for m in model.modules() if isinstance(getattr(m, "is_causal", None), bool)]
    return bool(flags) and all(flags)


# ----------------------------------------------------------------------------------------------------------
# Loading


def resolve_device_dtype(device: str | None, dtype: str | None) -> tuple["torch.device", "torch.dtype"]:
    """CUDA with bfloat16 where supported, else float32 on CPU; either can be given."""
    import torch

    try:
        torch_device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    except (RuntimeError, TypeError):
        raise UsageError(f"device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r}: CUDA is not available here; use --device cpu")
    if dtype in (None, "auto"):
        bf16 = torch_device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch_device, torch.bfloat16 if bf16 else torch.float32
    if isinstance(dtype, torch.dtype):
        return torch_device, dtype
    if dtype not in DTYPE_NAMES:
        raise UsageError(f"dtype {dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
    return torch_device, getattr(torch, dtype)


# ----------------------------------------------------------------------------------------------------------
# The processes of a job: one per device, started by torchrun, accelerate launch or srun


class Workers:
    """Rank and world size from the environment the launchers set (RANK, WORLD_SIZE, LOCAL_RANK); with several,
    a gloo process group for the job's few small messages (which chunks are done, the first bad row), which works
    the same on CPU and GPU nodes (NCCL would need CUDA tensors for them). One process: the same code, no group."""

    def __init__(self) -> None:
        self.size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.started = False
        if self.size > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                # a rank waits at most for another rank's chunk; the timeout only ends a job whose peer is gone
                dist.init_process_group("gloo", timeout=timedelta(minutes=60))
                self.started = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def agree(self, error: str | None) -> None:
        """Raise the first rank's error on every rank (the main process prints it: one line, exit 2 on all)."""
        errors = [e for e in self.gather(error) if e]
        if errors:
            raise AgreedError(errors[0])

    def close(self) -> None:
        if self.started:
            import torch.distributed as dist

            dist.destroy_process_group()


class AgreedError(UsageError):
    """A usage error every rank raises together; only the main process prints it."""


# ----------------------------------------------------------------------------------------------------------
# The command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seqcls-predict",
        description="Classify every row of a file with a trained model; one output row per input row, in order. "
                    "Under torchrun / accelerate launch / srun: one process per device, each classifying its "
                    "share of the chunks; the output is the same as one process writes.",
        epilog="Example: seqcls-predict runs/quickstart data/example_test.jsonl -o predictions.jsonl\n"
               "         torchrun --nproc_per_node 8 -m seqcls.predict runs/x corpus/ -o pred.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_dir", help="A model directory from training (or any Hugging Face classifier, or a LoRA "
                                     "adapter directory).")
    p.add_argument("input", help="JSONL, CSV/TSV, plain text (one text per line) or Parquet; a directory or glob of "
                                 "such files (read in sorted order, as one input); - reads stdin (one process).")
    p.add_argument("-o", "--output", help="Output file (.jsonl, .csv or .parquet); written whole or not at all, "
                                          "resumable (finished chunks wait in OUTPUT.parts/). Default: JSONL on "
                                          "stdout (one process).")
    p.add_argument("--output_format", choices=OUTPUT_FORMATS, help="Default: from the output's suffix, else jsonl.")
    p.add_argument("--output_shards", action="store_true",
                   help="Write OUTPUT as a directory of ordered shards (one per chunk) with manifest.json instead of "
                        "one file: for outputs too large to assemble in one place.")
    p.add_argument("--input_format", choices=INPUT_FORMATS, default="auto",
                   help="Default: from the suffix; stdin or another suffix: JSONL if the first line is a JSON "
                        "object, else plain text.")
    p.add_argument("--text_column_names", help="Text column(s), comma-separated. Default: the training's, or text.")
    p.add_argument("--text_column_delimiter", help="Joins several text columns. Default: the training's.")
    p.add_argument("--text_pair_column_name", help="Second-text column for pair models. Default: the training's.")
    p.add_argument("--id_column", help="Column copied to the output as id. Default: the row's index (from 0).")
    p.add_argument("--batch_size", type=int, default=64, help="Texts per forward pass (default 64).")
    p.add_argument("--chunk_rows", type=int,
                   help=f"Rows per chunk: the unit that is read, tokenized, length-sorted, written and resumed, and "
                        f"shared out between processes (default {CHUNK_SIZE}, or ${CHUNK_ROWS_ENV}).")
    p.add_argument("--max_seq_length", type=int, help="Truncation in tokens. Default: the training's.")
    p.add_argument("--top_k", type=int, help="Keep the k most probable labels in probabilities. Default: all.")
    p.add_argument("--device", help="cpu, cuda, cuda:N. Default: CUDA when available (cuda:LOCAL_RANK under a "
                                    "launcher), else CPU.")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="auto",
                   help="Default auto: bfloat16 on a GPU that supports it, else float32.")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="torch, or onnx (ONNX Runtime on CPU: a directory from seqcls-export). Default: onnx when "
                        "the directory holds model.onnx, else torch.")
    p.add_argument("--num_threads", type=int,
                   help="CPU threads for torch (and ONNX Runtime). Default: torch's (one per core); on a busy shared machine fewer "
                        "threads can be much faster.")
    p.add_argument("--on_error", choices=("stop", "skip"), default="stop",
                   help="A bad row (empty text, missing column, bad JSON or UTF-8): stop with its file and line "
                        "(default), or skip it, listing it in --skipped_file.")
    p.add_argument("--skipped_file", help="With --on_error skip: JSONL of skipped rows (line, index, reason). "
                                          "Default: OUTPUT.skipped.jsonl, or skipped.jsonl without -o.")
    p.add_argument("--max_skipped_share", type=float, default=MAX_SKIPPED_SHARE,
                   help="With --on_error skip: exit with status 1 when more than this share of the rows was skipped "
                        f"(default {MAX_SKIPPED_SHARE}), and always when every row was; the output is still written.")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="Progress line (texts/s, ETA) on the main process: auto shows it on a terminal; on also "
                        "into a log file (a SLURM job's), every 30 s.")
    p.add_argument("--trust_remote_code", action="store_true", help="Run modelling code shipped with the model.")
    p.add_argument("--use_safetensors", type=lambda v: v.lower() not in ("false", "0", "no"), default=True,
                   help="Default true: weights only from safetensors, as training loads them; false also loads "
                        "pickle weights (pytorch_model.bin), which can run code: only for files you trust.")
    p.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return p


MAX_SKIPPED_SHARE = 0.1
TOO_MANY_SKIPPED = 1  # exit status: the run finished, but its output lacks too many rows to be used as is
CHUNK_ROWS_ENV = "SEQCLS_PREDICT_CHUNK_ROWS"


def _check_options(args: argparse.Namespace) -> None:
    for name, least in (("batch_size", 1), ("top_k", 1), ("num_threads", 1), ("max_seq_length", 1),
                        ("chunk_rows", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            raise UsageError(f"--{name} must be at least {least}, got {value}")
    if args.input != "-":
        input_files(args.input)  # a missing input is an error before a model is loaded
    if args.output:
        out = Path(args.output)
        if args.input != "-" and Path(args.input).exists() and out.resolve() == Path(args.input).resolve():
            raise UsageError(f"output {args.output} is the input file; write the predictions to another file")
        if out.is_dir() and not args.output_shards:
            raise UsageError(f"output {args.output} is a directory; give a file name, e.g. "
                             f"{args.output}/predictions.jsonl (or --output_shards for a directory of shards)")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"output {args.output}: its directory {out.parent} cannot be created ({e.strerror}); "
                             "give -o a writable place") from None
        if not os.access(out.parent, os.W_OK):
            raise UsageError(f"output {args.output}: its directory {out.parent} is not writable; give -o a "
                             "writable place")
    elif args.output_shards:
        raise UsageError("--output_shards needs -o OUTPUT_DIR")


def _chunk_rows(args: argparse.Namespace) -> int:
    if args.chunk_rows is not None:
        return args.chunk_rows
    value = os.environ.get(CHUNK_ROWS_ENV)
    if value is None:
        return CHUNK_SIZE
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"${CHUNK_ROWS_ENV}={value!r}: give a positive number of rows")
    return int(value)


def _load(args: argparse.Namespace, workers: Workers) -> tuple[Classifier, Corpus]:
    """The model and the input's first file (its format and header checked), as the options say."""
    device = args.device
    if device is None and workers.size > 1:
        import torch

        device = f"cuda:{workers.local_rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    quiet_transformers()
    clf = Classifier.from_pretrained(args.model_dir, device=device, dtype=args.dtype,
                                     max_length=args.max_seq_length, trust_remote_code=args.trust_remote_code,
                                     backend=args.backend, num_threads=args.num_threads,
                                     use_safetensors=args.use_safetensors)
    saved = clf.columns
    cols = Columns.from_args(SimpleNamespace(
        text_column_names=args.text_column_names or saved.text,
        text_column_delimiter=args.text_column_delimiter if args.text_column_delimiter is not None else saved.delimiter,
        text_pair_column_name=args.text_pair_column_name or saved.pair,
        label_column_name="label", id_column=args.id_column,
    ))
    cols.prompt = saved.prompt  # the trained prompt template (its {column}s are read from the input)
    return clf, Corpus(args.input, args.input_format, cols, args.id_column)


def _identity(args: argparse.Namespace, corpus: Corpus, fmt: str, chunk_rows: int) -> dict[str, Any]:
    """What a finished chunk depends on: a rerun keeps the chunks only when all of it is the same. The number of
    processes is not in it: a job may resume on another count."""
    model = Path(args.model_dir)
    model_files = sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in model.glob("*") if p.is_file()) \
        if model.is_dir() else str(model)
    options = {k: getattr(args, k) for k in ("input_format", "text_column_names", "text_column_delimiter",
                                             "text_pair_column_name", "id_column", "batch_size", "max_seq_length",
                                             "top_k", "device", "dtype", "backend", "on_error", "trust_remote_code")}
    return {"input": corpus.fingerprint(), "model": [str(model.resolve()), model_files], "format": fmt,
            "chunk_rows": chunk_rows, "options": options}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Predict every row of args.input (this process's share of the chunks); returns counts and timing."""
    _check_options(args)
    fmt = output_format(args.output, args.output_format)
    chunk_rows = _chunk_rows(args)
    workers = Workers()
    try:
        return _run(args, workers, fmt, chunk_rows)
    finally:
        workers.close()


def _run(args: argparse.Namespace, workers: Workers, fmt: str, chunk_rows: int) -> dict[str, Any]:
    if workers.size > 1 and (args.input == "-" or not args.output):
        what = "stdin" if args.input == "-" else "stdout"
        raise UsageError(f"{workers.size} processes cannot share {what}; give the input as a file and -o OUTPUT, "
                         "or run one process")
    if fmt == "parquet" and not args.output:
        raise UsageError("Parquet output needs -o OUTPUT.parquet")
    if fmt == "csv" and args.output_shards:
        raise UsageError("--output_shards writes JSONL or Parquet shards; drop it for one CSV file, or name the "
                         "output .jsonl / .parquet")
    if args.num_threads is not None:
        import torch

        torch.set_num_threads(args.num_threads)
    skipped_file = None
    if args.on_error == "skip":
        skipped_file = args.skipped_file or (f"{args.output.rstrip('/')}.skipped.jsonl" if args.output
                                             else "skipped.jsonl")

    # Set up on every rank; the first rank's error (a bad model, a missing column) is everyone's.
    clf = corpus = store = None
    error = None
    try:
        clf, corpus = _load(args, workers)
        if args.output:
            store = ChunkStore(args.output, fmt, _identity(args, corpus, fmt, chunk_rows))
            if workers.main:
                store.prepare()
    except UsageError as e:
        if workers.size == 1:
            raise
        error = str(e)
    workers.agree(error)

    show = workers.main and (args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty()))
    from tqdm import tqdm

    progress = tqdm(total=count_rows(args.input) if show else None, unit=" texts", file=sys.stderr,
                    dynamic_ncols=True, smoothing=0.05, disable=not show,
                    mininterval=0.1 if sys.stderr.isatty() else 30, ascii=not sys.stderr.isatty())
    counts = {"predicted": 0, "skipped": 0}
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            stdout_skipped = None
            if store is None:  # one process writing to stdout: rows go out as they are predicted
                if skipped_file:
                    stdout_skipped = stack.enter_context(atomic_open(skipped_file, "wb"))
                if fmt == "csv":
                    sys.stdout.write(format_header(clf.label_space).decode("utf-8"))
            mine = lambda k: k % workers.size == workers.rank and (store is None or store.done(k) is None)  # noqa: E731
            chunks = corpus.chunks(chunk_rows, mine)
            while True:
                try:
                    item, error = next((c for c in chunks if c[0] % workers.size == workers.rank), None), None
                except UsageError as e:  # an unreadable stretch of the input (CSV quoting): every rank stops
                    item, error = None, str(e)
                status: dict[str, Any] = {"more": item is not None, "error": error, "rows": 0}
                if item is not None:
                    k, n, rows = item
                    status.update(rows=n, resumed=store is not None and store.done(k) is not None)
                    if status["resumed"]:
                        status.update(store.done(k))
                    else:
                        try:  # any usage error in a chunk (a bad row, an id Parquet cannot store) stops every rank
                            status.update(_predict_chunk(clf, corpus, args, k, rows, store, stdout_skipped,
                                                         progress, fmt))
                        except UsageError as e:
                            status["error"] = str(e)
                statuses = workers.gather(status)
                first_error = next((s["error"] for s in statuses if s["error"]), None)
                if first_error:  # ranks of one round hold consecutive chunks: the lowest rank's is the first
                    if workers.size == 1:
                        raise UsageError(first_error)
                    raise AgreedError(first_error)
                for i, s in enumerate(statuses):
                    counts["predicted"] += s.get("predicted", 0)
                    counts["skipped"] += s.get("skipped", 0)
                    if i != workers.rank or s.get("resumed"):
                        progress.update(s["rows"])
                if not any(s["more"] for s in statuses):
                    break
            if store is not None and workers.main:
                store.assemble(clf.label_space, skipped_file, args.output_shards)
    except UsageError:
        if store is not None and workers.main:
            store.discard()  # a bad row or option: nothing half-written, no chunk kept (the rerun needs a fix)
        raise
    finally:
        if corpus is not None:
            corpus.close()
        _finish(progress)
    counts["seconds"] = time.perf_counter() - started
    counts["skipped_file"] = skipped_file
    counts["main"] = workers.main
    return counts


def _predict_chunk(clf: Classifier, corpus: Corpus, args, k: int, rows: list, store: ChunkStore | None,
                   stdout_skipped, progress, fmt: str) -> dict[str, Any]:
    """Predict one chunk and write it (a chunk file, or stdout); a bad row with --on_error stop is the error."""
    good = [r for r in rows if isinstance(r, Row)]
    bad = [r for r in rows if isinstance(r, BadRow)]
    if bad and args.on_error == "stop":
        return {"error": f"{bad[0].where}: {bad[0].reason} (or --on_error skip)"}
    skipped = [{**({"file": r.file} if corpus.many else {}), "line": r.line, "index": r.index, "reason": r.reason}
               for r in bad]
    progress.update(len(bad))
    results: list[dict[str, Any]] = []
    if good:
        cols = corpus.cols
        batch = {c: [r.values[c] for r in good] for c in cols.inputs}
        texts = join_texts(batch, cols.text, cols.delimiter)
        pairs = batch.get(cols.pair) if cols.pair else None
        extra = {c: batch[c] for c in cols.prompt.extra_columns()}
        logits = clf.predict_logits(texts, pairs, batch_size=args.batch_size, on_batch=progress.update,
                                    columns=extra)
        for row, result in zip(good, decode_logits(clf.label_space, logits, clf.thresholds, args.top_k)):
            results.append({"id": row.values[args.id_column] if args.id_column else row.index, **result})
    if store is not None:
        return store.write(k, results, skipped if args.on_error == "skip" else None, clf.label_space)
    sys.stdout.write(format_rows(results, fmt, clf.label_space).decode("utf-8"))
    sys.stdout.flush()
    if stdout_skipped is not None:
        stdout_skipped.write(format_skipped(skipped))
    return {"predicted": len(results), "skipped": len(skipped)}


def _finish(progress) -> None:
    if getattr(progress, "total", None) is not None:
        progress.total = progress.n  # the total counted lines: a header or blank lines are not rows
    progress.close()


def quiet_transformers() -> None:
    """The CLI's stderr is for our progress and errors, not transformers' loading bars and notices."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, `kill`), raised like Ctrl-C so that every temporary file is removed."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str]) -> int:
    """seqcls-predict: predict, then the exit status (TOO_MANY_SKIPPED when too many rows were skipped)."""
    args = build_parser().parse_args(argv)
    is_main = os.environ.get("RANK", "0") == "0"
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        counts = run(args)
    except AgreedError as e:  # every rank raised it together: the main process says it
        if is_main:
            raise
        raise Stopped("", e.exit_code) from None
    except KeyboardInterrupt as e:
        parts = Path(f"{args.output.rstrip('/')}.parts") if args.output else None
        kept = parts is not None and any(parts.glob("*.done.json"))
        if parts is not None and not kept and is_main:
            shutil.rmtree(parts, ignore_errors=True)
        message = "interrupted: " + (f"finished chunks kept in {parts}; rerun the same command to resume" if kept
                                     else "no output written")
        raise Stopped(message if is_main else "", 143 if isinstance(e, Terminated) else 130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if counts["skipped"] or (counts["predicted"] == 0 and args.on_error == "skip"):
        total = counts["skipped"] + counts["predicted"]
        if counts["main"]:
            print(f"skipped {counts['skipped']} row(s): see {counts['skipped_file']}", file=sys.stderr)
        if total and (counts["predicted"] == 0 or counts["skipped"] > args.max_skipped_share * total):
            if counts["main"]:
                print(f"error: {counts['skipped']} of {total} row(s) skipped ({counts['skipped'] / total:.0%}), "
                      f"more than --max_skipped_share {args.max_skipped_share:g}: fix the rows in "
                      f"{counts['skipped_file']}, or raise --max_skipped_share", file=sys.stderr)
            return TOO_MANY_SKIPPED
    if sys.stderr.isatty() and counts["main"]:
        rate = counts["predicted"] / counts["seconds"] if counts["seconds"] else 0.0
        where = args.output or "stdout"
        print(f"{counts['predicted']} prediction(s) to {where} in {counts['seconds']:.1f} s ({rate:.0f} texts/s)",
              file=sys.stderr)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """Console entry point `seqcls-predict` (seqcls.cli.run_cli: one-line usage errors, exit 2, --debug)."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
