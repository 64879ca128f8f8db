"""Run directories: bit-exact round trips, clear errors for bad ones, atomic replacement."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tracemalloc

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import rnn_export
from rnn_export import atomic, runfiles
from rnn_export import checkpoint as ckpt_module
from rnn_export.atomic import WriteError
from rnn_export.checkpoint import (
    CheckpointError,
    check_replaceable,
    load_checkpoint,
    model_identity,
    save_checkpoint,
)
from rnn_export.config import ModelConfig, TrainOptions
from rnn_export.data import Vocabulary, embedded_spec
from rnn_export.models import build_model

ARCHS = ("cell", "stacked")


def fresh_model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    vocab = Vocabulary.build(["abcdef"])
    layers = 1 if arch == "cell" else 2
    return build_model(ModelConfig(arch, len(vocab), ("p", "q", "r"), 8, layers)), vocab


def save(run_dir, arch: str = "cell", seed: int = 0, accuracy: float = 0.5):
    model, vocab = fresh_model(arch, seed)
    save_checkpoint(
        run_dir, model, vocab, embedded_spec(size=40), {"epochs": 1}, {"val_accuracy": accuracy}
    )
    return model


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_is_bit_exact(tmp_path, arch):
    model = save(tmp_path / "run", arch).eval()
    ckpt = rnn_export.load_checkpoint(tmp_path / "run")
    assert isinstance(ckpt, rnn_export.Checkpoint)
    assert not ckpt.model.training
    assert ckpt.config == model.config
    assert ckpt.metrics == {"val_accuracy": 0.5}
    assert ckpt.data == embedded_spec(size=40)
    assert ckpt.training == {"epochs": 1}
    assert ckpt.vocab == Vocabulary.build(["abcdef"])
    weights = (tmp_path / "run/model.safetensors").read_bytes()
    assert ckpt.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert ckpt.sha256 == model_identity(ckpt.weights_sha256, ckpt.config, ckpt.vocab)
    tokens = torch.randint(0, 7, (4, 9))
    lengths = torch.tensor([9, 1, 5, 3])
    state = torch.randn(model.config.state_shape(4))
    with torch.no_grad():
        expected = model(tokens, state, lengths)
        got = ckpt.model(tokens, state, lengths)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_trained_fixture_loads(tiny_run_dir):
    for arch in ARCHS:
        ckpt = load_checkpoint(tiny_run_dir(arch))
        assert ckpt.config.arch == arch and ckpt.config.hidden_size == 16
        assert 0.0 <= ckpt.metrics["val_accuracy"] <= 1.0
        assert (ckpt.run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def rewrite_json(name, change):
    def corrupt(run_dir):
        path = run_dir / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return corrupt


def rewrite_weights(change):
    def corrupt(run_dir):
        path = run_dir / "model.safetensors"
        save_file(change(load_file(path)), path)

    return corrupt


def rename_tensor(weights):
    weights["i2h.weight_renamed"] = weights.pop("i2h.weight")
    return weights


CORRUPTIONS = {
    "no model.safetensors": (
        lambda d: (d / "model.safetensors").unlink(),
        r"model\.safetensors: missing",
    ),
    "no config.json": (lambda d: (d / "config.json").unlink(), r"config\.json: missing"),
    "no vocab.json": (lambda d: (d / "vocab.json").unlink(), r"vocab\.json: missing"),
    "no train.json": (lambda d: (d / "train.json").unlink(), r"train\.json: missing"),
    "no metrics.json": (lambda d: (d / "metrics.json").unlink(), r"metrics\.json: missing"),
    "config.json a folder": (
        lambda d: ((d / "config.json").unlink(), (d / "config.json").mkdir()),
        r"config\.json: expected a regular file; it is a folder",
    ),
    "train.json a FIFO": (
        lambda d: ((d / "train.json").unlink(), os.mkfifo(d / "train.json")),
        r"train\.json: expected a regular file; it is a FIFO",
    ),
    "bad JSON config": (
        lambda d: (d / "config.json").write_text("{arch"),
        r"config\.json: not valid JSON",
    ),
    "bad JSON metrics": (
        lambda d: (d / "metrics.json").write_text(""),
        r"metrics\.json: not valid JSON",
    ),
    "config not a config": (
        rewrite_json("config.json", lambda c: {**c, "arch": "transformer"}),
        r"config\.json: not a model config: arch must be one of",
    ),
    "vocab not a vocab": (
        rewrite_json("vocab.json", lambda v: {"tokens": ["a"]}),
        r"vocab\.json: not a vocabulary",
    ),
    "vocab size mismatch": (
        rewrite_json("vocab.json", lambda v: {"tokens": v["tokens"][:-1]}),
        r"vocab\.json: has 6 tokens; .*config\.json says vocab_size 7",
    ),
    "train without data": (
        rewrite_json("train.json", lambda t: {"epochs": 1}),
        r"train\.json: expected a 'data'",
    ),
    "metrics with a string accuracy": (
        rewrite_json("metrics.json", lambda m: {"val_accuracy": "high"}),
        r"metrics\.json: expected an object with 'val_accuracy'",
    ),
    "metrics with an accuracy over 1": (
        rewrite_json("metrics.json", lambda m: {"val_accuracy": 1.5}),
        r"metrics\.json: val_accuracy must be in \[0, 1\]; got 1\.5",
    ),
    "metrics without accuracy": (
        rewrite_json("metrics.json", lambda m: {"loss": 1.0}),
        r"metrics\.json: expected an object with 'val_accuracy'",
    ),
    "truncated weights": (
        lambda d: (d / "model.safetensors").write_bytes(
            (d / "model.safetensors").read_bytes()[:50]
        ),
        r"model\.safetensors: not a safetensors file",
    ),
    "pickle weights": (
        lambda d: torch.save({"x": torch.zeros(1)}, d / "model.safetensors"),
        r"model\.safetensors: not a safetensors file",
    ),
    "renamed tensor": (
        rewrite_weights(rename_tensor),
        r"model\.safetensors: tensor names do not match .*missing \['i2h\.weight'\], "
        r"unexpected \['i2h\.weight_renamed'\]",
    ),
    "config hidden size differs": (
        rewrite_json("config.json", lambda c: {**c, "hidden_size": 9}),
        r"model\.safetensors: tensor 'embed\.weight' has shape \(7, 8\); .*expects \(7, 9\)",
    ),
    "config arch differs": (
        rewrite_json("config.json", lambda c: {**c, "arch": "stacked", "num_layers": 2}),
        r"model\.safetensors: tensor names do not match the 'stacked' model",
    ),
    "float64 weights": (
        rewrite_weights(lambda w: {k: v.double() for k, v in w.items()}),
        r"tensor 'embed\.weight' has dtype torch\.float64; expected torch\.float32",
    ),
    "NaN weights": (
        rewrite_weights(lambda w: {**w, "h2o.bias": torch.full_like(w["h2o.bias"], float("nan"))}),
        r"model\.safetensors: tensor 'h2o\.bias' holds NaN",
    ),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_bad_run_dirs_name_the_file(tmp_path, case):
    corrupt, match = CORRUPTIONS[case]
    save(tmp_path / "run")
    corrupt(tmp_path / "run")
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "run")


def test_missing_and_foreign_run_dirs(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope: expected a run directory; not found"):
        load_checkpoint(tmp_path / "nope")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(CheckpointError, match=r"photos/model\.safetensors: missing"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match=r"photos: refusing to replace a non-empty folder"):
        save(foreign)
    assert [p.name for p in foreign.iterdir()] == ["cat.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=r"file: is a regular file; expected a run directory"):
        check_replaceable(tmp_path / "file")


def test_replaces_an_earlier_checkpoint(tmp_path):
    save(tmp_path / "run", seed=0, accuracy=0.1)
    (tmp_path / "empty").mkdir()
    save(tmp_path / "empty", seed=0)
    first = load_checkpoint(tmp_path / "run").sha256
    save(tmp_path / "run", seed=1, accuracy=0.2)
    second = load_checkpoint(tmp_path / "run")
    assert second.sha256 != first and second.metrics["val_accuracy"] == 0.2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "run"]


@pytest.mark.parametrize("fail_at", [1, 3, 5])
@pytest.mark.parametrize(
    ("error", "expected"), [(KeyboardInterrupt, KeyboardInterrupt), (OSError, WriteError)]
)
def test_interrupted_save_keeps_the_earlier_checkpoint(
    tmp_path, monkeypatch, fail_at, error, expected
):
    save(tmp_path / "run", seed=0)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    real_write = atomic.write_file
    calls = []

    def failing_write(path, data):
        calls.append(path)
        if len(calls) == fail_at:
            raise error(28, "No space left on device") if error is OSError else error()
        real_write(path, data)

    monkeypatch.setattr(atomic, "write_file", failing_write)
    match = "run: the new checkpoint cannot be written, so nothing was replaced: No space"
    with pytest.raises(expected, match=match if expected is WriteError else None):
        save(tmp_path / "run", seed=1)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left


def _no_exchange(a, b):
    raise OSError(errno.EINVAL, "this filesystem cannot exchange")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_interrupted_swap_restores_the_earlier_checkpoint(tmp_path, monkeypatch, exchange):
    save(tmp_path / "run", seed=0)
    sha = load_checkpoint(tmp_path / "run").sha256
    real_rename = atomic.os.rename

    def interrupted(src, dst):
        if ".tmp-" in str(src):
            raise KeyboardInterrupt
        real_rename(src, dst)

    if exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: interrupted(a, b))
    else:
        monkeypatch.setattr(atomic, "_exchange", _no_exchange)
        monkeypatch.setattr(atomic.os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "run", seed=1)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run").sha256 == sha
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_swap_replaces_the_run(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", _no_exchange)
    save(tmp_path / "run", seed=0)
    first = load_checkpoint(tmp_path / "run").sha256
    save(tmp_path / "run", seed=1)
    assert load_checkpoint(tmp_path / "run").sha256 != first
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_checkpoint_from_another_copy(tmp_path, tiny_run_dir):
    """A RUN_DIR is self-contained: a copy elsewhere loads to the same weights."""
    copy = shutil.copytree(tiny_run_dir("stacked"), tmp_path / "copy")
    a, b = load_checkpoint(tiny_run_dir("stacked")), load_checkpoint(copy)
    assert a.sha256 == b.sha256
    for (name, x), (_, y) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name


def _train_json(run_dir):
    return json.loads((run_dir / "train.json").read_text())


def test_train_json_holds_the_options(tiny_run_dir):
    run_dir = tiny_run_dir("stacked")
    ckpt = load_checkpoint(run_dir)
    assert _train_json(run_dir)["options"] == ckpt.options.to_dict()
    assert ckpt.options == TrainOptions(arch="stacked", hidden_size=16, num_layers=2, epochs=1)
    assert ckpt.options.model_config(ckpt.config.vocab_size, ckpt.config.labels) == ckpt.config
    assert "options" not in ckpt.training and ckpt.training["optimizer"] == "Adam"


def test_an_older_train_json_still_loads(tmp_path, tiny_run_dir):
    """train.json before TrainOptions: the values at the top level, no model options."""
    run_dir = shutil.copytree(tiny_run_dir("stacked"), tmp_path / "old")
    record = _train_json(run_dir)
    options = record.pop("options")
    old = {
        "data": record["data"],
        **{k: options[k] for k in ("epochs", "batch_size", "lr", "clip", "seed")},
        "optimizer": "Adam",
        "schedule": "cosine",
        "torch_version": torch.__version__,
        "torch_threads": 1,
    }
    (run_dir / "train.json").write_text(json.dumps(old))
    ckpt = load_checkpoint(run_dir)
    assert ckpt.options == load_checkpoint(tiny_run_dir("stacked")).options
    assert ckpt.training["epochs"] == 1  # the rest of the file, as before
    del old["lr"]  # incomplete: not options, but still a checkpoint
    (run_dir / "train.json").write_text(json.dumps(old))
    assert load_checkpoint(run_dir).options is None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"arch": "stacked", "hidden_size": 9}, r"train\.json: options describe the model "),
        ({"arch": "cell", "epochs": 0}, r"train\.json: not training options: epochs"),
        ({"arch": "cell", "color": "red"}, r"train\.json: not training options: .*'color'"),
        ([1, 2], r"train\.json: not training options: .* JSON object"),
    ],
    ids=["other-model", "bad-value", "unknown-key", "not-an-object"],
)
def test_bad_options_in_train_json(tmp_path, tiny_run_dir, options, match):
    run_dir = shutil.copytree(tiny_run_dir("stacked"), tmp_path / "run")
    record = _train_json(run_dir)
    record["options"] = options
    (run_dir / "train.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(run_dir)


def test_a_run_that_fails_a_check_never_replaces_the_earlier_one(tmp_path):
    """The checks (finite weights...) run before the swap, not after."""
    save(tmp_path / "run", seed=0)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    model, vocab = fresh_model("cell", seed=1)
    with torch.no_grad():
        model.embed.weight[0, 0] = float("nan")
    with pytest.raises(
        CheckpointError,
        match=r"run: the new checkpoint fails a check, so nothing was replaced: .*run/model\."
        r"safetensors: tensor 'embed\.weight' holds NaN or infinity",
    ):
        save_checkpoint(
            tmp_path / "run", model, vocab, embedded_spec(size=40), {}, {"val_accuracy": 0}
        )
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def _set(name: str, key: str, value):
    return rewrite_json(name, lambda d: {**d, key: value})


def _raw(name: str, text: bytes):
    return lambda d: (d / name).write_bytes(text)


def _label(value):
    return rewrite_json("config.json", lambda c: {**c, "labels": [c["labels"][0], value]})


def _data(key, value):
    return rewrite_json("train.json", lambda t: {**t, "data": {**t["data"], key: value}})


# Every refusal one CheckpointError naming the file; never a traceback, and
# nothing allocated from a size no check has passed.
BOUNDED = {
    "invalid UTF-8 byte": (
        _raw("config.json", b'{"arch": "cell\xff"}'),
        r"config\.json: not valid JSON: byte 14 \(0xff\) is not UTF-8",
    ),
    "nested 100,000 deep": (
        _raw("train.json", b"[" * 100_000 + b"]" * 100_000),
        r"train\.json: not valid JSON: nested too deeply",
    ),
    "nested 65 deep": (
        _raw("metrics.json", b"[" * 65 + b"]" * 65),
        r"metrics\.json: JSON nested deeper than 64 levels",
    ),
    "5001-digit number": (
        _raw("vocab.json", b'{"tokens": ["<unk>"], "unk_id": ' + b"7" * 5001 + b"}"),
        r"vocab\.json: not valid JSON: an integer of 5,001 digits; at most 20",
    ),
    "number too large for a float": (
        _raw("metrics.json", b'{"val_accuracy": 1e400}'),
        r"metrics\.json: not valid JSON: the number 1e400 is too large for a float",
    ),
    "NaN": (
        _raw("metrics.json", b'{"val_accuracy": NaN}'),
        r"metrics\.json: not valid JSON: NaN is not a JSON number",
    ),
    "hidden_size 10**30": (
        _set("config.json", "hidden_size", 10**30),
        r"config\.json: not valid JSON: an integer of 31 digits; at most 20 are accepted",
    ),
    "hidden_size 100000": (
        _set("config.json", "hidden_size", 100_000),
        r"config\.json: not a model config: hidden_size must be in 1 \.\. 4,096; got 100,000",
    ),
    "hidden_size 20, weights of 8": (
        _set("config.json", "hidden_size", 20),
        r"model\.safetensors: tensor 'embed\.weight' has shape \(7, 8\); .* expects \(7, 20\)",
    ),
    "num_layers a string": (
        _set("config.json", "num_layers", "2"),
        r"config\.json: not a model config: num_layers must be an integer; got '2'",
    ),
    "lone surrogate in a label": (
        _raw(
            "config.json",
            b'{"arch": "cell", "vocab_size": 7, "labels": ["p", "\\ud800"], "hidden_size": 8}',
        ),
        r"config\.json: the JSON string '\\ud800' holds a lone surrogate",
    ),
    "labels a string": (
        _set("config.json", "labels", "pq"),
        r"config\.json: not a model config: labels must be a list of strings; got 'pq'",
    ),
    "empty label": (_label(""), r"config\.json: .*a label must be a string of 1 to 256"),
    "data.size abc": (
        _data("size", "abc"),
        r"train\.json: not a data spec: the embedded task's size must be an integer; got 'abc'",
    ),
    "data.seed 2**40": (
        _data("seed", 2**40),
        r"train\.json: not a data spec: data seed must be in 0 \.\. 4,294,967,295",
    ),
    "data.val_fraction NaN-like": (
        _data("val_fraction", "0.2"),
        r"train\.json: not a data spec: data val_fraction must be a number; got '0\.2'",
    ),
    "data.path with NUL": (
        rewrite_json(
            "train.json",
            lambda t: {**t, "data": {**t["data"], "source": "folder", "path": "a\x00b"}},
        ),
        r"train\.json: not a data spec: a folder dataset needs a 'path'",
    ),
}


@pytest.mark.parametrize("case", BOUNDED)
def test_files_are_read_within_bounds(tmp_path, monkeypatch, case):
    corrupt, match = BOUNDED[case]
    save(tmp_path / "run")
    corrupt(tmp_path / "run")

    def no_model(config):  # the real model is built only after every check has passed
        raise AssertionError(f"built a model of {config}")

    monkeypatch.setattr(ckpt_module, "build_model", no_model)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "run")


def test_json_files_have_a_size_limit(tmp_path):
    save(tmp_path / "run")
    with open(tmp_path / "run" / "metrics.json", "r+b") as f:
        f.truncate(runfiles.MAX_JSON_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(CheckpointError, match=r"metrics\.json: 67,108,865 bytes; .* at most"):
        load_checkpoint(tmp_path / "run")


def _safetensors(path, header: dict, data_bytes: int) -> None:
    """A safetensors file with this header and data_bytes of (sparse) zeros after it."""
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + data_bytes)


def test_a_large_safetensors_file_is_judged_by_its_header(tmp_path):
    """A 1.5 GB file whose header does not fit the model is refused after
    reading its header alone (tracemalloc sees every bytes object that a whole read makes)."""
    save(tmp_path / "run")
    weights = tmp_path / "run" / "model.safetensors"
    with safe_open(weights, framework="pt") as st:
        names = list(st.keys())
    size = 1_500_000_000
    header = {n: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]} for n in names}
    header[names[0]] = {"dtype": "F64", "shape": [size // 8], "data_offsets": [0, size]}
    _safetensors(weights, header, size)
    tracemalloc.start()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor '\w+\.\w+' has shape"):
        load_checkpoint(tmp_path / "run")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak:,} bytes while refusing a {size:,}-byte file"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda h: {**h, "h2o.bias": {**h["h2o.bias"], "data_offsets": [0, 999]}},
            r"tensor 'h2o\.bias' needs 12 bytes; its offsets \[0, 999\] do not give them",
        ),
        (
            lambda h: {**h, "h2o.bias": {**h["h2o.bias"], "data_offsets": [10**9, 10**9 + 12]}},
            r"tensor 'h2o\.bias' needs 12 bytes; its offsets .* within the file's",
        ),
        (
            lambda h: {**h, "h2o.bias": {**h["h2o.bias"], "shape": "3"}},
            r"tensor 'h2o\.bias' has shape '3'; not a shape",
        ),
        (lambda h: {**h, "h2o.bias": [1, 2]}, r"the header entry of 'h2o\.bias' is \[1, 2\]"),
        (lambda h: [h], r"its header is not an object"),
    ],
    ids=["offsets-size", "offsets-outside", "shape-type", "entry-type", "header-type"],
)
def test_bad_safetensors_headers(tmp_path, change, match):
    save(tmp_path / "run")
    weights = tmp_path / "run" / "model.safetensors"
    raw = weights.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = change(json.loads(raw[8 : 8 + n]))
    body = json.dumps(header).encode()
    weights.write_bytes(len(body).to_bytes(8, "little") + body + raw[8 + n :])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: .*" + match):
        load_checkpoint(tmp_path / "run")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda p: p.write_bytes(b"\x08\x01onnx"),
            r"m\.onnx: expected a run directory .*; it "
            r"is a regular file that looks like an exported model: pass the RUN_DIR .* swapped\?",
        ),
        (lambda p: os.mkfifo(p), r"m\.onnx: expected a run directory .*; it is a FIFO"),
        (lambda p: None, r"m\.onnx: expected a run directory; not found"),
    ],
    ids=["onnx-file", "fifo", "missing"],
)
def test_a_path_of_the_wrong_kind_is_named_for_what_it_is(tmp_path, make, match):
    """Only what is not there is called "not found"; the rest is named for what it is."""
    make(tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "m.onnx")


IDENTITY_CHANGES = {
    "labels reversed": rewrite_json("config.json", lambda c: {**c, "labels": c["labels"][::-1]}),
    "a label renamed": rewrite_json("config.json", lambda c: {**c, "labels": ["p", "q", "s"]}),
    "vocabulary reordered": rewrite_json(
        "vocab.json", lambda v: {**v, "tokens": [v["tokens"][0], *v["tokens"][:0:-1]]}
    ),
    "weights changed": rewrite_weights(lambda w: {**w, "h2o.bias": w["h2o.bias"] + 1}),
}


@pytest.mark.parametrize("change", IDENTITY_CHANGES)
def test_the_identity_covers_everything_that_defines_the_model(tmp_path, change):
    """Reversed labels (same weights) are another model, with another identity."""
    save(tmp_path / "run")
    before = load_checkpoint(tmp_path / "run")
    IDENTITY_CHANGES[change](tmp_path / "run")
    after = load_checkpoint(tmp_path / "run")
    assert after.sha256 != before.sha256
    same_weights = change != "weights changed"
    assert (after.weights_sha256 == before.weights_sha256) == same_weights


def test_the_identity_ignores_what_does_not_define_the_model(tmp_path):
    save(tmp_path / "run")
    before = load_checkpoint(tmp_path / "run")
    rewrite_json("metrics.json", lambda m: {**m, "val_accuracy": 0.9})(tmp_path / "run")
    rewrite_json("train.json", lambda t: {**t, "note": "retouched"})(tmp_path / "run")
    config = tmp_path / "run" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()), indent=7))  # same JSON
    assert load_checkpoint(tmp_path / "run").sha256 == before.sha256


def test_a_file_exported_before_the_identity_change_is_named_as_such(tmp_path):
    save(tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run")
    old = ckpt.mismatch(ckpt.weights_sha256, "m.onnx")
    assert old.startswith("m.onnx was exported by an earlier rnn-export, whose checkpoint ")
    assert f"no longer match their RUN_DIR: convert {tmp_path / 'run'} again" in old
    other = ckpt.mismatch("f" * 64, "m.onnx")
    assert other == (
        f"m.onnx was exported from a checkpoint with sha256 {'f' * 64}; {tmp_path / 'run'} "
        f"has sha256 {ckpt.sha256}: model and checkpoint do not belong together"
    )


@pytest.mark.parametrize("earlier", [True, False], ids=["earlier-run", "new-run"])
def test_interrupt_as_the_temporary_folder_appears_leaves_none(tmp_path, monkeypatch, earlier):
    """Ctrl-C delivered just as the temporary run folder is made: nothing is left behind."""
    if earlier:
        save(tmp_path / "run", seed=0)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").glob("*")}
    real_mkdir = atomic.os.mkdir

    def interrupted_mkdir(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        if ".tmp-" in str(path):
            raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "mkdir", interrupted_mkdir)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "run", seed=1)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == (["run"] if earlier else [])
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").glob("*")} == before
