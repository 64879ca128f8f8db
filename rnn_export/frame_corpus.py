"""Sequences of float frames on disk for `rnn-export score` and `predict` on a features model.

A features model reads F float32 values a step; its inputs are sequences of such frames,
read from one of two formats, chunk by chunk so that memory does not grow with the file:

- `.npz` (numpy.savez or savez_compressed; no pickled objects):
      x        float (N, T, F): the frames, zero-padded past each row's length
      lengths  int (N,): each row's steps, 0 .. T (0: an empty sequence, no prediction)
      ids      int or str (N,), optional: each row's key in the output (--id names
               another array); without it, the row number (1-based)
  Other arrays (a training file's labels, label_names) are ignored, so a training or
  test file of `rnn-export train --input features` scores as it is. The arrays are
  read straight from the zip member a chunk of rows at a time (a compressed file too).
- Parquet: one row per sequence, its frames in a list column (`frames` unless named):
  either a list of frames, each a list of F numbers (list<list<float>>, the natural
  form of pyarrow.array([[[...], ...], ...])), or a flat list of T * F numbers, frame
  after frame (list<float>), read as (T, F). Keys as for text: the `id` column where
  there is one (or the one named), else the row number.

A sequence holds at most MAX_SEQUENCE_VALUES values (T * F, as a text holds at most
rnn_export.corpus.MAX_TEXT_CHARS characters); a chunk holds at most CHUNK_VALUES of them
(and at most CHUNK_TEXTS sequences). Bad input is a CorpusError naming the file and the
row; what a frame must hold (finite numbers) is checked by the model's FrameReader.
"""

from __future__ import annotations

import contextlib
import itertools
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rnn_export.corpus import (
    CHUNK_TEXTS,
    FORMATS,
    MAX_TEXT_CHARS,
    Chunk,
    CorpusError,
    CorpusReader,
    format_of,
    import_pyarrow,
)

FRAME_FORMATS = ("npz", "parquet")
DEFAULT_FRAMES = "frames"  # the Parquet column of the frames
NPZ_IDS = "ids"
MAX_SEQUENCE_VALUES = MAX_TEXT_CHARS  # T * F of one sequence (64 MiB of float32)
CHUNK_VALUES = 1 << 22  # float32 values of one chunk (16 MiB)
MAX_ID_CHARS = 1024  # characters of an .npz id: a chunk's ids stay within 16 MiB
PARQUET_ROWS = 256  # rows of a Parquet file read at a time


def output_format(output: Path, fmt: str) -> str:
    """The format of the predictions of an input of format fmt: the input's own, except
    for .npz (frames), whose predictions go in the format the output's suffix names.

    Raises:
        CorpusError: an .npz output, or a suffix of no format.
    """
    if fmt != "npz":
        return fmt
    written = [name for name in FORMATS if name != "npz"]
    try:
        out = format_of(Path(output))
    except CorpusError:
        out = None
    if out is None or out == "npz":
        raise CorpusError(
            f"{output}: the predictions of an .npz input are written as "
            f"{', '.join(written)}; name the output with one of their suffixes "
            "(.txt, .jsonl, .csv, .parquet)"
        )
    return out


def check_input_kind(model, path: Path, fmt: str, column: str) -> None:
    """Refuse an input of the other kind than the model reads: text for a features
    model, frames (an .npz, a Parquet list column) for a text model.

    Raises:
        CorpusError: one line saying what the model reads.
    """
    if model.tokenizer is None:
        if fmt not in FRAME_FORMATS:
            raise CorpusError(
                f"{path}: a file of texts ({fmt}), but this model reads float frames of "
                f"F = {model.metadata.input_size} values a step: give an .npz (x, lengths) "
                "or a Parquet file with a list column of frames"
            )
        return
    frames = fmt == "npz"
    if fmt == "parquet":
        schema = _parquet_schema(path)
        frames = column in schema.names and _is_list(schema.field(column).type)
    if frames:
        raise CorpusError(
            f"{path}: holds float frames, but this model reads text (characters of its "
            "vocabulary): give it texts (.txt, .jsonl, .csv, or a Parquet string column)"
        )


def _parquet_schema(path: Path):
    pa, pq = import_pyarrow()
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CorpusError(f"{path}: not a Parquet file pyarrow can read: {first}") from None


def _is_list(kind) -> bool:
    pa, _ = import_pyarrow()
    return (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )


