"""Run directories: written atomically by training, read back by everything else.

A RUN_DIR holds
    model.safetensors  the weights (safetensors: loading runs no code)
    config.json        the ModelConfig, labels included
    vocab.json         the Vocabulary
    train.json         the data spec ("data"), the TrainOptions ("options") and the
                       library versions; older files hold the options' values at the top.
                       An imported model's has "data" null and "imported": its weights
                       file and that file's sha256 (rnn_export.importing)
    metrics.json       at least the final "val_accuracy" (an imported model: none)
    curves.png         training loss and validation accuracy per epoch
A checkpoint is written into a temporary folder next to RUN_DIR, synced, and swapped in
by rename, so a failed or interrupted run never leaves a half-written RUN_DIR and never
damages an earlier one at the same path.

A checkpoint's identity (Checkpoint.sha256, the `checkpoint_sha256` of every file exported
from it) covers everything that defines the model: the sha256 of model.safetensors, the
config (labels included) and the vocabulary, hashed as one canonical JSON document
(model_identity). It once covered the weights alone: files exported then carry the
weights' sha256, and Checkpoint.mismatch says so plainly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save as save_safetensors
from torch import nn

from rnn_export import atomic
from rnn_export.config import ConfigError, ModelConfig, TrainOptions
from rnn_export.data import DataError, Vocabulary
from rnn_export.errors import CheckpointError
from rnn_export.frames import check_data_spec
from rnn_export.models import build_model
from rnn_export.runfiles import read_json, read_weights

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCAB = "vocab.json"
TRAIN = "train.json"
METRICS = "metrics.json"
CURVES = "curves.png"
REQUIRED = (WEIGHTS, CONFIG, VOCAB, TRAIN, METRICS)  # VOCAB: a model that reads tokens
DATA_KEYS = ("source", "path", "seed", "val_fraction")


@dataclass(frozen=True)
class Checkpoint:
    """A trained model rebuilt from its RUN_DIR.

    Args:
        model: the nn.Module, in eval mode.
        config: its ModelConfig (labels included).
        vocab: the Vocabulary it was trained with.
        sha256: the model's identity (model_identity): hex sha256 over the weights, the
            config (labels included) and the vocabulary.
        metrics: metrics.json (at least "val_accuracy"; empty for an imported model).
        data: the data spec {"source", "path", "seed", "val_fraction"}; load_splits(data)
            rebuilds the splits. None for an imported model (rnn_export.importing): it
            has no training data, and training["imported"] says where it came from.
        run_dir: the folder it was read from.
        training: the rest of train.json (optimizer, schedule, library versions, ...).
        options: the TrainOptions it was trained with; None for a checkpoint written
            without them (by save_checkpoint with a hand-made train.json).
        weights_sha256: hex sha256 of the bytes of model.safetensors.
    """

    model: nn.Module
    config: ModelConfig
    vocab: Vocabulary
    sha256: str
    metrics: dict
    data: dict | None
    run_dir: Path
    training: dict
    options: TrainOptions | None = None
    weights_sha256: str = ""

    @property
    def imported(self) -> dict | None:
        """{"source", "sha256", ...} of an imported model's weights file; None if trained."""
        return self.training.get("imported")

    def mismatch(self, file_sha256: str, model_path) -> str:
        """Why a model file whose metadata says file_sha256 does not belong to this run."""
        if file_sha256 == self.weights_sha256:
            return (
                f"{model_path} was exported by an earlier rnn-export, whose checkpoint "
                f"identity covered the weights only; it now covers the weights, config, "
                f"vocabulary and labels, so files exported before that no longer match "
                f"their RUN_DIR: convert {self.run_dir} again"
            )
        return (
            f"{model_path} was exported from a checkpoint with sha256 {file_sha256}; "
            f"{self.run_dir} has sha256 {self.sha256}: model and checkpoint do not belong "
            f"together"
        )


