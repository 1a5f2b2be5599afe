"""Data: load local files or a Hub dataset, check them, carve a validation split, cut, and tokenize.

Local files are read by `datasets.load_dataset` (so the tokenized result is cached on disk and reused),
after a quick line-by-line scan of JSONL/CSV files that turns the usual mistakes (a malformed line, a
missing column, a null label, mixed label types) into one-line errors naming the file and line.
"""
from __future__ import annotations

import codecs
import csv
import json
import logging
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import prompts
from .errors import UsageError
from .labels import MULTI, REGRESSION, SINGLE, LabelSpace, _kind
from .prompts import Prompt, encode_with_template

logger = logging.getLogger(__name__)

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
SPLITS = ("train", "validation", "test")


@dataclass
class Columns:
    """Which columns hold the text(s), the optional second text, the label and an id."""

    text: list[str]
    delimiter: str = " "
    pair: str | None = None
    label: str = "label"
    id: str | None = None
    prompt: Prompt = field(default_factory=Prompt)  # prompt / chat template around the text (seqcls.prompts)

    @classmethod
    def from_args(cls, data_args) -> "Columns":
        names = data_args.text_column_names
        text = [c.strip() for c in (names if isinstance(names, list) else str(names).split(",")) if c.strip()]
        if not text:
            raise UsageError("text_column_names is empty; name the column(s) holding the text")
        prompt = Prompt(getattr(data_args, "prompt_template", None),
                        bool(getattr(data_args, "use_chat_template", False)), getattr(data_args, "system_prompt", None))
        prompt.check(data_args.text_pair_column_name)
        return cls(
            text=text,
            delimiter=data_args.text_column_delimiter,
            pair=data_args.text_pair_column_name,
            label=data_args.label_column_name,
            id=data_args.id_column,
            prompt=prompt,
        )

    @property
    def inputs(self) -> list[str]:
        """Every column the model reads: the text(s), the pair text, the prompt template's other columns."""
        own = self.text + ([self.pair] if self.pair else [])
        return own + [c for c in self.prompt.extra_columns() if c not in own]


@dataclass
class Source:
    """Where a split's rows came from, to name the file and line in error messages."""

    name: str
    lines: list[int] | None = None  # line number of each row, when known
    row_offset: list[int] = field(default_factory=list)  # row -> original row, after a carve or cut

    def where(self, row: int) -> str:
        original = self.row_offset[row] if self.row_offset else row
        if self.lines is not None and original < len(self.lines):
            return f"{self.name}:{self.lines[original]}"
        return f"{self.name} row {original + 1}"


# ----------------------------------------------------------------------------------------------------------
# Scanning files


# The rules for one input row, shared by training (`scan_*`, `check_columns`) and prediction
# (`seqcls.corpus`): each returns the problem in words (no location) or None; the caller adds the file and line,
# and raises it (training; prediction with --on_error stop) or records it (prediction with --on_error skip).


def not_utf8(raw: bytes, e: UnicodeDecodeError) -> str:
    return f"byte {raw[e.start]:#04x} at column {e.start + 1} is not UTF-8; save the file as UTF-8"


def parse_json_row(text: str) -> tuple[dict | None, str | None]:
    """One JSON-lines row: (the object, None), or (None, what is wrong with the line)."""
    try:
        row = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at column {e.colno}); one JSON object per line"
    except _DuplicateKey as e:
        return None, f"key {e.args[0]!r} appears twice in one object (datasets would refuse the file); keep one of them"
    if not isinstance(row, dict):
        return None, f"expected a JSON object {{...}}, got {_kind(row)}"
    if _SURROGATE_ESCAPE.search(text):
        problem = lone_surrogate_problem(row)
        if problem:
            return None, problem
    return row, None


def column_problem(row: dict, cols: Columns, need_label: bool = False, available: Iterable[str] | None = None,
                   id_column: str | None = None) -> str | None:
    """Every column the model reads is there and holds text; the label (and id) column is there when needed."""
    available = list(row) if available is None else list(available)
    for name in cols.inputs:
        if name not in row:
            return (f"no column {name!r}; columns there: {', '.join(map(str, available))}. "
                    "Set text_column_names / text_pair_column_name")
        value = row[name]
        if not isinstance(value, str):
            return f"column {name!r} holds {_short(value)} ({_kind(value)}), not text; quote it as a string"
    if need_label and cols.label not in row:
        return f"no label column {cols.label!r}; columns there: {', '.join(map(str, available))}. Set label_column_name"
    if id_column and id_column not in row:
        return f"no id column {id_column!r}; columns there: {', '.join(map(str, available))}. Set --id_column"
    return None


def text_problem(row: dict, cols: Columns) -> str | None:
    """A row needs some text: an empty one gives the model no token to read the label from."""
    if not any(isinstance(row.get(c), str) and row[c].strip() for c in cols.text):
        return f"the text ({', '.join(repr(c) for c in cols.text)}) is empty; fill it in or remove the row"
    return None


