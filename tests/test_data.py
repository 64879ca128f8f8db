"""Datasets: the embedded task, folder datasets and their errors, splits, vocabulary, batches."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import torch

from rnn_export.data import (
    EMBEDDED_MARKERS,
    UNK,
    DataError,
    Vocabulary,
    embedded_dataset,
    embedded_spec,
    encode_batch,
    folder_spec,
    load_dataset,
    load_splits,
    read_folder,
    split,
)

SMALL = 400


def write_folder(root, files: dict[str | bytes, bytes | str]):
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (root / os.fsdecode(name)).write_bytes(data)  # a bytes name: not valid UTF-8
    return root


def test_embedded_is_deterministic_and_seeded():
    a = embedded_dataset(seed=3, size=SMALL)
    assert a == embedded_dataset(seed=3, size=SMALL)
    assert a != embedded_dataset(seed=4, size=SMALL)
    assert sorted(a) == list(EMBEDDED_MARKERS)
    assert [len(v) for v in a.values()] == [SMALL // len(EMBEDDED_MARKERS)] * 4


def test_embedded_label_is_the_strictly_most_frequent_marker():
    for label, texts in embedded_dataset(seed=0, size=SMALL).items():
        for text in texts:
            counts = Counter(c for c in text if c in EMBEDDED_MARKERS).most_common()
            assert counts[0][0] == label
            assert len(counts) == 1 or counts[1][1] < counts[0][1]


def test_embedded_label_needs_more_than_the_last_characters():
    """Guessing from the last 4 characters is right at most half the time: it needs memory."""
    right = total = 0
    for label, texts in embedded_dataset(seed=0).items():
        for text in texts:
            last = Counter(c for c in text[-4:] if c in EMBEDDED_MARKERS).most_common(1)
            right += bool(last) and last[0][0] == label
            total += 1
    assert right / total < 0.5


def test_split_is_deterministic_stratified_and_disjoint():
    spec = embedded_spec(seed=0, size=SMALL)
    train, val = load_splits(spec)
    assert (train, val) == load_splits(spec)
    assert len(train) + len(val) == SMALL
    assert Counter(y for _, y in val) == {0: 20, 1: 20, 2: 20, 3: 20}
    assert not {t for t, _ in train} & {t for t, _ in val}
    assert load_splits(embedded_spec(seed=1, size=SMALL)) != (train, val)


def test_split_keeps_one_training_sample_per_class():
    labels, train, val = split({"a": ["x"], "b": ["y", "z"]}, seed=0, val_fraction=0.5)
    assert labels == ("a", "b")
    assert Counter(y for _, y in train) == {0: 1, 1: 1}
    assert val == [(val[0][0], 1)]


def test_folder_dataset(tmp_path):
    folder = write_folder(
        tmp_path / "d",
        {"b.txt": "  bob \n\n\nbetty\r\n", "a.txt": "\ufeffann\nabe\n", "notes.md": "ignored"},
    )
    assert read_folder(folder) == {"a": ["ann", "abe"], "b": ["bob", "betty"]}
    dataset = load_dataset(folder_spec(folder, val_fraction=0.5))
    assert dataset.labels == ("a", "b")
    assert len(dataset.train) == 2 and len(dataset.val) == 2
    assert dataset.spec["path"] == str(folder.resolve())


BAD_FOLDERS = {
    "missing": ({}, r"missing-folder: expected a folder"),
    "empty": (
        {"readme.md": "x"},
        r"d: expected a folder with one \.txt file per class; the folder has none",
    ),
    "empty class": ({"a.txt": "x\n", "b.txt": "\n  \n"}, r"b\.txt: expected at least one sample"),
    "not utf-8": (
        {"a.txt": "x\n", "b.txt": b"ok\nfine\nbad\xff\n"},
        r"b\.txt:3: expected UTF-8 text; byte 11 \(0xff\)",
    ),
    "one class": ({"a.txt": "x\ny\n"}, r"d: a classifier needs at least 2 classes.*got 1: a\.txt"),
    "a line too long": (
        {"a.txt": "x\n" + "y" * 1001 + "\n", "b.txt": "z\n"},
        r"a\.txt:2: a sample has at most 1,000 characters; this line has 1,001",
    ),
    "a label that is not UTF-8": (
        {"a.txt": "x\n", b"caf\xe9.txt": "z\n"},
        r"caf.*\.txt: a label \(file name\) must be text UTF-8 can encode",
    ),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_folder_errors_name_file_and_line(tmp_path, case):
    files, match = BAD_FOLDERS[case]
    folder = (
        tmp_path / "missing-folder" if case == "missing" else write_folder(tmp_path / "d", files)
    )
    with pytest.raises(DataError, match=match):
        load_splits(folder_spec(folder))


@pytest.mark.parametrize(
    "spec,match",
    [
        (
            {"source": "web", "seed": 0},
            r"data source must be one of \('embedded', 'folder'\); got 'web'",
        ),
        ({"source": "folder", "path": None}, "needs a 'path'"),
        ({**embedded_spec(), "val_fraction": 1.0}, r"val_fraction must be in \[0, 1\); got 1.0"),
        ({**embedded_spec(), "val_fraction": float("nan")}, r"must be in \[0, 1\); got nan"),
        ({**embedded_spec(), "seed": 2**70}, r"data seed must be in 0 \.\. 4,294,967,295"),
        ({**embedded_spec(), "seed": "1"}, r"data seed must be an integer; got '1'"),
        ({**embedded_spec(), "size": "abc"}, r"size must be an integer; got 'abc'"),
        ({**embedded_spec(), "size": 10**7}, r"size must be in 8 \.\. 1,000,000; got 10,000,000"),
        ({"source": "folder", "path": "a\x00b"}, r"a string of 1 to 4,096 characters without NUL"),
        ([1], r"a data spec is a JSON object; got list"),
        (
            {**embedded_spec(), "size": 3},
            r"the embedded task's size must be in 8 \.\. 1,000,000; got 3",
        ),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(DataError, match=match):
        load_dataset(spec)


def test_vocabulary_from_training_split_with_unk():
    train, val = load_splits(embedded_spec(size=SMALL))
    vocab = Vocabulary.build(t for t, _ in train)
    assert vocab.tokens[0] == UNK and vocab.unk_id == 0
    assert set(vocab.tokens[1:]) == {c for t, _ in train for c in t}
    assert list(vocab.tokens[1:]) == sorted(vocab.tokens[1:])
    assert vocab.encode("A?b") == [vocab.tokens.index("A"), 0, vocab.tokens.index("b")]
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab
    assert vocab.to_dict()["unk_id"] == 0


@pytest.mark.parametrize(
    "d,match",
    [
        ({"tokens": ["ab", "cd"]}, "a vocabulary token must be one character; got 'cd'"),
        ({"tokens": [UNK]}, "at least one character token; got none"),
        ({"tokens": ["a", "b"], "unk_id": -1}, r"unk_id must be an integer in 0 .. 1 .* got -1"),
        (
            {"tokens": ["a"], "unk_id": None, "size": 3},
            r"keys tokens, unk_id, text; got also \['size'\]",
        ),
        ({"tokens": [UNK, "ab"]}, "a vocabulary token must be one character; got 'ab'"),
        ({"tokens": [UNK, "a", "a"]}, "distinct; repeated: \\['a'\\]"),
        ({"tokens": [UNK, "a"], "unk_id": 2}, r"unk_id must be an integer in 0 .. 1 .*; got 2"),
        (["a"], "JSON object with a 'tokens' list"),
    ],
)
def test_bad_vocabulary(d, match):
    with pytest.raises(DataError, match=match):
        Vocabulary.from_dict(d)


def test_vocabulary_with_the_unknown_token_elsewhere_or_none():
    vocab = Vocabulary.from_dict({"tokens": ["a", "b", "<UNK>"], "unk_id": 2})
    assert vocab.encode("bza") == [1, 2, 0]
    plain = Vocabulary(("a", "b", "c"), unk_id=None)
    assert plain.encode("cab") == [2, 0, 1]
    assert Vocabulary.from_dict(plain.to_dict()) == plain
    with pytest.raises(DataError, match="character 'z' at position 1 of 'az' is not in the vocab"):
        plain.encode("az")


def test_encode_batch_pads_with_zero():
    vocab = Vocabulary.build(["abc"])
    tokens, lengths = encode_batch(["ab", "cabz", "c"], vocab)
    assert tokens.dtype == torch.int64 and lengths.dtype == torch.int64
    assert tokens.tolist() == [[1, 2, 0, 0], [3, 1, 2, 0], [3, 0, 0, 0]]
    assert lengths.tolist() == [2, 4, 1]


@pytest.mark.parametrize(
    "texts,match", [([], "at least one text"), (["a", ""], "positions \\[1\\]")]
)
def test_encode_batch_errors(texts, match):
    with pytest.raises(DataError, match=match):
        encode_batch(texts, Vocabulary.build(["a"]))


def test_names_data(names_dir):
    samples = read_folder(names_dir)
    assert len(samples) == 18
    # 20,068 lines, of which 18 are blank (one at the end of each file).
    assert sum(len(v) for v in samples.values()) == 20050
    assert len(samples["Russian"]) == 9384 and len(samples["Vietnamese"]) == 73
    train, val = load_splits(folder_spec(names_dir))
    assert len(train) + len(val) == 20050
    assert Counter(y for _, y in val)[sorted(samples).index("Russian")] == round(9384 * 0.2)


def test_a_class_file_given_as_the_folder(tmp_path):
    """A file where the folder is expected: said, with the folder to pass."""
    folder = write_folder(tmp_path / "names", {"Arabic.txt": "x\n", "Greek.txt": "y\n"})
    match = (
        r"Arabic\.txt: expected a folder with one \.txt file per class; it is a file \(one "
        r"class's file\? pass the folder that holds it, .*names\)"
    )
    with pytest.raises(DataError, match=match):
        read_folder(folder / "Arabic.txt")
