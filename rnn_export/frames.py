"""Datasets of float frames: variable-length sequences of F float32 values per step.

Three sources, each described by a spec dict that every checkpoint stores, enough to
rebuild the splits exactly:
    {"source": "frames-embedded", "seed": int, "val_fraction": float, "size": int,
     "features": int}
    {"source": "npz" | "ts", "path": str, "test_path": str | None, "seed": int,
     "val_fraction": float}

- `.npz` (numpy.savez or savez_compressed, no pickled objects):
      x            float (N, T, F): the frames, zero past each row's length (float16/32/64;
                   read as float32, every value finite)
      lengths      int (N,): each row's steps, 1 .. T
      labels       int (N,): each row's class id, 0 .. C - 1
      label_names  str (C,): the class names, id = index (2 .. 10,000 distinct names)
      y            per-step targets (N, T) or (N, T, C), reserved for a per-step head:
                   read and checked, then refused (a classifier trains on labels)
  No other key. The test split is a second file of the same layout with the same
  label_names (found as NAME_TEST.npz beside NAME_TRAIN.npz, or given).
- `.ts`: the UEA/UCR time-series classification format (rnn_export.tsfile); class ids
  follow the order of the file's `@classLabel` line. The test split is the matching
  `_TEST.ts` beside a `_TRAIN.ts` file, or given.
- the embedded task (embedded_frames): generated from the seed, no download.

The train file is split into train and validation (stratified, seeded, as
rnn_export.data.split); the test file is held out for evaluation. The normalization
statistics (normalization) come from the train split alone.

Every size read from a file is bounded before its data is allocated: N at most
MAX_SEQUENCES, T at most MAX_STEPS, F at most MAX_FEATURES, N * T * F at most
MAX_FRAME_VALUES, a file at most MAX_NPZ_BYTES (.npz) or MAX_TS_FILE_BYTES (.ts).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnn_export.config import MAX_LABEL_CHARS, MAX_LABELS, MAX_SEED, check_int
from rnn_export.data import (
    DEFAULT_SEED,
    MAX_PATH_CHARS,
    DataError,
    check_spec,
    split,
)
from rnn_export.errors import decode_utf8
from rnn_export.tsfile import check_class_names, parse_ts

FRAME_SOURCES = ("frames-embedded", "npz", "ts")
MAX_SEQUENCES = 200_000
MAX_STEPS = 100_000
MAX_FEATURES = 4_096
MAX_FRAME_VALUES = 2**28  # 1 GiB of float32 frames
MAX_NPZ_BYTES = 2 * 1024**3
MAX_TS_FILE_BYTES = 1024**3
NPZ_KEYS = ("x", "lengths", "labels", "label_names", "y")
# A feature whose spread is below this is constant in the training split: its scale stays
# 1 so that normalizing never divides by (almost) zero.
MIN_SCALE = 1e-6

# The embedded task: F noisy features per frame, each with its own offset and spread (so
# normalization matters), and two kinds of event, a short bump on the first half of the
# features (A) or on the second half (B). The class is the order of a sequence's two
# events: A then B, B then A, A twice, B twice. A-then-B and B-then-A hold the same frames
# in another order, so only a model that remembers what came before tells them apart.
EMBEDDED_FRAME_CLASSES = ("A-then-B", "B-then-A", "A-twice", "B-twice")
EMBEDDED_FRAME_EVENTS = {"A-then-B": "AB", "B-then-A": "BA", "A-twice": "AA", "B-twice": "BB"}
EMBEDDED_FRAME_SIZE = 500
EMBEDDED_FRAME_FEATURES = 12
EMBEDDED_FRAME_LENGTHS = (16, 40)  # inclusive range of sequence lengths
EMBEDDED_EVENT_STEPS = 3
EMBEDDED_EVENT_HEIGHT = 2.0  # in units of the feature's noise


# Training defaults of a features model (`rnn-export train --input features`), where they
# differ from a text model's: frame data sets are small (hundreds of sequences), so a
# smaller H, smaller batches, a higher learning rate and many more passes. Measured on
# JapaneseVowels and BasicMotions (docs/commands.md).
FEATURE_DEFAULTS = {"hidden_size": 64, "batch_size": 8, "lr": 1e-2, "epochs": 100}
# The validation split only reports progress (the test file is held out for the accuracy),
# so a small data set keeps 90% of its train file for training.
FRAMES_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class FrameSplit:
    """Padded frames of one split.

    Args:
        x: float32 (N, T, F), zero past each row's length.
        lengths: int64 (N,), 1 .. T.
        labels: int64 (N,), class ids.
    """

    x: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index) -> FrameSplit:
        """The rows at index, trimmed to their longest length."""
        lengths = self.lengths[index]
        steps = int(lengths.max()) if len(lengths) else 0
        return FrameSplit(self.x[index, :steps], lengths, self.labels[index])


@dataclass(frozen=True)
class FrameDataset:
    """Labelled splits of one frame dataset.

    Args:
        labels: class names, index = class id.
        features: F, values per frame.
        train, val: the train file split by spec["val_fraction"].
        test: the held-out test file; None when there is none (the embedded task's test
            split is generated from the seed, so it is never None there).
        spec: the dict that rebuilds this dataset (see the module docstring).
    """

    labels: tuple[str, ...]
    features: int
    train: FrameSplit
    val: FrameSplit
    test: FrameSplit | None
    spec: dict


def frames_embedded_spec(
    seed: int = DEFAULT_SEED,
    val_fraction: float = FRAMES_VAL_FRACTION,
    size: int = EMBEDDED_FRAME_SIZE,
    features: int = EMBEDDED_FRAME_FEATURES,
) -> dict:
    """The spec of the embedded float-frame task; a smaller size makes quick tests."""
    return {
        "source": "frames-embedded",
        "path": None,
        "seed": seed,
        "val_fraction": val_fraction,
        "size": size,
        "features": features,
    }


def frames_file_spec(
    path: str | Path,
    test_path: str | Path | None = None,
    seed: int = DEFAULT_SEED,
    val_fraction: float = FRAMES_VAL_FRACTION,
) -> dict:
    """The spec of a .npz or .ts train file; its test file is test_path or found beside it.

    Raises:
        DataError: path's suffix is neither .npz nor .ts, or test_path's differs from it.
    """
    path = Path(path)
    source = path.suffix.lower().lstrip(".")
    if source not in ("npz", "ts"):
        raise DataError(
            f"{path}: expected a .npz or .ts file of float frames; got {path.suffix or 'no suffix'}"
        )
    if test_path is None:
        test_path = find_test_file(path)
    elif Path(test_path).suffix.lower() != path.suffix.lower():
        raise DataError(f"{test_path}: the test file must be a {path.suffix} file like {path.name}")
    return {
        "source": source,
        "path": str(path.resolve()),
        "test_path": None if test_path is None else str(Path(test_path).resolve()),
        "seed": seed,
        "val_fraction": val_fraction,
    }


def find_test_file(path: Path) -> Path | None:
    """NAME_TEST.SUFFIX beside NAME_TRAIN.SUFFIX (the UEA/UCR convention), if it exists."""
    stem = path.stem
    if not stem.upper().endswith("_TRAIN"):
        return None
    test = path.with_name(
        stem[: -len("TRAIN")] + ("TEST" if stem[-5:].isupper() else "test") + path.suffix
    )
    return test if test.is_file() else None


def check_frames_spec(data) -> dict:
    """The frame data spec, if every value is of its type and bounds; else DataError naming it."""
    if not isinstance(data, dict):
        raise DataError(f"a data spec is a JSON object; got {type(data).__name__}")
    source = data.get("source")
    if source not in FRAME_SOURCES:
        raise DataError(f"frame data source must be one of {FRAME_SOURCES}; got {source!r:.80}")
    check_int("data seed", data.get("seed", DEFAULT_SEED), 0, MAX_SEED, DataError)
    fraction = data.get("val_fraction", FRAMES_VAL_FRACTION)
    if (
        not isinstance(fraction, (int, float))
        or isinstance(fraction, bool)
        or not 0.0 <= fraction < 1.0
    ):
        raise DataError(f"data val_fraction must be a number in [0, 1); got {fraction!r:.40}")
    if source == "frames-embedded":
        low = 2 * len(EMBEDDED_FRAME_CLASSES)
        check_int(
            "the embedded frame task's size",
            data.get("size", EMBEDDED_FRAME_SIZE),
            low,
            MAX_SEQUENCES,
            DataError,
        )
        check_int(
            "the embedded frame task's features",
            data.get("features", EMBEDDED_FRAME_FEATURES),
            2,
            MAX_FEATURES,
            DataError,
        )
        return data
    for key in ("path", "test_path"):
        path = data.get(key)
        if path is None and key == "test_path":
            continue
        if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\0" in path:
            raise DataError(
                f"a {source} dataset's {key!r} is a string of 1 to {MAX_PATH_CHARS:,} characters "
                f"without NUL; got {path!r:.80}"
            )
    return data


def is_frames_spec(data) -> bool:
    """Whether a data spec describes float frames (rather than texts)."""
    return isinstance(data, dict) and data.get("source") in FRAME_SOURCES


def check_data_spec(data) -> dict:
    """Any data spec a checkpoint may hold: of texts (rnn_export.data) or of float frames.

    Raises:
        DataError: a spec of neither kind, or a value out of its bounds.
    """
    return check_frames_spec(data) if is_frames_spec(data) else check_spec(data)


def load_frames(data: dict) -> FrameDataset:
    """The frame dataset a spec describes (see the module docstring), split deterministically.

    Raises:
        DataError: a bad spec, or a file that cannot be read (the message names it).
    """
    check_frames_spec(data)
    seed = data.get("seed", DEFAULT_SEED)
    val_fraction = data.get("val_fraction", FRAMES_VAL_FRACTION)
    if data["source"] == "frames-embedded":
        size, features = (
            data.get("size", EMBEDDED_FRAME_SIZE),
            data.get("features", EMBEDDED_FRAME_FEATURES),
        )
        labels, full = embedded_frames(seed, size, features)
        # The test split: the same task drawn from a seed of its own.
        test = embedded_frames(seed, size, features, part="test")[1]
    else:
        labels, full = read_frames(data["path"])
        test = None
        if data.get("test_path") is not None:
            test_labels, test = read_frames(data["test_path"])
            test = _relabel(test, test_labels, labels, data["test_path"])
        if test is not None and test.x.shape[2] != full.x.shape[2]:
            raise DataError(
                f"{data['test_path']}: frames of {test.x.shape[2]} features; the train file "
                f"{data['path']} has {full.x.shape[2]}"
            )
    by_class = {c: np.flatnonzero(full.labels == c).tolist() for c in range(len(labels))}
    _, train, val = split({c: rows for c, rows in by_class.items() if rows}, seed, val_fraction)
    train_rows = np.array([row for row, _ in train], dtype=np.int64)
    val_rows = np.array([row for row, _ in val], dtype=np.int64)
    return FrameDataset(
        labels, full.x.shape[2], full.take(train_rows), full.take(val_rows), test, dict(data)
    )


def read_frames(path: str | Path) -> tuple[tuple[str, ...], FrameSplit]:
    """The class names and padded frames of one .npz or .ts file (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return read_npz(path)
    if path.suffix.lower() == ".ts":
        _check_file(path, MAX_TS_FILE_BYTES)
        text = decode_utf8(path.read_bytes(), path, DataError)
        cases, names, classes = parse_ts(text, path, MAX_SEQUENCES, MAX_STEPS, MAX_FEATURES)
        index = {name: i for i, name in enumerate(classes)}
        return classes, pad_frames(cases, [index[n] for n in names], path)
    raise DataError(
        f"{path}: expected a .npz or .ts file of float frames; got {path.suffix or 'no suffix'}"
    )


def _check_file(path: Path, max_bytes: int) -> None:
    if not path.is_file():
        kind = "not found" if not path.exists() else "it is not a file"
        raise DataError(f"{path}: expected a {path.suffix} file of float frames; {kind}")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"{path}: {size:,} bytes; a {path.suffix} file holds at most {max_bytes:,}")


