"""Training: it learns, it is deterministic, its metrics are true, an interruption is harmless."""

from __future__ import annotations

import random

import pytest
import torch

from rnn_export import config, training
from rnn_export.checkpoint import load_checkpoint
from rnn_export.config import ConfigError
from rnn_export.data import encode_batch, folder_spec, load_splits

ARCHS = ("cell", "stacked")
TINY = {"hidden_size": 16, "progress": False}


@pytest.fixture(scope="module")
def first_char_data(tmp_path_factory):
    """Class = the first character; the rest is noise, so the model must remember it."""
    folder = tmp_path_factory.mktemp("first-char")
    rng = random.Random(0)
    for label, first in (("x", "a"), ("y", "b"), ("z", "c")):
        lines = [
            first + "".join(rng.choice("abcdef") for _ in range(rng.randint(0, 6)))
            for _ in range(60)
        ]
        (folder / f"{label}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder_spec(folder)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_lowers_the_loss_and_learns(tmp_path, first_char_data, arch):
    ckpt = training.train(
        arch, tmp_path / "run", data=first_char_data, epochs=12, batch_size=8, lr=0.01, **TINY
    )
    losses = [h["train_loss"] for h in ckpt.metrics["history"]]
    assert losses[-1] < 0.2 * losses[0]
    assert ckpt.metrics["val_accuracy"] >= 0.9
    assert [h["epoch"] for h in ckpt.metrics["history"]] == list(range(1, 13))


@pytest.mark.parametrize("arch", ARCHS)
def test_metrics_match_the_saved_model(tiny_run_dir, arch):
    """metrics.json's val_accuracy is what the saved model scores on the rebuilt split."""
    ckpt = load_checkpoint(tiny_run_dir(arch))
    _, val = load_splits(ckpt.data)
    tokens, lengths = encode_batch([t for t, _ in val], ckpt.vocab)
    labels = torch.tensor([y for _, y in val])
    with torch.no_grad():
        log_probs, _ = ckpt.model(tokens, lengths=lengths)
    accuracy = (log_probs.argmax(-1) == labels).float().mean().item()
    assert accuracy == pytest.approx(ckpt.metrics["val_accuracy"], abs=0.5 / len(val))
    assert ckpt.metrics["num_val"] == len(val)
    assert ckpt.options.epochs == 1 and ckpt.training["optimizer"] == "Adam"


@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_same_weights(tmp_path, tiny_run_dir, arch):
    again = training.train(
        arch, tmp_path / "again", data=load_checkpoint(tiny_run_dir(arch)).data, epochs=1, **TINY
    )
    assert again.sha256 == load_checkpoint(tiny_run_dir(arch)).sha256
    other = training.train(arch, tmp_path / "other", data=again.data, epochs=1, seed=1, **TINY)
    assert other.sha256 != again.sha256


def test_threads_are_restored(tmp_path, first_char_data):
    before = torch.get_num_threads()
    training.train("cell", tmp_path / "run", data=first_char_data, epochs=1, threads=1, **TINY)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("arch", ARCHS)
def test_interrupted_training_keeps_the_earlier_checkpoint(
    tmp_path, monkeypatch, first_char_data, arch
):
    run = tmp_path / "run"
    earlier = training.train(arch, run, data=first_char_data, epochs=1, **TINY)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    real_epoch = training._train_epoch
    epochs_run = []

    def interrupted_epoch(*args):
        epochs_run.append(1)
        if len(epochs_run) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(training, "_train_epoch", interrupted_epoch)
    with pytest.raises(KeyboardInterrupt):
        training.train(arch, run, data=first_char_data, epochs=3, seed=5, **TINY)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert load_checkpoint(run).sha256 == earlier.sha256
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_curves_png(tiny_run_dir):
    png = (tiny_run_dir("cell") / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epochs": 0}, r"epochs must be in 1 \.\. 100,000; got 0"),
        ({"batch_size": 0}, r"batch_size must be in 1 \.\. 65,536; got 0"),
        ({"lr": 0.0}, r"lr must be a finite number in \(0, 1\]; got 0\.0"),
        ({"lr": float("nan")}, r"lr must be a finite number in \(0, 1\]; got nan"),
        ({"lr": 1e38}, r"lr must be a finite number in \(0, 1\]; got 1e\+38"),
        ({"seed": 2**70}, r"seed must be in 0 \.\. 4,294,967,295; got 1,180,591,"),
        ({"hidden_size": 1_000_000}, r"hidden_size must be in 1 \.\. 4,096; got 1,000,000"),
        ({"threads": 2**31}, r"threads must be in 1 \.\. 256; got 2,147,483,648"),
    ],
)
def test_bad_arguments(tmp_path, first_char_data, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        training.train("cell", tmp_path / "run", data=first_char_data, **kwargs)
    assert not (tmp_path / "run").exists()


def test_names_one_epoch(tmp_path, names_dir):
    """The real data trains end to end; one tiny epoch already beats the majority class."""
    ckpt = training.train(
        "stacked", tmp_path / "run", data=folder_spec(names_dir), epochs=1, **TINY
    )
    assert len(ckpt.config.labels) == 18 and ckpt.config.labels[0] == "Arabic"
    russian_share = 9384 / 20050
    assert ckpt.metrics["val_accuracy"] > russian_share


@pytest.mark.slow
@pytest.mark.parametrize("arch", config.ARCHS)
def test_default_settings_reach_90_percent_on_the_embedded_task(tmp_path, arch):
    ckpt = training.train(arch, tmp_path / "run", progress=False)
    assert ckpt.metrics["val_accuracy"] >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("arch", config.ARCHS)
def test_default_settings_reach_80_percent_on_names(tmp_path, names_dir, arch):
    ckpt = training.train(arch, tmp_path / "run", data=folder_spec(names_dir), progress=False)
    assert ckpt.metrics["val_accuracy"] >= 0.8


def test_options_and_keywords_train_the_same_run(tmp_path, first_char_data):
    """train(TrainOptions) is the API; train(arch, out, **options) is the older spelling."""
    options = training.TrainOptions(arch="cell", hidden_size=16, epochs=1, seed=2)
    a = training.train(options, tmp_path / "a", data=first_char_data, progress=False)
    b = training.train(
        "cell", tmp_path / "b", data=first_char_data, hidden_size=16, epochs=1, seed=2, **{}
    )
    assert a.options == b.options == options
    assert a.sha256 == b.sha256
    with pytest.raises(TypeError, match=r"not both; got \['epochs'\]"):
        training.train(options, tmp_path / "c", data=first_char_data, epochs=2)
