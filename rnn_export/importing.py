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
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from rnn_export import atomic
from rnn_export.checkpoint import Checkpoint, check_replaceable, load_checkpoint, save_checkpoint
from rnn_export.config import ARCHS, INPUT_KINDS, NONLINEARITIES, ModelConfig, check_label
from rnn_export.data import Vocabulary
from rnn_export.errors import decode_utf8
from rnn_export.forms import ImportWeightsError, model_state, recognize
from rnn_export.models import build_model
from rnn_export.runfiles import parse_json, read_json

# The notes' exact behaviour: their cell has no nonlinearity, nn.RNN's default is tanh.
DEFAULT_NONLINEARITY = {"cell": "identity", "stacked": "tanh", "gru": "tanh", "lstm": "tanh"}
AUTO_PREFIXES = ("module.", "model.")
MAX_WEIGHTS_BYTES = 2**31  # an exportable model's weights are far smaller (ONNX's 2 GiB)
# torch.load(weights_only=True) names a global it refuses "Unsupported global: GLOBAL x.y"
# or "unsupported GLOBAL x.y whose module x is blocked", inside a message of several lines.
_BLOCKED = re.compile(r"GLOBAL ([\w.]+)")
# What torch.load raises for a damaged file (its unpickler and zip reader meet any byte).
_DAMAGED = (
    RuntimeError,
    EOFError,
    ValueError,
    OSError,
    NotImplementedError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OverflowError,
    struct.error,
    zipfile.BadZipFile,
)
# torch's lines around the reason, which would only repeat that the load was refused.
_BOILERPLATE = ("Weights only load failed", "Check the documentation of torch.load")


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
    unknown: str | None = None,
    text: tuple[str, bool] = ("keep", False),
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
        unknown: the vocabulary's symbol that characters outside it map to (the
            tutorial's "_", or its last letter for the older tutorial's index -1), for a
            plain-list vocabulary; None: as the vocabulary says.
        text: the text contract (unicode, lowercase) the model was trained with
            (rnn_runtime.text): ("strip_marks", False) is the tutorial's unicodeToAscii.

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
        vocabulary = _with_contract(vocabulary, unknown, text, _name(vocab))
        if len(vocabulary) != form.V:
            where = "'embedding.weight' has shape" if form.input_kind == "tokens" else "one-hot"
            shape = (form.V, form.X) if form.input_kind == "tokens" else f"width {form.X}"
            raise ImportWeightsError(
                f"{_name(vocab)}: has {len(vocabulary)} tokens; {path}: {where} {shape}, so "
                f"the model reads V = {form.V} token ids"
            )
    names = tuple(labels) if not isinstance(labels, (str, Path)) else read_labels(Path(labels))
    for label in names:
        try:
            check_label(label, ImportWeightsError)
        except ImportWeightsError as e:
            raise ImportWeightsError(f"{_name(labels)}: {e}") from None
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


def _with_contract(vocab: Vocabulary, unknown: str | None, text, where: str) -> Vocabulary:
    """vocab with its unknown symbol and text contract as given."""
    from rnn_export.data import DataError

    unk_id = vocab.unk_id
    if unknown is not None:
        if unknown not in vocab.tokens:
            raise ImportWeightsError(
                f"{where}: --unknown {unknown!r}: not one of its {len(vocab)} symbols"
            )
        given = vocab.tokens.index(unknown)
        if unk_id is not None and unk_id != given:
            raise ImportWeightsError(
                f"{where}: says unk_id {unk_id} ({vocab.tokens[unk_id]!r}); --unknown names "
                f"{unknown!r} (id {given})"
            )
        unk_id = given
    try:
        return Vocabulary(vocab.tokens, unk_id, *text)
    except DataError as e:
        raise ImportWeightsError(f"{where}: {e}") from None


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
            loaded = load(data)
        except (SafetensorError, ValueError) as e:
            raise ImportWeightsError(f"{path}: not a safetensors file: {_one_line(e)}") from None
        return _check_kinds(loaded, path), "safetensors", sha256
    try:
        # From the bytes hashed above: the sha256 recorded is that of what was read.
        with warnings.catch_warnings():  # torch's warnings about a damaged file: the error says it
            warnings.simplefilter("ignore")
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = _BLOCKED.search(str(e))
        if blocked is None:
            raise ImportWeightsError(
                f"{path}: not a PyTorch weights file: {_one_line(e)}"
            ) from None
        raise ImportWeightsError(
            f"{path}: refused: it needs the global {blocked.group(1)}: the file needs code "
            "to load (a pickled module, custom class or function runs code when loaded), "
            "which torch.load(weights_only=True) blocks, so nothing in it ran; save the "
            "weights alone: torch.save(model.state_dict(), path)"
        ) from None
    except _DAMAGED as e:
        raise ImportWeightsError(f"{path}: not a PyTorch weights file: {_one_line(e)}") from None
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
    return _check_kinds(dict(loaded), path), "torch", sha256


# The floating dtypes a weight may have (float32 on import); other floats (float8) have
# no arithmetic to check them with. Integer, complex and quantized tensors are named by
# check_tensors, which expects floating-point.
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_kinds(tensors: dict, path: Path) -> dict:
    """tensors, once each is an ordinary tensor: dense (strided), not nested, with data on
    the CPU, and of a float dtype in _FLOATS if floating-point at all."""
    for name, value in tensors.items():
        if value.is_nested:
            what = "a nested tensor"
        elif value.layout != torch.strided:
            what = f"a sparse tensor (layout {value.layout})"
        elif value.device.type != "cpu":
            what = f"a tensor on the {value.device.type} device, without data in the file"
        elif value.is_floating_point() and value.dtype not in _FLOATS:
            what = f"a tensor of dtype {value.dtype}"
        else:
            continue
        raise ImportWeightsError(
            f"{path}: tensor {name!r:.60} is {what}; expected a dense tensor with its data "
            "on the CPU, of dtype float32 (or float16, bfloat16, float64)"
        )
    return tensors


def _one_line(error: BaseException) -> str:
    """An error's message on one line, without torch's lines around the reason."""
    lines = [x.strip() for x in str(error).splitlines() if x.strip()]
    kept = [x for x in lines if not x.startswith(_BOILERPLATE)]
    return " ".join(kept or lines)[:500]


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
    """LABELS: a JSON list of strings, or a .txt with one label per line (lines end at
    "\n" alone, as everywhere in the toolkit; blank lines skipped, surrounding white
    space stripped)."""
    if atomic.path_kind(path) != "a regular file":
        kind = atomic.path_kind(path)
        raise ImportWeightsError(
            f"{path}: expected a labels file (.json list or .txt); "
            + ("not found" if kind is None else f"it is {kind}")
        )
    raw = path.read_bytes()
    if path.suffix == ".txt":
        return tuple(s.strip() for s in decode_utf8(raw, path).split("\n") if s.strip())
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
