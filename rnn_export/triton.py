"""A Triton Inference Server model repository for stateful serving of a model file.

`rnn-export triton` writes MODEL_REPO/NAME/config.pbtxt and MODEL_REPO/NAME/1/model.onnx
for the onnxruntime backend with the sequence batcher and implicit state: Triton keeps
each sequence's state between its requests, feeds zeros when a sequence starts, and
batches requests of different sequences together.

Triton stacks the requests of a batch, and splits an implicit state, along axis 0. The
file's states put B elsewhere ((L, B, H) for a stacked model), so model.onnx is a
*batch-first variant*: a wrapper around the file's main graph, unchanged, that
    - takes and returns every state of the metadata batch-first (a Transpose on the way
      in and on the way out; a state already batch-first passes as it is);
    - has the control inputs the backend feeds as real graph inputs, int32 (B, 1):
      START (1: this request starts its sequence: the state input is replaced by
      zeros) and READY (0: the batch slot holds no request: the state comes back
      unchanged).
The variant keeps the file's metadata, whose rnn_export.io is the contract of the main
graph it wraps (in the model's own layout), without the step model (Triton runs the
main graph only), and adds the key rnn_export.triton: the variant's own signature, each
state's permutation and the control inputs. ServingSession runs the variant as a
session on the main graph's contract would run, which is how `rnn-export verify` checks
it against the checkpoint like any file.

Nothing here needs Triton; the tests parse config.pbtxt with the model-config protobuf
of the tritonclient package (the `triton` extra).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnn_export.errors import InputError

KEY = "rnn_export.triton"
START, READY = "START", "READY"
CONTROLS = (
    (
        START,
        "CONTROL_SEQUENCE_START",
        "1: the request starts its sequence; its state input is zeros",
    ),
    (READY, "CONTROL_SEQUENCE_READY", "0: the batch slot holds no request; the state is unchanged"),
)
PREFIX = "main/"  # the wrapped main graph's names, inside the variant
DEFAULT_MAX_BATCH = 64
MAX_INSTANCES = 256  # model instances (sessions) on one server: more is a typo
# A model name and every tensor name config.pbtxt holds: safe in a folder name, a URL
# (/v2/models/NAME) and a quoted text-format string alike.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
TENSOR_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/\-]{0,127}")
CONFIG_HEADER = "# Written by rnn-export triton"  # how write_repository knows its own folder
_TRITON_TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
_ONNX_TYPES = {"float32": 1, "int64": 7}  # onnx.TensorProto.FLOAT, INT64


class TritonError(InputError):
    """A model file that cannot be made into a Triton model, or a bad option."""


@dataclass(frozen=True)
class ServedState:
    """One state of the variant: names, batch-first shape, permutation from the model's."""

    input: str
    output: str
    shape: tuple  # batch-first, "B" first
    permutation: tuple[int, ...]  # batch-first = model state transposed by this

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "output": self.output,
            "shape": list(self.shape),
            "permutation": list(self.permutation),
        }


def served_states(meta) -> list[ServedState]:
    """The batch-first form of every state the metadata lists (any number, any names)."""
    out = []
    for s in meta.states:
        axis = s.batch_axis
        perm = (axis, *(i for i in range(len(s.shape)) if i != axis))
        out.append(ServedState(s.input, s.output, tuple(s.shape[i] for i in perm), perm))
    return out