def ragged_problem(fields: int, header: int) -> str | None:
    if fields != header:
        return f"{fields} fields where the header has {header}; quote fields that contain the delimiter"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _open_text(path: Path):
    """Yield (line_number, line) of a UTF-8 file; a byte-order mark is accepted and a bad byte is an error."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UsageError(f"{path}:{number}: {not_utf8(raw, e)}") from None


def _check_row(row: dict, cols: Columns, where: str, need_label: bool, available: Iterable[str]) -> None:
    if problem := column_problem(row, cols, need_label, available):
        raise UsageError(f"{where}: {problem}")


def _check_text(row: dict, cols: Columns, where: str) -> None:
    if problem := text_problem(row, cols):
        raise UsageError(f"{where}: {problem}")


def scan_jsonl(path: Path, cols: Columns, need_label: bool) -> list[int]:
    """Check a JSON-lines file row by row; return the line number of each row (blank lines are skipped)."""
    lines: list[int] = []
    first_kind: dict[str, tuple[int, Any]] = {}  # label kind -> (line, value) of its first row
    counts: dict[str, int] = {}
    bom = _has_bom(path)
    crlf = False
    for number, text in _open_text(path):
        crlf = crlf or text.endswith("\r\n")
        if not text.strip():
            continue
        where = f"{path}:{number}"
        row, problem = parse_json_row(text)
        if problem:
            raise UsageError(f"{where}: {problem}")
        _check_row(row, cols, where, need_label, list(row))
        _check_text(row, cols, where)
        if cols.label in row:
            kind = _label_kind(row[cols.label], where)
            first_kind.setdefault(kind, (number, row[cols.label]))
            counts[kind] = counts.get(kind, 0) + 1
        lines.append(number)
    _check_kinds(first_kind, counts, path)
    if not lines:
        raise UsageError(f"{path}: the file has no rows; give it at least one JSON object per line")
    _log_fixups(path, bom, crlf)
    return lines


class _DuplicateKey(Exception):
    pass


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json's object_pairs_hook: Python keeps the last of two equal keys, pyarrow (datasets) refuses the file with
    no line number; refuse it here with one."""
    row = dict(pairs)
    if len(row) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return row


# \\ud800-\\udfff: half of a UTF-16 surrogate pair; json.loads joins a full pair into one character and keeps a
# lone half as a str that is not valid Unicode (pyarrow refuses the file; a tokenizer cannot encode it)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def lone_surrogate_problem(value: Any, key: str | None = None) -> str | None:
    """What is wrong with a value that holds half of a UTF-16 surrogate pair, or None."""
    if isinstance(value, dict):
        return next(filter(None, (lone_surrogate_problem(v, k if key is None else key) for k, v in value.items())),
                    None)
    if isinstance(value, list):
        return next(filter(None, (lone_surrogate_problem(v, key) for v in value)), None)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            half = f"\\u{ord(value[e.start]):04x}"
            return (f"column {key!r} holds the escape {half}, half of a UTF-16 surrogate pair without its other "
                    "half, which is not text; write the character itself or its full pair of escapes")
    return None


