"""Bring your own model: a state_dict of the notes' classes written as a RUN_DIR.

A reader of the notes who trained their `RNN` (the hand-built cell) or `my_RNN` (the
nn.RNN wrapper, or the same wrapper around nn.GRU or nn.LSTM) with their own loop saves
`model.state_dict()`; import_weights reads
it, checks every tensor against the arch, and writes a RUN_DIR that convert, verify,
bench, predict and evaluate accept. The RUN_DIR says it was imported (train.json
"imported": the weights file and its sha256) and has no training data ("data" null).

Reading runs no code: a .safetensors file, or torch.load(..., weights_only=True), whose
unpickler allows only tensors and plain containers. A file that needs more (a pickled
module, a custom class) is refused naming the global that was blocked, and is never
read again unsafely.

Tensor names are the notes' attribute names:
    cell     embed.weight (V, H), i2h.weight (H, 2H), i2h.bias (H), h2o.weight (C, H),
             h2o.bias (C)
    stacked  embedding.weight (V, H), rnn.weight_ih_l{k} (H, H), rnn.weight_hh_l{k} (H, H),
             rnn.bias_ih_l{k} (H), rnn.bias_hh_l{k} (H) for k < L, fc.weight (C, H),
             fc.bias (C)
    gru      as stacked, with G = 3 gate rows (r, z, n): rnn.weight_ih_l{k} (3H, H),
             rnn.weight_hh_l{k} (3H, H), rnn.bias_ih_l{k} (3H), rnn.bias_hh_l{k} (3H)
    lstm     as gru with G = 4 (i, f, g, o): (4H, H) and (4H)
A prefix every name shares ("module." from DataParallel, "model." from a wrapper) is
stripped, or the one given; `mapping` renames others. V, H, L and C come from the
shapes; V must equal the vocabulary's size and C the number of labels.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from rnn_export import atomic
from rnn_export.checkpoint import Checkpoint, check_replaceable, load_checkpoint, save_checkpoint
from rnn_export.config import ARCHS, NONLINEARITIES, ModelConfig, check_label
from rnn_export.data import Vocabulary
from rnn_export.errors import InputError, decode_utf8
from rnn_export.models import build_model
from rnn_export.runfiles import parse_json, read_json

# The notes' exact behaviour: their cell has no nonlinearity, nn.RNN's default is tanh.
DEFAULT_NONLINEARITY = {"cell": "identity", "stacked": "tanh", "gru": "tanh", "lstm": "tanh"}
# Rows per hidden unit in each recurrent matrix and bias: one per gate (PyTorch's order).
GATES = {"stacked": 1, "gru": 3, "lstm": 4}
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


class ImportWeightsError(InputError):
    """Weights, a vocabulary or labels that do not make a model; the message names the
    file and the tensor, with the shapes expected and got."""


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
) -> Checkpoint:
    """Write a RUN_DIR for a model trained elsewhere.

    Args:
        weights: a file of `torch.save(model.state_dict(), path)`, or a .safetensors file.
        arch: "cell" (the notes' RNN), "stacked" (the notes' my_RNN), "gru" or "lstm"
            (my_RNN around nn.GRU or nn.LSTM).
        vocab: the VOCAB.json path ({"tokens": [...], "unk_id": N}, or a plain list:
            token id = index, no unknown token), or a Vocabulary.
        labels: the LABELS path (a JSON list, or a .txt with one label per line), or a
            sequence of class names; class id = index.
        out: the RUN_DIR to write (atomically; an earlier run there is replaced).
        nonlinearity: "identity" (the notes' cell: no nonlinearity, its default), "tanh"
            (the default for "stacked", nn.RNN's; the only one of "gru" and "lstm") or "relu".
        prefix: strip this prefix from every name (which must all have it); None strips
            "module." and "model." where every name has them.
        mapping: {old: new} renames applied after the prefix: a whole name, or a name
            prefix when old ends with ".".

    Returns:
        The Checkpoint read back from out.

    Raises:
        ImportWeightsError: an unknown arch, a file torch.load(weights_only=True) or
            safetensors refuses, missing, unexpected, misshapen or non-float tensors,
            V against the vocabulary or C against the labels; out is as it was.
    """
    if arch not in ARCHS:
        raise ImportWeightsError(f"unknown arch {arch!r:.40}; expected one of {list(ARCHS)}")
    nonlinearity = DEFAULT_NONLINEARITY[arch] if nonlinearity is None else nonlinearity
    if nonlinearity not in NONLINEARITIES[arch]:
        raise ImportWeightsError(
            f"nonlinearity for arch {arch!r} must be one of {list(NONLINEARITIES[arch])}; "
            f"got {nonlinearity!r:.40}"
        )
    check_replaceable(out)
    path = Path(weights)
    raw, kind, sha256 = read_state_dict(path)
    tensors, stripped = strip_prefix(raw, prefix, path)
    tensors, renamed = rename(tensors, mapping or {}, path)
    V, H, L, C = check_tensors(tensors, arch, path)
    vocabulary = vocab if isinstance(vocab, Vocabulary) else read_vocab(Path(vocab))
    embed = "embed.weight" if arch == "cell" else "embedding.weight"
    if len(vocabulary) != V:
        raise ImportWeightsError(
            f"{_name(vocab)}: has {len(vocabulary)} tokens; {path}: {embed!r} has shape "
            f"{(V, H)}, so the model reads V = {V} token ids"
        )
    names = tuple(labels) if not isinstance(labels, (str, Path)) else read_labels(Path(labels))
    for label in names:
        try:
            check_label(label, ImportWeightsError)
        except ImportWeightsError as e:
            raise ImportWeightsError(f"{_name(labels)}: {e}") from None
    head = "h2o.weight" if arch == "cell" else "fc.weight"
    if len(names) != C:
        raise ImportWeightsError(
            f"{_name(labels)}: has {len(names)} labels; {path}: {head!r} has shape {(C, H)}, "
            f"so the model has C = {C} classes"
        )
    config = ModelConfig(arch, V, names, hidden_size=H, num_layers=L, nonlinearity=nonlinearity)
    model = build_model(config)
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    model.eval()
    imported = {
        "source": str(path.resolve()),
        "sha256": sha256,
        "format": kind,
        "prefix": stripped,
        "renamed": renamed,
        "dtypes": sorted({str(v.dtype) for v in tensors.values()}),
    }
    training = {"imported": imported, "torch_version": torch.__version__}
    save_checkpoint(out, model, vocabulary, None, training, {})
    return load_checkpoint(out)


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


def expected_shapes(arch: str, V: int, H: int, L: int, C: int) -> dict[str, tuple]:
    """The notes' tensor names and their shapes for the sizes given."""
    if arch == "cell":
        return {
            "embed.weight": (V, H),
            "i2h.weight": (H, 2 * H),
            "i2h.bias": (H,),
            "h2o.weight": (C, H),
            "h2o.bias": (C,),
        }
    shapes = {"embedding.weight": (V, H)}
    G = GATES[arch]
    # "H" spelled out for messages: 4 * "H" would repeat the letter.
    rows = G * H if isinstance(H, int) else (f"{G}{H}" if G > 1 else H)
    for k in range(L):
        shapes |= {
            f"rnn.weight_ih_l{k}": (rows, H),
            f"rnn.weight_hh_l{k}": (rows, H),
            f"rnn.bias_ih_l{k}": (rows,),
            f"rnn.bias_hh_l{k}": (rows,),
        }
    return shapes | {"fc.weight": (C, H), "fc.bias": (C,)}


def check_tensors(tensors: dict, arch: str, path: Path) -> tuple[int, int, int, int]:
    """V, H, L, C from the shapes, once every tensor is of the arch's names, shapes and a
    floating dtype, and finite.

    Raises:
        ImportWeightsError: naming the tensor, its shape and the shape expected.
    """
    for name, value in tensors.items():
        if not value.is_floating_point():
            raise ImportWeightsError(
                f"{path}: tensor {name!r} has dtype {value.dtype}; expected floating-point "
                "weights (float32)"
            )
    embed, head = ("embed", "h2o") if arch == "cell" else ("embedding", "fc")
    layers = 1
    if arch != "cell":
        layers = sum(1 for k in tensors if re.fullmatch(r"rnn\.weight_ih_l\d+", k))
    for anchor in (f"{embed}.weight", f"{head}.weight"):
        if anchor not in tensors or tensors[anchor].dim() != 2:
            shapes = expected_shapes(arch, "V", "H", max(layers, 1), "C")
            got = tuple(tensors[anchor].shape) if anchor in tensors else "missing"
            other = "stacked" if arch == "cell" else "cell"
            hint = ""
            if set(tensors) >= set(expected_shapes(other, 0, 0, 1, 0)) - {"fc.bias"}:
                hint = f" (these are the names of --arch {other})"
            raise ImportWeightsError(
                f"{path}: tensor {anchor!r} is {got}; --arch {arch} expects the tensors "
                f"{_shapes_text(shapes)}; the file has {_names_text(tensors)}{hint}"
            )
    V, H = tensors[f"{embed}.weight"].shape
    C = tensors[f"{head}.weight"].shape[0]
    want = expected_shapes(arch, V, H, max(layers, 1), C)
    missing = sorted(want.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - want.keys())
    if missing or unexpected:
        raise ImportWeightsError(
            f"{path}: the tensors do not match --arch {arch} (V={V}, H={H}, L={layers}, "
            f"C={C} from the shapes): missing {missing}, unexpected {unexpected[:10]}; "
            "rename with --map OLD=NEW"
        )
    for name, shape in want.items():
        got = tuple(tensors[name].shape)
        if got != shape:
            raise ImportWeightsError(
                f"{path}: tensor {name!r} has shape {got}; with V={V}, H={H}, C={C} (from "
                f"{embed}.weight {(V, H)} and {head}.weight) --arch {arch} expects {shape}"
                + _gates_hint(name, got, H)
            )
        if not torch.isfinite(tensors[name]).all():
            raise ImportWeightsError(f"{path}: tensor {name!r} holds NaN or infinity")
    return int(V), int(H), layers, int(C)


def _gates_hint(name: str, got: tuple, H: int) -> str:
    """ " (G = 4 gate rows: the shape of --arch lstm)" when got is another arch's layer shape."""
    if not name.startswith("rnn.") or not got or got[1:] not in ((), (H,)):
        return ""
    others = [a for a, g in GATES.items() if got[0] == g * H]
    return f" ({got[0] // H} gate rows: the shape of --arch {others[0]})" if others else ""


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


def _shapes_text(shapes: dict) -> str:
    return ", ".join(f"{k} {tuple(v)}".replace("'", "") for k, v in shapes.items())


def _names_text(tensors: dict) -> str:
    items = [f"{k} {tuple(v.shape)}" for k, v in sorted(tensors.items())]
    return ", ".join(items[:12]) + (f" and {len(items) - 12} more" if len(items) > 12 else "")


__all__ = ["DEFAULT_NONLINEARITY", "ImportWeightsError", "import_weights"]
