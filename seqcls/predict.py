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

Label maps, text joining and tokenization are the training code's (`seqcls.labels`, `seqcls.data`);
logits become rows through `seqcls.outputs.decode`, as in training's `predict_results.jsonl`.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .data import Columns, encode_texts, join_texts
from .errors import UsageError
from .labels import LabelSpace
from .outputs import atomic_open, decode

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
        rows = decode(self.label_space, logits, self.thresholds, top_k)
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
# Reading inputs: JSONL, CSV/TSV or plain text, streamed; a bad row is a BadRow naming its line


@dataclass
class Row:
    index: int  # position among the input's rows (skipped rows count), the default output id
    line: int  # the line where the row starts
    values: dict[str, Any]


@dataclass
class BadRow:
    index: int
    line: int
    reason: str


INPUT_FORMATS = ("auto", "jsonl", "csv", "tsv", "text")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
                  ".txt": "text"}


def input_format(name: str, fmt: str, first_line: bytes) -> str:
    """The format asked for, else by suffix, else JSONL when the first line is a JSON object, else plain text."""
    if fmt != "auto":
        return fmt
    suffix = Path(name).suffix.lower() if name != "-" else ""
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    return "jsonl" if first_line.lstrip(b"\xef\xbb\xbf \t").startswith(b"{") else "text"


def _not_utf8(raw: bytes, e: UnicodeDecodeError) -> str:
    return f"byte {raw[e.start]:#04x} at column {e.start + 1} is not UTF-8; save the file as UTF-8"


def _record(values: dict, index: int, line: int, cols: Columns, id_column: str | None) -> Row | BadRow:
    """Check one record's columns: present, text, not all empty."""
    for name in cols.inputs + ([id_column] if id_column else []):
        if name not in values:
            what = "id column" if name == id_column else "column"
            return BadRow(index, line, f"no {what} {name!r}; columns there: {', '.join(map(str, values))}. "
                                       "Set --text_column_names / --text_pair_column_name / --id_column")
    for name in cols.inputs:
        if not isinstance(values[name], str):
            return BadRow(index, line, f"column {name!r} holds {json.dumps(values[name], ensure_ascii=False)[:60]}, "
                                       "not text; quote it as a string")
    if all(not values[name].strip() for name in cols.text):
        return BadRow(index, line, "the text is empty; give every row some text or remove the row")
    return Row(index, line, values)


def read_jsonl(lines: Iterable[bytes], cols: Columns, id_column: str | None) -> Iterator[Row | BadRow]:
    index = 0
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        if not raw.strip():
            continue  # a blank line is not a row (as in training's files)
        row_index, index = index, index + 1
        try:
            values = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            yield BadRow(row_index, number, _not_utf8(raw, e))
            continue
        except json.JSONDecodeError as e:
            yield BadRow(row_index, number, f"invalid JSON ({e.msg} at column {e.colno}); one JSON object per line")
            continue
        if not isinstance(values, dict):
            yield BadRow(row_index, number, f"expected a JSON object {{...}}, got {type(values).__name__}")
            continue
        yield _record(values, row_index, number, cols, id_column)


def read_text(lines: Iterable[bytes], cols: Columns) -> Iterator[Row | BadRow]:
    """One text per line; every line is a row, so an empty line is an error (it would shift every id after it)."""
    column = cols.text[0]
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        raw = raw.rstrip(b"\r\n")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield BadRow(number - 1, number, _not_utf8(raw, e))
            continue
        if not text.strip():
            yield BadRow(number - 1, number, "empty line; give one text per line or remove the line")
            continue
        yield Row(number - 1, number, {column: text})


def read_csv(stream, name: str, cols: Columns, id_column: str | None, delimiter: str) -> Iterator[Row | BadRow]:
    # surrogateescape keeps a non-UTF-8 byte as a marker in its field, so the row can be reported (or skipped)
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(f"{name}: the file is empty; it needs a header line and rows") from None
    except csv.Error as e:
        raise UsageError(f"{name}:1: {e}") from None
    for column in cols.inputs + ([id_column] if id_column else []):
        if column not in header:
            raise UsageError(f"{name}:1: no column {column!r}; columns there: {', '.join(header)}. "
                             "Set --text_column_names / --text_pair_column_name / --id_column")
    index, end = 0, reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise UsageError(f"{name}:{end + 1}: {e}; check the quoting") from None
        start, end = end + 1, reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        row_index, index = index, index + 1
        bad = next((f for f in fields if any("\udc80" <= c <= "\udcff" for c in f)), None)
        if bad is not None:
            byte = next(ord(c) - 0xDC00 for c in bad if "\udc80" <= c <= "\udcff")
            yield BadRow(row_index, start, f"byte {byte:#04x} is not UTF-8; save the file as UTF-8")
        elif len(fields) != len(header):
            yield BadRow(row_index, start, f"{len(fields)} fields where the header has {len(header)}; "
                                           "quote fields that contain the delimiter")
        else:
            yield _record(dict(zip(header, fields)), row_index, start, cols, id_column)