def build_variant(model_bytes: bytes, where: str = "the model file") -> tuple[bytes, dict]:
    """The batch-first variant of a model file and its contract (the rnn_export.triton value).

    Raises:
        TritonError: the bytes are not a model file with rnn-export metadata, or already
            a variant.
    """
    import onnx
    from onnx import TensorProto, helper

    from rnn_runtime.metadata import MetadataError, read_metadata

    model = onnx.load_from_string(model_bytes)
    props = {p.key: p.value for p in model.metadata_props}
    if KEY in props:
        raise TritonError(f"{where}: is already a Triton variant; give the model file itself")
    try:
        meta = read_metadata(props)
    except MetadataError as e:
        raise TritonError(f"{where}: {e}") from None
    inner = model.graph
    _prefix_names(inner, PREFIX)
    states = served_states(meta)
    pre, post, inputs, outputs = [], [], [], []  # nodes before and after the main graph

    def tensor(name, dtype, shape):
        return helper.make_tensor_value_info(name, dtype, list(shape))

    for spec in (meta.tokens, meta.lengths):  # token ids int64, or frames float32
        inputs.append(tensor(spec.name, _ONNX_TYPES[spec.dtype], spec.shape))
        pre.append(helper.make_node("Identity", [spec.name], [PREFIX + spec.name]))
    for name, _, _ in CONTROLS:
        inputs.append(tensor(name, TensorProto.INT32, ("B", 1)))
        pre.append(helper.make_node("Cast", [name], [f"{name}/bool"], to=TensorProto.BOOL))
    initializers = {
        "serving/zero": helper.make_tensor("serving/zero", TensorProto.FLOAT, [], [0.0])
    }
    for s in states:
        rank = len(s.shape)
        flag_shape = f"serving/flag_shape_{rank}"  # (B, 1) -> (B, 1, ..., 1): broadcasts
        initializers[flag_shape] = helper.make_tensor(
            flag_shape, TensorProto.INT64, [rank], [-1] + [1] * (rank - 1)
        )
        start, ready = f"{s.input}/{START}", f"{s.input}/{READY}"
        fresh = f"{s.input}/started"  # zeros where the sequence starts
        inputs.append(tensor(s.input, TensorProto.FLOAT, s.shape))
        pre += [
            helper.make_node("Reshape", [f"{START}/bool", flag_shape], [start]),
            helper.make_node("Reshape", [f"{READY}/bool", flag_shape], [ready]),
            helper.make_node("Where", [start, "serving/zero", s.input], [fresh]),
            _transpose(fresh, PREFIX + s.input, np.argsort(s.permutation)),
        ]
        new = f"{s.output}/batch_first"
        post += [
            _transpose(PREFIX + s.output, new, s.permutation),
            helper.make_node("Where", [ready, new, fresh], [s.output]),
        ]
        outputs.append(tensor(s.output, TensorProto.FLOAT, s.shape))
    log_probs = meta.log_probs
    post.append(helper.make_node("Identity", [PREFIX + log_probs.name], [log_probs.name]))
    outputs.insert(0, tensor(log_probs.name, TensorProto.FLOAT, log_probs.shape))
    graph = helper.make_graph(
        [*pre, *inner.node, *post],
        "rnn_export_triton",
        inputs,
        outputs,
        initializer=[*initializers.values(), *inner.initializer],
    )
    variant = helper.make_model(
        graph, opset_imports=model.opset_import, ir_version=model.ir_version
    )
    variant.producer_name, variant.producer_version = model.producer_name, model.producer_version
    contract = {
        "layout": "batch-first",
        "wraps": "the main graph of rnn_export.io, unchanged (names prefixed " + PREFIX + ")",
        "inputs": [
            {
                "name": meta.tokens.name,
                "shape": list(meta.tokens.shape),
                "dtype": meta.tokens.dtype,
            },
            {"name": meta.lengths.name, "shape": list(meta.lengths.shape), "dtype": "int64"},
            *({"name": s.input, "shape": list(s.shape), "dtype": "float32"} for s in states),
            *({"name": n, "shape": ["B", 1], "dtype": "int32"} for n, _, _ in CONTROLS),
        ],
        "outputs": [
            {"name": log_probs.name, "shape": list(log_probs.shape), "dtype": "float32"},
            *({"name": s.output, "shape": list(s.shape), "dtype": "float32"} for s in states),
        ],
        "states": [s.to_dict() for s in states],
        "controls": [{"name": n, "kind": k, "meaning": m} for n, k, m in CONTROLS],
    }
    for key, value in props.items():
        if key != "rnn_export.step":  # Triton runs the main graph only
            variant.metadata_props.add(key=key, value=value)
    variant.metadata_props.add(key=KEY, value=json.dumps(contract))
    onnx.checker.check_model(variant, full_check=True)
    return variant.SerializeToString(), contract