def model_identity(weights_sha256: str, config: ModelConfig, vocab: Vocabulary | None) -> str:
    """The hex sha256 that identifies a model: its weights, config and vocabulary.

    The three are hashed as one canonical JSON document (sorted keys, ASCII, no spaces),
    so a change to any of them (reversed labels, another vocabulary) changes the identity.
    """
    document = {
        "identity": "rnn-export model 1",
        "weights_sha256": weights_sha256,
        "config": config.to_dict(),
        "vocab": None if vocab is None else vocab.to_dict(),
    }
    text = json.dumps(document, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    vocab: Vocabulary,
    data: dict,
    training: dict,
    metrics: dict,
    curves_png: bytes | None = None,
) -> Path:
    """Write a RUN_DIR atomically, replacing an earlier checkpoint at the same path.

    The new run is written to a temporary folder and read back with every check of
    load_checkpoint (finite weights, shapes, JSON) before it is swapped in: a run that
    fails a check never replaces an earlier one.

    Args:
        run_dir: where the checkpoint goes; if it exists it must be a checkpoint or empty.
        model: a model of any arch; its .config is stored.
        vocab: the vocabulary it was trained with.
        data: the data spec (see rnn_export.data); None for an imported model, whose
            training then holds "imported".
        training: hyper-parameters and anything else to keep in train.json.
        metrics: at least {"val_accuracy": float} (may be {} when data is None).
        curves_png: the PNG of the training curves, stored as curves.png.

    Returns:
        run_dir as a Path.

    Raises:
        CheckpointError: run_dir exists and holds something other than a checkpoint, or
            the new run fails a check (the message names the file); run_dir is as it was.
        WriteError: a file cannot be written (full disk...); run_dir is as it was.
    """
    run_dir = Path(run_dir)
    _check_vocab(model.config, vocab, "the vocabulary given")
    if data is not None and "val_accuracy" not in metrics:
        raise CheckpointError(f"metrics must include 'val_accuracy'; got {sorted(metrics)}")
    check_replaceable(run_dir)
    with atomic.temp_folder(run_dir) as tmp:
        weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        files = {
            WEIGHTS: save_safetensors(weights),
            CONFIG: _json(model.config.to_dict()),
            TRAIN: _json({"data": data, **training}),
            METRICS: _json(metrics),
        }
        if vocab is not None:  # a features model reads no tokens: it has no vocab.json
            files[VOCAB] = _json(vocab.to_dict())
        if curves_png is not None:
            files[CURVES] = curves_png
        try:
            for name, content in files.items():
                atomic.write_file(tmp / name, content)
            atomic.fsync_dir(tmp)
        except (atomic.WriteError, OSError) as e:
            raise atomic.WriteError(_kept(run_dir, tmp, e, "cannot be written")) from None
        try:
            load_checkpoint(tmp)
        except CheckpointError as e:
            raise CheckpointError(_kept(run_dir, tmp, e, "fails a check")) from None
        atomic.swap_in(tmp, run_dir)
    return run_dir


def _kept(run_dir: Path, tmp: Path, error: Exception, what: str) -> str:
    """The message for a new checkpoint that was not swapped in; it names run_dir, not tmp."""
    text = atomic.os_error_text(error) if isinstance(error, OSError) else str(error)
    reason = text.replace(str(tmp), str(run_dir))
    return f"{run_dir}: the new checkpoint {what}, so nothing was replaced: {reason}"


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Rebuild a trained model from RUN_DIR alone, in eval mode.

    Every file is read within bounds (see the module docstring) and checked before the
    model is built: nothing is allocated from a size no check has passed.

    Raises:
        CheckpointError: a missing folder or file, bad JSON, weights with the wrong tensor
            names, shapes or dtypes, or a config that does not match the weights; the
            message names the file at fault.
    """
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    config_path = run_dir / CONFIG
    try:
        config = ModelConfig.from_dict(read_json(config_path))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{config_path}: not a model config: {e}") from None
    vocab_path = run_dir / VOCAB
    vocab = None
    if config.reads_tokens:  # a features model has no vocab.json
        _check_files(run_dir, list(REQUIRED))
    if config.reads_tokens or atomic.path_kind(vocab_path) is not None:
        try:
            vocab = Vocabulary.from_dict(read_json(vocab_path))
        except DataError as e:
            raise CheckpointError(f"{vocab_path}: not a vocabulary: {e}") from None
    _check_vocab(config, vocab, vocab_path, config_path)
    train_path = run_dir / TRAIN
    training = read_json(train_path)
    if not isinstance(training, dict):
        raise CheckpointError(f"{train_path}: expected a JSON object; got {training!r:.80}")
    data = _read_data(training, train_path)
    options = _read_options(training, config, train_path, config_path)
    metrics = read_json(run_dir / METRICS)
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{run_dir / METRICS}: expected a JSON object; got {metrics!r:.80}")
    if data is not None or "val_accuracy" in metrics:  # an imported run has no accuracy
        _check_accuracy(metrics.get("val_accuracy"), run_dir / METRICS)

    weights_path = run_dir / WEIGHTS
    weights, weights_sha256 = read_weights(weights_path, config, config_path)
    model = build_model(config)
    model.load_state_dict(weights)
    model.eval()
    return Checkpoint(
        model=model,
        config=config,
        vocab=vocab,
        sha256=model_identity(weights_sha256, config, vocab),
        metrics=metrics,
        data=data,
        run_dir=run_dir,
        training={k: v for k, v in training.items() if k not in ("data", "options")},
        options=options,
        weights_sha256=weights_sha256,
    )


def _check_vocab(config: ModelConfig, vocab, vocab_path, config_path="the model") -> None:
    """A vocabulary of config.vocab_size tokens for a model that reads tokens; none for a
    features model."""
    if not config.reads_tokens:
        if vocab is not None:
            raise CheckpointError(
                f"{vocab_path}: a features model reads no tokens, so it has no vocabulary; "
                f"got one of {len(vocab)} tokens"
            )
        return
    if vocab is None or len(vocab) != config.vocab_size:
        got = "none" if vocab is None else f"{len(vocab)} tokens"
        raise CheckpointError(
            f"{vocab_path}: has {got}; {config_path} says vocab_size {config.vocab_size}"
        )


def _read_data(training: dict, path: Path) -> dict | None:
    """train.json's data spec; None for an imported run (it says where it came from)."""
    data = training.get("data")
    if data is None and isinstance(training.get("imported"), dict):
        return None
    if not isinstance(data, dict) or not set(DATA_KEYS) <= data.keys():
        raise CheckpointError(
            f"{path}: expected a 'data' object with keys {list(DATA_KEYS)} (or, for an "
            f"imported model, 'data' null and an 'imported' object); got {data!r:.120}"
        )
    try:
        return check_data_spec(data)
    except DataError as e:
        raise CheckpointError(f"{path}: not a data spec: {e}") from None


