"""Run directories: written atomically by training, read back by everything else.

A RUN_DIR holds
    model.safetensors  the weights (safetensors: loading runs no code)
    config.json        the ModelConfig, labels included
    vocab.json         the Vocabulary
    train.json         the data spec ("data"), the TrainOptions ("options") and the
                       library versions; older files hold the options' values at the top
    metrics.json       at least the final "val_accuracy"
    curves.png         training loss and validation accuracy per epoch
A checkpoint is written into a temporary folder next to RUN_DIR, synced, and swapped in
by rename, so a failed or interrupted run never leaves a half-written RUN_DIR and never
damages an earlier one at the same path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from rnn_export import atomic
from rnn_export.config import ConfigError, ModelConfig, TrainOptions
from rnn_export.data import DataError, Vocabulary
from rnn_export.errors import InputError
from rnn_export.models import build_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCAB = "vocab.json"
TRAIN = "train.json"
METRICS = "metrics.json"
CURVES = "curves.png"
REQUIRED = (WEIGHTS, CONFIG, VOCAB, TRAIN, METRICS)
DATA_KEYS = ("source", "path", "seed", "val_fraction")


class CheckpointError(InputError):
    """A RUN_DIR that is missing, incomplete, corrupt or foreign; the message names the file."""


@dataclass(frozen=True)
class Checkpoint:
    """A trained model rebuilt from its RUN_DIR.

    Args:
        model: the nn.Module, in eval mode.
        config: its ModelConfig (labels included).
        vocab: the Vocabulary it was trained with.
        sha256: hex sha256 of the bytes of model.safetensors.
        metrics: metrics.json (at least "val_accuracy").
        data: the data spec {"source", "path", "seed", "val_fraction"}; load_splits(data)
            rebuilds the splits.
        run_dir: the folder it was read from.
        training: the rest of train.json (optimizer, schedule, library versions, ...).
        options: the TrainOptions it was trained with; None for a checkpoint written
            without them (by save_checkpoint with a hand-made train.json).
    """

    model: nn.Module
    config: ModelConfig
    vocab: Vocabulary
    sha256: str
    metrics: dict
    data: dict
    run_dir: Path
    training: dict
    options: TrainOptions | None = None


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    vocab: Vocabulary,
    data: dict,
    training: dict,
    metrics: dict,
    write_curves: Callable[[Path], None] | None = None,
) -> Path:
    """Write a RUN_DIR atomically, replacing an earlier checkpoint at the same path.

    Args:
        run_dir: where the checkpoint goes; if it exists it must be a checkpoint or empty.
        model: a model of either arch; its .config is stored.
        vocab: the vocabulary it was trained with.
        data: the data spec (see rnn_export.data).
        training: hyper-parameters and anything else to keep in train.json.
        metrics: at least {"val_accuracy": float}.
        write_curves: called with the path of curves.png to draw it.

    Returns:
        run_dir as a Path.

    Raises:
        CheckpointError: run_dir exists and holds something other than a checkpoint.
    """
    run_dir = Path(run_dir)
    if len(vocab) != model.config.vocab_size:
        raise CheckpointError(
            f"model expects vocab_size {model.config.vocab_size}; vocabulary has {len(vocab)}"
        )
    if "val_accuracy" not in metrics:
        raise CheckpointError(f"metrics must include 'val_accuracy'; got {sorted(metrics)}")
    check_replaceable(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.temp_folder(run_dir)
    try:
        weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        atomic.write_file(tmp / WEIGHTS, save_safetensors(weights))
        atomic.write_file(tmp / CONFIG, _json(model.config.to_dict()))
        atomic.write_file(tmp / VOCAB, _json(vocab.to_dict()))
        atomic.write_file(tmp / TRAIN, _json({"data": data, **training}))
        atomic.write_file(tmp / METRICS, _json(metrics))
        if write_curves is not None:
            write_curves(tmp / CURVES)
            atomic.fsync_file(tmp / CURVES)
        atomic.fsync_dir(tmp)
        atomic.swap_in(tmp, run_dir)
    finally:
        # Reached with tmp still present only when something above failed or was interrupted.
        shutil.rmtree(tmp, ignore_errors=True)
    return run_dir


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Rebuild a trained model from RUN_DIR alone, in eval mode.

    Raises:
        CheckpointError: a missing folder or file, bad JSON, weights with the wrong tensor
            names, shapes or dtypes, or a config that does not match the weights; the
            message names the file at fault.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: expected a run directory; not found")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{run_dir / missing[0]}: missing; a run directory holds {', '.join(REQUIRED)} "
            f"(missing: {', '.join(missing)})"
        )
    config_path = run_dir / CONFIG
    try:
        config = ModelConfig.from_dict(_read_json(config_path))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{config_path}: not a model config: {e}") from None
    vocab_path = run_dir / VOCAB
    try:
        vocab = Vocabulary.from_dict(_read_json(vocab_path))
    except DataError as e:
        raise CheckpointError(f"{vocab_path}: not a vocabulary: {e}") from None
    if len(vocab) != config.vocab_size:
        raise CheckpointError(
            f"{vocab_path}: has {len(vocab)} tokens; {config_path} says vocab_size "
            f"{config.vocab_size}"
        )
    training = _read_json(run_dir / TRAIN)
    data = training.get("data") if isinstance(training, dict) else None
    if not isinstance(data, dict) or not set(DATA_KEYS) <= data.keys():
        raise CheckpointError(
            f"{run_dir / TRAIN}: expected a 'data' object with keys {list(DATA_KEYS)}; "
            f"got {data!r:.120}"
        )
    options = _read_options(training, config, run_dir / TRAIN, config_path)
    metrics = _read_json(run_dir / METRICS)
    if not isinstance(metrics, dict) or "val_accuracy" not in metrics:
        raise CheckpointError(f"{run_dir / METRICS}: expected an object with 'val_accuracy'")

    weights_path = run_dir / WEIGHTS
    raw = weights_path.read_bytes()
    try:
        weights = load_safetensors(raw)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: not a safetensors file: {e}") from None
    model = build_model(config)
    _check_weights(weights, model, weights_path, config_path)
    model.load_state_dict(weights)
    model.eval()
    return Checkpoint(
        model=model,
        config=config,
        vocab=vocab,
        sha256=hashlib.sha256(raw).hexdigest(),
        metrics=metrics,
        data=data,
        run_dir=run_dir,
        training={k: v for k, v in training.items() if k not in ("data", "options")},
        options=options,
    )


# The option values that train.json held at its top level before it held "options".
_LEGACY_OPTIONS = ("epochs", "batch_size", "lr", "clip", "seed")


def _read_options(training: dict, config: ModelConfig, path: Path, config_path: Path):
    """The TrainOptions of train.json (or of an older train.json's top-level values)."""
    if "options" in training:
        given = training["options"]
    elif set(_LEGACY_OPTIONS) <= training.keys():
        model = {k: v for k, v in config.to_dict().items() if k in ("hidden_size", "num_layers")}
        given = {
            "arch": config.arch,
            "nonlinearity": config.nonlinearity,
            **model,
            **{k: training[k] for k in _LEGACY_OPTIONS},
            "threads": training.get("torch_threads", 1),
        }
    else:
        return None
    try:
        options = TrainOptions.from_dict(given)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: not training options: {e}") from None
    trained = options.model_config(config.vocab_size, config.labels)
    if trained != config:
        raise CheckpointError(
            f"{path}: options describe the model {trained.describe()}; {config_path} "
            f"describes {config.describe()}"
        )
    return options


def _check_weights(weights: dict, model: nn.Module, weights_path: Path, config_path: Path):
    expected = model.state_dict()
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path}: tensor names do not match the {model.config.arch!r} model of "
            f"{config_path}: missing {missing}, unexpected {unexpected}"
        )
    for name, want in expected.items():
        got = weights[name]
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(
                f"{weights_path}: tensor {name!r} has shape {tuple(got.shape)}; the model of "
                f"{config_path} expects {tuple(want.shape)}"
            )
        if got.dtype != want.dtype:
            raise CheckpointError(
                f"{weights_path}: tensor {name!r} has dtype {got.dtype}; expected {want.dtype}"
            )
        if got.dtype.is_floating_point and not torch.isfinite(got).all():
            raise CheckpointError(f"{weights_path}: tensor {name!r} holds NaN or infinity")


def check_replaceable(run_dir: str | Path) -> None:
    """Raise CheckpointError unless run_dir is absent, empty, or holds a checkpoint.

    Training calls it first, so that a bad --out fails before minutes of training.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: expected a run directory to replace; it is a file")
    entries = list(run_dir.iterdir())
    if entries and not (run_dir / WEIGHTS).is_file():
        raise CheckpointError(
            f"{run_dir}: refusing to replace a non-empty folder that is not a checkpoint "
            f"(no {WEIGHTS}); choose another --out"
        )


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from None


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