def _has_bom(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(3) == codecs.BOM_UTF8


def _log_fixups(path: Path, bom: bool, crlf: bool) -> None:
    if bom or crlf:
        what = " and ".join(x for x, on in (("a UTF-8 byte-order mark", bom), ("CRLF line ends", crlf)) if on)
        logger.info("%s: %s, accepted (read as plain UTF-8 with LF line ends)", path, what)


def _label_kind(value: Any, where: str) -> str:
    kind = _kind(value)
    if kind == "null":
        raise UsageError(f"{where}: the label is null; give every row a label or remove the row")
    if kind == "float" and not math.isfinite(value):
        raise UsageError(f"{where}: label {value} is not a finite number; fix or remove the row")
    if kind == "str" and not value.strip():
        raise UsageError(f"{where}: the label is empty ({value!r}); give every row a label or remove the row")
    if kind == "list":
        for item in value:
            if _kind(item) not in ("str", "int", "bool"):
                raise UsageError(f"{where}: label {value!r} holds {item!r} ({_kind(item)}); a multi-label row is a "
                                 'flat list of label names, e.g. ["sports", "politics"]')
            if isinstance(item, str) and not item.strip():
                raise UsageError(f"{where}: label {value!r} holds an empty name; remove it from the list")
    return "number" if kind in ("int", "float") else kind


def _check_kinds(first_kind: dict[str, tuple[int, Any]], counts: dict[str, int], path: Path) -> None:
    """One label type per file; the error points at the first row of the rarer type (the likely mistake)."""
    if len(first_kind) > 1:
        usual = max(counts, key=lambda k: (counts[k], -first_kind[k][0]))
        odd = min((k for k in first_kind if k != usual), key=lambda k: first_kind[k][0])
        line, value = first_kind[odd]
        raise UsageError(
            f"{path}:{line}: label {value!r} is a {odd}, but {counts[usual]} row(s) (first on line "
            f"{first_kind[usual][0]}) have a {usual} label; use one type per file: strings or integers for "
            "single-label, lists of names for multi-label, numbers for regression"
        )


def scan_csv(path: Path, cols: Columns, need_label: bool) -> list[int]:
    """Check a CSV/TSV file row by row (header, ragged rows, missing columns); return each row's line number."""
    delimiter = "\t" if path.suffix == ".tsv" else ","
    lines: list[int] = []
    crlf = False

    def decoded():
        nonlocal crlf
        for _, text in _open_text(path):
            crlf = crlf or text.endswith("\r\n")
            yield text

    reader = csv.reader(decoded(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(f"{path}: the file is empty; it needs a header line and rows") from None
    row_stub = {name: "" for name in header}
    _check_row(row_stub, cols, f"{path}:1", need_label, header)
    for row in reader:
        number = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if problem := ragged_problem(len(row), len(header)):
            raise UsageError(f"{path}:{number}: {problem}")
        record = dict(zip(header, row))
        _check_text(record, cols, f"{path}:{number}")
        if need_label and not record.get(cols.label, "").strip():
            raise UsageError(f"{path}:{number}: the label is empty; give every row a label or remove the row")
        lines.append(number)
    if not lines:
        raise UsageError(f"{path}: the file has a header but no rows")
    _log_fixups(path, _has_bom(path), crlf)
    return lines


def scan_file(path: str, cols: Columns, need_label: bool) -> Source:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"data file {path} does not exist" + (" (it is a directory)" if p.is_dir() else ""))
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(FORMATS)}")
    if p.stat().st_size == 0:
        raise UsageError(f"{path}: the file is empty")
    if suffix in (".jsonl", ".json"):
        head = p.open("rb").read(64).lstrip(codecs.BOM_UTF8).lstrip()
        if suffix == ".json" and head.startswith(b"["):
            return Source(path)  # a JSON array: datasets reads it; rows are checked after loading
        return Source(path, scan_jsonl(p, cols, need_label))
    if suffix in (".csv", ".tsv"):
        return Source(path, scan_csv(p, cols, need_label))
    return Source(path)


# ----------------------------------------------------------------------------------------------------------
# Loading


def load_raw_datasets(data_args, cache_dir: str | None = None, token: str | None = None, seed: int = 42,
                      want_validation: bool = False):
    """Return (DatasetDict with train/validation/test as given, {split: Source})."""
    import datasets

    cols = Columns.from_args(data_args)
    sources: dict[str, Source] = {}
    if data_args.dataset_name:
        try:
            raw = datasets.load_dataset(
                data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir, token=token
            )
        except Exception as e:  # the Hub or a local dataset script: many exception types
            raise UsageError(f"dataset {data_args.dataset_name!r} could not be loaded: {str(e).splitlines()[0]}") from None
        renames = {
            data_args.train_split_name or "train": "train",
            data_args.validation_split_name or "validation": "validation",
            data_args.test_split_name or "test": "test",
        }
        removed = [s.strip() for s in (getattr(data_args, "remove_splits", None) or "").split(",") if s.strip()]
        for name in [*removed, *(n for n in renames if n not in ("train", "validation", "test"))]:
            if name not in raw:
                raise UsageError(f"dataset {data_args.dataset_name!r} has no split {name!r}; its splits: "
                                 f"{', '.join(raw)}")
        raw = datasets.DatasetDict({renames[k]: v for k, v in raw.items() if k in renames and k not in removed})
        for split in raw:
            sources[split] = Source(f"{data_args.dataset_name}[{split}]")
    else:
        files = {
            split: getattr(data_args, f"{split}_file")
            for split in SPLITS
            if getattr(data_args, f"{split}_file")
        }
        suffixes = {FORMATS.get(Path(f).suffix.lower()) for f in files.values()}
        for split, path in files.items():
            sources[split] = scan_file(path, cols, need_label=split != "test")
        if len(suffixes) > 1:
            raise UsageError(f"data files mix formats ({', '.join(files.values())}); use one format for all splits")
        builder = suffixes.pop()
        kwargs = {}
        if builder == "csv":
            # pandas would read the text "NA", "null", "None", "nan" (and an empty field) as a missing value: a
            # text or label silently lost; keep every field as written (the scan refuses empty ones)
            kwargs["keep_default_na"] = False
            if any(f.endswith(".tsv") for f in files.values()):
                kwargs["delimiter"] = "\t"
        # one load per file: loaded together, datasets casts every split to the first one's column types, so a
        # column typed differently in two files (even one the model never reads) fails with no file or line;
        # loaded apart, each split keeps its types and the label checks name the row that does not fit
        raw = datasets.DatasetDict({split: _load_file(builder, path, split, cache_dir, kwargs)
                                    for split, path in files.items()})

    # getattr: callers that build their own namespace (older tests, scripts) need not know these two options
    dropped = [c.strip() for c in (getattr(data_args, "remove_columns", None) or "").split(",") if c.strip()]
    missing = [c for c in dropped if not any(c in ds.column_names for ds in raw.values())]
    if missing:
        raise UsageError(f"--remove_columns {', '.join(missing)}: no such column in any split; columns: "
                         f"{', '.join(sorted({c for ds in raw.values() for c in ds.column_names}))}")
    for split in list(raw):
        raw[split] = raw[split].remove_columns([c for c in dropped if c in raw[split].column_names])
    for split, ds in raw.items():
        check_columns(ds, cols, sources[split], need_label=split != "test")

    if "validation" not in raw and "train" in raw and (want_validation or data_args.validation_split_percentage):
        percentage = data_args.validation_split_percentage or 10.0
        raw, sources = carve_validation(raw, sources, cols.label, percentage, seed)
    return raw, sources


def _load_file(builder: str, path: str, split: str, cache_dir: str | None, kwargs: dict):
    """One data file as a Dataset; what datasets raises (after the scan let the file through) names the file."""
    import datasets

    # the builders log an ERROR line before raising (or before falling back to pandas): the error below says it once
    builders = logging.getLogger("datasets.packaged_modules")
    level = builders.level
    builders.setLevel(logging.CRITICAL)
    try:
        return datasets.load_dataset(builder, data_files={split: path}, cache_dir=cache_dir, **kwargs)[split]
    except Exception as e:  # pyarrow/pandas parse errors come in many types, wrapped in DatasetGenerationError
        cause = e
        while (cause.__cause__ or cause.__context__) is not None:  # the root cause says what is wrong
            cause = cause.__cause__ or cause.__context__
        why = (str(cause).strip() or str(e).strip() or type(e).__name__).splitlines()[0]
        raise UsageError(f"{path}: datasets could not read the file ({why}); fix the file, or convert it to JSON "
                         "lines (one object per line)") from None
    finally:
        builders.setLevel(level)


def check_columns(ds, cols: Columns, source: Source, need_label: bool) -> None:
    """Columns exist and hold text; the split is not empty."""
    if len(ds) == 0:
        raise UsageError(f"{source.name}: the split is empty")
    available = ds.column_names
    for name in cols.inputs + ([cols.label] if need_label else []):
        if name not in available:
            what = "label column" if name == cols.label else "column"
            raise UsageError(
                f"{source.name}: no {what} {name!r}; columns there: {', '.join(available)}. "
                "Set text_column_names / text_pair_column_name / label_column_name"
            )
    if source.lines is None:  # JSON arrays, parquet, Hub: check the values here
        for name in cols.inputs:
            for i, value in enumerate(ds[name]):
                if not isinstance(value, str):
                    raise UsageError(f"{source.where(i)}: column {name!r} holds {value!r}, not text")
        for i, row in enumerate(zip(*(ds[c] for c in cols.text))):
            _check_text(dict(zip(cols.text, row)), cols, source.where(i))


def carve_validation(raw, sources: dict, label_column: str, percentage: float, seed: int):
    """Hold out `percentage` of train as validation: stratified by label for single-label data, deterministic."""
    # Hand-written rather than sklearn's train_test_split(stratify=...): that one refuses a label with a single row
    # (kept in train here), rounds the per-label counts differently and so would change the held-out rows that the
    # README promises for a given seed.
    import datasets

    train = raw["train"]
    labels = train[label_column]
    by_label: dict[str, list[int]] = {}
    for i, value in enumerate(labels):
        key = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else repr(value)
        by_label.setdefault(key, []).append(i)
    stratify = all(not isinstance(v, (list, float)) for v in labels[:1000]) and len(by_label) <= max(2, len(labels) // 2)
    rng = random.Random(seed)
    held: list[int] = []
    if stratify:
        for key in sorted(by_label):
            idx = by_label[key][:]
            rng.shuffle(idx)
            k = round(len(idx) * percentage / 100)
            held.extend(idx[: k if len(idx) > 1 else 0])
    else:
        idx = list(range(len(train)))
        rng.shuffle(idx)
        held = idx[: round(len(idx) * percentage / 100)]
    held_set = set(held)
    if not held_set or len(held_set) == len(train):
        raise UsageError(
            f"{sources['train'].name}: validation_split_percentage {percentage} leaves an empty split "
            f"of {len(train)} rows; give a validation_file or another percentage"
        )
    held = sorted(held_set)
    kept = [i for i in range(len(train)) if i not in held_set]
    out = datasets.DatasetDict(raw)
    out["train"] = train.select(kept)
    out["validation"] = train.select(held)
    src = sources["train"]
    sources = dict(sources)
    sources["train"] = Source(src.name, src.lines, kept)
    sources["validation"] = Source(src.name, src.lines, held)
    logger.info("validation: %d rows held out of %s (%.1f%%, seed %d%s)", len(held), src.name, percentage, seed,
                ", stratified" if stratify else "")
    return out, sources


def cut(ds, max_samples: int | None):
    """The first `max_samples` rows (before tokenizing, so nothing is tokenized for nothing)."""
    if max_samples is None or max_samples >= len(ds):
        return ds
    return ds.select(range(max_samples))


def check_labels(ds, label_space: LabelSpace, label_column: str, source: Source) -> None:
    """Every label of a split encodes in the label space: an unseen label is an error naming its row."""
    for i, value in enumerate(ds[label_column]):
        label_space.encode(value, source.where(i))



def select_splits(raw, sources: dict, cols: Columns, data_args, training_args,
                  label_space: LabelSpace | None = None):
    """The splits this run uses, checked and cut, and their label space: (raw, label_space).

    Each step's split must be there (train for do_train, validation for do_eval and tune_thresholds, test for
    do_predict). The label space is `label_space` (a trained model's) or built from the whole train split, before
    any cut, so max_train_samples never changes the labels; every validation and test label must be in it. Then
    train is shuffled (shuffle_train_dataset) and each split cut to its max_*_samples.
    """
    import datasets

    from .labels import build_label_space

    if training_args.do_train and "train" not in raw:
        raise UsageError("--do_train needs a train split: give --train_file")
    if training_args.do_eval and "validation" not in raw:
        raise UsageError("--do_eval needs validation data: give --validation_file or --validation_split_percentage")
    if training_args.do_predict and "test" not in raw:
        raise UsageError("--do_predict needs --test_file")
    if label_space is None:
        label_space = build_label_space(
            raw["train"][cols.label], problem_type=data_args.problem_type, class_names=data_args.class_names,
            do_regression=data_args.do_regression, where=sources["train"].name,
        )
    for split in ("validation", "test"):
        if split in raw and cols.label in raw[split].column_names:
            check_labels(raw[split], label_space, cols.label, sources[split])
    if training_args.tune_thresholds and "validation" not in raw:
        raise UsageError("tune_thresholds needs validation data: give --validation_file or "
                         "--validation_split_percentage")
    selected = datasets.DatasetDict(raw)
    if "train" in selected and data_args.shuffle_train_dataset:
        selected["train"] = selected["train"].shuffle(seed=data_args.shuffle_seed)
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples),
                         ("test", data_args.max_predict_samples)):
        if split in selected:
            selected[split] = cut(selected[split], limit)
    return selected, label_space

