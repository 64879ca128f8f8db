"""The contract inside every .onnx file that `rnn-export convert` writes.

Everything a runner needs travels in the model's `metadata_props` as JSON values
under one versioned schema. `build_metadata` writes it (used by the exporter),
`read_metadata` reads and validates it (used by the runtime, `inspect`, `verify`);
records.check_signature checks a graph against it (with rnn_runtime.signature's sizes).
This module needs nothing but the standard library, so it runs on a device.

Keys (all values are JSON text):
    rnn_export.schema      2 (files of schema 1, before the stages, are read too: they are
                           token models with a log-softmax head after the last step, and
                           name "input" "tokens" in io and "token" in step)
    rnn_export.model       {"arch" (one of ARCHS), "vocab_size" (0 for "features"),
                            "num_classes", "hidden_size", "num_layers", "nonlinearity",
                            "input": {"kind" (one of INPUT_KINDS), "size": the width of
                            layer 0's input (E, V or F), and for "features" "mean" and
                            "scale": the F values the graph normalizes frames with},
                            "head": {"output" (one of HEADS), "steps" (one of HEAD_STEPS)}}
    rnn_export.vocab       {"tokens": [str, ...] (index = token id), "unk_id": int or null
                            (null: no unknown token, as in an imported plain-list vocabulary)};
                           absent for "features"
    rnn_export.text        optional (a model that reads characters): {"unicode": "keep" or
                           "strip_marks", "lowercase": bool}, how text is prepared before
                           its characters are looked up (rnn_runtime.text); absent: as given
    rnn_export.labels      [str, ...] (index = class id)
    rnn_export.io          {"input": tensor, "lengths": tensor, "log_probs": tensor,
                            "states": [{"input", "output", "shape", "dtype", "initial"}]}
                           where tensor = {"name", "shape", "dtype"}; a shape lists
                           ints and the symbols "B" (batch) and "T" (time). The input is
                           int64 (B, T) token ids, or float32 (B, T, F) frames.
    rnn_export.provenance  {"checkpoint_sha256", "tool_version", "opset",
                            "libraries": {name: version str}}
    rnn_export.step        optional: a second, loop-free ONNX model for one step at a time,
                           {"input", "log_probs", "states": [{"input", "output"}, ...],
                            "sha256", "onnx_base64"}: inputs token (B,) int64 (or frame
                           (B, F) float32) and one
                           (B, H) float32 state per layer and model state (every layer of
                           io.states[0], then of io.states[1]: h_0, h_1, c_0, c_1 for a
                           2-layer LSTM), outputs log_probs (B, C) and the new states.
                           Layer l's state is the model state's slice [l] along
                           its first axis when that state is (L, B, H), the state itself
                           when it is (B, H). The runtime steps through it on the CPU: at
                           batch 1 every onnxruntime node costs about as much as its math,
                           and this graph has the fewest nodes (docs/benchmarks.md).
                           A step file (`convert --step-only`) has {"in_file": true} in place
                           of "sha256" and "onnx_base64": its own graph is the step model
                           and it has no main graph (io.tokens and io.lengths then name the
                           main graph's inputs of the model it was cut from, which the file
                           lacks).

Limits (a file past one is refused with MetadataError before anything is allocated):
vocab_size <= MAX_VOCAB (2**20), num_classes <= MAX_CLASSES (2**16), hidden_size <=
MAX_HIDDEN (2**14), num_layers <= MAX_LAYERS (64), at most MAX_STATES (16) states, shapes
of rank <= MAX_RANK (8) with fixed dimensions <= MAX_DIM (2**20) and at most
MAX_STATE_FLOATS (2**22) values per stream and state, opset <= MAX_OPSET (1000). Every
value must be UTF-8 JSON that Python reads (no nesting past its recursion limit, no int
of 4,300+ digits) and its strings valid Unicode (no lone surrogates); labels and vocab
tokens must be distinct, and a label holds no control character or line break.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import NamedTuple

from rnn_runtime.errors import MetadataError
from rnn_runtime.records import (  # noqa: F401 (check_signature, ORT_DTYPES: re-exported)
    ORT_DTYPES,
    StateSpec,
    StepSpec,
    TensorSpec,
    _expect,
    _is_float,
    _is_int,
    _repeated,
    check_signature,
    sha256_hex,
)
from rnn_runtime.text import IDENTITY, UNICODE_FORMS

SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)  # what this runtime reads
PREFIX = "rnn_export."
ARCHS = ("cell", "stacked", "gru", "lstm")
INPUT_KINDS = ("tokens", "onehot", "features")
HEADS = ("log_softmax",)
HEAD_STEPS = ("last",)
_DTYPES = ("int64", "float32")
_INITIALS = ("zeros",)
MAX_VOCAB = 1 << 20
MAX_CLASSES = 1 << 16
MAX_HIDDEN = 1 << 14
MAX_LAYERS = 64
MAX_STATES = 16
MAX_RANK = 8
MAX_DIM = 1 << 20
MAX_STATE_FLOATS = 1 << 22
MAX_OPSET = 1000
# A label is one tab-separated field of a line in the text outputs: no C0 or C1 control
# (tab, newline, carriage return, U+0085...), no line or paragraph separator (the set of
# rnn_export.config.LABEL_BREAKS).
_LABEL_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MAXIMA = {
    "vocab_size": MAX_VOCAB,
    "num_classes": MAX_CLASSES,
    "hidden_size": MAX_HIDDEN,
    "num_layers": MAX_LAYERS,
}


class ModelMetadata(NamedTuple):
    """The validated metadata of one exported model.

    tokens is the main graph's input whatever the input kind: int64 (B, T) token ids, or
    float32 (B, T, F) frames for "features" (then vocab is empty); step.token likewise.
    """

    arch: str
    vocab_size: int
    num_classes: int
    hidden_size: int
    num_layers: int
    nonlinearity: str
    vocab: tuple[str, ...]
    unk_id: int | None
    labels: tuple[str, ...]
    tokens: TensorSpec
    lengths: TensorSpec
    log_probs: TensorSpec
    states: tuple[StateSpec, ...]
    provenance: dict
    step: StepSpec | None = None
    input_kind: str = "tokens"
    input_size: int = 0
    head: str = "log_softmax"
    head_steps: str = "last"
    normalization: tuple = ()  # ("features") the (mean, scale) tuples, F values each
    schema_version: int = SCHEMA_VERSION
    text: tuple = IDENTITY  # the text contract (unicode, lowercase): rnn_runtime.text

    @property
    def reads_tokens(self) -> bool:
        """Whether a step reads a character (token id), not a float frame."""
        return self.input_kind != "features"

    @property
    def opset(self) -> int:
        return self.provenance["opset"]

    @property
    def is_step_file(self) -> bool:
        """The file's graph is the step model (`convert --step-only`); it has no main graph."""
        return self.step is not None and self.step.in_file

    @property
    def checkpoint_sha256(self) -> str:
        return self.provenance["checkpoint_sha256"]

    def to_dict(self) -> dict:
        """The metadata as one JSON-ready dict (what `inspect --json` prints)."""
        return {
            "schema_version": self.schema_version,
            "model": {
                "arch": self.arch,
                "vocab_size": self.vocab_size,
                "num_classes": self.num_classes,
                "hidden_size": self.hidden_size,
                "num_layers": self.num_layers,
                "nonlinearity": self.nonlinearity,
                "input": _input_dict(self.input_kind, self.input_size, self.normalization),
                "head": {"output": self.head, "steps": self.head_steps},
            },
            "vocab": {"tokens": list(self.vocab), "unk_id": self.unk_id}
            if self.reads_tokens
            else None,
            "text": {"unicode": self.text[0], "lowercase": self.text[1]},
            "labels": list(self.labels),
            "io": {
                "input": self.tokens.to_dict(),
                "lengths": self.lengths.to_dict(),
                "log_probs": self.log_probs.to_dict(),
                "states": [s.to_dict() for s in self.states],
            },
            "provenance": dict(self.provenance),
            "step": None if self.step is None else self.step.to_dict(),
        }


