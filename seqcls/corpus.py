"""Prediction's inputs and outputs: a corpus read in fixed-size chunks of rows, and the chunk files a prediction
job writes, resumes and assembles.

Inputs: a JSONL, CSV/TSV, plain-text or Parquet file, stdin, or a directory or glob of such files (read one after
the other, in sorted name order). The rows are numbered across the whole input and cut into chunks of
`chunk_rows` rows: chunk k holds rows [k * chunk_rows, (k + 1) * chunk_rows). A process parses only the chunks it
owns and steps over the others (line formats: the raw lines are counted, not decoded; Parquet: the row counts
come from the file's metadata), so the chunks, and with them the output, do not depend on how many processes
share the work. The rules for one row (missing column, text not a string, empty text, bad UTF-8, bad JSON,
ragged CSV row) are training's, from `seqcls.data`.

Outputs: every finished chunk is a file in a work directory beside the output (`OUTPUT.parts/`), complete or
absent (`outputs.atomic_open`), with a small `.done.json` marker that holds its counts; `manifest.json` there
records what the chunks were computed from, so a rerun of the same command skips the finished ones. At the end
the chunks become one file in input order (JSONL, CSV or Parquet, renamed into place whole) or, with
`--output_shards`, the work directory itself becomes the output: ordered shards and a manifest.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import glob as globlib
import io
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .data import Columns, column_problem, not_utf8, parse_json_row, ragged_problem, text_problem
from .errors import UsageError
from .labels import LabelSpace
from .outputs import atomic_open, is_temporary, pid_alive

logger = logging.getLogger(__name__)

BOM = codecs.BOM_UTF8


# ----------------------------------------------------------------------------------------------------------
# Rows


@dataclass
class Row:
    index: int  # position among the input's rows (skipped rows count), the default output id
    line: int  # the line where the row starts (Parquet: the row's number in its file, from 1)
    values: dict[str, Any]
    file: str = ""


@dataclass
class BadRow:
    index: int
    line: int
    reason: str
    file: str = ""

    @property
    def where(self) -> str:
        return f"{self.file} row {self.line}" if self.file.endswith(".parquet") else f"{self.file}:{self.line}"


INPUT_FORMATS = ("auto", "jsonl", "csv", "tsv", "text", "parquet")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
                  ".txt": "text", ".parquet": "parquet"}
DIRECTORY_SUFFIXES = (".jsonl", ".ndjson", ".parquet", ".csv", ".tsv", ".txt")


def input_format(name: str, fmt: str, first_line: bytes) -> str:
    """The format asked for, else by suffix, else JSONL when the first line is a JSON object, else plain text."""
    if fmt != "auto":
        return fmt
    suffix = Path(name).suffix.lower() if name != "-" else ""
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if first_line.startswith(b"PAR1"):
        return "parquet"
    return "jsonl" if first_line.lstrip(BOM + b" \t").startswith(b"{") else "text"


def _record(values: dict, index: int, line: int, cols: Columns, id_column: str | None, file: str) -> Row | BadRow:
    """One record checked with training's row rules."""
    problem = column_problem(values, cols, id_column=id_column) or text_problem(values, cols)
    return BadRow(index, line, problem, file) if problem else Row(index, line, values, file)


# ----------------------------------------------------------------------------------------------------------
# Readers of one file: read(n, parse) returns the number of rows passed and, when parse, the rows themselves.
# Stepping over rows (parse=False) costs a line count, not a decode.


class LineReader:
    """JSONL (blank lines are not rows, as in training's files) or plain text (every line is a row)."""

    def __init__(self, stream, name: str, fmt: str, cols: Columns, id_column: str | None):
        self.lines, self.name, self.fmt, self.cols, self.id_column = stream, name, fmt, cols, id_column
        self.number = 0

    def read(self, n: int, parse: bool, start: int) -> tuple[int, list]:
        rows: list = []
        count = 0
        while count < n:
            raw = self.lines.readline()
            if not raw:
                break
            self.number += 1
            if self.number == 1:
                raw = raw.removeprefix(BOM)
            if self.fmt == "jsonl" and not raw.strip():
                continue
            if parse:
                rows.append(self._parse(raw, start + count))
            count += 1
        return count, rows

    def _parse(self, raw: bytes, index: int) -> Row | BadRow:
        number, name = self.number, self.name
        if self.fmt == "text":
            raw = raw.rstrip(b"\r\n")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return BadRow(index, number, not_utf8(raw, e), name)
        if self.fmt == "text":
            if not text.strip():
                return BadRow(index, number, "empty line; give one text per line or remove the line", name)
            return Row(index, number, {self.cols.text[0]: text}, name)
        values, problem = parse_json_row(text)
        if problem:
            return BadRow(index, number, problem, name)
        return _record(values, index, number, self.cols, self.id_column, name)