class FrameCorpusReader:
    """The sequences of one frames file, chunk by chunk (iterate it once): Chunks whose
    `texts` are float32 (T_i, F) arrays.

    Args:
        path: the file.
        fmt: "npz" or "parquet".
        size: F, the model's values a frame.
        column: the Parquet list column of the frames.
        id_field: the array (.npz) or column (Parquet) kept as each record's key; None:
            `ids` (.npz) or `id` (Parquet) where the file has it, else the row number.

    Attributes:
        key_name, key_type, total, unit: as rnn_export.corpus.CorpusReader's.
    """

    def __init__(
        self, path: Path, fmt: str, size: int, column: str = DEFAULT_FRAMES, id_field=None
    ):
        self.path, self.fmt, self.size = Path(path), fmt, size
        self.column, self.id_field = column, id_field
        self.key_name, self.key_type, self.unit = "row", None, "rows"
        if fmt == "parquet":
            self._text = CorpusReader(path, fmt, column, id_field)  # columns, keys, errors
            self.id_field, self.key_name = self._text.id_field, self._text.key_name
            self.key_type, self.total = self._text.key_type, self._text.total
            kind = self._text._parquet.schema_arrow.field(column).type
            if not _is_list(kind):
                raise CorpusError(
                    f"{self.path}: column {column!r} holds {kind}; expected a list column of "
                    f"frames (list<list<float>> of F = {size}, or list<float> of T * {size})"
                )
            return
        with self._npz() as arrays:
            x = self._header(arrays, "x")
            lengths = self._header(arrays, "lengths")
            if len(x[0]) != 3 or x[1].kind not in "iuf":
                raise CorpusError(
                    f"{self.path}: x is {x[1]} {x[0]}; expected float frames (N, T, F)"
                )
            N, T, F = x[0]
            if x[0][2] != size:
                raise CorpusError(
                    f"{self.path}: x has F = {F} values a frame; this model reads F = {size}"
                )
            if lengths[0] != (N,) or lengths[1].kind not in "iu":
                raise CorpusError(
                    f"{self.path}: lengths is {lengths[1]} {lengths[0]}; expected int ({N},), "
                    "each row's steps"
                )
            if T * F > MAX_SEQUENCE_VALUES:
                raise CorpusError(
                    f"{self.path}: rows of T * F = {T * F:,} values; expected at most "
                    f"{MAX_SEQUENCE_VALUES:,} a sequence (split them)"
                )
            if self.id_field is None and f"{NPZ_IDS}.npy" in arrays.namelist():
                self.id_field = NPZ_IDS
            if self.id_field is not None:
                ids = self._header(arrays, self.id_field)
                if ids[0] != (N,) or ids[1].kind not in "iuU" or ids[1].itemsize > 4 * MAX_ID_CHARS:
                    raise CorpusError(
                        f"{self.path}: {self.id_field} is {ids[1]} {ids[0]}; expected int or "
                        f"str of at most {MAX_ID_CHARS:,} characters ({N},), each row's key"
                    )
                self.key_name = self.id_field
        self.total, self._shape = N, (N, T, F)

    def where(self, position: int | None = None) -> str:
        """The file, or one of its rows, for messages ("in.npz row 3")."""
        return str(self.path) if position is None else f"{self.path} row {position}"

    def __iter__(self) -> Iterator[Chunk]:
        return self._parquet_chunks() if self.fmt == "parquet" else self._npz_chunks()

    @contextlib.contextmanager
    def _npz(self):
        try:
            with zipfile.ZipFile(self.path) as arrays:
                yield arrays
        except CorpusError:
            raise
        except (zipfile.BadZipFile, EOFError, ValueError) as e:  # a damaged or other file
            raise CorpusError(f"{self.path}: not an .npz file numpy can read: {e}") from None

    def _header(self, arrays, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of the array `name`, from its .npy header alone."""
        member = f"{name}.npy"
        if member not in arrays.namelist():
            have = sorted(n[:-4] for n in arrays.namelist() if n.endswith(".npy"))
            raise CorpusError(
                f"{self.path}: no array {name!r} (it has {', '.join(have) or 'none'}); "
                "expected x (N, T, F) and lengths (N,)"
            )
        with arrays.open(member) as f:
            return read_npy_header(f, f"{self.path}: {name}")

    def _rows(self, arrays, name: str, rows: int) -> Iterator[np.ndarray]:
        """The array `name` `rows` rows at a time, read from its zip member."""
        with arrays.open(f"{name}.npy") as f:
            shape, dtype = read_npy_header(f, f"{self.path}: {name}")
            row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
            for start in range(0, shape[0], rows):
                n = min(rows, shape[0] - start)
                data = f.read(n * row_bytes)
                if len(data) != n * row_bytes:
                    raise CorpusError(f"{self.path}: {name} ends before its {shape[0]} rows")
                yield np.frombuffer(data, dtype=dtype).reshape((n, *shape[1:]))

    def _npz_chunks(self) -> Iterator[Chunk]:
        N, T, F = self._shape
        rows = max(1, min(CHUNK_TEXTS, CHUNK_VALUES // max(1, T * F)))
        with self._npz() as arrays:
            xs = self._rows(arrays, "x", rows)
            lengths = self._rows(arrays, "lengths", rows)
            ids = None if self.id_field is None else self._rows(arrays, self.id_field, rows)
            done = 0
            for x, n, key in zip(xs, lengths, ids or itertools.repeat(None), strict=False):
                bad = np.flatnonzero((n < 0) | (n > T))
                if bad.size:
                    raise CorpusError(
                        f"{self.where(done + int(bad[0]) + 1)}: length {int(n[bad[0]])}; "
                        f"expected 0 .. T = {T}"
                    )
                keys = list(range(done + 1, done + len(x) + 1)) if key is None else key.tolist()
                frames = [
                    np.asarray(row[:k], dtype=np.float32)
                    for row, k in zip(x, n.tolist(), strict=True)
                ]
                done += len(x)
                yield Chunk(keys, frames, done)

    def _parquet_chunks(self) -> Iterator[Chunk]:
        columns = [self.column] + ([] if self.id_field is None else [self.id_field])
        row = 0
        with self._text._arrow_errors():
            batches = self._text._parquet.iter_batches(batch_size=PARQUET_ROWS, columns=columns)
            for batch in batches:
                frames = self._parquet_frames(batch.column(self.column), row)
                if self.id_field is None:
                    keys = list(range(row + 1, row + batch.num_rows + 1))
                else:
                    keys = batch.column(self.id_field).to_pylist()
                row += batch.num_rows
                yield Chunk(keys, frames, row)

    def _parquet_frames(self, cells, row: int) -> list[np.ndarray]:
        """float32 (T, F) frames of each list cell of a batch whose first row is row + 1."""
        pa, _ = import_pyarrow()
        import pyarrow.compute as pc

        F = self.size

        def first(bad) -> str:  # the first row where bad (a bool per row) holds
            return self.where(row + int(np.argmax(bad)) + 1)

        if cells.null_count:
            bad = cells.is_null().to_numpy(zero_copy_only=False)
            raise CorpusError(f"{first(bad)}: the frames {self.column!r} are null; expected a list")
        counts = pc.list_value_length(cells).to_numpy(zero_copy_only=False).astype(np.int64)
        values = cells.flatten()
        nested = _is_list(values.type)
        if nested:  # a list of frames: each frame a list of F values
            rows_of = np.repeat(np.arange(len(counts)), counts)  # the row of each frame
            if values.null_count:
                bad = np.zeros(len(counts), bool)
                bad[rows_of[values.is_null().to_numpy(zero_copy_only=False)]] = True
                raise CorpusError(f"{first(bad)}: a frame is null; expected lists of {F} numbers")
            sizes = pc.list_value_length(values).to_numpy(zero_copy_only=False)
            if (sizes != F).any():
                k = int(np.argmax(sizes != F))
                start = int(np.concatenate([[0], np.cumsum(counts)])[rows_of[k]])
                raise CorpusError(
                    f"{self.where(row + int(rows_of[k]) + 1)}: frame {k - start} has "
                    f"{int(sizes[k])} values; this model reads F = {F}"
                )
            values = values.flatten()
        else:  # one flat list of T * F values
            if (counts % F).any():
                bad = counts % F != 0
                raise CorpusError(
                    f"{first(bad)}: {int(counts[bad][0])} values is not a whole number of "
                    f"frames of F = {F} (a flat list holds T * F values, frame after frame)"
                )
            counts = counts // F
        if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
            raise CorpusError(f"{first(counts >= 0)}: frames of {values.type}; expected numbers")
        if values.null_count:
            bad = np.zeros(len(counts), bool)
            at = np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0] // F
            bad[np.searchsorted(np.cumsum(counts), at, side="right")] = True
            raise CorpusError(f"{first(bad)}: a frame value is null; expected numbers")
        if (counts * F > MAX_SEQUENCE_VALUES).any():
            bad = counts * F > MAX_SEQUENCE_VALUES
            raise CorpusError(
                f"{first(bad)}: {int(counts[bad][0]) * F:,} values; expected at most "
                f"{MAX_SEQUENCE_VALUES:,} a sequence (split it)"
            )
        frames = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, F)
        return np.split(frames, np.cumsum(counts)[:-1])


def read_npy_header(f, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an .npy stream, read from its header; refuses pickled objects
    and Fortran order (rows could not be read one after the other)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        shape, fortran, dtype = (
            fmt.read_array_header_1_0(f) if version == (1, 0) else fmt.read_array_header_2_0(f)
        )
    except ValueError as e:
        raise CorpusError(f"{what}: not an .npy array numpy can read: {e}") from None
    if dtype.hasobject or fortran or dtype.kind not in "biufU":
        raise CorpusError(f"{what}: an array of {dtype}; expected numbers or strings in C order")
    return tuple(shape), dtype