def _input_dict(kind: str, size: int, normalization: tuple) -> dict:
    """model.input as JSON values."""
    d = {"kind": kind, "size": size}
    if normalization:
        d["mean"], d["scale"] = (list(v) for v in normalization)
    return d


def build_metadata(
    *,
    arch: str,
    hidden_size: int,
    num_layers: int,
    nonlinearity: str,
    vocab: list[str] | tuple[str, ...],
    unk_id: int | None,
    labels: list[str] | tuple[str, ...],
    states: list[StateSpec] | tuple[StateSpec, ...],
    checkpoint_sha256: str,
    opset: int,
    libraries: Mapping[str, str],
    tool_version: str,
    tokens_name: str = "tokens",
    lengths_name: str = "lengths",
    log_probs_name: str = "log_probs",
    step: Mapping | None = None,
    input_kind: str = "tokens",
    input_size: int | None = None,
    normalization: tuple = (),
    text: tuple = IDENTITY,
) -> dict[str, str]:
    """The metadata_props entries (key -> JSON text) for one exported model.

    tokens_name: the main input's name (token ids, or frames for input_kind "features",
    whose vocab is empty and input_size F). input_size: layer 0's input width (None: the
    hidden size for "tokens", V for "onehot"). normalization: (mean, scale) of a features
    model, F floats each.

    step: optional {"token", "log_probs", "states": [(input, output), ...], "model": bytes}
    for the one-step model; its bytes are stored base64-encoded with their sha256. With
    "model": None instead, the metadata is a step file's: the graph it goes into is the
    step model.

    The result is read back through `read_metadata` before it is returned, so a
    writer can never produce metadata that the reader rejects.
    """
    if input_size is None:
        input_size = len(vocab) if input_kind == "onehot" else hidden_size
    frames = input_kind == "features"
    normalization = tuple(tuple(float(x) for x in v) for v in normalization)
    input_shape = ["B", "T", input_size] if frames else ["B", "T"]
    props = {
        PREFIX + "schema": json.dumps(SCHEMA_VERSION),
        PREFIX + "model": json.dumps(
            {
                "arch": arch,
                "vocab_size": len(vocab),
                "num_classes": len(labels),
                "hidden_size": hidden_size,
                "num_layers": num_layers,
                "nonlinearity": nonlinearity,
                "input": _input_dict(input_kind, input_size, normalization),
                "head": {"output": HEADS[0], "steps": HEAD_STEPS[0]},
            }
        ),
        PREFIX + "labels": json.dumps(list(labels), ensure_ascii=False),
        PREFIX + "io": json.dumps(
            {
                "input": {
                    "name": tokens_name,
                    "shape": input_shape,
                    "dtype": "float32" if frames else "int64",
                },
                "lengths": {"name": lengths_name, "shape": ["B"], "dtype": "int64"},
                "log_probs": {
                    "name": log_probs_name,
                    "shape": ["B", len(labels)],
                    "dtype": "float32",
                },
                "states": [s.to_dict() for s in states],
            }
        ),
        PREFIX + "provenance": json.dumps(
            {
                "checkpoint_sha256": checkpoint_sha256,
                "tool_version": tool_version,
                "opset": opset,
                "libraries": dict(libraries),
            }
        ),
    }
    if not frames:
        vocab_json = json.dumps({"tokens": list(vocab), "unk_id": unk_id}, ensure_ascii=False)
        props[PREFIX + "vocab"] = vocab_json
    if tuple(text) != IDENTITY:
        props[PREFIX + "text"] = json.dumps({"unicode": text[0], "lowercase": text[1]})
    if step is not None:
        names = {
            "input": step["token"],
            "log_probs": step["log_probs"],
            "states": [{"input": i, "output": o} for i, o in step["states"]],
        }
        if step["model"] is None:
            names["in_file"] = True
        else:
            data = bytes(step["model"])
            names["sha256"] = sha256_hex(data)
            names["onnx_base64"] = base64.b64encode(data).decode("ascii")
        props[PREFIX + "step"] = json.dumps(names)
    read_metadata(props)
    return props


