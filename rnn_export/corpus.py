"""Corpora on disk for `rnn-export score`: texts read in chunks, predictions written in chunks.

Four formats, told by the file's suffix (or named): plain text (one text per line),
JSONL (one object per line, the text in a named field), CSV (a header row, the text in a
named column) and Parquet (the text in a named column; needs pyarrow, the `parquet`
extra). Predictions are written in the input's format family: text in, tab-separated
lines out; JSONL in, JSONL out; CSV in, CSV out; Parquet in, Parquet out.

Every record keeps a key: the input's own id (the field or column `id` where there is
one, or the one named) or else its position: "line" (the line number, for text and
JSONL) or "row" (the data row, 1-based, for CSV and Parquet).

A line (text, JSONL) ends at "\n", with an optional "\r" before it; nothing else ends a
line (a form feed, U+0085, U+2028 are characters of it), as `rnn-export stream` and
`predict --file` read lines (split_lines).

Readers hold one chunk at a time (about CHUNK_TEXTS texts, or CHUNK_BYTES bytes of
lines), so memory does not grow with the input, and refuse what would hold more: a
text of more than MAX_TEXT_CHARS characters, a line of more than MAX_LINE_BYTES bytes.
Bad input is a CorpusError that names the file and the line or row (a CSV row also
names its line: a quoted field may span lines).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rnn_export.errors import InputError, decode_utf8

CHUNK_TEXTS = 4096  # texts per chunk: one model.predict call (it sorts them by length)
CHUNK_BYTES = 1 << 20  # bytes of lines read at a time from text and JSONL files
FORMATS = {
    "text": (".txt", ".text"),
    "jsonl": (".jsonl", ".ndjson"),
    "csv": (".csv",),
    "parquet": (".parquet", ".pq"),
    "npz": (".npz",),  # frames, for a features model (rnn_export.frame_corpus)
}
MAX_TEXT_CHARS = 1 << 24  # characters per text (16,777,216): what one text may hold in memory
MAX_LINE_BYTES = 1 << 26  # bytes per line of a text or JSONL file (64 MiB: 4 per character)
DEFAULT_ID = "id"
DEFAULT_TEXT = "text"


class CorpusError(InputError):
    """An input corpus that cannot be read, or an output path of the wrong format."""


@dataclass(frozen=True)
class Chunk:
    """Some consecutive records of the input.

    Args:
        keys: each record's key (its id, or its line or row number).
        texts: each record's text.
        done: how far the reader is, in the reader's unit (bytes or rows).
    """

    keys: list
    texts: list[str]
    done: int


def format_of(path: Path, given: str | None = None) -> str:
    """The format of a corpus file: `given`, else the one its suffix names.

    Raises:
        CorpusError: an unknown format, or a suffix of no format.
    """
    if given is not None:
        if given not in FORMATS:
            raise CorpusError(f"unknown format {given!r}; expected one of {', '.join(FORMATS)}")
        return given
    suffix = path.suffix.lower()
    for name, suffixes in FORMATS.items():
        if suffix in suffixes:
            return name
    known = ", ".join(s for suffixes in FORMATS.values() for s in suffixes)
    raise CorpusError(
        f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; expected "
        f"one of {known}, or name it with --format"
    )


def check_output_format(path: Path, fmt: str) -> None:
    """Refuse an output whose suffix names another format than the input's.

    Raises:
        CorpusError: e.g. a .csv output for a JSONL input.
    """
    suffix = path.suffix.lower()
    for name, suffixes in FORMATS.items():
        if suffix in suffixes and name != fmt:
            raise CorpusError(
                f"{path}: a {name} file name, but the predictions of a {fmt} input are "
                f"written as {fmt} (give the output a {FORMATS[fmt][0]} name)"
            )


def split_lines(text: str) -> list[str]:
    """The lines of text, without their line ends: each ends at "\n" (a "\r" before it is
    part of the line end); a last line without "\n" counts as is."""
    pieces = text.split("\n")
    last = pieces.pop()
    lines = [p[:-1] if p.endswith("\r") else p for p in pieces]
    if last:
        lines.append(last)
    return lines


def read_line_blocks(f, where, first_line: int = 1) -> Iterator[tuple[int, list[str]]]:
    """(first line number, its lines) of about CHUNK_BYTES at a time from a binary file.

    Args:
        f: a binary file (a file, stdin's buffer), read from its position.
        where: the file, named in messages.

    Raises:
        CorpusError: a line of more than MAX_LINE_BYTES bytes (none is held whole), or
            one that is not UTF-8 (naming the line).
    """
    line = first_line
    while True:
        raw, size = [], 0
        while size < CHUNK_BYTES:
            piece = f.readline(MAX_LINE_BYTES + 2)  # + "\r\n"
            if not piece:
                break
            if len(piece) - piece.endswith(b"\n") - piece.endswith(b"\r\n") > MAX_LINE_BYTES:
                raise CorpusError(
                    f"{where}:{line + len(raw)}: a line of more than {MAX_LINE_BYTES:,} bytes; "
                    f"expected at most {MAX_TEXT_CHARS:,} characters a text"
                )
            raw.append(piece)
            size += len(piece)
        if not raw:
            return
        data = b"".join(raw)
        raw.clear()  # not held while the block's lines are scored: a long line counts once
        # Each block ends with a line end (or the file's end): its lines are the file's.
        lines = split_lines(decode_utf8(data, where, CorpusError, first_line=line))
        del data
        yield line, lines
        line += len(lines)


def check_text_size(text: str, where: str) -> str:
    """text, or a CorpusError naming where when it holds more than MAX_TEXT_CHARS."""
    if len(text) > MAX_TEXT_CHARS:
        raise CorpusError(
            f"{where}: a text of {len(text):,} characters; expected at most "
            f"{MAX_TEXT_CHARS:,} characters a text (split it)"
        )
    return text


def import_pyarrow():
    """pyarrow and pyarrow.parquet, or a CorpusError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise CorpusError(
            "Parquet needs pyarrow, which is not installed: pip install 'rnn-export[parquet]'"
        ) from None
    return pyarrow, pyarrow.parquet


class CorpusReader:
    """The records of one corpus file, chunk by chunk (iterate it once).

    Args:
        path: the file.
        fmt: its format (format_of).
        text_field: the JSONL field or CSV/Parquet column that holds the text.
        id_field: the field or column to keep as each record's key; None: `id` where the
            input has it, else the line or row number.

    Attributes:
        key_name: the output's key column: the id field, "line" or "row".
        total: the reader's length in its unit (file bytes, or Parquet rows).
        unit: "B" or "rows".
    """

    def __init__(self, path: Path, fmt: str, text_field: str = DEFAULT_TEXT, id_field=None):
        self.path, self.fmt = Path(path), fmt
        self.text_field, self.id_field = text_field, id_field
        self.unit = "B"
        self.key_name = "row" if fmt in ("csv", "parquet") else "line"
        self.key_type = None  # the key's Arrow type, where the input has one (Parquet)
        if fmt == "parquet":
            self.unit = "rows"
            with self._arrow_errors():
                self._parquet = import_pyarrow()[1].ParquetFile(self.path)
                self.total = self._parquet.metadata.num_rows
                schema = self._parquet.schema_arrow
            self._pick_fields(schema.names, "column")
            if self.id_field is not None:
                self.key_type = schema.field(self.id_field).type
        else:
            self.total = self.path.stat().st_size
            if fmt == "csv":
                self._pick_fields(self._csv_header(), "column")
            elif fmt == "jsonl":
                self._pick_fields(self._first_record(), "field")

    def _csv_header(self) -> list[str]:
        with self._csv_rows() as (rows, _):
            header = next(rows, None)
        if header is None:
            raise CorpusError(f"{self.path}: is empty; expected a header row")
        return header[1]

    @contextlib.contextmanager
    def _csv_rows(self):
        """The rows of the CSV file, the header first, each checked: UTF-8, complete
        (a quote left open at the end is refused), fields of at most MAX_TEXT_CHARS.

        Bad bytes are read as surrogates and refused row by row, so that the message
        names the row they are in (a decoder reading ahead could not)."""
        limit = csv.field_size_limit()
        with open(self.path, "rb") as raw:
            f = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.reader(f, strict=True)
            csv.field_size_limit(MAX_TEXT_CHARS)
            try:
                yield self._checked_rows(reader), raw
            finally:
                csv.field_size_limit(limit)

    def _checked_rows(self, reader) -> Iterator[tuple[int, list[str]]]:
        """(the row's first line, its values) of each row, the header (row 0) first."""
        row = 0
        while True:
            line = reader.line_num + 1  # the row's first line
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                why = str(e)
                if "field larger than field limit" in why:
                    why = f"a field of more than {MAX_TEXT_CHARS:,} characters (the limit a text)"
                elif "unexpected end of data" in why:
                    why = "the file ends inside a quoted field (a quote left open)"
                raise CorpusError(f"{self._csv_where(row, line)}: not CSV: {why}") from None
            for value in values:
                bad = None if value.isascii() else _BAD_BYTE.search(value)
                if bad:
                    raise CorpusError(
                        f"{self._csv_where(row, line)}: expected UTF-8 text; byte "
                        f"0x{ord(bad.group()) - 0xDC00:02x} is not valid UTF-8"
                    )
            yield line, values
            row += 1

    def _csv_where(self, row: int, line: int) -> str:
        """A CSV row for messages: the data row (as keys count them) and its first line."""
        return (f"{self.path} header row" if row == 0 else self.where(row)) + f" (line {line})"

    def _first_record(self) -> list[str]:
        """The field names of the first JSONL record (none in an empty file)."""
        for first, lines, _ in self._blocks():
            return list(self._json_record(first, lines[0])) if lines else []
        return [self.text_field]  # an empty file: no record to check

    def _pick_fields(self, names, what: str) -> None:
        """Check the text and id fields against the input's names; set key_name."""
        if self.text_field not in names:
            option = "--text-field" if what == "field" else "--column"
            raise CorpusError(
                f"{self.where()}: no {what} {self.text_field!r} (it has {_listed(names)}); "
                f"name the text {what} with {option}"
            )
        if self.id_field is None and DEFAULT_ID in names and self.text_field != DEFAULT_ID:
            self.id_field = DEFAULT_ID
        if self.id_field is not None:
            if self.id_field not in names:
                raise CorpusError(
                    f"{self.where()}: no {what} {self.id_field!r} to keep as the id "
                    f"(it has {_listed(names)})"
                )
            self.key_name = self.id_field

    def where(self, position: int | None = None) -> str:
        """The file, or one of its lines or rows, for messages ("in.csv row 3")."""
        if position is None:
            return str(self.path)
        if self.fmt in ("text", "jsonl"):
            return f"{self.path}:{position}"
        return f"{self.path} row {position}"

    def __iter__(self) -> Iterator[Chunk]:
        read = {
            "text": self._text,
            "jsonl": self._jsonl,
            "csv": self._csv,
            "parquet": self._parquet_chunks,
        }
        return read[self.fmt]()

    def _blocks(self) -> Iterator[tuple[int, list[str], int]]:
        """(first line number, the lines, bytes read) of about CHUNK_BYTES at a time."""
        with open(self.path, "rb") as f:
            for first, lines in read_line_blocks(f, self.path):
                yield first, lines, f.tell()

    def _text(self) -> Iterator[Chunk]:
        for first, lines, done in self._blocks():
            for n, line in enumerate(lines, first):
                check_text_size(line, self.where(n))
            yield Chunk(list(range(first, first + len(lines))), lines, done)

    def _jsonl(self) -> Iterator[Chunk]:
        for first, lines, done in self._blocks():
            keys, texts = [], []
            for n, line in enumerate(lines, first):
                record = self._json_record(n, line)
                if self.id_field is None:
                    keys.append(n)
                elif self.id_field in record:
                    keys.append(record[self.id_field])
                else:
                    raise CorpusError(f"{self.where(n)}: no field {self.id_field!r} (the id)")
                texts.append(self._text_value(record.get(self.text_field, _MISSING), n))
            yield Chunk(keys, texts, done)

    def _json_record(self, n: int, line: str) -> dict:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            what = "a blank line" if not line.strip() else f"not JSON ({e.msg}, column {e.colno})"
            raise CorpusError(
                f"{self.where(n)}: {what}; expected one JSON object per line"
            ) from None
        except RecursionError:
            raise CorpusError(
                f"{self.where(n)}: values nested too deep to read; expected one JSON object "
                "per line with a text field"
            ) from None
        except ValueError as e:  # valid JSON Python will not hold (an integer of 5,000 digits)
            raise CorpusError(f"{self.where(n)}: cannot read this JSON: {e}") from None
        if not isinstance(record, dict):
            raise CorpusError(
                f"{self.where(n)}: expected a JSON object; got {type(record).__name__}"
            )
        return record

    def _text_value(self, value, position: int) -> str:
        if isinstance(value, str):
            return check_text_size(value, self.where(position))
        if value is _MISSING:
            raise CorpusError(f"{self.where(position)}: no field {self.text_field!r} (the text)")
        got = "null" if value is None else type(value).__name__
        raise CorpusError(
            f"{self.where(position)}: the text {self.text_field!r} must be a string; got {got}"
        )

    def _csv(self) -> Iterator[Chunk]:
        with self._csv_rows() as (rows, raw):
            _, header = next(rows)
            text_at = header.index(self.text_field)
            id_at = None if self.id_field is None else header.index(self.id_field)
            keys, texts = [], []
            for row, (line, values) in enumerate(rows, 1):
                if len(values) != len(header):
                    raise CorpusError(
                        f"{self._csv_where(row, line)}: has {len(values)} values; the header "
                        f"has {len(header)}"
                    )
                keys.append(row if id_at is None else values[id_at])
                texts.append(values[text_at])
                if len(texts) == CHUNK_TEXTS:
                    yield Chunk(keys, texts, raw.tell())
                    keys, texts = [], []
            if texts:
                yield Chunk(keys, texts, raw.tell())

    def _parquet_chunks(self) -> Iterator[Chunk]:
        columns = [self.text_field] + ([] if self.id_field is None else [self.id_field])
        row = 0
        with self._arrow_errors():
            batches = self._parquet.iter_batches(batch_size=CHUNK_TEXTS, columns=columns)
            for batch in batches:
                texts = batch.column(self.text_field).to_pylist()
                for i, text in enumerate(texts):
                    self._text_value(text, row + i + 1)
                if self.id_field is None:
                    keys = list(range(row + 1, row + len(texts) + 1))
                else:
                    keys = batch.column(self.id_field).to_pylist()
                row += len(texts)
                yield Chunk(keys, texts, row)

    @contextlib.contextmanager
    def _arrow_errors(self):
        """pyarrow's errors on a file that is not (whole) Parquet, as one CorpusError."""
        pa, _ = import_pyarrow()
        try:
            yield
        except (pa.ArrowException, OSError) as e:
            if isinstance(e, OSError) and e.errno is not None:
                raise  # the system's (the file cannot be read): the CLI names the path
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CorpusError(
                f"{self.path}: not a Parquet file pyarrow can read: {first}"
            ) from None


_MISSING = object()
_BAD_BYTE = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, as surrogateescape reads it


def _listed(names) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:10])
    return (shown + f" and {len(names) - 10} more") if len(names) > 10 else (shown or "none")


