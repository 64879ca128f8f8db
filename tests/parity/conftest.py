"""Fixtures of the parity suite: tiny untrained runs and their exports, built once per session."""

from __future__ import annotations

import random

import pytest
import torch

from rnn_export.checkpoint import save_checkpoint
from rnn_export.config import ModelConfig
from rnn_export.data import Vocabulary, embedded_spec, folder_spec, load_dataset
from rnn_export.export import export_onnx
from rnn_export.models import build_model

TINY_H = 16


@pytest.fixture(autouse=True)
def _parity_on_one_torch_thread(one_torch_thread):
    """Parity cases are many tiny calls: a spinning thread pool only slows them down."""


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """A small folder dataset (3 classes, 40 lines each): fast to split and encode."""
    folder = tmp_path_factory.mktemp("tiny-data")
    rng = random.Random(0)
    for label in ("x", "y", "z"):
        lines = [
            "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 20))) for _ in range(40)
        ]
        (folder / f"{label}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder_spec(folder)


def write_run(
    run_dir,
    data: dict,
    arch: str,
    nonlinearity: str,
    hidden_size: int,
    seed: int = 0,
    num_layers: int | None = None,
):
    """An untrained checkpoint of the given shape on `data` (its validation split is real);
    num_layers None: 1 for "cell", 2 for the others."""
    dataset = load_dataset(data)
    vocab = Vocabulary.build([text for text, _ in dataset.train])
    torch.manual_seed(seed)
    config = ModelConfig(
        arch=arch,
        vocab_size=len(vocab),
        labels=dataset.labels,
        hidden_size=hidden_size,
        num_layers=num_layers or (1 if arch == "cell" else 2),
        nonlinearity=nonlinearity,
    )
    model = build_model(config).eval()
    return save_checkpoint(run_dir, model, vocab, data, {"seed": seed}, {"val_accuracy": 0.0})


@pytest.fixture(scope="session")
def make_export(tmp_path_factory, tiny_data):
    """make_export(arch, nonlinearity, opset=None, hidden_size=TINY_H, seed=0, num_layers=None)
    -> (run_dir, model.onnx).

    hidden_size 128 uses the embedded default dataset, as a default-size run would.
    """
    root = tmp_path_factory.mktemp("runs")
    cache = {}

    def make(arch, nonlinearity, opset=None, hidden_size=TINY_H, seed=0, num_layers=None):
        key = (arch, nonlinearity, opset, hidden_size, seed, num_layers)
        if key not in cache:
            run_dir = root / f"{arch}-{nonlinearity}-h{hidden_size}-s{seed}-l{num_layers}"
            if not run_dir.exists():
                data = embedded_spec() if hidden_size >= 128 else tiny_data
                write_run(run_dir, data, arch, nonlinearity, hidden_size, seed, num_layers)
            path = run_dir / f"model-opset{opset or 'default'}.onnx"
            if opset is None:
                export_onnx(run_dir, path)
            else:
                export_onnx(run_dir, path, opset=opset)
            cache[key] = (run_dir, path)
        return cache[key]

    return make