def _check_accuracy(accuracy, path: Path) -> None:
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)):
        raise CheckpointError(f"{path}: expected an object with 'val_accuracy'")
    if not 0 <= accuracy <= 1:
        raise CheckpointError(f"{path}: val_accuracy must be in [0, 1]; got {accuracy!r}")


def _check_run_dir(run_dir: Path) -> None:
    """Refuse a path that is not a complete run directory, saying what it is instead."""
    if not run_dir.is_dir():
        kind = atomic.path_kind(run_dir)
        if kind is None:
            raise CheckpointError(f"{run_dir}: expected a run directory; not found")
        hint = ""
        if run_dir.suffix == ".onnx":
            hint = (
                " that looks like an exported model: pass the RUN_DIR it was converted "
                "from (the folder `rnn-export train --out` wrote); are two arguments swapped?"
            )
        raise CheckpointError(
            f"{run_dir}: expected a run directory (a folder made by `rnn-export train`); "
            f"it is {kind}{hint}"
        )
    _check_files(run_dir, [name for name in REQUIRED if name != VOCAB])


def _check_files(run_dir: Path, names: list[str]) -> None:
    """Refuse a run directory that lacks one of names (or holds a non-file there)."""
    for name in names:
        kind = atomic.path_kind(run_dir / name)
        if kind not in (None, "a regular file"):
            raise CheckpointError(f"{run_dir / name}: expected a regular file; it is {kind}")
    missing = [name for name in REQUIRED if name in names and not (run_dir / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{run_dir / missing[0]}: missing; a run directory holds {', '.join(REQUIRED)} "
            f"(missing: {', '.join(missing)})"
        )


def check_replaceable(run_dir: str | Path) -> None:
    """Raise unless run_dir can take a new checkpoint: absent, empty, or a checkpoint,
    with a parent that exists or can be made, and is writable.

    Training calls it first, so that a bad --out fails before minutes of training.

    Raises:
        CheckpointError: run_dir holds something other than a checkpoint.
        WriteError: run_dir is not a folder (a file, a FIFO...), or cannot be made.
    """
    run_dir = Path(run_dir)
    atomic.check_folder_output(run_dir, "a run directory")
    if not run_dir.exists():
        return
    entries = list(run_dir.iterdir())
    if entries and not (run_dir / WEIGHTS).is_file():
        raise CheckpointError(
            f"{run_dir}: refusing to replace a non-empty folder that is not a checkpoint "
            f"(no {WEIGHTS}); choose another --out"
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
    trained = options.model_config(config.vocab_size, config.labels, config.input_size)
    if trained != config:
        raise CheckpointError(
            f"{path}: options describe the model {trained.describe()}; {config_path} "
            f"describes {config.describe()}"
        )
    return options


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
