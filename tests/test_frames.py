"""Float-frame datasets: the .npz layout, the .ts reader, splits, normalization, batches."""

from __future__ import annotations

import numpy as np
import pytest

from rnn_export import frames
from rnn_export.data import DataError
from rnn_export.frames import (
    EMBEDDED_FRAME_CLASSES,
    FrameSplit,
    embedded_frames,
    find_test_file,
    frame_batch,
    frames_embedded_spec,
    frames_file_spec,
    load_frames,
    normalization,
    read_frames,
    read_npz,
)

NAMES = np.array(["low", "mid", "high"])


def padded(rows, features=2):
    """x (N, T, F) zero-padded and lengths of the given lengths, values 1, 2, 3, ..."""
    lengths = np.array(rows, dtype=np.int64)
    x = np.zeros((len(rows), max(rows), features), dtype=np.float32)
    value = 1.0
    for i, n in enumerate(rows):
        for t in range(n):
            x[i, t] = value + np.arange(features)
            value += features
    return x, lengths


def write_npz(path, **arrays):
    x, lengths = padded([3, 1, 4, 2, 2, 3])
    base = {
        "x": x,
        "lengths": lengths,
        "labels": np.array([0, 1, 2, 0, 1, 2]),
        "label_names": NAMES,
    }
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


TS_HEADER = """# a comment
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true b a
@data
"""


def write_ts(path, body: str, header: str = TS_HEADER):
    path.write_text(header + body, encoding="utf-8")
    return path


def test_npz_round_trip(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    names, data = read_npz(path)
    x, lengths = padded([3, 1, 4, 2, 2, 3])
    assert names == ("low", "mid", "high")
    np.testing.assert_array_equal(data.x, x)
    np.testing.assert_array_equal(data.lengths, lengths)
    np.testing.assert_array_equal(data.labels, [0, 1, 2, 0, 1, 2])
    assert data.x.dtype == np.float32 and data.lengths.dtype == np.int64


def test_npz_float64_is_read_as_float32_and_compressed_files_read(tmp_path):
    x, _ = padded([3, 1, 4, 2, 2, 3])
    path = tmp_path / "d.npz"
    lengths = np.array([3, 1, 4, 2, 2, 3], dtype=np.uint16)
    np.savez_compressed(
        path, x=x.astype(np.float64), lengths=lengths, labels=np.arange(6) % 3, label_names=NAMES
    )
    _, data = read_npz(path)
    assert data.x.dtype == np.float32
    np.testing.assert_array_equal(data.x, x)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.full((6, 4, 2), np.nan, np.float32)}, r"x\[0, 0, 0\] = nan is not finite"),
        ({"x": np.full((6, 4, 2), 1e300)}, r"past float32's range"),
        ({"x": np.zeros((6, 8), np.float32)}, r"x must be a float array \(N, T, F\)"),
        ({"x": np.zeros((6, 4, 2), np.int32)}, r"x must be a float array"),
        ({"labels": np.zeros(6, np.float32)}, r"labels must be an integer array \(N,\)"),
        ({"labels": np.zeros(5, np.int64)}, r"labels must be an integer array \(N,\) with N = 6"),
        ({"labels": np.array([0, 1, 2, 3, 0, 0])}, r"labels\[3\] must be a class id in 0 .. 2"),
        ({"lengths": np.array([3, 0, 4, 2, 2, 3])}, r"lengths\[1\] must be in 1 .. T = 4"),
        ({"lengths": np.array([3, 1, 4, 2, 2, 5])}, r"lengths\[5\] must be in 1 .. T = 4"),
        ({"lengths": np.array([3, 1, 4, 2, 1, 3])}, r"zero past each row's length; row 4"),
        ({"label_names": np.array(["a"])}, r"needs 2 .. 10,000 class labels in label_names; got 1"),
        ({"label_names": np.array(["a", "a", "b"])}, r"label_names repeats a label"),
        ({"label_names": np.array([1, 2, 3])}, r"label_names must be a string array"),
        ({"label_names": np.array(["a", "b", "c"], dtype=object)}, r"label_names must be a string"),
        ({"extra": np.zeros(3)}, r"holds only the arrays x, lengths, labels, label_names, y"),
        ({"lengths": None}, r"needs the arrays lengths"),
        ({"labels": None}, r"needs the arrays labels"),
        ({"y": np.zeros((6, 4), np.int64)}, r"per-step targets y \(6, 4\); this classifier"),
        ({"y": np.zeros((6, 4, 3), np.float32)}, r"per-step targets y \(6, 4, 3\)"),
        ({"y": np.zeros((6, 5), np.int64)}, r"y \(per-step targets\) must be .* T = 4"),
    ],
)
def test_npz_errors(tmp_path, arrays, match):
    with pytest.raises(DataError, match=match):
        read_npz(write_npz(tmp_path / "d.npz", **arrays))