def _load(props: Mapping[str, str], key: str):
    full = PREFIX + key
    if full not in props:
        raise MetadataError(f"metadata key {full!r} is missing")
    try:
        value = json.loads(props[full])
        # Lone surrogates ("\\ud800") parse, then fail wherever the text is printed.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:
        # ValueError covers bad JSON, an int past Python's digit limit and a lone surrogate.
        raise MetadataError(
            f"metadata key {full!r} is not valid JSON text: {type(e).__name__}: {str(e):.200}"
        ) from None
    return value


def _shape(raw, where: str) -> tuple:
    _expect(isinstance(raw, list) and len(raw) <= MAX_RANK, f"{where}.shape of rank <= 8", raw)
    for d in raw:
        _expect(
            d in ("B", "T") or (_is_int(d, 1) and d <= MAX_DIM),
            f"{where}.shape of ints in [1, {MAX_DIM}], 'B' or 'T'",
            raw,
        )
    return tuple(raw)


def _tensor(raw, where: str, dtype: str) -> TensorSpec:
    _expect(isinstance(raw, dict), f"{where} to be an object", raw)
    _expect(isinstance(raw.get("name"), str) and raw["name"], f"{where}.name", raw.get("name"))
    _expect(raw.get("dtype") == dtype, f"{where}.dtype {dtype!r}", raw.get("dtype"))
    return TensorSpec(raw["name"], _shape(raw.get("shape"), where), dtype)