def pad_frames(cases, labels, where) -> FrameSplit:
    """One padded FrameSplit from (T_i, F) arrays; values must fit in float32."""
    lengths = np.array([len(c) for c in cases], dtype=np.int64)
    features = cases[0].shape[1]
    _check_size(where, len(cases), int(lengths.max()), features)
    x = np.zeros((len(cases), int(lengths.max()), features), dtype=np.float32)
    for row, case in enumerate(cases):
        x[row, : len(case)] = case
    _check_finite(where, x)
    return FrameSplit(x, lengths, np.asarray(labels, dtype=np.int64))


def read_npz(path: str | Path) -> tuple[tuple[str, ...], FrameSplit]:
    """The class names and frames of a .npz file (layout in the module docstring).

    Each array's header (dtype and shape) is checked before its data is read; pickled
    objects are never loaded.

    Raises:
        DataError: a file that is missing, too large, not a .npz archive, or whose arrays
            are missing, of the wrong dtype or shape, not finite or out of range.
    """
    path = Path(path)
    _check_file(path, MAX_NPZ_BYTES)
    try:
        with zipfile.ZipFile(path) as archive:
            headers = _npz_headers(path, archive)
            arrays = {key: _npz_array(path, archive, key, *headers[key]) for key in headers}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: expected a .npz archive (numpy.savez); {e}") from None
    return _check_npz(path, arrays)


