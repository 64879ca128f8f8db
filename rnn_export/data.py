"""Datasets for the classifiers: the embedded default task, folder datasets, the vocabulary.

A dataset is described by a small dict (the same one every checkpoint stores), enough
to rebuild its splits exactly:
    {"source": "embedded" | "folder", "path": str | None, "seed": int, "val_fraction": float}
and for "embedded" optionally "size" (number of samples, EMBEDDED_SIZE when absent).
A sample is (text, label_id); label ids index the dataset's sorted labels.

Every size and number read from a spec or a folder is bounded and checked before the
data is used (check_spec, read_folder):
    seed 0 .. 2**32 - 1; val_fraction in [0, 1); size (embedded) 8 .. 1,000,000;
    path (folder) a string of 1 .. 4,096 characters without NUL;
    a folder: 2 .. 10,000 class files of at most 256 MiB each, 200,000 samples in all,
    each sample 1 .. 1,000 characters; a label (file stem) must be valid UTF-8 text.
A vocabulary has at most 65,536 tokens, each one character that UTF-8 can encode, but for
the unknown token (its name, at unk_id; a vocabulary may have none).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rnn_export.config import (
    MAX_LABEL_CHARS,
    MAX_LABELS,
    MAX_SEED,
    MAX_VOCAB_SIZE,
    check_int,
    check_text,
)
from rnn_export.errors import InputError, decode_utf8

if TYPE_CHECKING:  # torch is imported where a batch is made: reading data needs numpy at most
    import torch

UNK = "<unk>"
DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = 0.2

# The embedded task: strings of noise letters with a few marker letters scattered
# through them; the label is the marker that occurs most often. No window of the last
# few characters decides it, so the model must count along the whole string, and its
# prediction changes as the leading marker changes while characters stream in.
EMBEDDED_MARKERS = ("A", "B", "C", "D")
EMBEDDED_NOISE = "abcdefghijklmnopqrstuvwxyz"
EMBEDDED_SIZE = 16000
EMBEDDED_LENGTHS = (12, 32)  # inclusive range of string lengths
EMBEDDED_MARKER_COUNTS = (3, 9)  # inclusive range of marker occurrences per string
MAX_EMBEDDED_SIZE = 1_000_000
MAX_PATH_CHARS = 4_096
MAX_CLASS_FILE_BYTES = 256 * 1024 * 1024
MAX_SAMPLES = 200_000
MAX_SAMPLE_CHARS = 1_000
SOURCES = ("embedded", "folder")


class DataError(InputError):
    """A dataset that cannot be read: the message names the file (and line) at fault."""


@dataclass(frozen=True)
class Vocabulary:
    """Single-character tokens, a token's id is its index, and (usually) an unknown token.

    Args:
        tokens: distinct single characters, except tokens[unk_id]: the unknown token's
            name ("<unk>" in the vocabularies training builds, at id 0).
        unk_id: the id of characters outside the vocabulary; None: there is none, and
            such characters cannot be encoded (an imported model's plain-list vocabulary).
        unicode, lowercase: the text contract (rnn_runtime.text): "strip_marks" takes
            accents off (NFD, combining marks removed) and lowercase lower-cases, before
            characters are looked up, in training and in every runtime alike.
    """

    tokens: tuple[str, ...]
    unk_id: int | None = 0
    unicode: str = "keep"
    lowercase: bool = False

    def __post_init__(self) -> None:
        from rnn_runtime.text import UNICODE_FORMS

        object.__setattr__(self, "tokens", tuple(self.tokens))
        if self.unicode not in UNICODE_FORMS:
            raise DataError(
                f"a vocabulary's unicode form is one of {UNICODE_FORMS}; got {self.unicode!r:.40}"
            )
        if not isinstance(self.lowercase, bool):
            raise DataError(
                f"a vocabulary's lowercase is true or false; got {self.lowercase!r:.40}"
            )
        if len(self.tokens) > MAX_VOCAB_SIZE:
            raise DataError(
                f"a vocabulary has at most {MAX_VOCAB_SIZE:,} tokens; got {len(self.tokens):,}"
            )
        unk = self.unk_id
        if unk is not None:
            high = len(self.tokens) - 1
            if isinstance(unk, bool) or not isinstance(unk, int) or not 0 <= unk <= high:
                raise DataError(
                    f"vocabulary unk_id must be an integer in 0 .. {high} (an index of its "
                    f"{len(self.tokens)} tokens) or null; got {unk!r:.40}"
                )
            check_text("unknown token's name", self.tokens[unk], MAX_LABEL_CHARS, DataError)
        chars = tuple(t for i, t in enumerate(self.tokens) if i != unk)
        if not chars:
            raise DataError("a vocabulary needs at least one character token; got none")
        for token in chars:
            check_text("vocabulary token", token, 1, DataError)
        if len(set(chars)) != len(chars):
            dup = sorted(t for t, n in Counter(chars).items() if n > 1)
            raise DataError(f"vocabulary tokens must be distinct; repeated: {dup[:5]}")
        ids = {t: i for i, t in enumerate(self.tokens) if i != unk}
        object.__setattr__(self, "_ids", ids)

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, texts) -> Vocabulary:
        """The vocabulary of every character in texts, sorted, after "<unk>"."""
        return cls((UNK, *sorted({c for text in texts for c in text})))

    @property
    def text_contract(self) -> tuple[str, bool]:
        """(unicode, lowercase): how text is prepared before its characters are looked up
        (rnn_runtime.text)."""
        return (self.unicode, self.lowercase)

    def encode(self, text: str) -> list[int]:
        """Token ids of text's characters, after the text contract; characters never seen
        map to unk_id.

        Raises:
            DataError: a character outside a vocabulary without an unknown token.
        """
        if self.text_contract != ("keep", False):
            from rnn_runtime.text import prepare

            text = prepare(text, self.unicode, self.lowercase)
        if self.unk_id is None:
            missing = next((i for i, c in enumerate(text) if c not in self._ids), None)
            if missing is not None:
                raise DataError(
                    f"character {text[missing]!r} at position {missing} of {text!r:.60} is not "
                    "in the vocabulary, which has no unknown token"
                )
        return [self._ids.get(c, self.unk_id) for c in text]

    def to_dict(self) -> dict:
        """The vocabulary as JSON values; the text contract only when it changes text (so
        a vocabulary without one keeps its dict, and a model its identity)."""
        d = {"tokens": list(self.tokens), "unk_id": self.unk_id}
        if self.text_contract != ("keep", False):
            d["text"] = {"unicode": self.unicode, "lowercase": self.lowercase}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        if not isinstance(d, dict) or not isinstance(d.get("tokens"), list):
            raise DataError(f"a vocabulary is a JSON object with a 'tokens' list; got {d!r:.80}")
        unknown = d.keys() - {"tokens", "unk_id", "text"}
        if unknown:
            raise DataError(
                f"a vocabulary has the keys tokens, unk_id, text; got also {sorted(unknown)}"
            )
        text = d.get("text", {})
        if not isinstance(text, dict) or not set(text) <= {"unicode", "lowercase"}:
            raise DataError(
                f'a vocabulary\'s text is {{"unicode": ..., "lowercase": ...}}; got {text!r:.80}'
            )
        return cls(tuple(d["tokens"]), d.get("unk_id", 0), **text)


@dataclass(frozen=True)
class Dataset:
    """Labelled splits of one dataset.

    Args:
        labels: class names, index = label id.
        train, val: lists of (text, label_id).
        spec: the dict that rebuilds this dataset (see the module docstring).
    """

    labels: tuple[str, ...]
    train: list
    val: list
    spec: dict


def embedded_spec(
    seed: int = DEFAULT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    size: int = EMBEDDED_SIZE,
) -> dict:
    """The spec of the embedded task; a smaller size makes quick test datasets."""
    return {
        "source": "embedded",
        "path": None,
        "seed": seed,
        "val_fraction": val_fraction,
        "size": size,
    }


def check_spec(data) -> dict:
    """The data spec (see the module docstring), if every value is of its type and bounds.

    Raises:
        DataError: the spec is not an object, names an unknown source, or holds a value
            out of its bounds; the message names the key.
    """
    if not isinstance(data, dict):
        raise DataError(f"a data spec is a JSON object; got {type(data).__name__}")
    source = data.get("source")
    if source not in SOURCES:
        raise DataError(f"data source must be one of {SOURCES}; got {source!r:.80}")
    check_int("data seed", data.get("seed", DEFAULT_SEED), 0, MAX_SEED, DataError)
    fraction = data.get("val_fraction", DEFAULT_VAL_FRACTION)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool):
        raise DataError(f"data val_fraction must be a number; got {fraction!r:.40}")
    if not 0.0 <= fraction < 1.0:  # NaN fails this too
        raise DataError(f"val_fraction must be in [0, 1); got {fraction}")
    if source == "embedded":
        low = 2 * len(EMBEDDED_MARKERS)
        check_int(
            "the embedded task's size",
            data.get("size", EMBEDDED_SIZE),
            low,
            MAX_EMBEDDED_SIZE,
            DataError,
        )
    else:
        path = data.get("path")
        if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\0" in path:
            raise DataError(
                f"a folder dataset needs a 'path': a string of 1 to {MAX_PATH_CHARS:,} "
                f"characters without NUL; got {path!r:.80}"
            )
    return data


def folder_spec(
    path: str | Path, seed: int = DEFAULT_SEED, val_fraction: float = DEFAULT_VAL_FRACTION
) -> dict:
    return {
        "source": "folder",
        "path": str(Path(path).resolve()),
        "seed": seed,
        "val_fraction": val_fraction,
    }


def embedded_dataset(seed: int = DEFAULT_SEED, size: int = EMBEDDED_SIZE) -> dict[str, list[str]]:
    """The default task, generated from seed alone: {label: [text, ...]}.

    Each text has EMBEDDED_LENGTHS characters; EMBEDDED_MARKER_COUNTS of them are
    marker letters (A-D) and the rest lowercase noise. The label is the marker that
    occurs most often, and it always wins strictly (no ties).
    """
    check_spec(embedded_spec(seed, size=size))
    rng = random.Random(f"rnn-export-embedded:{seed}")
    samples: dict[str, list[str]] = {m: [] for m in EMBEDDED_MARKERS}
    per_class = size // len(EMBEDDED_MARKERS)
    for winner in EMBEDDED_MARKERS:
        while len(samples[winner]) < per_class:
            length = rng.randint(*EMBEDDED_LENGTHS)
            n_markers = rng.randint(*EMBEDDED_MARKER_COUNTS)
            markers = [rng.choice(EMBEDDED_MARKERS) for _ in range(n_markers)]
            counts = Counter(markers).most_common()
            if counts[0][0] != winner or (len(counts) > 1 and counts[1][1] == counts[0][1]):
                continue
            chars = markers + [rng.choice(EMBEDDED_NOISE) for _ in range(length - n_markers)]
            rng.shuffle(chars)
            samples[winner].append("".join(chars))
    return samples


def read_folder(path: str | Path) -> dict[str, list[str]]:
    """A folder dataset: one UTF-8 `*.txt` file per class, label = file stem, one sample a line.

    Leading and trailing white space is stripped from each line; blank lines are ignored.

    Raises:
        DataError: a missing or empty folder, an empty class file, a file that is not
            UTF-8 (naming the line and byte), fewer than two classes.
    """
    folder = Path(path)
    expected = "expected a folder with one .txt file per class"
    if folder.is_file():
        hint = (
            f" (one class's file? pass the folder that holds it, {folder.parent})"
            if folder.suffix == ".txt"
            else ""
        )
        raise DataError(f"{folder}: {expected}; it is a file{hint}")
    if not folder.is_dir():
        kind = "not found" if not folder.exists() else "it is not a folder"
        raise DataError(f"{folder}: {expected}; {kind}")
    files = sorted(p for p in folder.glob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{folder}: {expected}; the folder has none")
    if len(files) > MAX_LABELS:
        raise DataError(
            f"{folder}: at most {MAX_LABELS:,} classes (.txt files); got {len(files):,}"
        )
    samples: dict[str, list[str]] = {}
    total = 0
    for file in files:
        try:
            label = check_text("label (file name)", file.stem, MAX_LABEL_CHARS, DataError)
        except DataError as e:
            raise DataError(f"{file}: {e}") from None
        size = file.stat().st_size
        if size > MAX_CLASS_FILE_BYTES:
            raise DataError(
                f"{file}: {size:,} bytes; a class file holds at most {MAX_CLASS_FILE_BYTES:,}"
            )
        text = decode_utf8(file.read_bytes(), file, DataError)
        lines = [s.strip() for s in text.splitlines()]
        long = next((i for i, s in enumerate(lines) if len(s) > MAX_SAMPLE_CHARS), None)
        if long is not None:
            raise DataError(
                f"{file}:{long + 1}: a sample has at most {MAX_SAMPLE_CHARS:,} characters; "
                f"this line has {len(lines[long]):,}"
            )
        lines = [s for s in lines if s]
        if not lines:
            raise DataError(f"{file}: expected at least one sample (non-blank line); file is empty")
        total += len(lines)
        if total > MAX_SAMPLES:
            raise DataError(f"{folder}: at most {MAX_SAMPLES:,} samples in all; {file} passes it")
        samples[label] = lines
    if len(samples) < 2:
        raise DataError(
            f"{folder}: a classifier needs at least 2 classes (.txt files); got {len(samples)}: "
            f"{', '.join(f.name for f in files)}"
        )
    return samples


def split(
    samples: dict[str, list[str]], seed: int, val_fraction: float
) -> tuple[tuple[str, ...], list, list]:
    """A deterministic stratified split: (labels, train, val), each class shuffled by seed.

    Each class gives round(n * val_fraction) samples to val, but always keeps one for train.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1); got {val_fraction}")
    labels = tuple(sorted(samples))
    train, val = [], []
    for label_id, label in enumerate(labels):
        texts = list(samples[label])
        random.Random(f"rnn-export-split:{seed}:{label}").shuffle(texts)
        n_val = min(round(len(texts) * val_fraction), len(texts) - 1)
        val += [(t, label_id) for t in texts[:n_val]]
        train += [(t, label_id) for t in texts[n_val:]]
    return labels, train, val


