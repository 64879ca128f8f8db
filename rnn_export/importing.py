"""Bring your own model: a state_dict trained elsewhere written as a RUN_DIR.

A user who trained the notes' `RNN` (the hand-built cell) or `my_RNN` (the nn.RNN
wrapper, or the same wrapper around nn.GRU or nn.LSTM), the PyTorch tutorial's name
classifiers (`CharRNN`: nn.RNN over one-hot letters and `h2o`; the classic `RNN` with
`i2h`, `h2h`, `h2o`), a keyword spotter over float frames or a language model whose
embedding size differs from its hidden size, with their own loop, saves
`model.state_dict()`; import_weights reads it, recognizes its stages
(rnn_export.forms: the names and shapes it takes), checks every tensor, and writes a
RUN_DIR that convert, verify, bench, predict and evaluate accept. The RUN_DIR says it
was imported (train.json "imported": the weights file and its sha256) and has no
training data ("data" null).

Reading runs no code: a .safetensors file, or torch.load(..., weights_only=True), whose
unpickler allows only tensors and plain containers. A file that needs more (a pickled
module, a custom class) is refused naming the global that was blocked, and is never
read again unsafely.

A prefix every name shares ("module." from DataParallel, "model." from a wrapper) is
stripped, or the one given; `mapping` renames others. V, E (or F), H, L and C come from
the shapes; V must equal the vocabulary's size and C the number of labels.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from rnn_export import atomic
from rnn_export.checkpoint import Checkpoint, check_replaceable, load_checkpoint, save_checkpoint
from rnn_export.config import ARCHS, INPUT_KINDS, NONLINEARITIES, ModelConfig
from rnn_export.data import Vocabulary
from rnn_export.errors import decode_utf8
from rnn_export.forms import ImportWeightsError, model_state, recognize
from rnn_export.models import build_model
from rnn_export.runfiles import parse_json, read_json

# The notes' exact behaviour: their cell has no nonlinearity, nn.RNN's default is tanh.
DEFAULT_NONLINEARITY = {"cell": "identity", "stacked": "tanh", "gru": "tanh", "lstm": "tanh"}
AUTO_PREFIXES = ("module.", "model.")
MAX_WEIGHTS_BYTES = 2**31  # an exportable model's weights are far smaller (ONNX's 2 GiB)
_BLOCKED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def import_weights(
    weights: str | Path,
    arch: str,
    vocab,
    labels,
    out: str | Path,
    *,
    nonlinearity: str | None = None,
    prefix: str | None = None,
    mapping: Mapping[str, str] | None = None,
    input_kind: str | None = None,
    normalization=None,
) -> Checkpoint:
    """Write a RUN_DIR for a model trained elsewhere.

    Args:
        weights: a file of `torch.save(model.state_dict(), path)`, or a .safetensors file.
        arch: "cell" (the notes' RNN, or the tutorial's classic i2h/h2h cell), "stacked"
            (nn.RNN: the notes' my_RNN, the tutorial's CharRNN), "gru" or "lstm".
        vocab: the VOCAB.json path ({"tokens": [...], "unk_id": N}, or a plain list:
            token id = index, no unknown token), or a Vocabulary; None for a model over
            float frames.
        labels: the LABELS path (a JSON list, or a .txt with one label per line), or a
            sequence of class names; class id = index.
        out: the RUN_DIR to write (atomically; an earlier run there is replaced).
        nonlinearity: "identity" (the notes' cell: no nonlinearity, its default), "tanh"
            (the default of nn.RNN and of the tutorial's cells; the only one of "gru" and
            "lstm") or "relu".
        prefix: strip this prefix from every name (which must all have it); None strips
            "module." and "model." where every name has them.
        mapping: {old: new} renames applied after the prefix: a whole name, or a name
            prefix when old ends with ".".
        input_kind: "tokens" (an embedding in the file), "onehot" (none: one-hot vectors
            of the vocabulary) or "features" (none: float frames); None reads it from
            the file (an embedding: tokens; else onehot with a vocabulary, features
            without one).
        normalization: a features model's per-feature (mean, scale), F values each, or
            a JSON/.npz file of them ({"mean": [...], "scale": [...]}); None: frames go
            in as they are (mean 0, scale 1).

    Returns:
        The Checkpoint read back from out.

    Raises:
        ImportWeightsError: an unknown arch, a file torch.load(weights_only=True) or
            safetensors refuses, missing, unexpected, misshapen or non-float tensors,
            V against the vocabulary or C against the labels; out is as it was.
    """
    if arch not in ARCHS:
        raise ImportWeightsError(f"unknown arch {arch!r:.40}; expected one of {list(ARCHS)}")
    if nonlinearity is not None and nonlinearity not in NONLINEARITIES[arch]:
        raise ImportWeightsError(
            f"nonlinearity for arch {arch!r} must be one of {list(NONLINEARITIES[arch])}; "
            f"got {nonlinearity!r:.40}"
        )
    if input_kind is None and vocab is None:
        input_kind = "features"
    if input_kind is not None and input_kind not in INPUT_KINDS:
        raise ImportWeightsError(f"input must be one of {list(INPUT_KINDS)}; got {input_kind!r}")
    check_replaceable(out)
    path = Path(weights)
    raw, kind, sha256 = read_state_dict(path)
    tensors, stripped = strip_prefix(raw, prefix, path)
    tensors, renamed = rename(tensors, mapping or {}, path)
    form = recognize(tensors, arch, input_kind, path)
    nonlinearity = DEFAULT_NONLINEARITY[form.arch] if nonlinearity is None else nonlinearity
    if nonlinearity not in NONLINEARITIES[form.arch]:
        raise ImportWeightsError(
            f"{path}: this is {form.notes[0] if form.notes else form.arch}; its nonlinearity "
            f"must be one of {list(NONLINEARITIES[form.arch])}; got {nonlinearity!r}"
        )
    vocabulary = None
    if form.input_kind == "features":
        if vocab is not None:
            raise ImportWeightsError(
                f"{path}: a model over float frames (F = {form.X}) reads no characters: give "
                "no vocabulary"
            )
    else:
        if vocab is None:
            raise ImportWeightsError(
                f"{path}: a model over {form.input_kind} reads characters: give its "
                f"vocabulary ({form.V} symbols)"
            )
        vocabulary = vocab if isinstance(vocab, Vocabulary) else read_vocab(Path(vocab))
        if len(vocabulary) != form.V:
            where = "'embedding.weight' has shape" if form.input_kind == "tokens" else "one-hot"
            shape = (form.V, form.X) if form.input_kind == "tokens" else f"width {form.X}"
            raise ImportWeightsError(
                f"{_name(vocab)}: has {len(vocabulary)} tokens; {path}: {where} {shape}, so "
                f"the model reads V = {form.V} token ids"
            )
    names = tuple(labels) if not isinstance(labels, (str, Path)) else read_labels(Path(labels))
    head = "h2o.weight" if form.arch == "cell" else "fc.weight"
    if len(names) != form.C:
        raise ImportWeightsError(
            f"{_name(labels)}: has {len(names)} labels; {path}: {head!r} has shape "
            f"{(form.C, form.H)}, so the model has C = {form.C} classes"
        )
    # input_size None: the notes' E = H, or a one-hot input (its width is V)
    notes_size = form.input_kind == "onehot" or (form.input_kind == "tokens" and form.X == form.H)
    config = ModelConfig(
        form.arch,
        form.V,
        names,
        hidden_size=form.H,
        num_layers=form.L,
        nonlinearity=nonlinearity,
        input_kind=form.input_kind,
        input_size=None if notes_size else form.X,
    )
    model = build_model(config)
    model.load_state_dict(model_state(form, model), strict=False)
    if form.input_kind == "features":
        mean, scale = read_normalization(normalization, form.X)
        model.frames.mean.copy_(torch.from_numpy(mean))
        model.frames.scale.copy_(torch.from_numpy(scale))
    elif normalization is not None:
        raise ImportWeightsError("a normalization is for a model over float frames only")
    model.eval()
    imported = {
        "source": str(path.resolve()),
        "sha256": sha256,
        "format": kind,
        "prefix": stripped,
        "renamed": renamed,
        "recognized": list(form.notes),
        "dtypes": sorted({str(v.dtype) for v in tensors.values()}),
    }
    training = {"imported": imported, "torch_version": torch.__version__}
    save_checkpoint(out, model, vocabulary, None, training, {})
    return load_checkpoint(out)


def read_normalization(source, F: int) -> tuple[np.ndarray, np.ndarray]:
    """A features model's (mean, scale), float32 (F,) each, from None (0 and 1), a pair
    of sequences, or a .json ({"mean": [...], "scale": [...]}) or .npz file of them."""
    if source is None:
        return np.zeros(F, np.float32), np.ones(F, np.float32)
    where = str(source) if isinstance(source, (str, Path)) else "the normalization"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if atomic.path_kind(path) != "a regular file":
            raise ImportWeightsError(f"{path}: expected a normalization file (.json or .npz)")
        if path.suffix == ".npz":
            try:
                with np.load(path, allow_pickle=False) as npz:
                    source = (npz["mean"], npz["scale"])
            except (KeyError, ValueError, OSError) as e:
                raise ImportWeightsError(
                    f"{path}: expected a .npz with arrays mean and scale: {e}"
                ) from None
        else:
            value = parse_json(path.read_bytes(), path)
            if not isinstance(value, dict) or set(value) != {"mean", "scale"}:
                raise ImportWeightsError(
                    f'{path}: expected {{"mean": [F numbers], "scale": [F numbers]}}; got '
                    f"{json.dumps(value)[:80]}"
                )
            source = (value["mean"], value["scale"])
    try:
        mean, scale = (np.asarray(v, dtype=np.float64) for v in source)
    except (TypeError, ValueError) as e:
        raise ImportWeightsError(f"{where}: mean and scale must be numbers: {e}") from None
    for name, v in (("mean", mean), ("scale", scale)):
        if v.shape != (F,) or not np.isfinite(v).all():
            raise ImportWeightsError(
                f"{where}: {name} must be {F} finite numbers (F from the input weight); got "
                f"shape {v.shape}"
            )
    if (scale == 0).any():
        raise ImportWeightsError(f"{where}: scale must be non-zero (it divides the frames)")
    return mean.astype(np.float32), scale.astype(np.float32)


def read_state_dict(path: Path) -> tuple[dict, str, str]:
    """The {name: tensor} of a weights file, its format and its sha256; no code runs.

    Raises:
        ImportWeightsError: not a regular file, not a state_dict, or a pickle that needs
            a global torch.load(weights_only=True) blocks (named in the message).
    """
    kind = atomic.path_kind(path)
    if kind != "a regular file":
        got = "not found" if kind is None else f"it is {kind}"
        raise ImportWeightsError(
            f"{path}: expected a weights file (torch.save(model.state_dict(), path) or "
            f".safetensors); {got}"
        )
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise ImportWeightsError(f"{path}: {size:,} bytes; at most {MAX_WEIGHTS_BYTES:,}")
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            return load(data), "safetensors", sha256
        except (SafetensorError, ValueError) as e:
            raise ImportWeightsError(f"{path}: not a safetensors file: {e}") from None
    try:
        # From the bytes hashed above: the sha256 recorded is that of what was read.
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = _BLOCKED.search(str(e))
        if blocked is None:
            raise ImportWeightsError(f"{path}: not a PyTorch weights file: {e}") from None
        raise ImportWeightsError(
            f"{path}: refused: it needs the global {blocked.group(1)}, which "
            "torch.load(weights_only=True) blocks (a pickled module or custom class runs "
            "code when loaded, so it is never loaded unsafely); save the weights alone: "
            "torch.save(model.state_dict(), path)"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise ImportWeightsError(f"{path}: not a PyTorch weights file: {e}") from None
    if not isinstance(loaded, Mapping):
        raise ImportWeightsError(
            f"{path}: expected a state_dict ({{name: tensor}}); it holds a {type(loaded).__name__}"
        )
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise ImportWeightsError(
                f"{path}: expected a state_dict ({{name: tensor}}); entry {name!r:.60} holds "
                f"a {type(value).__name__}"
            )
    return dict(loaded), "torch", sha256


def strip_prefix(tensors: dict, prefix: str | None, path: Path) -> tuple[dict, str]:
    """The tensors without the prefix of every name: the given one, or those of
    AUTO_PREFIXES that every name shares ("module.model." included); and what was stripped."""
    if not tensors:
        raise ImportWeightsError(f"{path}: holds no tensors")
    if prefix is not None:
        lacking = sorted(k for k in tensors if not k.startswith(prefix))
        if lacking:
            raise ImportWeightsError(
                f"{path}: --prefix {prefix!r}: {len(lacking)} names lack it, e.g. {lacking[:3]}"
            )
        return {k[len(prefix) :]: v for k, v in tensors.items()}, prefix
    stripped = ""
    while True:
        shared = next((p for p in AUTO_PREFIXES if all(k.startswith(p) for k in tensors)), None)
        if shared is None:
            return tensors, stripped
        tensors = {k[len(shared) :]: v for k, v in tensors.items()}
        stripped += shared


def rename(tensors: dict, mapping: Mapping[str, str], path: Path) -> tuple[dict, dict]:
    """Apply {old: new}: a whole name, or a name prefix when old ends with "."."""
    renamed = {}
    for old, new in mapping.items():
        hits = [k for k in tensors if k == old or (old.endswith(".") and k.startswith(old))]
        if not hits:
            raise ImportWeightsError(
                f"{path}: --map {old}={new}: no tensor is named {old!r}"
                + (" or starts with it" if old.endswith(".") else "")
                + f"; the names are {sorted(tensors)[:8]}"
            )
        for key in hits:
            target = new + key[len(old) :]
            if target in tensors and target not in hits:
                raise ImportWeightsError(
                    f"{path}: --map {old}={new}: {key!r} would become {target!r}, which "
                    "already exists"
                )
            renamed[target] = key
        tensors = {(new + k[len(old) :] if k in hits else k): v for k, v in tensors.items()}
    return tensors, renamed


def read_vocab(path: Path) -> Vocabulary:
    """VOCAB.json: {"tokens": [...], "unk_id": N}, or a plain list (no unknown token)."""
    from rnn_export.data import DataError

    value = read_json(path)
    try:
        if isinstance(value, list):
            return Vocabulary(tuple(value), unk_id=None)
        return Vocabulary.from_dict(value)
    except (DataError, TypeError) as e:
        raise ImportWeightsError(
            f"{path}: expected a vocabulary: a list of single characters (token id = "
            f'index) or {{"tokens": [...], "unk_id": N}}; {e}'
        ) from None


def read_labels(path: Path) -> tuple[str, ...]:
    """LABELS: a JSON list of strings, or a .txt with one label per line (blank lines
    skipped, surrounding white space stripped)."""
    if atomic.path_kind(path) != "a regular file":
        kind = atomic.path_kind(path)
        raise ImportWeightsError(
            f"{path}: expected a labels file (.json list or .txt); "
            + ("not found" if kind is None else f"it is {kind}")
        )
    raw = path.read_bytes()
    if path.suffix == ".txt":
        return tuple(s.strip() for s in decode_utf8(raw, path).splitlines() if s.strip())
    value = parse_json(raw, path)
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ImportWeightsError(
            f"{path}: expected a JSON list of label strings (or a .txt, one per line); "
            f"got {value!r:.80}"
        )
    return tuple(value)


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the vocabulary/labels given"


__all__ = ["DEFAULT_NONLINEARITY", "ImportWeightsError", "import_weights"]