def flat_columns(top_k: int) -> list[str]:
    """The prediction columns of CSV and Parquet outputs: label, probability, then
    label_2, probability_2 ... up to top_k."""
    names = ["label", "probability"]
    for k in range(2, top_k + 1):
        names += [f"label_{k}", f"probability_{k}"]
    return names


class CorpusWriter:
    """Predictions written in an input's format family, chunk by chunk, to an open binary
    file (an atomic.replacing one: the file appears whole or not at all).

    Args:
        f: the binary file.
        fmt: the input's format.
        key_name: the key column (CorpusReader.key_name).
        top_k: pairs per record.
        key_type: the key's Arrow type (CorpusReader.key_type), kept in a Parquet output;
            None: the type of the first chunk's keys.
    """

    def __init__(self, f, fmt: str, key_name: str, top_k: int, key_type=None):
        self.f, self.fmt, self.key_name, self.top_k = f, fmt, key_name, top_k
        self.key_type = key_type
        self._text = None
        self._parquet = None
        if fmt in ("text", "jsonl", "csv"):
            self._text = io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=True)
        if fmt == "csv":
            self._csv = csv.writer(self._text, lineterminator="\n")
            # Python's writer leaves a lone "\r" unquoted (only the line terminator's
            # characters are): a row holding one is written with every field quoted.
            self._csv_quoted = csv.writer(self._text, lineterminator="\n", quoting=csv.QUOTE_ALL)
            self._write_csv([[key_name, *flat_columns(top_k)]])

    def write(self, keys: list, columns: dict[str, list]) -> None:
        """Append records: keys and the flat prediction columns (flat_columns(top_k); a
        None label for a text without a prediction)."""
        names = flat_columns(self.top_k)
        if self.fmt == "parquet":
            self._write_parquet(keys, columns, names)
            return
        rows = zip(keys, *(columns[n] for n in names), strict=True)
        if self.fmt == "csv":
            self._write_csv([k, *("" if v is None else v for v in values)] for k, *values in rows)
            return
        out = []
        for key, *values in rows:
            pairs = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
            pairs = [(label, p) for label, p in pairs if label is not None]
            if self.fmt == "jsonl":
                best = pairs[0] if pairs else (None, None)
                record = {
                    self.key_name: key,
                    "label": best[0],
                    "probability": best[1],
                    "top_k": [list(pair) for pair in pairs],
                }
                out.append(json.dumps(record, ensure_ascii=False))
            elif pairs:  # the lines `rnn-export predict` prints, after the key
                out.append(f"{key}\t" + "\t".join(f"{label}\t{p:.4f}" for label, p in pairs))
            else:
                out.append(f"{key}\t-")
        self._text.write("".join(line + "\n" for line in out))

    def _write_csv(self, rows) -> None:
        for row in rows:
            quote = any(isinstance(v, str) and "\r" in v for v in row)
            (self._csv_quoted if quote else self._csv).writerow(row)

    def _write_parquet(self, keys: list, columns: dict[str, list], names: list[str]) -> None:
        pa, pq = import_pyarrow()
        arrays = {self.key_name: pa.array(keys, type=self.key_type)}
        for name in names:
            kind = pa.float64() if name.startswith("probability") else pa.string()
            arrays[name] = pa.array(columns[name], type=kind)
        batch = pa.table(arrays)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.f, batch.schema)
        self._parquet.write_table(batch.cast(self._parquet.schema))

    def close(self) -> None:
        """Finish the file (Parquet's footer; text buffers flushed); the file stays open."""
        if self.fmt == "parquet":
            if self._parquet is None:  # no record: an empty table, with the columns
                names = flat_columns(self.top_k)
                self._write_parquet([], {n: [] for n in names}, names)
            self._parquet.close()
        if self._text is not None:
            self._text.flush()
            self._text.detach()