def load_dataset(data: dict) -> Dataset:
    """The dataset a spec dict describes (see the module docstring), split deterministically."""
    check_spec(data)
    seed = data.get("seed", DEFAULT_SEED)
    val_fraction = data.get("val_fraction", DEFAULT_VAL_FRACTION)
    if data["source"] == "embedded":
        samples = embedded_dataset(seed, data.get("size", EMBEDDED_SIZE))
    else:
        samples = read_folder(data["path"])
    labels, train, val = split(samples, seed, val_fraction)
    return Dataset(labels, train, val, dict(data))


def load_splits(data: dict) -> tuple[list, list]:
    """(train, val): lists of (text, label_id) for a spec dict such as Checkpoint.data."""
    dataset = load_dataset(data)
    return dataset.train, dataset.val


def encode_batch(texts, vocab: Vocabulary) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode texts into one padded batch.

    Args:
        texts: B non-empty strings.
        vocab: maps characters to ids (unknown -> 0).

    Returns:
        tokens: int64 (B, T), T = the longest text, padded with 0 (masked by lengths).
        lengths: int64 (B), each text's length.
    """
    import torch

    texts = list(texts)
    if not texts:
        raise DataError("encode_batch needs at least one text; got none")
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise DataError(f"texts must be non-empty; texts at positions {empty[:5]} are empty")
    lengths = torch.tensor([len(t) for t in texts], dtype=torch.int64)  # (B,)
    tokens = torch.zeros(len(texts), int(lengths.max()), dtype=torch.int64)  # (B, T)
    for i, text in enumerate(texts):
        tokens[i, : len(text)] = torch.tensor(vocab.encode(text), dtype=torch.int64)
    return tokens, lengths