class CsvReader:
    """CSV/TSV with a header line; quoted fields may span lines, so every row is parsed to find the next one."""

    def __init__(self, stream, name: str, cols: Columns, id_column: str | None, delimiter: str):
        # surrogateescape keeps a non-UTF-8 byte as a marker in its field, so the row can be reported (or skipped)
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
        self.reader = csv.reader(text, delimiter=delimiter)
        self.name, self.cols, self.id_column = name, cols, id_column
        try:
            self.header = next(self.reader)
        except StopIteration:
            raise UsageError(f"{name}: the file is empty; it needs a header line and rows") from None
        except csv.Error as e:
            raise UsageError(f"{name}:1: {e}") from None
        stub = {column: "" for column in self.header}
        if problem := column_problem(stub, cols, available=self.header, id_column=id_column):
            raise UsageError(f"{name}:1: {problem}")
        self.end = self.reader.line_num

    def read(self, n: int, parse: bool, start: int) -> tuple[int, list]:
        rows: list = []
        count = 0
        while count < n:
            try:
                fields = next(self.reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise UsageError(f"{self.name}:{self.end + 1}: {e}; check the quoting") from None
            line, self.end = self.end + 1, self.reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if parse:
                rows.append(self._parse(fields, start + count, line))
            count += 1
        return count, rows

    def _parse(self, fields: list[str], index: int, line: int) -> Row | BadRow:
        bad = next((f for f in fields if any("\udc80" <= c <= "\udcff" for c in f)), None)
        if bad is not None:
            byte = next(ord(c) - 0xDC00 for c in bad if "\udc80" <= c <= "\udcff")
            return BadRow(index, line, f"byte {byte:#04x} is not UTF-8; save the file as UTF-8", self.name)
        if problem := ragged_problem(len(fields), len(self.header)):
            return BadRow(index, line, problem, self.name)
        return _record(dict(zip(self.header, fields)), index, line, self.cols, self.id_column, self.name)


class ParquetReader:
    """A Parquet file: only the row groups that hold wanted rows are read, and only the columns the model reads."""

    def __init__(self, path: Path, name: str, cols: Columns, id_column: str | None):
        import pyarrow.parquet as pq

        try:
            self.file = pq.ParquetFile(path)
        except Exception as e:  # pyarrow.lib.ArrowInvalid and friends: not a Parquet file
            raise UsageError(f"{name}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
        names = self.file.schema_arrow.names
        self.columns = list(dict.fromkeys(cols.inputs + ([id_column] if id_column else [])))
        for column in self.columns:
            if column not in names:
                what = "id column" if column == id_column and column not in cols.inputs else "column"
                raise UsageError(f"{name}: no {what} {column!r}; columns there: {', '.join(names)}. "
                                 "Set --text_column_names / --text_pair_column_name / --id_column")
        meta = self.file.metadata
        self.group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.total = meta.num_rows
        self.position = 0
        self.cached: tuple[int, list[dict]] | None = None
        self.name, self.cols, self.id_column = name, cols, id_column

    def read(self, n: int, parse: bool, start: int) -> tuple[int, list]:
        count = min(n, self.total - self.position)
        rows = []
        if parse:
            for offset in range(count):
                number = self.position + offset
                rows.append(_record(self._row(number), start + offset, number + 1, self.cols, self.id_column,
                                    self.name))
        self.position += count
        return count, rows

    def _row(self, number: int) -> dict:
        group, first = 0, 0
        while number >= first + self.group_rows[group]:
            first += self.group_rows[group]
            group += 1
        if self.cached is None or self.cached[0] != group:
            self.cached = (group, self.file.read_row_group(group, columns=self.columns).to_pylist())
        return self.cached[1][number - first]


# ----------------------------------------------------------------------------------------------------------
# A corpus: one file, stdin, or several files, cut into chunks


class Corpus:
    """The rows of an input, in order, in chunks of `chunk_rows` rows; `cols` are the columns read from it."""

    def __init__(self, name: str, fmt: str, cols: Columns, id_column: str | None):
        self.name, self.fmt, self.id_column = name, fmt, id_column
        self.stdin = name == "-"
        self.files = [] if self.stdin else input_files(name)
        self.cols = cols
        self.many = len(self.files) > 1 or (not self.stdin and Path(name).is_dir())
        # the first file (or stdin) is opened at once: its format and header errors show before a model is loaded
        self._stack = contextlib.ExitStack()
        self._readers = self._open_all()
        self._current = next(self._readers, None)

    def _open_all(self) -> Iterator:
        if self.stdin:
            yield self._open(sys.stdin.buffer, "<stdin>", "-")
            return
        for path in self.files:
            try:
                stream = self._stack.enter_context(open(path, "rb"))
            except OSError as e:
                raise UsageError(f"input {path} cannot be read ({e.strerror})") from None
            yield self._open(stream, str(path), str(path))

    def _open(self, stream, name: str, suffix_name: str):
        if not hasattr(stream, "peek"):  # a pipe-like object without a buffer (tests give io.BytesIO as stdin)
            stream = io.BufferedReader(_Raw(stream))
        first = stream.peek(1 << 16).split(b"\n", 1)[0]
        fmt = input_format(suffix_name, self.fmt, first)
        if fmt == "parquet":
            if name == "<stdin>":
                raise UsageError("Parquet cannot be read from stdin; give the file's path")
            return ParquetReader(Path(name), name, self.cols, self.id_column)
        if fmt == "jsonl" and first.lstrip(BOM + b" \t\r\n").startswith(b"["):
            raise UsageError(f"{name}:1: a JSON array; give JSON lines (one object per line), e.g. jq -c '.[]'")
        if fmt in ("csv", "tsv"):
            return CsvReader(stream, name, self.cols, self.id_column, "\t" if fmt == "tsv" else ",")
        if fmt == "text":
            if self.cols.pair:
                raise UsageError(f"{name}: plain text has one text per line, but the model reads pairs "
                                 f"({self.cols.pair!r}); give JSONL or CSV with the columns")
            if self.id_column:
                raise UsageError(f"{name}: plain text has no columns, so no id column {self.id_column!r}; "
                                 "give JSONL or CSV")
            if self.cols.prompt.extra_columns():
                raise UsageError(f"{name}: plain text has no columns, but the model's prompt_template reads "
                                 f"{self.cols.prompt.extra_columns()}; give JSONL or CSV with those columns")
            if self.many:
                raise UsageError(f"{name}: plain text in a directory of inputs; give JSONL, CSV or Parquet files")
            self.cols = Columns(text=["text"], prompt=self.cols.prompt)
        return LineReader(stream, name, fmt, self.cols, self.id_column)

    def chunks(self, chunk_rows: int, owned) -> Iterator[tuple[int, int, list]]:
        """(chunk id, row count, rows) for every chunk in order; rows are parsed only where `owned(chunk id)`."""
        start, k = 0, 0
        while True:
            parse = owned(k)
            count, rows = 0, []
            while count < chunk_rows and self._current is not None:
                want = chunk_rows - count
                n, got = self._current.read(want, parse, start + count)
                count += n
                rows += got
                if n < want:  # the file ended before the chunk was full: on to the next file (a chunk may span files)
                    self._current = next(self._readers, None)
            if count == 0:
                return
            yield k, count, rows
            start += count
            k += 1

    def fingerprint(self) -> list | None:
        """What the chunks were read from (each file's path, size and modification time); None for stdin."""
        if self.stdin:
            return None
        return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in self.files]

    def close(self) -> None:
        self._stack.close()


class _Raw(io.RawIOBase):
    """Any object with read(n) as a raw stream, so that io.BufferedReader can buffer and peek it."""

    def __init__(self, stream):
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def input_files(name: str) -> list[Path]:
    """A file; a directory's data files (sorted by name, hidden ones left out); or a glob's matches, sorted."""
    path = Path(name)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DIRECTORY_SUFFIXES
                       and not p.name.startswith("."))
        if not files:
            raise UsageError(f"input directory {name} holds no {', '.join(DIRECTORY_SUFFIXES)} files")
        return files
    if globlib.has_magic(name):
        files = sorted(Path(p) for p in globlib.glob(name) if Path(p).is_file())
        if not files:
            raise UsageError(f"input {name} matches no file")
        return files
    raise UsageError(f"input {name} does not exist")


