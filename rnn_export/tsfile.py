"""A reader of the UEA/UCR time-series classification format (`.ts`) into padded numpy frames.

The format (as the UEA/UCR archive distributes it): `#` comment lines, then `@` tag lines
(`@problemName`, `@timeStamps`, `@missing`, `@univariate`, `@dimensions`, `@equalLength`,
`@seriesLength`, `@classLabel true L1 L2 ...`), then `@data` and one case per line: each
dimension's values comma-separated, dimensions separated by `:`, the class label last.
Tags are case-insensitive; a case's dimensions all have its length; lengths may differ
between cases unless `@equalLength true`.

Why a reader of our own and not aeon's or sktime's (both read this format): sktime
returns variable-length data only as a pandas frame of pandas Series (its numpy output
refuses unequal lengths); aeon returns numpy, but installing it moves the project's numpy
back a minor version (its numba pin) and brings numba, llvmlite, scipy, scikit-learn and
pandas for one parser, lower-cases the class labels it reads, and reads with no bound on
the sizes it allocates. The subset used here (no timestamps, class labels) is a
line-per-case text format that fits in the functions below, bounded like every other reader
of the toolkit (docs/limits.md).

Refused with a DataError that names the file and line: timestamps, regression targets,
missing values (`?`, NaN) and infinities, a case whose dimensions differ in length or in
count, a label not declared by `@classLabel`, a case past the bounds the caller gives
(rnn_export.frames: N, T, F).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnn_export.config import MAX_LABEL_CHARS, MAX_LABELS, check_text
from rnn_export.data import DataError

_BOOLEAN_TAGS = ("timestamps", "missing", "univariate", "equallength", "targetlabel")


def parse_ts(
    text: str, path: str | Path, max_sequences: int, max_steps: int, max_features: int
) -> tuple[list[np.ndarray], list[str], tuple[str, ...]]:
    """The cases of a `.ts` classification file.

    Args:
        text: the file's text.
        path: the file, named in messages.
        max_sequences, max_steps, max_features: bounds on the number of cases, on one
            case's length T and on its dimensions F.

    Returns:
        cases: one float64 array (T_i, F) per case, in file order.
        labels: each case's class label (as written).
        classes: the labels `@classLabel` declares, in its order.

    Raises:
        DataError: text not in the format, or past a bound; the message names the line.
    """
    lines = text.splitlines()
    tags, first = _read_header(path, lines)
    classes = tags["classes"]
    dims = tags.get("dimensions")
    length = tags.get("serieslength") if tags["equallength"] else None
    cases: list[np.ndarray] = []
    labels: list[str] = []
    declared = set(classes)
    for number, line in enumerate(lines[first:], start=first + 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        if len(cases) == max_sequences:
            raise DataError(f"{where}: a file holds at most {max_sequences:,} cases")
        *fields, label = line.split(":")
        label = label.strip()
        if label not in declared:
            raise DataError(
                f"{where}: class label {label!r:.60} is not one of @classLabel's "
                f"{list(classes)[:10]}"
            )
        if not fields:
            raise DataError(
                f"{where}: expected dimensions separated by ':' then the label; got no ':'"
            )
        if len(fields) > max_features:
            raise DataError(
                f"{where}: a case has at most {max_features:,} dimensions; got {len(fields):,}"
            )
        expected_dims = dims if dims is not None else (cases[0].shape[1] if cases else len(fields))
        if len(fields) != expected_dims:
            raise DataError(f"{where}: expected {expected_dims} dimensions; got {len(fields)}")
        case = _read_case(where, fields, max_steps)
        if length is not None and case.shape[0] != length:
            raise DataError(
                f"{where}: @equalLength true with length {length}; got a case of "
                f"{case.shape[0]} steps"
            )
        cases.append(case)
        labels.append(label)
    if not cases:
        raise DataError(f"{path}: expected at least one case after @data; got none")
    return cases, labels, classes


def _read_header(path: Path, lines: list[str]) -> tuple[dict, int]:
    """The tags before `@data` and the index of the line after it."""
    tags: dict = {"equallength": False, "classes": None}
    for index, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{index + 1}"
        if not line.startswith("@"):
            raise DataError(
                f"{where}: expected an @ tag line or @data before the cases; got {line!r:.60}"
            )
        name, *values = line[1:].split()
        name = name.lower()
        if name == "data":
            if tags["classes"] is None:
                raise DataError(
                    f"{where}: a classification file declares its labels before @data "
                    "(@classLabel true L1 L2 ...); this one does not"
                )
            return tags, index + 1
        if name in _BOOLEAN_TAGS:
            if len(values) != 1 or values[0].lower() not in ("true", "false"):
                raise DataError(
                    f"{where}: @{name} takes true or false; got {' '.join(values)!r:.60}"
                )
            tags[name] = values[0].lower() == "true"
            if name in ("timestamps", "targetlabel") and tags[name]:
                what = "timestamps" if name == "timestamps" else "regression targets"
                raise DataError(
                    f"{where}: expected a classification file without timestamps; this one "
                    f"has {what}"
                )
        elif name in ("dimensions", "serieslength"):
            if len(values) != 1 or not values[0].isdigit() or int(values[0]) < 1:
                raise DataError(
                    f"{where}: @{name} takes a positive integer; got {' '.join(values)!r:.60}"
                )
            tags[name] = int(values[0][:20])
        elif name == "classlabel":
            tags["classes"] = _read_classes(where, values)
    raise DataError(f"{path}: expected a header ending in @data; the file has no @data line")


def _read_classes(where: str, values: list[str]) -> tuple[str, ...]:
    if not values or values[0].lower() != "true":
        raise DataError(
            f"{where}: expected @classLabel true followed by the labels; got "
            f"{' '.join(values)!r:.60}"
        )
    return check_class_names(where, tuple(values[1:]), "@classLabel")


def check_class_names(where, names: tuple[str, ...], what: str) -> tuple[str, ...]:
    """names, if 2 .. MAX_LABELS distinct labels of at most MAX_LABEL_CHARS characters."""
    if not 2 <= len(names) <= MAX_LABELS:
        raise DataError(
            f"{where}: a classifier needs 2 .. {MAX_LABELS:,} class labels in {what}; "
            f"got {len(names):,}"
        )
    for name in names:
        check_text("class label", name, MAX_LABEL_CHARS, DataError)
    if len(set(names)) != len(names):
        raise DataError(f"{where}: {what} repeats a label: {' '.join(names)!r:.80}")
    return names


def _read_case(where: str, fields: list[str], max_steps: int) -> np.ndarray:
    """One case's (T, F) float64 frames from its dimensions' comma-separated values."""
    columns = []
    for dim, field in enumerate(fields):
        values = field.split(",")
        if len(values) > max_steps:
            raise DataError(
                f"{where}: a case has at most {max_steps:,} steps; dimension {dim} has "
                f"{len(values):,}"
            )
        try:
            column = np.array(values, dtype=np.float64)
        except ValueError:
            bad = next(v for v in values if not _is_number(v))
            raise DataError(
                f"{where}: dimension {dim}: expected numbers; got {bad.strip()!r:.40}"
            ) from None
        if not np.isfinite(column).all():
            step = int(np.flatnonzero(~np.isfinite(column))[0])
            raise DataError(
                f"{where}: dimension {dim} step {step}: expected a finite number; got "
                f"{values[step].strip()!r:.40} (missing values are not supported)"
            )
        if columns and len(column) != len(columns[0]):
            raise DataError(
                f"{where}: every dimension of a case has the same length; dimension 0 has "
                f"{len(columns[0])} values, dimension {dim} has {len(column)}"
            )
        columns.append(column)
    return np.stack(columns, axis=1)  # (T, F)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