# ----------------------------------------------------------------------------------------------------------
# Tokenization (shared by training and prediction)


def join_texts(batch: dict[str, list], columns: Sequence[str], delimiter: str) -> list[str]:
    """One text per row from one or more text columns."""
    if len(columns) == 1:
        return [t if t is not None else "" for t in batch[columns[0]]]
    return [delimiter.join(t if t is not None else "" for t in parts) for parts in zip(*(batch[c] for c in columns))]


def _longest_token(tokenizer) -> int:
    """The most characters one vocabulary entry spells (a byte-level entry spells one character per byte)."""
    cached = getattr(tokenizer, "_seqcls_longest_token", None)
    if cached is None:
        cached = max((len(t) for t in tokenizer.get_vocab()), default=1)
        tokenizer._seqcls_longest_token = cached
    return cached


def cut_long_texts(tokenizer, texts: list[str], max_length: int) -> list[str]:
    """Texts cut (on the tokenizer's truncation side) to a length that keeps every token that truncation to
    `max_length` keeps: a 50 MB line costs the tokenizer a few kilobytes instead of minutes and gigabytes.

    The bound. A token spells at most L = `_longest_token` characters of the normalized text (a byte-level BPE
    token of b bytes covers at most b characters, each character being at least one byte; a SentencePiece or
    WordPiece entry is its characters, "##"/"▁" only lengthen it). A normalizer can shrink text: NFC/NFKC compose
    at most 4 code points into one (a base with up to three combining marks, e.g. U+1F85; Hangul L+V+T is 3), and
    lowercasing or stripping accents removes at most that many too. So K characters of the original text give at
    least K / (4 L) tokens, and K = 4 L (max_length + 2) gives max_length tokens with a 2-token margin: the count
    of kept tokens is never short.
    Identity of those tokens. The model (BPE, WordPiece) tokenizes each pre-token ("word") on its own, so the
    tokens of the words before a word boundary do not depend on the text after it; inside one word they may (BPE
    pairs a run of "好" from the word's start: a cut on the left truncation side changed the last token). So the
    cut is made at a word boundary: the window of the first 2K characters (last, truncating left) is tokenized with
    word ids and cut at the end of the word at character K (the start of the word K characters from its end); if
    that word runs to the window's far end, or the cut's truncated ids differ from the window's, K doubles (at worst
    the text stays whole, as before). What is assumed is only that the pre-tokenizer decides a word boundary from
    nearby characters (its regex looks one character ahead). A tokenizer that splits no words (SentencePiece
    models reading the whole text as one, e.g. Llama 2's) is cut at K and checked against windows of 2K and 2K + 1
    characters (runs of one character differ by parity): checked, not proven.
    Pairs: `cut_long_pairs`. Texts inside a prompt template: `encode_texts`.
    """
    return [_cut_text(tokenizer, t, max_length) for t in texts]