# ----------------------------------------------------------------------------------------------------------
# Output rows: JSONL (as training's predict_results.jsonl), CSV, or Parquet


OUTPUT_FORMATS = ("jsonl", "csv", "parquet")
OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}



def count_rows(name: str) -> int | None:
    """Lines in the input's files (Parquet: rows from its metadata), for the progress bar's total and ETA."""
    if name == "-":
        return None
    try:
        files = input_files(name)
    except UsageError:
        return None
    n = 0
    for path in files:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            n += pq.ParquetFile(path).metadata.num_rows
            continue
        last = b"\n"
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                n += block.count(b"\n")
                last = block[-1:]
        n += last != b"\n"
    return n


def output_format(output: str | None, fmt: str | None) -> str:
    """--output_format, else the output's suffix; an unknown suffix is an error (not JSONL under another name)."""
    if fmt:
        return fmt
    if output is None:
        return "jsonl"
    suffix = Path(output.rstrip("/")).suffix.lower()
    if suffix in OUTPUT_SUFFIXES:
        return OUTPUT_SUFFIXES[suffix]
    if suffix:
        raise UsageError(f"output {output}: unknown suffix {suffix!r}; name it .jsonl, .csv or .parquet, or give "
                         "--output_format")
    return "jsonl"


def csv_header(label_space: LabelSpace) -> list[str]:
    return ["id", "label", "score"] + [f"p_{n}" for n in label_space.names]