def _state(raw, i: int) -> StateSpec:
    where = f"io.states[{i}]"
    _expect(isinstance(raw, dict), f"{where} to be an object", raw)
    for key in ("input", "output"):
        _expect(isinstance(raw.get(key), str) and raw[key], f"{where}.{key}", raw.get(key))
    shape = _shape(raw.get("shape"), where)
    _expect(shape.count("B") == 1 and "T" not in shape, f"{where}.shape with one 'B'", shape)
    floats = 1
    for d in shape:
        floats *= 1 if d == "B" else d
    _expect(
        floats <= MAX_STATE_FLOATS, f"{where}.shape of at most {MAX_STATE_FLOATS} values", shape
    )
    _expect(raw.get("dtype") in _DTYPES, f"{where}.dtype in {_DTYPES}", raw.get("dtype"))
    _expect(raw.get("initial") in _INITIALS, f"{where}.initial in {_INITIALS}", raw.get("initial"))
    return StateSpec(raw["input"], raw["output"], shape, raw["dtype"], raw["initial"])


def read_metadata(props: Mapping[str, str]) -> ModelMetadata:
    """Read and validate our metadata from a model's metadata_props.

    Args:
        props: key -> value, e.g. onnxruntime's `session.get_modelmeta().custom_metadata_map`
            or `{p.key: p.value for p in onnx_model.metadata_props}`.

    Returns:
        The validated ModelMetadata.

    Raises:
        MetadataError: no rnn-export metadata, an unknown schema version, or
            values of the wrong type or inconsistent with each other.
    """
    if not any(k.startswith(PREFIX) for k in props):
        raise MetadataError(
            "this file has no rnn-export metadata (was it made by `rnn-export convert`?)"
        )
    schema = _load(props, "schema")
    if schema not in SCHEMA_VERSIONS or isinstance(schema, bool):
        raise MetadataError(
            f"unknown metadata schema version {schema!r}; this runtime reads "
            f"versions {', '.join(map(str, SCHEMA_VERSIONS))}"
        )
    model = _load(props, "model")
    _expect(isinstance(model, dict), "model to be an object", model)
    stages = _stages(model, schema)
    frames = stages["input_kind"] == "features"
    for key, most in _MAXIMA.items():
        value = model.get(key)
        low = 0 if key == "vocab_size" and frames else 1
        _expect(_is_int(value, low) and value <= most, f"model.{key} in [{low}, {most}]", value)
    _expect(not frames or model["vocab_size"] == 0, "model.vocab_size 0 (features)", model)
    _expect(model.get("arch") in ARCHS, f"model.arch in {ARCHS}", model.get("arch"))
    _expect(
        isinstance(model.get("nonlinearity"), str), "model.nonlinearity", model.get("nonlinearity")
    )
    if stages["input_kind"] == "onehot":
        size = stages["input_size"]
        _expect(size == model["vocab_size"], "model.input.size V for onehot", size)

    tokens, unk = [], None
    if frames:
        _expect(PREFIX + "vocab" not in props, "no vocab for a features model", "a vocab")
    else:
        tokens, unk = _vocab(_load(props, "vocab"), model["vocab_size"])
    text = IDENTITY
    if PREFIX + "text" in props:
        raw = _load(props, "text")
        _expect(not frames, "no text contract for a features model", raw)
        _expect(
            isinstance(raw, dict)
            and set(raw) == {"unicode", "lowercase"}
            and raw["unicode"] in UNICODE_FORMS
            and isinstance(raw["lowercase"], bool),
            f'text to be {{"unicode": one of {UNICODE_FORMS}, "lowercase": true or false}}',
            raw,
        )
        text = (raw["unicode"], raw["lowercase"])

    labels = _load(props, "labels")
    _expect(
        isinstance(labels, list) and all(isinstance(x, str) for x in labels),
        "labels to be a list of strings",
        labels,
    )
    _expect(len(labels) == model["num_classes"], f"{model['num_classes']} labels", len(labels))
    _expect(len(set(labels)) == len(labels), "distinct labels", _repeated(labels))
    _expect(
        not any(map(_LABEL_BREAKS.search, labels)),
        "labels without a control character or line break",
        [x for x in labels if _LABEL_BREAKS.search(x)][:3],
    )

    io = _load(props, "io")
    _expect(isinstance(io, dict), "io to be an object", io)
    states = io.get("states")
    _expect(
        isinstance(states, list) and 0 < len(states) <= MAX_STATES,
        f"io.states to be a list of 1 to {MAX_STATES} states",
        states,
    )
    state_specs = tuple(_state(s, i) for i, s in enumerate(states))
    key = "input" if schema >= 2 else "tokens"
    main_in = _tensor(io.get(key), f"io.{key}", "float32" if frames else "int64")
    want_shape = ("B", "T", stages["input_size"]) if frames else ("B", "T")
    _expect(main_in.shape == want_shape, f"io.{key}.shape {list(want_shape)}", main_in.shape)
    tensors = {
        "tokens": main_in,
        "lengths": _tensor(io.get("lengths"), "io.lengths", "int64"),
        "log_probs": _tensor(io.get("log_probs"), "io.log_probs", "float32"),
    }
    names = [t.name for t in tensors.values()]
    names += [n for s in state_specs for n in (s.input, s.output)]
    _expect(len(set(names)) == len(names), "distinct input and output names", names)

    provenance = _load(props, "provenance")
    _expect(isinstance(provenance, dict), "provenance to be an object", provenance)
    opset = provenance.get("opset")
    _expect(
        _is_int(opset, 1) and opset <= MAX_OPSET, f"provenance.opset in [1, {MAX_OPSET}]", opset
    )
    sha = provenance.get("checkpoint_sha256")
    _expect(isinstance(sha, str) and len(sha) == 64, "provenance.checkpoint_sha256", sha)
    version = provenance.get("tool_version")
    _expect(isinstance(version, str), "provenance.tool_version to be a str", version)
    libraries = provenance.get("libraries")
    _expect(
        isinstance(libraries, dict) and all(isinstance(v, str) for v in libraries.values()),
        "provenance.libraries to be an object of version strings",
        libraries,
    )
    step = None
    if PREFIX + "step" in props:
        step = _step(_load(props, "step"), model["num_layers"], state_specs, schema)

    return ModelMetadata(
        arch=model["arch"],
        vocab_size=model["vocab_size"],
        num_classes=model["num_classes"],
        hidden_size=model["hidden_size"],
        num_layers=model["num_layers"],
        nonlinearity=model["nonlinearity"],
        vocab=tuple(tokens),
        unk_id=unk,
        labels=tuple(labels),
        **tensors,
        states=state_specs,
        provenance=provenance,
        step=step,
        **stages,
        schema_version=schema,
        text=text,
    )