def _cut_bound(tokenizer, max_length: int) -> int:
    """Characters that give at least max_length + 2 tokens (`cut_long_texts`)."""
    return 4 * _longest_token(tokenizer) * (max_length + 2)


def _cut_text(tokenizer, text: str, max_length: int) -> str:
    k = _cut_bound(tokenizer, max_length)
    if len(text) <= 2 * k:
        return text
    left = getattr(tokenizer, "truncation_side", "right") == "left"
    splits = _splits_words(tokenizer)

    def ids(part: str) -> list[int]:
        return tokenizer(part, truncation=True, max_length=max_length, verbose=False)["input_ids"]

    while 2 * k < len(text):
        window = text[-2 * k:] if left else text[:2 * k]
        if splits:
            at = _word_boundary(tokenizer, window, k, left)
            short = None if at is None else (window[at:] if left else window[:at])
            if short is not None and ids(short) == ids(window):
                return short
        else:  # no pre-token boundaries to cut at: checked against two windows of different parity (not proven)
            short = text[-k:] if left else text[:k]
            other = text[-2 * k - 1:] if left else text[:2 * k + 1]
            if ids(short) == ids(window) == ids(other):
                return short
        k *= 2
    return text


def _splits_words(tokenizer) -> bool:
    """Whether the tokenizer's pre-tokenizer splits text into words (Qwen2, Llama 3, WordPiece; not SentencePiece
    models that see the whole text as one word, such as Llama 2's)."""
    cached = getattr(tokenizer, "_seqcls_splits_words", None)
    if cached is None:
        probe = tokenizer("a b c", add_special_tokens=False) if getattr(tokenizer, "is_fast", False) else None
        cached = probe is not None and len({w for w in probe.word_ids() if w is not None}) > 1
        tokenizer._seqcls_splits_words = cached
    return cached