def _npz_headers(path: Path, archive: zipfile.ZipFile) -> dict:
    """{key: (member, dtype, shape)} of every array, checked against the layout."""
    members = {name.removesuffix(".npy"): name for name in archive.namelist()}
    unknown = sorted(members.keys() - set(NPZ_KEYS))
    if unknown:
        raise DataError(
            f"{path}: a frames .npz holds only the arrays {', '.join(NPZ_KEYS)}; got also "
            f"{unknown[:5]}"
        )
    missing = [key for key in ("x", "lengths", "label_names") if key not in members]
    if "labels" not in members and "y" not in members:
        missing.append("labels")
    if missing:
        raise DataError(
            f"{path}: a frames .npz needs the arrays {', '.join(missing)}; they are missing"
        )
    headers = {}
    for key, member in members.items():
        with archive.open(member) as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(f)
            except ValueError as e:
                raise DataError(f"{path}: array {key!r} is not a .npy array ({e})") from None
        headers[key] = (member, dtype, shape)
    x_dtype, x_shape = headers["x"][1:]
    if x_dtype.kind != "f" or len(x_shape) != 3:
        raise DataError(f"{path}: x must be a float array (N, T, F); got {x_dtype} {x_shape}")
    n, steps, features = x_shape
    _check_size(path, n, steps, features)
    expected = {
        "lengths": ("i", (n,), "an integer array (N,)"),
        "labels": ("i", (n,), "an integer array (N,)"),
        "label_names": ("U", None, "a string array (C,)"),
    }
    for key, (kind, shape, what) in expected.items():
        if key not in headers:
            continue
        dtype, got = headers[key][1:]
        ok_kind = dtype.kind == kind or (kind == "i" and dtype.kind == "u")
        if not ok_kind or (shape is not None and got != shape) or (shape is None and len(got) != 1):
            raise DataError(f"{path}: {key} must be {what} with N = {n}; got {dtype} {got}")
    if "y" in headers:
        dtype, got = headers["y"][1:]
        if dtype.kind not in "iuf" or got[:2] != (n, steps) or len(got) not in (2, 3):
            raise DataError(
                f"{path}: y (per-step targets) must be numbers (N, T) or (N, T, C) with N = {n}, "
                f"T = {steps}; got {dtype} {got}"
            )
        if len(got) == 3 and got[2] > MAX_LABELS:
            raise DataError(
                f"{path}: y has at most {MAX_LABELS:,} targets per step; got {got[2]:,}"
            )
    if (
        headers["label_names"][2][0] > MAX_LABELS
        or headers["label_names"][1].itemsize > 4 * MAX_LABEL_CHARS
    ):
        raise DataError(
            f"{path}: label_names holds at most {MAX_LABELS:,} names of {MAX_LABEL_CHARS} "
            "characters"
        )
    return headers