def _stages(model: dict, version: int) -> dict:
    """The input and head stages of model (schema 1: tokens, E = H, log-softmax at the
    last step) as ModelMetadata's fields."""
    if version == 1:
        return {"input_kind": "tokens", "input_size": model.get("hidden_size")}
    raw, head = model.get("input"), model.get("head")
    _expect(isinstance(raw, dict), "model.input to be an object", raw)
    kind, size = raw.get("kind"), raw.get("size")
    _expect(kind in INPUT_KINDS, f"model.input.kind in {INPUT_KINDS}", kind)
    _expect(_is_int(size, 1) and size <= MAX_DIM, f"model.input.size in [1, {MAX_DIM}]", size)
    _expect(isinstance(head, dict), "model.head to be an object", head)
    _expect(head.get("output") in HEADS, f"model.head.output in {HEADS}", head.get("output"))
    steps = head.get("steps")
    _expect(steps in HEAD_STEPS, f"model.head.steps in {HEAD_STEPS}", steps)
    normalization = ()
    if kind == "features":
        normalization = tuple(raw.get(k) for k in ("mean", "scale"))
        for k, values in zip(("mean", "scale"), normalization, strict=True):
            _expect(
                isinstance(values, list)
                and len(values) == size
                and all(_is_float(x) for x in values),
                f"model.input.{k}: {size} finite numbers",
                values,
            )
        _expect(all(x != 0 for x in normalization[1]), "a non-zero scale", normalization[1])
        normalization = tuple(tuple(float(x) for x in v) for v in normalization)
    return {
        "input_kind": kind,
        "input_size": size,
        "head": head["output"],
        "head_steps": steps,
        "normalization": normalization,
    }