def read_rows(stream, name: str, fmt: str, cols: Columns,
              id_column: str | None) -> tuple[Columns, Iterator[Row | BadRow]]:
    """The columns to read and the rows of a binary input stream, in order. Plain text has one column, `text`."""
    first = stream.readline()
    fmt = input_format(name, fmt, first)
    if fmt == "jsonl" and first.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        raise UsageError(f"{name}:1: a JSON array; give JSON lines (one object per line), e.g. jq -c '.[]'")
    if fmt in ("csv", "tsv"):
        stream = io.BufferedReader(_Prepend(first, stream))
        return cols, read_csv(stream, name, cols, id_column, "\t" if fmt == "tsv" else ",")
    lines = itertools.chain([first] if first else [], stream)
    if fmt == "text":
        if cols.pair:
            raise UsageError(f"{name}: plain text has one text per line, but the model reads pairs "
                             f"({cols.pair!r}); give JSONL or CSV with the columns")
        if id_column:
            raise UsageError(f"{name}: plain text has no columns, so no id column {id_column!r}; give JSONL or CSV")
        if cols.prompt.extra_columns():
            raise UsageError(f"{name}: plain text has no columns, but the model's prompt_template reads "
                             f"{cols.prompt.extra_columns()}; give JSONL or CSV with those columns")
        text_only = Columns(text=["text"], prompt=cols.prompt)
        return text_only, read_text(lines, text_only)
    return cols, read_jsonl(lines, cols, id_column)


class _Prepend(io.RawIOBase):
    """A raw stream that gives back an already-read first line, then the rest."""

    def __init__(self, head: bytes, rest):
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


# ----------------------------------------------------------------------------------------------------------
# Writing: JSONL (as training's predict_results.jsonl) or CSV


class JsonlWriter:
    def __init__(self, f, label_space: LabelSpace):
        self.f = f

    def write(self, row: dict[str, Any]) -> None:
        self.f.write(json.dumps(row, ensure_ascii=False) + "\n")


class CsvWriter:
    """Columns id, label, score and one probability column per label (in label order); multi-label names are
    joined with ';'."""

    def __init__(self, f, label_space: LabelSpace):
        self.names = list(label_space.names)
        self.writer = csv.writer(f, lineterminator="\n")
        self.writer.writerow(["id", "label", "score"] + [f"p_{n}" for n in self.names])

    def write(self, row: dict[str, Any]) -> None:
        label = ";".join(map(str, row["label"])) if isinstance(row["label"], list) else row["label"]
        probs = row.get("probabilities", {})
        self.writer.writerow([row["id"], label, row["score"]] + [probs.get(n, "") for n in self.names])


WRITERS = {"jsonl": JsonlWriter, "csv": CsvWriter}


# ----------------------------------------------------------------------------------------------------------
# The command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seqcls-predict",
        description="Classify every row of a file with a trained model; one output row per input row, in order.",
        epilog="Example: seqcls-predict runs/quickstart data/example_test.jsonl -o predictions.jsonl",
    )
    p.add_argument("model_dir", help="A model directory from training (or any Hugging Face classifier, or a LoRA "
                                     "adapter directory).")
    p.add_argument("input", help="JSONL, CSV/TSV or plain text (one text per line); - reads stdin.")
    p.add_argument("-o", "--output", help="Output file (.jsonl or .csv); written whole or not at all. "
                                          "Default: JSONL on stdout.")
    p.add_argument("--output_format", choices=sorted(WRITERS), help="Default: from the output's suffix, else jsonl.")
    p.add_argument("--input_format", choices=INPUT_FORMATS, default="auto",
                   help="Default: from the suffix; stdin or another suffix: JSONL if the first line is a JSON "
                        "object, else plain text.")
    p.add_argument("--text_column_names", help="Text column(s), comma-separated. Default: the training's, or text.")
    p.add_argument("--text_column_delimiter", help="Joins several text columns. Default: the training's.")
    p.add_argument("--text_pair_column_name", help="Second-text column for pair models. Default: the training's.")
    p.add_argument("--id_column", help="Column copied to the output as id. Default: the row's index (from 0).")
    p.add_argument("--batch_size", type=int, default=64, help="Texts per forward pass (default 64).")
    p.add_argument("--max_seq_length", type=int, help="Truncation in tokens. Default: the training's.")
    p.add_argument("--top_k", type=int, help="Keep the k most probable labels in probabilities. Default: all.")
    p.add_argument("--device", help="cpu, cuda, cuda:N. Default: CUDA when available, else CPU.")
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
    p.add_argument("--trust_remote_code", action="store_true", help="Run modelling code shipped with the model.")
    p.add_argument("--use_safetensors", type=lambda v: v.lower() not in ("false", "0", "no"), default=True,
                   help="Default true: weights only from safetensors, as training loads them; false also loads "
                        "pickle weights (pytorch_model.bin), which can run code: only for files you trust.")
    return p


MAX_SKIPPED_SHARE = 0.1
TOO_MANY_SKIPPED = 1  # exit status: the run finished, but its output lacks too many rows to be used as is