def _npz_array(
    path: Path, archive: zipfile.ZipFile, key: str, member: str, dtype, shape
) -> np.ndarray:
    with archive.open(member) as f:
        array = np.lib.format.read_array(f, allow_pickle=False)
    if array.shape != shape:
        raise DataError(f"{path}: array {key!r} is cut short: its header says {shape}")
    return array


def _check_npz(path: Path, arrays: dict) -> tuple[tuple[str, ...], FrameSplit]:
    if "y" in arrays:
        raise DataError(
            f"{path}: holds per-step targets y {arrays['y'].shape}; this classifier trains on one "
            "label per sequence (the labels array): save the file without y"
        )
    names = tuple(str(name) for name in arrays["label_names"])
    check_class_names(path, names, "label_names")
    x, lengths, labels = arrays["x"], arrays["lengths"], arrays["labels"]
    steps = x.shape[1]
    bad = np.flatnonzero((lengths < 1) | (lengths > steps))
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{path}: lengths[{row}] must be in 1 .. T = {steps}; got {lengths[row]}")
    bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}: labels[{row}] must be a class id in 0 .. {len(names) - 1}; got {labels[row]}"
        )
    x = _as_float32(path, x)
    padding = np.arange(steps)[None, :] >= lengths[:, None]  # (N, T)
    rows = np.flatnonzero(((x != 0).any(axis=-1) & padding).any(axis=1))
    if len(rows):
        row = int(rows[0])
        raise DataError(
            f"{path}: x must be zero past each row's length; row {row} (lengths[{row}] = "
            f"{lengths[row]}) has values after it"
        )
    return names, FrameSplit(x, lengths.astype(np.int64), labels.astype(np.int64))