def flat_row(row: dict[str, Any], label_space: LabelSpace) -> dict[str, Any]:
    """A CSV/Parquet row: id, label, score and one probability column per label (in label order)."""
    probs = row.get("probabilities", {})
    return {"id": row["id"], "label": row["label"], "score": row["score"],
            **{f"p_{n}": probs.get(n) for n in label_space.names}}


def format_rows(rows: list[dict[str, Any]], fmt: str, label_space: LabelSpace) -> bytes:
    """Rows as the bytes JSONL or CSV (without its header) holds them; multi-label names in CSV are joined with ';'."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for r in rows:
        flat = flat_row(r, label_space)
        label = flat["label"]
        flat["label"] = ";".join(map(str, label)) if isinstance(label, list) else label
        writer.writerow(["" if v is None else v for v in flat.values()])
    return text.getvalue().encode("utf-8")


def write_parquet(path: Path, rows: list[dict[str, Any]], label_space: LabelSpace) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist([flat_row(r, label_space) for r in rows])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise UsageError(f"the predictions cannot be stored as Parquet ({str(e).splitlines()[0]}); ids of one "
                         "type (--id_column) make a column, or write JSONL") from None
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)


# ----------------------------------------------------------------------------------------------------------
# The work directory of a prediction job: finished chunks, resumable, assembled in order


MANIFEST = "manifest.json"


class ChunkStore:
    """`OUTPUT.parts/`: one file per finished chunk (`000012.jsonl`, and `000012.skipped.jsonl` with
    --on_error skip), each followed by its `000012.done.json` marker (the counts), so a chunk is finished exactly
    when its marker exists; `manifest.json` holds the identity of the job (input files, model, options)."""

    def __init__(self, output: str, fmt: str, identity: dict[str, Any]):
        self.output = Path(output)
        self.dir = self.output.with_name(self.output.name.rstrip("/") + ".parts")
        self.fmt, self.identity = fmt, identity

    def prepare(self) -> int:
        """(Main process, before the others look.) Keep the finished chunks of the same job, else start afresh;
        remove what killed writers left. Returns the number of chunks already finished."""
        manifest = self.dir / MANIFEST
        if self.dir.is_dir():
            try:
                same = json.loads(manifest.read_text(encoding="utf-8")) == self.identity
            except (OSError, ValueError):
                same = False
            if not same or self.identity.get("input") is None:
                logger.warning("%s holds chunks of another prediction (input, model or options differ): "
                               "starting afresh", self.dir)
                shutil.rmtree(self.dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise UsageError(f"{self.dir} is in the way of the prediction's work directory; move it")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"output {self.output}: cannot create {self.dir} ({e.strerror}); give -o a writable "
                             "place") from None
        _remove_dead_temporaries(self.dir)
        if not manifest.exists():
            with atomic_open(manifest) as f:
                json.dump(self.identity, f, ensure_ascii=False, indent=2)
        return len(list(self.dir.glob("*.done.json")))

    def _name(self, k: int, what: str) -> Path:
        return self.dir / f"{k:06d}.{what}"

    def done(self, k: int) -> dict | None:
        try:
            return json.loads(self._name(k, "done.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def write(self, k: int, results: list[dict], skipped: list[dict] | None, label_space: LabelSpace) -> dict:
        """Write one finished chunk (rows, then skipped rows, then the marker that makes it count)."""
        if self.fmt == "parquet":
            write_parquet(self._name(k, "parquet"), results, label_space)
        else:
            with atomic_open(self._name(k, self.fmt), "wb") as f:
                f.write(format_rows(results, self.fmt, label_space))
        if skipped is not None:
            with atomic_open(self._name(k, "skipped.jsonl"), "wb") as f:
                f.write(format_skipped(skipped))
        counts = {"predicted": len(results), "skipped": len(skipped or ())}
        with atomic_open(self._name(k, "done.json")) as f:
            json.dump(counts, f)
        return counts

    def chunk_ids(self) -> list[int]:
        return sorted(int(p.name.split(".", 1)[0]) for p in self.dir.glob("*.done.json"))

    def assemble(self, label_space: LabelSpace, skipped_file: str | None, shards: bool) -> None:
        """The finished chunks, in order, become the output: one file renamed into place whole, or (shards) the
        work directory renamed to the output with a manifest of its shards."""
        ids = self.chunk_ids()
        if skipped_file is not None:
            with atomic_open(skipped_file, "wb") as out:
                for k in ids:
                    with open(self._name(k, "skipped.jsonl"), "rb") as f:
                        shutil.copyfileobj(f, out)
        if shards:
            self._assemble_shards(ids)
            return
        if self.fmt == "parquet":
            self._assemble_parquet(ids)
        else:
            with atomic_open(self.output, "wb") as out:
                if self.fmt == "csv":
                    out.write(format_header(label_space))
                for k in ids:
                    with open(self._name(k, self.fmt), "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
        shutil.rmtree(self.dir)

    def _assemble_parquet(self, ids: list[int]) -> None:
        import pyarrow.parquet as pq

        tables = (pq.read_table(self._name(k, "parquet")) for k in ids)
        with atomic_open(self.output, "wb") as out:
            writer = None
            for table in tables:
                if table.num_rows == 0:
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema)
                writer.write_table(table.cast(writer.schema))  # one row group per chunk
            if writer is not None:
                writer.close()

    def _assemble_shards(self, ids: list[int]) -> None:
        shards = []
        for k in ids:
            counts = self.done(k)
            shards.append({"file": self._name(k, self.fmt).name, "rows": counts["predicted"]})
            self._name(k, "done.json").unlink()
            with contextlib.suppress(FileNotFoundError):
                self._name(k, "skipped.jsonl").unlink()
        with atomic_open(self.dir / MANIFEST) as f:
            json.dump({**self.identity, "format": self.fmt, "shards": shards,
                       "rows": sum(s["rows"] for s in shards)}, f, ensure_ascii=False, indent=2)
        if self.output.exists():
            old = self.output.with_name(f".{self.output.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.output, old)
            os.replace(self.dir, self.output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.dir, self.output)

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def format_header(label_space: LabelSpace) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(csv_header(label_space))
    return text.getvalue().encode("utf-8")


def format_skipped(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _remove_dead_temporaries(directory: Path) -> None:
    """The temporary files of writers that are gone (a SIGKILL): their PID is in the name (outputs.atomic_open)."""
    for tmp in directory.iterdir():
        if is_temporary(tmp):
            parts = tmp.name.split(".")
            pid = next((p for p in parts[2:] if p.isdigit()), None)
            if pid is not None and not pid_alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