def _stream_input(name: str):
    if name == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"input {name} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        return open(path, "rb")
    except OSError as e:
        raise UsageError(f"input {name} cannot be read ({e.strerror})") from None


def _count_rows(name: str) -> int | None:
    """Lines in a regular file, for the progress bar's total (one fast pass over the bytes)."""
    if name == "-":
        return None
    n, last = 0, b"\n"
    with open(name, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Predict every row of args.input; returns counts and timing."""
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top_k must be at least 1, got {args.top_k}")
    if args.num_threads is not None:
        if args.num_threads < 1:
            raise UsageError(f"--num_threads must be at least 1, got {args.num_threads}")
        import torch

        torch.set_num_threads(args.num_threads)
    output_format = args.output_format or ("csv" if args.output and args.output.lower().endswith(".csv") else "jsonl")
    skipped_file = args.skipped_file or (f"{args.output}.skipped.jsonl" if args.output else "skipped.jsonl")
    if args.output and args.input != "-" and Path(args.output).resolve() == Path(args.input).resolve():
        raise UsageError(f"output {args.output} is the input file; write the predictions to another file")
    if args.output and Path(args.output).is_dir():
        raise UsageError(f"output {args.output} is a directory; give a file name, e.g. {args.output}/predictions.jsonl")

    with _stream_input(args.input) as stream:
        quiet_transformers()
        clf = Classifier.from_pretrained(args.model_dir, device=args.device, dtype=args.dtype,
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
        name = "<stdin>" if args.input == "-" else args.input
        cols, rows = read_rows(stream, name, args.input_format, cols, args.id_column)
        show = sys.stderr.isatty()
        progress = _progress_bar(_count_rows(args.input) if show else None, show)
        counts = {"predicted": 0, "skipped": 0}
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(atomic_open(args.output)) if args.output else sys.stdout
            skipped = stack.enter_context(atomic_open(skipped_file)) if args.on_error == "skip" else None
            writer = WRITERS[output_format](out, clf.label_space)
            stack.callback(_finish, progress)
            for chunk in _chunks(rows, CHUNK_SIZE):
                good = []
                for row in chunk:
                    if isinstance(row, Row):
                        good.append(row)
                    elif skipped is None:
                        raise UsageError(f"{name}:{row.line}: {row.reason} (or --on_error skip)")
                    else:
                        skipped.write(json.dumps({"line": row.line, "index": row.index, "reason": row.reason},
                                                 ensure_ascii=False) + "\n")
                        counts["skipped"] += 1
                        progress.update(1)
                if not good:
                    continue
                batch = {c: [r.values[c] for r in good] for c in cols.inputs}
                texts = join_texts(batch, cols.text, cols.delimiter)
                pairs = batch.get(cols.pair) if cols.pair else None
                extra = {c: batch[c] for c in cols.prompt.extra_columns()}
                logits = clf.predict_logits(texts, pairs, batch_size=args.batch_size, on_batch=progress.update,
                                            columns=extra)
                for row, result in zip(good, decode(clf.label_space, logits, clf.thresholds, args.top_k)):
                    writer.write({"id": row.values[args.id_column] if args.id_column else row.index, **result})
                counts["predicted"] += len(good)
    counts["seconds"] = time.perf_counter() - started
    counts["skipped_file"] = skipped_file if args.on_error == "skip" else None
    return counts


def _chunks(rows: Iterable, size: int) -> Iterator[list]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _finish(progress) -> None:
    if getattr(progress, "total", None) is not None:
        progress.total = progress.n  # the total counted lines: a header or blank lines are not rows
    progress.close()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int | None, show: bool):
    """tqdm with texts/s on a terminal; nothing when stderr is piped or redirected."""
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=" texts", file=sys.stderr, dynamic_ncols=True, smoothing=0.05)


def quiet_transformers() -> None:
    """The CLI's stderr is for our progress and errors, not transformers' loading bars and notices."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cli(argv: list[str] | None = None) -> int:
    """Console entry point `seqcls-predict`: usage errors are one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        counts = run(args)
    except UsageError as e:
        if os.environ.get("SEQCLS_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: no output written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `seqcls-predict ... | head`: the reader left; that is not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if counts["skipped"]:
        print(f"skipped {counts['skipped']} row(s): see {counts['skipped_file']}", file=sys.stderr)
        total = counts["skipped"] + counts["predicted"]
        if counts["predicted"] == 0 or counts["skipped"] > args.max_skipped_share * total:
            print(f"error: {counts['skipped']} of {total} row(s) skipped ({counts['skipped'] / total:.0%}), more "
                  f"than --max_skipped_share {args.max_skipped_share:g}: fix the rows in {counts['skipped_file']}, "
                  "or raise --max_skipped_share", file=sys.stderr)
            return TOO_MANY_SKIPPED
    if sys.stderr.isatty():
        rate = counts["predicted"] / counts["seconds"] if counts["seconds"] else 0.0
        where = args.output or "stdout"
        print(f"{counts['predicted']} prediction(s) to {where} in {counts['seconds']:.1f} s ({rate:.0f} texts/s)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