def _word_boundary(tokenizer, window: str, k: int, left: bool) -> int | None:
    """Where to cut `window` (the text's first characters, or its last when truncating left) so that the kept
    part is at least k characters long and ends (starts) where the pre-tokenizer ends (starts) a word: the end of the
    word at character k - 1 (the start of the word at len - k). None when that word runs to the window's far end,
    where the text past the window could still change it."""
    import bisect

    encoded = tokenizer(window, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    words, offsets = encoded.word_ids(), encoded["offset_mapping"]
    if not words:
        return None
    if left:
        i = max(bisect.bisect_right([start for start, _ in offsets], len(window) - k) - 1, 0)
        first = i
        while first > 0 and words[first - 1] == words[i]:
            first -= 1
        return None if first == 0 else offsets[first][0]
    i = min(bisect.bisect_left([end for _, end in offsets], k), len(offsets) - 1)
    last = i
    while last + 1 < len(words) and words[last + 1] == words[i]:
        last += 1
    return None if last == len(words) - 1 else offsets[last][1]


def pair_keeps(n_first: int, n_second: int, budget: int) -> tuple[int, int]:
    """How many tokens of each text "longest_first" truncation to `budget` keeps, from their token counts.

    tokenizers' `truncate_encodings` (LongestFirst), written out because the library applies it only to whole
    encodings: with n_s <= n_l, the shorter keeps n_s and the longer budget - n_s when 2 n_s <= budget, else they
    split the budget in halves, the odd token going to the first text only when it is the longer one strictly."""
    if n_first + n_second <= budget:
        return n_first, n_second
    short = min(n_first, n_second)
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short, long_ = budget // 2, budget // 2 + budget % 2
    return (long_, short) if n_first > n_second else (short, long_)


def cut_long_pairs(tokenizer, texts: list[str], pairs: list[str], max_length: int) -> tuple[list[str], list[str]]:
    """Text pairs cut to the tokens "longest_first" truncation keeps of them, so that the tokenizer then truncates
    nothing: the same ids as the whole pair, at a cost bounded by the cut of `cut_long_texts`.

    Why not leave the truncation to the tokenizer: it builds the overflowing windows of both texts and pairs every
    window of one with every window of the other, a cost that grows with the product of the two lengths (two 7 kB
    texts truncated to 5 tokens take more than 12 GB; 100 pairs of 8,000 Chinese characters at max_length 128 ran
    out of 24 GB). So a pair whose texts are both longer than 8 B characters (B = max_length - the pair's special
    tokens; below that the tokenizer's own truncation was as fast or faster, benchmarks/RESULTS.md), or with one past
    the cut of `cut_long_texts`, is cut here: each text is cut as a single text would be (its first max_length
    tokens, on the truncation side, checked) and tokenized alone with offsets; `pair_keeps` gives how many tokens of
    each the whole pair keeps, from the two token counts (a cut text has more than B tokens, by the bound; which of
    two cut texts is the longer decides the odd token of an odd budget, and only then are they counted whole: linear
    time, without the pairing of windows); each text is then cut at the offsets of its last kept token, and the
    pair of cuts is tokenized and checked to keep exactly those tokens (a cut inside a character, or a merge the cut
    changes, fails the check: the next few token boundaries are tried, else the pair goes to the tokenizer as cut
    for single texts: correct, slower). Slow (Python) tokenizers give no offsets: their pairs go whole.
    """
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    out_texts, out_pairs = list(texts), list(pairs)
    if not getattr(tokenizer, "is_fast", False):
        return out_texts, out_pairs
    # a single text's cut checks its first max_length - (a single text's special tokens) tokens: at least B of them
    cut_length = max(max_length, budget + tokenizer.num_special_tokens_to_add(pair=False))
    whole_bound = 2 * _cut_bound(tokenizer, cut_length)  # `_cut_text` leaves a text this long whole
    rows = [i for i, (a, b) in enumerate(zip(texts, pairs))
            if isinstance(a, str) and isinstance(b, str)  # else left to the tokenizer's own error
            and (min(len(a), len(b)) > 8 * budget or max(len(a), len(b)) > whole_bound)]
    if not rows:
        return out_texts, out_pairs  # a few windows: the tokenizer's own truncation is cheaper
    left = getattr(tokenizer, "truncation_side", "right") == "left"
    wholes = [t for i in rows for t in (texts[i], pairs[i])]
    cuts = [_cut_text(tokenizer, t, cut_length) for t in wholes]
    encoded = tokenizer(cuts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    keeps = []
    for r in range(len(rows)):
        counts = [len(ids[j]) if cuts[j] is wholes[j] else None for j in (2 * r, 2 * r + 1)]
        keeps.extend(pair_keeps(*_whole_counts(tokenizer, counts, wholes[2 * r:2 * r + 2], budget), budget))
    expected = [x[len(x) - k:] if left else x[:k] for x, k in zip(ids, keeps)]

    def candidates(j: int) -> list[str]:
        """Cuts of text j that may tokenize to its kept tokens: at its last kept token, then a few tokens on."""
        text, k, n = cuts[j], keeps[j], len(ids[j])
        if k >= n:
            return [text]
        found = [""] if k == 0 else []
        for extra in range(4):
            at = n - k - extra if left else k - 1 + extra
            if 0 <= at < n:
                found.append(text[offsets[j][at][0]:] if left else text[:offsets[j][at][1]])
        return list(dict.fromkeys(found))

    def keeps_expected(r: int, got, index: int) -> bool:
        kept = [[t for t, s in zip(got["input_ids"][index], got.sequence_ids(index)) if s == j] for j in (0, 1)]
        return kept == expected[2 * r:2 * r + 2]

    options = [(candidates(2 * r), candidates(2 * r + 1)) for r in range(len(rows))]
    # the first cuts of every row in one call (the usual case), the others row by row where the first fails
    got = tokenizer([o[0][0] for o in options], [o[1][0] for o in options], truncation="longest_first",
                    max_length=max_length, verbose=False)
    for r, i in enumerate(rows):
        chosen = (options[r][0][0], options[r][1][0]) if keeps_expected(r, got, r) else next(
            ((f, s) for f in options[r][0] for s in options[r][1] if keeps_expected(
                r, tokenizer([f], [s], truncation="longest_first", max_length=max_length, verbose=False), 0)), None)
        out_texts[i], out_pairs[i] = chosen or (cuts[2 * r], cuts[2 * r + 1])
    return out_texts, out_pairs


def _whole_counts(tokenizer, counts: list[int | None], wholes: list[str], budget: int) -> list[int]:
    """Token counts of a pair's two whole texts, or counts that give the same `pair_keeps`; None: a cut text."""
    if None in counts:  # a cut text has more than B tokens (at least len / 4 L: `cut_long_texts`' bound)
        lower = [len(t) / (4 * _longest_token(tokenizer)) for t in wholes]
        for j in (0, 1):
            other = counts[1 - j]
            if counts[j] is None and other is not None and (other < lower[j] or budget % 2 == 0):
                counts[j] = max(other + 1, budget + 1)  # the longer one: how much longer changes nothing
        if counts == [None, None] and budget % 2 == 0:
            counts = [budget + 1, budget + 1]  # both long: the budget's halves
        for j, t in enumerate(wholes):
            if counts[j] is None:  # which is longer decides the odd token: count whole (linear, no window pairs)
                counts[j] = len(tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"])
    return counts


def encode_texts(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, padding: bool | str = False,
                 prompt: Prompt | None = None, extra: dict[str, list] | None = None):
    """Tokenize texts (and optional second texts) the one way this project does, for training and prediction.

    A pooling token (append_eos / cls_token) is appended by the tokenizer itself (`modeling.append_pooling_token`),
    after truncation, so it is the last token of every text however long the text is, on either truncation side.
    With a `prompt` each row is its filled template (one sequence; `extra` holds the template's other columns) and
    only the text inside it is cut (`seqcls.prompts.encode_with_template`).

    Huge texts are cut first (`cut_long_texts`, `cut_long_pairs`), inside a template too: {text} and {text_pair} are
    cut by `_cut_text` to characters that keep their first (last, truncating left) max_length + 1 + CAP_TRIES tokens,
    all that `seqcls.prompts._cut_capped` reads of a huge text besides as many characters of its other end (where
    that end meets the template). The template's other columns ({column}) are not cut.
    """
    template = prompt.resolve(tokenizer) if prompt is not None else None
    special = tokenizer.num_special_tokens_to_add(pair=pairs is not None and template is None)
    if max_length <= special:
        raise UsageError(f"max_seq_length {max_length} leaves no room for text beside the {special} special token(s) "
                         f"the tokenizer adds; use at least {special + 1}")
    if template is not None:
        # `special` (one sequence here) raises _cut_text's max_length so that it compares `tokens` of the text itself
        return encode_with_template(tokenizer, template, texts, pairs, extra, max_length, padding,
                                    cut=lambda text, tokens: _cut_text(tokenizer, text, tokens + special))
    if pairs is None:
        texts = cut_long_texts(tokenizer, texts, max_length)
    else:
        texts, pairs = cut_long_pairs(tokenizer, texts, pairs, max_length)
    return tokenizer(
        texts,
        pairs,
        truncation=True if pairs is None else "longest_first",
        max_length=max_length,
        padding="max_length" if padding is True else False,
    )


def tokenization_fingerprint(tokenizer, label_space: LabelSpace | None, cols: Columns, max_length: int,
                             pad_to_max_length: bool) -> str | None:
    """What decides the tokenized rows, hashed cheaply: the fast tokenizer's serialized form and settings, the
    label space, columns, truncation and this code. Left to itself, `Dataset.map` hashes the tokenizer object
    with dill, about 9 s for Qwen's 151,936-token vocabulary, for every split on every run, cache hit or not.
    None (datasets' own hashing) for a tokenizer without a serialized fast backend."""
    import dataclasses
    import hashlib
    import inspect

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    serialized = backend.to_str()
    # from "added_tokens" on: the leading "truncation" and "padding" record the last call's settings, not what
    # the tokenizer is (parsing the 7 MB JSON to drop them would cost seconds)
    start = serialized.find('"added_tokens":')
    digest = hashlib.sha256(serialized[max(start, 0):].encode("utf-8"))
    settings = {
        "class": type(tokenizer).__name__,
        "special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
        "sides": [tokenizer.padding_side, tokenizer.truncation_side],
        "labels": None if label_space is None else label_space.to_dict(),
        "columns": dataclasses.asdict(cols),
        "max_length": max_length,
        "pad_to_max_length": pad_to_max_length,
        "template": cols.prompt.resolve(tokenizer),  # the chat template lives outside the backend's JSON
        "code": [inspect.getsource(f) for f in (join_texts, cut_long_texts, _cut_text, _splits_words, _word_boundary,
                                                pair_keeps, cut_long_pairs, _whole_counts, encode_texts, tokenize,
                                                encode_with_template, prompts._cut_capped, prompts._cut_whole,
                                                prompts._cut_row)] + [prompts.CAP_TRIES],
    }
    digest.update(json.dumps(settings, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def tokenize(raw, tokenizer, label_space: LabelSpace | None, cols: Columns, max_length: int,
             pad_to_max_length: bool = False, num_proc: int | None = None, overwrite_cache: bool = False,
             sources: dict | None = None):
    """Tokenize every split with `Dataset.map(batched=True)`; add `labels` where the split has them."""

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        texts = join_texts(batch, cols.text, cols.delimiter)
        pairs = batch[cols.pair] if cols.pair else None
        extra = {c: batch[c] for c in cols.prompt.extra_columns()}
        out = dict(encode_texts(tokenizer, texts, pairs, max_length, pad_to_max_length, cols.prompt, extra))
        if label_space is not None and cols.label in batch:
            out["labels"] = [label_space.encode(v, f"row {i + 1}") for v, i in zip(batch[cols.label], indices)]
        return out

    import hashlib

    base = tokenization_fingerprint(tokenizer, label_space, cols, max_length, pad_to_max_length)
    result = {}
    for split, ds in raw.items():
        fingerprint = None if base is None else hashlib.sha256(f"{ds._fingerprint} {base}".encode()).hexdigest()[:32]
        result[split] = ds.map(
            encode,
            batched=True,
            with_indices=True,
            num_proc=num_proc,
            remove_columns=ds.column_names,
            load_from_cache_file=not overwrite_cache,
            desc=f"Tokenizing {split}",
            new_fingerprint=fingerprint,
        )
    import datasets

    return datasets.DatasetDict(result)


__all__ = [
    "Columns", "Source", "load_raw_datasets", "cut", "check_labels", "join_texts", "encode_texts", "tokenize",
    "MULTI", "REGRESSION", "SINGLE",
]