def test_npz_files_that_are_not_archives_or_too_large(tmp_path, monkeypatch):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad.npz: expected a .npz archive"):
        read_npz(bad)
    with pytest.raises(DataError, match=r"missing.npz: expected a .npz file of float frames; not"):
        read_npz(tmp_path / "missing.npz")
    path = write_npz(tmp_path / "d.npz")
    monkeypatch.setattr(frames, "MAX_SEQUENCES", 5)
    with pytest.raises(DataError, match=r"N \(sequences\) must be in 1 .. 5; got 6"):
        read_npz(path)
    monkeypatch.setattr(frames, "MAX_FRAME_VALUES", 47)
    monkeypatch.setattr(frames, "MAX_SEQUENCES", 10)
    with pytest.raises(
        DataError, match=r"at most 47 frame values \(N \* T \* F\); got 6 \* 4 \* 2"
    ):
        read_npz(path)
    monkeypatch.setattr(frames, "MAX_NPZ_BYTES", 100)
    with pytest.raises(DataError, match=r"bytes; a .npz file holds at most 100"):
        read_npz(path)


def test_ts_reads_variable_lengths_in_declared_class_order(tmp_path):
    path = write_ts(tmp_path / "t.ts", "1,2,3:4,5,6:a\n\n7:8:b\n0.5,1e-3:-2,3.25:a\n")
    names, data = read_frames(path)
    assert names == ("b", "a")  # @classLabel's order, not sorted
    np.testing.assert_array_equal(data.lengths, [3, 1, 2])
    np.testing.assert_array_equal(data.labels, [1, 0, 1])
    np.testing.assert_array_equal(data.x[0], [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(data.x[1], [[7, 8], [0, 0], [0, 0]])
    np.testing.assert_array_equal(data.x[2, :2], np.array([[0.5, -2], [1e-3, 3.25]], np.float32))


@pytest.mark.parametrize(
    "body, header, match",
    [
        ("1,2:3,?:a\n", TS_HEADER, r"t.ts:10: dimension 1: expected numbers; got '\?'"),
        ("1,2:3,NaN:a\n", TS_HEADER, r"t.ts:10: dimension 1 step 1: expected a finite number"),
        ("1,2:3,1e999:a\n", TS_HEADER, r"step 1: expected a finite number; got '1e999'"),
        ("1,2:3:a\n", TS_HEADER, r"t.ts:10: every dimension of a case has the same length"),
        ("1,2:3,4:5,6:a\n", TS_HEADER, r"t.ts:10: expected 2 dimensions; got 3"),
        ("1,2:3,4:c\n", TS_HEADER, r"class label 'c' is not one of @classLabel's \['b', 'a'\]"),
        ("", TS_HEADER.replace("@data\n", ""), r"has no @data line"),
        ("1,2:3,4:a\n", TS_HEADER.replace("@data\n", ""), r"t.ts:9: expected an @ tag line"),
        ("", TS_HEADER, r"expected at least one case after @data; got none"),
        ("1:2:a\n", TS_HEADER.replace("@timeStamps false", "@timeStamps true"), r"timestamps"),
        ("1:2:a\n", TS_HEADER.replace("@classLabel true b a", "@classLabel false"), r"labels"),
        ("1:2:a\n", TS_HEADER.replace("@classLabel true b a", "@classLabel true b"), r"2 .. "),
        ("1:2:a\n", TS_HEADER.replace("@classLabel true b a", "@classLabel true a a"), r"repeats"),
        ("1:2:a\n", TS_HEADER.replace("@missing false", "@missing perhaps"), r"true or false"),
        ("1:2:a\n", TS_HEADER.replace("@dimensions 2", "@dimensions x"), r"positive integer"),
        (
            "1:2:a\n",
            TS_HEADER.replace("@equalLength false", "@equalLength true\n@seriesLength 2"),
            r"@equalLength true with length 2; got a case of 1 steps",
        ),
        ("1:2:a\n", "1,2\n" + TS_HEADER, r"t.ts:1: expected an @ tag line or @data"),
    ],
)
def test_ts_errors(tmp_path, body, header, match):
    with pytest.raises(DataError, match=match):
        read_frames(write_ts(tmp_path / "t.ts", body, header))


def test_ts_bounds_and_encoding(tmp_path, monkeypatch):
    path = write_ts(tmp_path / "t.ts", "1,2,3:4,5,6:a\n7:8:b\n")
    monkeypatch.setattr(frames, "MAX_STEPS", 2)
    with pytest.raises(DataError, match=r"t.ts:10: a case has at most 2 steps; dimension 0 has 3"):
        read_frames(path)
    monkeypatch.setattr(frames, "MAX_SEQUENCES", 1)
    monkeypatch.setattr(frames, "MAX_STEPS", 10)
    with pytest.raises(DataError, match=r"t.ts:11: a file holds at most 1 cases"):
        read_frames(path)
    monkeypatch.setattr(frames, "MAX_TS_FILE_BYTES", 10)
    with pytest.raises(DataError, match=r"bytes; a .ts file holds at most 10"):
        read_frames(path)
    monkeypatch.setattr(frames, "MAX_TS_FILE_BYTES", 1000)
    latin = tmp_path / "l.ts"
    latin.write_bytes(TS_HEADER.encode() + b"1:2:\xe9\n")
    with pytest.raises(DataError, match=r"l.ts:10: expected UTF-8 text"):
        read_frames(latin)


def test_suffix_must_be_npz_or_ts(tmp_path):
    with pytest.raises(DataError, match=r"expected a .npz or .ts file of float frames; got .csv"):
        frames_file_spec(tmp_path / "d.csv")


def test_the_test_file_is_found_beside_the_train_file(tmp_path):
    train = write_ts(tmp_path / "Tiny_TRAIN.ts", "1:2:a\n")
    assert find_test_file(train) is None
    test = write_ts(tmp_path / "Tiny_TEST.ts", "1:2:a\n")
    assert find_test_file(train) == test
    assert find_test_file(test) is None
    lower = write_npz(tmp_path / "d_train.npz")
    assert find_test_file(lower) is None
    write_npz(tmp_path / "d_test.npz")
    assert find_test_file(lower) == tmp_path / "d_test.npz"
    assert frames_file_spec(train)["test_path"] == str(test.resolve())
    with pytest.raises(DataError, match=r"the test file must be a .ts file like Tiny_TRAIN.ts"):
        frames_file_spec(train, test_path=lower)


def test_splits_are_stratified_deterministic_and_test_labels_follow_names(tmp_path):
    rows = "".join(f"{i},{i}:{-i},{-i}:{'ab'[i % 2]}\n" for i in range(1, 21))
    train = write_ts(tmp_path / "T_TRAIN.ts", rows)
    # The test file declares the classes in the other order: ids follow the train file's.
    write_ts(tmp_path / "T_TEST.ts", "5:5:a\n6:6:b\n", TS_HEADER.replace("true b a", "true a b"))
    spec = frames_file_spec(train, seed=3, val_fraction=0.2)
    a, b = load_frames(spec), load_frames(spec)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert (len(a.train), len(a.val)) == (16, 4)
    assert np.bincount(a.val.labels).tolist() == [2, 2]
    assert sorted(a.train.x[:, 0, 0].tolist() + a.val.x[:, 0, 0].tolist()) == list(range(1, 21))
    assert a.labels == ("b", "a") and a.features == 2
    np.testing.assert_array_equal(a.test.labels, [1, 0])
    other = load_frames(frames_file_spec(train, seed=4, val_fraction=0.2))
    assert set(other.val.x[:, 0, 0]) != set(a.val.x[:, 0, 0])


def test_test_file_of_other_classes_or_features_is_refused(tmp_path):
    train = write_ts(tmp_path / "T_TRAIN.ts", "1:2:a\n3:4:b\n")
    write_ts(tmp_path / "T_TEST.ts", "1:2:c\n", TS_HEADER.replace("true b a", "true a c"))
    with pytest.raises(DataError, match=r"T_TEST.ts: class 'c' is not a class of the train file"):
        load_frames(frames_file_spec(train))
    write_ts(
        tmp_path / "T_TEST.ts", "1:2:3:a\n", TS_HEADER.replace("@dimensions 2", "@dimensions 3")
    )
    with pytest.raises(DataError, match=r"frames of 3 features; the train file .* has 2"):
        load_frames(frames_file_spec(train))


def test_normalization_leaves_out_padding_and_constant_features():
    x = np.zeros((2, 3, 2), np.float32)
    x[0, :3] = [[1, 5], [2, 5], [3, 5]]
    x[1, :1] = [[6, 5]]
    mean, scale = normalization(FrameSplit(x, np.array([3, 1]), np.array([0, 1])))
    values = np.array([1, 2, 3, 6], np.float64)
    np.testing.assert_allclose(mean, [values.mean(), 5.0], rtol=1e-6)
    np.testing.assert_allclose(scale, [values.std(), 1.0], rtol=1e-6)
    assert mean.dtype == scale.dtype == np.float32


def test_frame_batch_trims_to_the_longest_row():
    x, lengths = padded([3, 1, 4, 2])
    split = FrameSplit(x, lengths, np.array([0, 1, 0, 1]))
    xb, lb, yb = frame_batch(split, [1, 3])
    assert tuple(xb.shape) == (2, 2, 2) and xb.dtype.is_floating_point
    np.testing.assert_array_equal(xb.numpy(), x[[1, 3], :2])
    assert lb.tolist() == [1, 2] and yb.tolist() == [1, 1]
    assert tuple(frame_batch(split)[0].shape) == (4, 4, 2)


def test_embedded_frames_are_seeded_balanced_and_bounded():
    names, a = embedded_frames(seed=1, size=40, features=6)
    assert names == EMBEDDED_FRAME_CLASSES
    np.testing.assert_array_equal(a.x, embedded_frames(seed=1, size=40, features=6)[1].x)
    assert not np.array_equal(a.x[:, :8], embedded_frames(seed=2, size=40, features=6)[1].x[:, :8])
    assert np.bincount(a.labels).tolist() == [10, 10, 10, 10]
    low, high = frames.EMBEDDED_FRAME_LENGTHS
    assert low <= a.lengths.min() and a.lengths.max() <= high
    assert a.x.shape == (40, a.lengths.max(), 6) and np.isfinite(a.x).all()
    test = embedded_frames(seed=1, size=40, features=6, part="test")[1]
    assert not np.array_equal(test.x[:, :8], a.x[:, :8])


def test_embedded_order_classes_hold_the_same_frames_in_another_order():
    """A-then-B and B-then-A differ only in order: their mean frames are about equal."""
    names, data = embedded_frames(seed=0, size=800, features=4)
    mean, scale = normalization(data)
    valid = np.arange(data.x.shape[1])[None, :] < data.lengths[:, None]
    per_class = [((data.x - mean) / scale)[valid & (data.labels == c)[:, None]] for c in (0, 1)]
    np.testing.assert_allclose(per_class[0].mean(axis=0), per_class[1].mean(axis=0), atol=0.05)


def test_load_frames_embedded_has_a_test_split():
    data = load_frames(frames_embedded_spec(seed=0, size=80, features=4))
    assert (len(data.train), len(data.val), len(data.test)) == (72, 8, 80)
    assert data.features == 4 and data.labels == EMBEDDED_FRAME_CLASSES


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"source": "folder"}, r"frame data source must be one of"),
        ({"source": "ts", "path": ""}, r"'path' is a string of 1 to 4,096"),
        ({"source": "npz", "path": "a.npz", "test_path": 3}, r"'test_path' is a string"),
        ({"source": "frames-embedded", "size": 3}, r"size must be in 8 .. 200,000"),
        ({"source": "frames-embedded", "features": 1}, r"features must be in 2 .. 4,096"),
        ({"source": "frames-embedded", "val_fraction": 1.0}, r"val_fraction must be a number"),
        ({"source": "frames-embedded", "seed": -1}, r"data seed must be in 0"),
    ],
)
def test_spec_errors(spec, match):
    with pytest.raises(DataError, match=match):
        frames.check_frames_spec(spec)


def test_real_ts_files_read(frames_data):
    vowels = load_frames(frames_file_spec(frames_data / "japanese_vowels/JapaneseVowels_TRAIN.ts"))
    assert vowels.labels == tuple("123456789") and vowels.features == 12
    assert len(vowels.train) + len(vowels.val) == 270 and len(vowels.test) == 370
    lengths = np.concatenate([vowels.train.lengths, vowels.val.lengths, vowels.test.lengths])
    assert (lengths.min(), lengths.max()) == (7, 29)
    motions = load_frames(frames_file_spec(frames_data / "basic_motions/BasicMotions_TRAIN.ts"))
    assert motions.labels == ("Standing", "Running", "Walking", "Badminton")
    assert len(motions.train) + len(motions.val) == 40 and len(motions.test) == 40
    assert motions.test.x.shape == (40, 100, 6)
    assert np.bincount(motions.test.labels).tolist() == [10, 10, 10, 10]