def _as_float32(where, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(np.float32)
    _check_finite(where, x32, x)
    return x32


def _check_finite(where, x32: np.ndarray, original: np.ndarray | None = None) -> None:
    bad = np.argwhere(~np.isfinite(x32))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        value = (x32 if original is None else original)[index]
        why = "not finite" if original is None or not np.isfinite(value) else "past float32's range"
        raise DataError(
            f"{where}: every frame value must be a finite float32; x{list(index)} = {value} "
            f"is {why}"
        )


def _check_size(where, n: int, steps: int, features: int) -> None:
    for name, value, high in (
        ("N (sequences)", n, MAX_SEQUENCES),
        ("T (steps)", steps, MAX_STEPS),
        ("F (features)", features, MAX_FEATURES),
    ):
        if not 1 <= value <= high:
            raise DataError(f"{where}: {name} must be in 1 .. {high:,}; got {value:,}")
    if n * steps * features > MAX_FRAME_VALUES:
        raise DataError(
            f"{where}: at most {MAX_FRAME_VALUES:,} frame values (N * T * F); got "
            f"{n:,} * {steps:,} * {features:,}"
        )


def _relabel(test: FrameSplit, test_labels, labels, where) -> FrameSplit:
    """test's class ids mapped to the train file's, by name."""
    index = {name: i for i, name in enumerate(labels)}
    unknown = [name for name in test_labels if name not in index]
    if unknown:
        raise DataError(
            f"{where}: class {unknown[0]!r:.60} is not a class of the train file "
            f"({list(labels)[:10]})"
        )
    mapping = np.array([index[name] for name in test_labels], dtype=np.int64)
    return FrameSplit(test.x, test.lengths, mapping[test.labels])


def normalization(train: FrameSplit) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale of the real steps of a split (padding left out).

    Returns:
        mean, scale: float32 (F,); normalized = (x - mean) / scale. A feature constant
        in the split gets scale 1.
    """
    valid = np.arange(train.x.shape[1])[None, :] < train.lengths[:, None]  # (N, T)
    frames = train.x[valid].astype(np.float64)  # (sum of lengths, F)
    mean = frames.mean(axis=0)
    std = frames.std(axis=0)
    scale = np.where(std > MIN_SCALE * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def frame_batch(split_: FrameSplit, index=None):
    """A padded torch batch of split_'s rows at index (all rows when None).

    Returns:
        x: float32 (B, T, F), T = the batch's longest row, zero past each row's length.
        lengths: int64 (B,). labels: int64 (B,).
    """
    import torch

    part = split_ if index is None else split_.take(np.asarray(index))
    return (
        torch.from_numpy(np.ascontiguousarray(part.x)),
        torch.from_numpy(part.lengths),
        torch.from_numpy(part.labels),
    )


def embedded_frames(
    seed: int = DEFAULT_SEED,
    size: int = EMBEDDED_FRAME_SIZE,
    features: int = EMBEDDED_FRAME_FEATURES,
    part: str = "train",
) -> tuple[tuple[str, ...], FrameSplit]:
    """The embedded float-frame task (see EMBEDDED_FRAME_CLASSES), from seed alone.

    Args:
        seed: the task's seed; the features' offsets and spreads depend on it alone, so
            the train and test parts share them.
        size: sequences, divided evenly among the classes.
        features: F; events A and B bump the first and the second half of the features.
        part: "train" or "test": the same task, sequences drawn from seeds of their own.

    Returns:
        (class names, padded frames).
    """
    check_frames_spec(frames_embedded_spec(seed, size=size, features=features))
    shape_rng = np.random.default_rng([seed, 0])
    offset = shape_rng.normal(0.0, 5.0, features)
    spread = np.exp(shape_rng.uniform(math.log(0.5), math.log(4.0), features))
    rng = np.random.default_rng([seed, 1 if part == "train" else 2])
    per_class = size // len(EMBEDDED_FRAME_CLASSES)
    half = features // 2
    cases, labels = [], []
    low, high = EMBEDDED_FRAME_LENGTHS
    for label, name in enumerate(EMBEDDED_FRAME_CLASSES):
        for _ in range(per_class):
            steps = int(rng.integers(low, high + 1))
            noise = rng.normal(0.0, 1.0, (steps, features))
            # Two events in order, neither overlapping the other nor the ends.
            gap = steps - 2 * EMBEDDED_EVENT_STEPS
            first, second = np.sort(rng.choice(gap - 1, 2, replace=False))
            for event, start in zip(
                EMBEDDED_FRAME_EVENTS[name], (first, second + EMBEDDED_EVENT_STEPS), strict=True
            ):
                cols = slice(0, half) if event == "A" else slice(half, features)
                noise[start : start + EMBEDDED_EVENT_STEPS, cols] += EMBEDDED_EVENT_HEIGHT
            cases.append(offset + spread * noise)
            labels.append(label)
    return EMBEDDED_FRAME_CLASSES, pad_frames(cases, labels, "the embedded frame task")
