"""Run directories: bit-exact round trips, clear errors for bad ones, atomic replacement."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import rnn_export
from rnn_export import atomic
from rnn_export.checkpoint import (
    CheckpointError,
    check_replaceable,
    load_checkpoint,
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
    assert (
        ckpt.sha256 == hashlib.sha256((tmp_path / "run/model.safetensors").read_bytes()).hexdigest()
    )
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
    "bad JSON config": (
        lambda d: (d / "config.json").write_text("{arch"),
        r"config\.json: not valid JSON",
    ),
    "bad JSON metrics": (
        lambda d: (d / "metrics.json").write_text(""),
        r"metrics\.json: not valid JSON",
    ),
    "config not a config": (
        rewrite_json("config.json", lambda c: {**c, "arch": "lstm"}),
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
    with pytest.raises(CheckpointError, match=r"file: expected a run directory to replace"):
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
@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_interrupted_save_keeps_the_earlier_checkpoint(tmp_path, monkeypatch, fail_at, error):
    save(tmp_path / "run", seed=0)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    real_write = atomic.write_file
    calls = []

    def failing_write(path, data):
        calls.append(path)
        if len(calls) == fail_at:
            raise error("interrupted while writing")
        real_write(path, data)

    monkeypatch.setattr(atomic, "write_file", failing_write)
    with pytest.raises(error):
        save(tmp_path / "run", seed=1)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left


def test_interrupted_swap_restores_the_earlier_checkpoint(tmp_path, monkeypatch):
    save(tmp_path / "run", seed=0)
    sha = load_checkpoint(tmp_path / "run").sha256
    real_rename = atomic.os.rename

    def failing_rename(src, dst):
        if ".tmp-" in str(src):
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", failing_rename)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "run", seed=1)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run").sha256 == sha
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