def _vocab(vocab, vocab_size: int) -> tuple[list, int | None]:
    """The vocabulary's tokens and unknown id, checked against model.vocab_size."""
    _expect(isinstance(vocab, dict), "vocab to be an object", vocab)
    tokens = vocab.get("tokens")
    _expect(
        isinstance(tokens, list) and all(isinstance(t, str) for t in tokens),
        "vocab.tokens to be a list of strings",
        tokens,
    )
    _expect(len(tokens) == vocab_size, f"{vocab_size} vocab tokens", len(tokens))
    _expect(len(set(tokens)) == len(tokens), "unique vocab tokens", _repeated(tokens))
    unk = vocab.get("unk_id")
    _expect(
        unk is None or (_is_int(unk) and unk < len(tokens)),
        f"vocab.unk_id in [0, {len(tokens)}) or null (no unknown token)",
        unk,
    )
    return tokens, unk


def _step(raw, num_layers: int, states: tuple[StateSpec, ...], version: int) -> StepSpec:
    _expect(isinstance(raw, dict), "step to be an object", raw)
    in_file = raw.get("in_file", False)
    _expect(isinstance(in_file, bool), "step.in_file true or false", in_file)
    first = "input" if version >= 2 else "token"
    keys = (first, "log_probs") if in_file else (first, "log_probs", "sha256", "onnx_base64")
    for key in keys:
        _expect(isinstance(raw.get(key), str) and raw[key], f"step.{key}", raw.get(key))
    layers = raw.get("states")
    _expect(
        isinstance(layers, list)
        and all(
            isinstance(x, dict)
            and all(isinstance(x.get(k), str) and x[k] for k in ("input", "output"))
            for x in layers
        ),
        "step.states to be a list of {input, output} names",
        layers,
    )
    # The step model's states are each model state's per-layer views, in metadata order.
    want = num_layers * len(states)
    _expect(len(layers) == want, f"{want} step states (one per layer and state)", len(layers))
    for state in states:
        shape = state.shape
        _expect(
            (len(shape) == 3 and state.batch_axis == 1)
            or (len(shape) == 2 and num_layers == 1 and state.batch_axis == 0),
            "(L, B, H) or, with one layer, (B, H) states for a step model",
            shape,
        )
    pairs = tuple((x["input"], x["output"]) for x in layers)
    names = [raw[first], raw["log_probs"], *(n for p in pairs for n in p)]
    _expect(len(set(names)) == len(names), "distinct step input and output names", names)
    if in_file:
        return StepSpec(raw[first], raw["log_probs"], pairs, in_file=True)
    sha = raw["sha256"]
    _expect(len(sha) == 64 and all(c in "0123456789abcdef" for c in sha), "step.sha256", sha)
    return StepSpec(raw[first], raw["log_probs"], pairs, sha, raw["onnx_base64"])