def _transpose(source: str, target: str, perm) -> object:
    from onnx import helper

    perm = [int(i) for i in perm]
    if perm == list(range(len(perm))):
        return helper.make_node("Identity", [source], [target])
    return helper.make_node("Transpose", [source], [target], perm=perm)


def _prefix_names(graph, prefix: str) -> None:
    """Prefix every name of graph's scope, where it is made and wherever it is read, in
    its subgraphs too (which may read the outer scope). onnx.compose.add_prefix misses
    the initializers a subgraph reads (it renames them after the subgraphs)."""
    names = {v.name for v in (*graph.input, *graph.initializer)}
    names |= {out for node in graph.node for out in node.output}
    _rename(graph, {n: prefix + n for n in names if n})


def _rename(graph, names: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
        for attribute in node.attribute:
            for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                _rename(sub, names)
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = names.get(value.name, value.name)


def read_contract(props) -> dict | None:
    """The rnn_export.triton value of a file's metadata_props; None: not a variant."""
    value = props.get(KEY)
    return None if value is None else json.loads(value)


class _Arg:
    """A NodeArg as onnxruntime's: name, shape, type."""

    def __init__(self, name, shape, type_):
        self.name, self.shape, self.type = name, shape, type_


class ServingSession:
    """An onnxruntime session on a batch-first variant, called as one on the main graph it
    wraps: states in the model's own layout, control inputs at "running" (START 0,
    READY 1). Everything else is the session's own (providers, profiling...).

    get_inputs and get_outputs give the variant's real signature with the controls left
    out and each state's shape put back in the model's layout, so checking them against
    rnn_export.io checks the variant's graph.
    """

    def __init__(self, session, contract: dict):
        self._session = session
        self._states = {s["input"]: s for s in contract["states"]}
        self._outputs = {s["output"]: s for s in contract["states"]}
        self._controls = [c["name"] for c in contract["controls"]]

    def __getattr__(self, name):
        return getattr(self._session, name)

    def get_inputs(self):
        args = [a for a in self._session.get_inputs() if a.name not in self._controls]
        return [self._model_layout(a, self._states.get(a.name)) for a in args]

    def get_outputs(self):
        return [
            self._model_layout(a, self._outputs.get(a.name)) for a in self._session.get_outputs()
        ]

    @staticmethod
    def _model_layout(arg, state):
        if state is None:
            return arg
        back = np.argsort(state["permutation"])
        return _Arg(arg.name, [arg.shape[i] for i in back], arg.type)

    def run(self, names, feed, run_options=None):
        feed = dict(feed)
        B = None
        for name, state in self._states.items():
            if name in feed:
                feed[name] = np.ascontiguousarray(np.transpose(feed[name], state["permutation"]))
                B = feed[name].shape[0]
        if B is not None:
            feed[START] = np.zeros((B, 1), dtype=np.int32)
            feed[READY] = np.ones((B, 1), dtype=np.int32)
        results = self._session.run(names, feed, run_options)
        return [
            r
            if name not in self._outputs
            else np.ascontiguousarray(
                np.transpose(r, np.argsort(self._outputs[name]["permutation"]))
            )
            for name, r in zip(names, results, strict=True)
        ]


def adapt_session(session):
    """session itself, or a ServingSession where its file is a batch-first variant."""
    contract = read_contract(session.get_modelmeta().custom_metadata_map)
    return session if contract is None else ServingSession(session, contract)


def model_config(name: str, contract: dict, meta, max_batch_size: int, instances: int) -> str:
    """config.pbtxt for the onnxruntime backend: sequence batcher, implicit state.

    Args:
        name: the model's name in the repository (its folder's).
        contract: build_variant's contract.
        meta: the file's ModelMetadata (the main graph's contract).
        max_batch_size: requests Triton may stack into one run (B).
        instances: model instances on the CPU.
    """
    num_classes = meta.num_classes
    tensors = [meta.tokens.name, meta.lengths.name, meta.log_probs.name]
    tensors += [n for s in contract["states"] for n in (s["input"], s["output"])]
    for tensor in tensors:
        if not isinstance(tensor, str) or not TENSOR_PATTERN.fullmatch(tensor):
            raise TritonError(
                f"the model's tensor name {tensor!r:.80} cannot be written into config.pbtxt: "
                "expected at most 128 letters, digits, '_', '.', ':', '/' and '-'"
            )

    def dims(shape) -> str:
        return "[ " + ", ".join("-1" if d == "T" else str(d) for d in shape[1:]) + " ]"

    states = []
    for s in contract["states"]:
        states.append(
            f"""    {{
      input_name: "{s["input"]}"
      output_name: "{s["output"]}"
      data_type: TYPE_FP32
      dims: {dims(s["shape"])}
      initial_state: {{
        data_type: TYPE_FP32
        dims: {dims(s["shape"])}
        zero_data: true
        name: "zeros"
      }}
    }}"""
        )
    controls = [
        f"""    {{
      name: "{c["name"]}"
      control [ {{ kind: {c["kind"]} int32_false_true: [ 0, 1 ] }} ]
    }}"""
        for c in contract["controls"]
    ]
    model = f"{meta.arch} (H={meta.hidden_size}, L={meta.num_layers}, C={num_classes})"
    tokens, lengths = meta.tokens.name, meta.lengths.name
    # The sequence's steps: token ids [T] int64, or a features model's frames [T, F] float32.
    steps = dims(meta.tokens.shape)
    what = "tokens" if meta.reads_tokens else f"frames of F = {meta.input_size} values"
    separator = ",\n"
    return f"""{CONFIG_HEADER}: stateful serving of {model}.
# A request carries one sequence's next {what}: {tokens} {steps.replace(" ", "")} \
{meta.tokens.dtype} and {lengths} [1] int64
# (1 <= length <= T). Triton keeps the state between requests (zeros at the sequence start)
# and stacks requests of different sequences along axis 0: 1/model.onnx is batch-first.
name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{meta.tokens.name}"
    data_type: {_TRITON_TYPES[meta.tokens.dtype]}
    dims: {steps}
  }},
  {{
    name: "{meta.lengths.name}"
    data_type: TYPE_INT64
    dims: [ 1 ]
    reshape: {{ shape: [ ] }}
  }}
]
output [
  {{
    name: "{meta.log_probs.name}"
    data_type: TYPE_FP32
    dims: [ {num_classes} ]
  }}
]
sequence_batching {{
  max_sequence_idle_microseconds: 60000000
  control_input [
{separator.join(controls)}
  ]
  state [
{separator.join(states)}
  ]
  oldest {{
    max_candidate_sequences: {max_batch_size}
    max_queue_delay_microseconds: 1000
  }}
}}
instance_group [
  {{
    count: {instances}
    kind: KIND_CPU
  }}
]
"""


def write_repository(
    model_path: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    instances: int = 1,
) -> Path:
    """Write OUT/NAME/config.pbtxt and OUT/NAME/VERSION/model.onnx (the batch-first variant).

    Nothing this did not write is deleted or replaced:
        - OUT/NAME absent (or an empty folder): it appears whole, version 1, or not at all;
        - OUT/NAME a model folder this wrote (its config.pbtxt says so): the model goes
          beside the versions there as the next one (highest + 1), and config.pbtxt,
          which serves the newest version, is replaced; the other versions and any other
          file (labels.txt...) stay as they are;
        - anything else (a training run, a model folder of another tool): refused.
    Other models in OUT are left alone. Returns OUT/NAME/VERSION.

    Raises:
        TritonError: a bad name or option, a file that is not a model file, an OUT/NAME
            this did not write.
        rnn_runtime errors: the model file does not open (it is checked as any open).
        WriteError: OUT/NAME cannot be written.
    """
    import rnn_runtime
    from rnn_export import atomic
    from rnn_runtime.model import read_model_file
    from rnn_runtime.onnxfile import is_ort_format

    model_path = Path(model_path)
    name = model_path.stem if name is None else name
    check_options(name, max_batch_size, instances)
    data = read_model_file(model_path)
    if is_ort_format(data):
        raise TritonError(
            f"{model_path}: is in ORT format; triton takes the .onnx model file (its main graph)"
        )
    model = rnn_runtime.open_model(model_path, step_model=False)  # checks the file
    meta = model.metadata
    if meta.is_step_file:
        what = "an int8 step file" if meta.provenance.get("quantized") else "a step file"
        raise TritonError(
            f"{model_path}: is {what}, which has no main graph; triton takes the model file "
            "`rnn-export convert` writes by default"
        )
    dest = atomic.check_folder_output(Path(out) / name, "the Triton model folder")
    version = next_version(dest)
    variant, contract = build_variant(data, str(model_path))
    config = model_config(name, contract, meta, max_batch_size, instances)
    check_config(config, name, contract, max_batch_size, instances)
    if version is None:  # a new model folder: whole or not at all
        version = 1
        _write_folder(dest, {"1/model.onnx": variant, "config.pbtxt": config.encode("utf-8")})
    else:  # the version first: a kill before config.pbtxt leaves the old config serving
        _write_folder(dest / str(version), {"model.onnx": variant})
        atomic.replace_file(dest / "config.pbtxt", config.encode("utf-8"))
    return dest / str(version)


def check_options(name: str, max_batch_size: int, instances: int) -> None:
    """Refuse a model name or a number Triton (or its config.pbtxt) could not take.

    Raises:
        TritonError: naming the option, what it must be and what it is.
    """
    from rnn_export.config import MAX_BATCH_SIZE

    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise TritonError(
            "a model name is a folder name of at most 128 letters, digits, '_', '.' and '-' "
            f"(not first); got {name!r:.80}"
        )
    bounds = (
        ("max_batch_size", max_batch_size, MAX_BATCH_SIZE),
        ("instances", instances, MAX_INSTANCES),
    )
    for option, value, most in bounds:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
            raise TritonError(f"{option} must be an integer in 1 .. {most:,}; got {value!r:.40}")


def check_config(text: str, name: str, contract: dict, max_batch_size: int, instances: int):
    """Parse config.pbtxt as Triton's ModelConfig (tritonclient's protobuf, the `triton`
    extra) and check that it says what was meant; without tritonclient, the fields were
    checked as they were written (check_options, the tensor names in model_config).

    Raises:
        TritonError: the text does not parse, or says something else.
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return
    try:
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise TritonError(f"config.pbtxt does not parse as Triton's ModelConfig: {e}") from None
    got = (
        config.name,
        config.max_batch_size,
        config.instance_group[0].count,
        [(s.input_name, s.output_name) for s in config.sequence_batching.state],
    )
    want = (
        name,
        max_batch_size,
        instances,
        [(s["input"], s["output"]) for s in contract["states"]],
    )
    if got != want:
        raise TritonError(f"config.pbtxt parses as {got!r:.200}; expected {want!r:.200}")


def next_version(dest: Path) -> int | None:
    """The version the model gets in the model folder dest, one more than its highest;
    None where dest is new (absent or an empty folder).

    Raises:
        TritonError: dest holds something this module did not write.
    """
    from rnn_export.atomic import path_kind

    if path_kind(dest) is None:
        return None
    entries = list(dest.iterdir())
    if not entries:
        return None
    config = dest / "config.pbtxt"
    header = b""
    if path_kind(config) == "a regular file":
        with open(config, "rb") as f:
            header = f.read(len(CONFIG_HEADER))
    if header != CONFIG_HEADER.encode():
        names = sorted(e.name for e in entries)
        held = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise TritonError(
            f"{dest}: exists and is not a model folder written by rnn-export triton (it "
            f"holds {held}); nothing there is replaced: give another --name or --out"
        )
    versions = [int(e.name) for e in entries if re.fullmatch("[0-9]+", e.name)]
    return 1 + max(versions, default=0)


def _write_folder(dest: Path, files: dict[str, bytes]) -> None:
    """Make the folder dest, holding files (relative path -> bytes), whole or not at all."""
    from rnn_export import atomic

    with atomic.temp_folder(dest) as tmp:
        for relative, data in files.items():
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            atomic.write_file(tmp / relative, data)
        atomic.swap_in(tmp, dest)
