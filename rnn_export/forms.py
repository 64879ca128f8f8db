"""The forms users save their recurrent models in, recognized and mapped onto the stages.

`import_weights` (rnn_export.importing) reads a state_dict; `recognize` finds in it the
three stages of rnn_export.models, whatever the user called them, and returns the
tensors under the names of the toolkit's own model with the sizes read from the
shapes. Recognized without options:

    the notes' cell     embed.weight (V, E), i2h.weight (H, E + H), i2h.bias (H),
                        h2o.weight (C, H), h2o.bias (C): h = f(i2h([x, h]))
    the tutorial's      i2h.weight (H, X), i2h.bias, h2h.weight (H, H), h2h.bias,
    classic cell        h2o.*: h = tanh(i2h(x) + h2h(h)), which is nn.RNN with one
                        layer (imported as "stacked", L = 1; --arch cell)
    nn.RNN / GRU / LSTM {name}.weight_ih_l{k} (GH, X), {name}.weight_hh_l{k} (GH, H),
                        {name}.bias_ih_l{k}, {name}.bias_hh_l{k} for any one module
                        name (rnn, gru, lstm, ...); G = 1, 3, 4 gate rows
    the head            fc.* or h2o.* (C, H) (any other name: --map NAME.=fc.)
    the input stage     an embedding (embedding.weight or embed.weight, (V, E)):
                        "tokens"; none: one-hot vectors of the vocabulary
                        (X = V, the tutorial's letters: "onehot") or float frames
                        (X = F: "features")

H comes from the recurrent weight (never from the embedding), X is layer 0's input
width: E, V or F. Every refusal names the tensor, its shape, the shape expected and the
sizes it was derived from.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch

from rnn_export.config import INPUT_KINDS
from rnn_export.errors import InputError

GATES = {"stacked": 1, "gru": 3, "lstm": 4}
_LAYER = re.compile(r"(.+)\.weight_ih_l(\d+)$")


class ImportWeightsError(InputError):
    """Weights, a vocabulary or labels that do not make a model; the message names the
    file and the tensor, with the shapes expected and got."""


class Form(NamedTuple):
    """A state_dict recognized: the arch and input kind it is, its sizes, and its tensors
    under the names of rnn_export.models (the embedding under the file's own name)."""

    arch: str
    input_kind: str
    V: int  # vocabulary (0 for features)
    X: int  # layer 0's input width: E, V or F
    H: int
    L: int
    C: int
    tensors: dict
    notes: tuple[str, ...]  # what was recognized, for the report
    embedding: str | None  # the embedding's name in the file ("tokens"), else None


def recognize(tensors: dict, arch: str, input_kind: str | None, path) -> Form:
    """The Form of tensors for --arch arch (input_kind None: read from the tensors).

    Raises:
        ImportWeightsError: naming the tensor, its shape and the shape expected.
    """
    if input_kind is not None and input_kind not in INPUT_KINDS:
        raise ImportWeightsError(f"input kind must be one of {INPUT_KINDS}; got {input_kind!r}")
    for name, value in tensors.items():
        if not value.is_floating_point():
            raise ImportWeightsError(
                f"{path}: tensor {name!r} has dtype {value.dtype}; expected floating-point "
                "weights (float32)"
            )
    tensors, notes = dict(tensors), []
    if arch == "cell" and "h2h.weight" in tensors:
        tensors = _classic_cell(tensors)
        arch = "stacked"
        notes.append("the tutorial's classic cell (i2h on x, h2h on h): nn.RNN with L=1")
    embeddings = ("embed.weight",) if arch == "cell" else ("embedding.weight", "embed.weight")
    embedding = next((name for name in embeddings if name in tensors), None)
    head = "h2o" if arch == "cell" else "fc"
    if arch != "cell":
        _find_recurrence(tensors, notes, path)
        if embedding is None:
            embedding = _find_embedding(tensors, notes)
    _alias_head(tensors, head, "fc" if arch == "cell" else "h2o", notes)
    H, X, L = _recurrence_sizes(tensors, arch, path)
    kind = _input_kind(tensors, embedding, input_kind, path)
    head_w = tensors.get(f"{head}.weight")
    if head_w is None or head_w.dim() != 2:
        got = "missing" if head_w is None else f"of shape {tuple(head_w.shape)}"
        raise ImportWeightsError(
            f"{path}: the head {head}.weight (C, H={H}) is {got}; the file has "
            f"{names_text(tensors)} (name the head's Linear with --map NAME.={head}.)"
        )
    C = int(head_w.shape[0])
    V = 0
    if kind == "tokens":
        V, E = (int(d) for d in tensors[embedding].shape)
        if E != X:
            raise ImportWeightsError(
                f"{path}: the embedding has shape {(V, E)}, so it gives E = {E} values a "
                f"step; layer 0's input weight takes X = {X} (from {_x_source(arch)}): E must "
                "equal layer 0's input width"
            )
    elif kind == "onehot":
        V = X
    want = expected_shapes(arch, kind, V, X, H, L, C, embedding)
    missing = sorted(want.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - want.keys())
    if missing or unexpected:
        raise ImportWeightsError(
            f"{path}: the tensors do not match --arch {arch} with {kind} input (H={H}, "
            f"X={X}, L={L}, C={C} from the shapes): missing {missing}, unexpected "
            f"{unexpected[:10]}; rename with --map OLD=NEW"
        )
    for name, shape in want.items():
        got = tuple(tensors[name].shape)
        if got != shape:
            raise ImportWeightsError(
                f"{path}: tensor {name!r} has shape {got}; --arch {arch} with H={H} "
                f"(from {_h_source(arch)}), input width X={X}, C={C} expects {shape}"
                + _gates_hint(name, got, H)
            )
        if not torch.isfinite(tensors[name]).all():
            raise ImportWeightsError(f"{path}: tensor {name!r} holds NaN or infinity")
    return Form(arch, kind, V, X, H, L, C, tensors, tuple(notes), embedding)


def expected_shapes(
    arch: str, kind: str, V: int, X: int, H: int, L: int, C: int, embedding: str | None
) -> dict:
    """The tensors of a Form and their shapes (the embedding under its name in the file)."""
    shapes = {embedding: (V, X)} if kind == "tokens" else {}
    if arch == "cell":
        return shapes | {
            "i2h.weight": (H, X + H),
            "i2h.bias": (H,),
            "h2o.weight": (C, H),
            "h2o.bias": (C,),
        }
    G = GATES[arch]
    for k in range(L):
        shapes |= {
            f"rnn.weight_ih_l{k}": (G * H, X if k == 0 else H),
            f"rnn.weight_hh_l{k}": (G * H, H),
            f"rnn.bias_ih_l{k}": (G * H,),
            f"rnn.bias_hh_l{k}": (G * H,),
        }
    return shapes | {"fc.weight": (C, H), "fc.bias": (C,)}


def model_state(form: Form, model) -> dict:
    """form's tensors under the model's own names (the input stage's by its attribute)."""
    state = {k: v.to(torch.float32) for k, v in form.tensors.items() if k != form.embedding}
    if form.embedding is not None:
        state[f"{model.input_name}.weight"] = form.tensors[form.embedding].to(torch.float32)
    return state


def _classic_cell(tensors: dict) -> dict:
    """The tutorial's i2h/h2h cell under nn.RNN's names (one layer: the same function)."""
    renames = {
        "i2h.weight": "rnn.weight_ih_l0",
        "i2h.bias": "rnn.bias_ih_l0",
        "h2h.weight": "rnn.weight_hh_l0",
        "h2h.bias": "rnn.bias_hh_l0",
        "h2o.weight": "fc.weight",
        "h2o.bias": "fc.bias",
    }
    return {renames.get(k, k): v for k, v in tensors.items()}


def _alias_head(tensors: dict, head: str, other: str, notes: list) -> None:
    """The head under `head` when the file names it `other` (fc and h2o are both usual),
    or when one Linear alone is left beside the recurrence and the embedding (out,
    classifier, decoder...)."""
    if f"{head}.weight" in tensors:
        return
    if f"{other}.weight" not in tensors:
        taken = ("rnn.", "i2h.", "h2h.")
        linears = [
            k[: -len(".weight")]
            for k, v in tensors.items()
            if k.endswith(".weight")
            and v.dim() == 2
            and f"{k[: -len('.weight')]}.bias" in tensors
            and not k.startswith(taken)
        ]
        if len(linears) != 1:
            return
        other = linears[0]
    for part in ("weight", "bias"):
        if f"{other}.{part}" in tensors:
            tensors[f"{head}.{part}"] = tensors.pop(f"{other}.{part}")
    notes.append(f"head {other}.* read as {head}.*")


def _find_embedding(tensors: dict, notes: list) -> str | None:
    """An embedding under another name (emb, encoder, ...): the one 2-D weight without a
    bias beside the recurrence (its width is then checked against layer 0's); None."""
    found = [
        k
        for k, v in tensors.items()
        if k.endswith(".weight")
        and not k.startswith("rnn.")
        and v.dim() == 2
        and f"{k[: -len('.weight')]}.bias" not in tensors
    ]
    if len(found) != 1:
        return None
    notes.append(f"embedding {found[0]} read as the input stage")
    return found[0]


def _find_recurrence(tensors: dict, notes: list, path) -> None:
    """Rename the one module with nn.RNN's names (weight_ih_l0, ...) to `rnn`."""
    modules = sorted({m.group(1) for k in tensors if (m := _LAYER.fullmatch(k))})
    if modules == ["rnn"]:
        return
    if len(modules) != 1:
        found = "none" if not modules else ", ".join(modules)
        hint = " (these are the names of --arch cell)" if "i2h.weight" in tensors else ""
        raise ImportWeightsError(
            f"{path}: expected one recurrent module (tensors NAME.weight_ih_l0, "
            f"NAME.weight_hh_l0, ... of nn.RNN, nn.GRU or nn.LSTM); found {found}; the file "
            f"has {names_text(tensors)}{hint}"
        )
    name = modules[0]
    for key in [k for k in tensors if k.startswith(name + ".")]:
        tensors["rnn." + key[len(name) + 1 :]] = tensors.pop(key)
    notes.append(f"recurrence {name}.* read as rnn.*")


def _recurrence_sizes(tensors: dict, arch: str, path) -> tuple[int, int, int]:
    """H, X (layer 0's input width) and L from the recurrent weights."""
    if arch == "cell":
        w = tensors.get("i2h.weight")
        if w is None or w.dim() != 2 or w.shape[1] <= w.shape[0]:
            got = "missing" if w is None else f"of shape {tuple(w.shape)}"
            modules = {m.group(1) for k in tensors if (m := _LAYER.fullmatch(k))}
            hint = " (these are the names of --arch stacked, gru or lstm)" if modules else ""
            raise ImportWeightsError(
                f"{path}: --arch cell expects i2h.weight (H, X + H): the notes' cell, "
                f"h = f(i2h([x, h])) (or i2h.weight (H, X) with h2h.weight (H, H): the "
                f"tutorial's classic cell); i2h.weight is {got}; the file has "
                f"{names_text(tensors)}{hint}"
            )
        H = int(w.shape[0])
        return H, int(w.shape[1]) - H, 1
    hh, ih = tensors.get("rnn.weight_hh_l0"), tensors.get("rnn.weight_ih_l0")
    if hh is None or ih is None or hh.dim() != 2 or ih.dim() != 2:
        raise ImportWeightsError(
            f"{path}: --arch {arch} expects rnn.weight_ih_l0 (GH, X) and rnn.weight_hh_l0 "
            f"(GH, H) with G = {GATES[arch]}; the file has {names_text(tensors)}"
        )
    L = sum(1 for k in tensors if re.fullmatch(r"rnn\.weight_ih_l\d+", k))
    return int(hh.shape[1]), int(ih.shape[1]), L


def _input_kind(tensors: dict, embedding: str | None, given: str | None, path) -> str:
    has_embedding = embedding is not None
    if given is None:
        return "tokens" if has_embedding else "onehot"
    if has_embedding and given != "tokens":
        raise ImportWeightsError(
            f"{path}: the file holds an embedding {embedding} "
            f"{tuple(tensors[embedding].shape)}, so its input is token ids through it "
            f"(--input tokens); got --input {given}"
        )
    if given == "tokens" and not has_embedding:
        raise ImportWeightsError(
            f"{path}: --input tokens needs an embedding (embedding.weight or embed.weight, "
            f"(V, E)); the file has none: its input is one-hot vectors (--input onehot) or "
            f"float frames (--input features); it has {names_text(tensors)}"
        )
    return given


def _h_source(arch: str) -> str:
    return "i2h.weight's rows" if arch == "cell" else "rnn.weight_hh_l0's columns"


def _x_source(arch: str) -> str:
    return "i2h.weight's columns less H" if arch == "cell" else "rnn.weight_ih_l0's columns"


def _gates_hint(name: str, got: tuple, H: int) -> str:
    """ " (4 gate rows: the shape of --arch lstm)" when got is another arch's layer shape."""
    if not name.startswith("rnn.") or not got or got[0] % H:
        return ""
    others = [a for a, g in GATES.items() if got[0] == g * H]
    return f" ({got[0] // H} gate rows: the shape of --arch {others[0]})" if others else ""


def names_text(tensors: dict) -> str:
    items = [f"{k} {tuple(v.shape)}" for k, v in sorted(tensors.items())]
    return ", ".join(items[:12]) + (f" and {len(items) - 12} more" if len(items) > 12 else "")
