"""Export a trained RNN to one self-contained ONNX file with explicit state and dynamic B, T.

The graphs come from rnn_export.graph (rnn_export.gated for "gru" and "lstm"; written
from the weights, B and T symbolic: one
file runs at any batch size and any length, and its size and node count do not depend
on T). This module adds the metadata the runtime reads (rnn_runtime.metadata), checks
the result with onnx and runs it once in onnxruntime, and writes it atomically. The
parity suite (rnn_export.parity) proves it computes what the PyTorch model computes.

The file also carries, in its metadata (key rnn_export.step), a second and much smaller
model for one step (graph.step_graph). The runtime steps streams and pools through it on
the CPU (a cell step 6.6 us against 9.5 us through the main graph, docs/benchmarks.md);
its weights are a second copy of the main graph's (the table, R, W, b, out), so the file
is about twice as large. `verify` checks it against PyTorch as it checks the main graph.

An ONNX file is one protobuf message, limited to 2 GiB: a model whose file would be larger
(estimate_file_bytes, from V, H, L and C alone) is refused before anything is built.

Three kinds of file (`graph`): "default", the main graph above with the step model
embedded; "portable", the same contract with rnn_export.portable's main graph (only
constructs that OpenVINO, tract and the ONNX reference compute correctly); "step", a
step file: the step model as the file's own graph, with the metadata (step.in_file) and
no main graph, for runtimes that run nothing else.

Layers of the API: `export_onnx` (a RUN_DIR or Checkpoint) -> `export_model` (a model
object: checks the output path, writes atomically) -> `build_onnx` (graph + metadata,
checked and run in onnxruntime; returns the bytes and what `convert` prints).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rnn_export import __version__, atomic, gated
from rnn_export import graph as plain_graph
from rnn_export.config import LENGTHS, LOG_PROBS, input_name, step_state_names
from rnn_export.errors import InputError
from rnn_export.graph import count_nodes, onnx_weights, step_input_name
from rnn_export.models import CellRNN, StackedRNN

# protobuf refuses a message over 2 GiB; the graphs and metadata around the weights take
# a few kilobytes, so a margin of 1 MiB is plenty.
MAX_FILE_BYTES = 2**31 - 1 - 2**20
DEFAULT_OPSET = 18
MIN_OPSET = 14  # the oldest opset tested (the graph needs >= 13: axes as Squeeze/Split inputs)
GRAPHS = ("default", "portable", "step")  # the kinds of file (see the module docstring)


class ExportError(InputError):
    """A model that cannot be exported: bad source, output path or opset."""


@dataclass(frozen=True)
class OnnxExport:
    """One exported model: the file's bytes and the figures `convert` prints.

    Args:
        data: the serialized ModelProto (the whole file).
        opset: its ONNX opset.
        nodes: nodes of the main graph, those inside If/Scan subgraphs included.
        inputs, outputs: the main graph's signature, [{"name", "shape", "dtype"}];
            symbolic dims are strings ("B", "T").
        step: the embedded step model: {"nodes", "bytes", "token", "states": [input, ...]}.
        path: where it was written (None until then).
    """

    data: bytes
    opset: int
    nodes: int
    inputs: list
    outputs: list
    step: dict
    path: Path | None = None

    @property
    def size_bytes(self) -> int:
        return len(self.data)


def export_onnx(
    source, out_path: str | Path, opset: int = DEFAULT_OPSET, graph: str = "default"
) -> Path:
    """Export a trained run to one self-contained .onnx file, written atomically.

    Args:
        source: a RUN_DIR path or a Checkpoint (rnn_export.checkpoint).
        out_path: the .onnx file to write; an existing file is replaced only on success.
        opset: ONNX opset, MIN_OPSET up to the newest that onnx and onnxruntime support.
        graph: the kind of file, one of GRAPHS.

    Returns:
        out_path as a Path (export_model returns the figures too).

    Raises:
        ExportError: a missing or corrupt RUN_DIR, an unwritable out_path, or an opset
            that onnx or onnxruntime cannot handle. Nothing is written then.
    """
    from rnn_export.checkpoint import Checkpoint, CheckpointError, load_checkpoint

    if isinstance(source, Checkpoint):
        ckpt = source
    elif isinstance(source, (str, os.PathLike)):
        try:
            ckpt = load_checkpoint(source)
        except CheckpointError as e:
            raise ExportError(f"cannot export: {e}") from e
    else:
        raise ExportError(
            f"source must be a RUN_DIR path or a Checkpoint; got {type(source).__name__}"
        )
    return export_model(
        ckpt.model, ckpt.vocab, ckpt.sha256, out_path, opset=opset, graph=graph
    ).path


def export_model(
    model: nn.Module,
    vocab,
    sha256: str,
    out_path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    graph: str = "default",
) -> OnnxExport:
    """Export a model object (as export_onnx does for a checkpoint).

    Args:
        model: a CellRNN, StackedRNN or GatedRNN (rnn_export.models); it is not modified.
        vocab: its Vocabulary (.tokens, .unk_id).
        sha256: hex sha256 of the checkpoint it came from (64 hex digits).
        out_path: the .onnx file to write atomically.
        opset: ONNX opset.
        graph: the kind of file, one of GRAPHS.

    Returns:
        The OnnxExport, with .path set.

    Raises:
        ExportError: see build_onnx.
        WriteError: out_path is not a regular file or cannot be written (it is as it was).
    """
    out_path = _check_out_path(out_path)
    built = build_onnx(model, vocab, sha256, opset=opset, graph=graph)
    atomic.replace_file(out_path, built.data)
    return replace(built, path=out_path)


def build_onnx(
    model: nn.Module, vocab, sha256: str, *, opset: int = DEFAULT_OPSET, graph: str = "default"
) -> OnnxExport:
    """The complete model (graph plus metadata), checked by onnx and run by onnxruntime.

    Returns:
        OnnxExport (path None): the bytes to write and their figures.

    Raises:
        ExportError: a bad opset, vocabulary or sha256, or a graph onnxruntime cannot run.
    """
    import onnx
    import onnxruntime as ort

    from rnn_runtime.metadata import MetadataError, StateSpec, build_metadata

    _check_opset(opset)
    if graph not in GRAPHS:
        raise ExportError(f"graph must be one of {', '.join(GRAPHS)}; got {graph!r}")
    if not isinstance(model, (CellRNN, StackedRNN)):  # GatedRNN is a StackedRNN
        raise ExportError(f"expected a CellRNN, StackedRNN or GatedRNN; got {type(model).__name__}")
    config = model.config
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ExportError(f"sha256 must be 64 lowercase hex digits; got {sha256!r}")
    if not config.reads_tokens:
        if vocab is not None:
            raise ExportError("a features model reads no tokens; it takes no vocabulary")
    elif vocab is None or len(vocab.tokens) != config.vocab_size:
        got = "none" if vocab is None else len(vocab.tokens)
        raise ExportError(f"model expects vocab_size {config.vocab_size}; vocabulary has {got}")
    estimate = estimate_file_bytes(config)
    if estimate > MAX_FILE_BYTES:
        raise ExportError(
            f"this model ({config.describe()}) would make an ONNX file of about "
            f"{estimate / 2**30:.2f} GiB; ONNX files are limited to 2 GiB (protobuf), so it "
            f"cannot be exported: train a smaller one (hidden size, layers, vocabulary)"
        )
    states = [
        StateSpec(state_in, state_out, config.state_shape("B"), "float32", "zeros")
        for state_in, state_out in config.state_names
    ]
    gated_arch = config.arch in gated.GATED_ARCHS
    graphs = gated if gated_arch else plain_graph
    weights = onnx_weights(model)  # one copy (and one folded table) for both graphs
    normalization = ()
    if not config.reads_tokens:
        normalization = (weights["mean"].tolist(), weights["scale"].tolist())
    step = graphs.step_graph(config, weights, opset)
    onnx.checker.check_model(step, full_check=True)
    step_bytes = step.SerializeToString()
    step_states = step_state_names(config.arch, config.num_layers)
    try:
        props = build_metadata(
            arch=config.arch,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            nonlinearity=config.nonlinearity,
            vocab=() if vocab is None else vocab.tokens,
            unk_id=None if vocab is None else vocab.unk_id,
            labels=config.labels,
            states=states,
            checkpoint_sha256=sha256,
            opset=opset,
            libraries={
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
            },
            tool_version=__version__,
            tokens_name=input_name(config),
            lengths_name=LENGTHS,
            log_probs_name=LOG_PROBS,
            input_kind=config.input_kind,
            input_size=config.input_width,
            normalization=normalization,
            text=("keep", False) if vocab is None else vocab.text_contract,
            step={
                "token": step_input_name(config),
                "log_probs": LOG_PROBS,
                "states": step_states,
                "model": None if graph == "step" else step_bytes,
            },
        )
    except MetadataError as e:
        raise ExportError(f"cannot describe this model in the file's metadata: {e}") from e

    if graph == "step":
        # A step file is for other runtimes too: the gated cells' Splits written as Slices.
        proto = gated.step_graph(config, weights, opset, portable=True) if gated_arch else step
    elif graph == "portable":
        from rnn_export.portable import portable_main_graph

        proto = portable_main_graph(config, weights, opset)
    else:
        proto = graphs.main_graph(config, weights, opset)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    kind = {"step": " (step file)", "portable": " (portable graph)"}.get(graph, "")
    proto.doc_string = f"rnn-export {__version__}: {config.arch} RNN classifier{kind}"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported graph fails onnx's check at opset {opset}: {e}") from e
    data = proto.SerializeToString()
    _check_runs(data, opset)
    return OnnxExport(
        data=data,
        opset=opset,
        nodes=count_nodes(proto.graph),
        inputs=_signature(proto.graph.input),
        outputs=_signature(proto.graph.output),
        step={
            "nodes": count_nodes(step.graph),
            "bytes": len(step_bytes),
            "token": step_input_name(config),
            "states": [h for h, _ in step_states],
        },
    )


def estimate_file_bytes(config) -> int:
    """The size of the file export would write for config, from its weights alone.

    The main graph holds the folded table (V, H), R_l (H, H) per layer, W_l (H, H) and
    b_l, B_l (3H) for l > 0, and the head (C, H + 1); the step model, stored base64
    (4 bytes per 3) in the metadata, holds the same minus B_l. All float32. A gated
    arch with G gates (gated.GATES) has in its step model the table (V, GH), R_l (GH, H)
    and for l > 0 W_l (GH, H) and b_l (GH) (and for the GRU Rb's h block, H per layer),
    and in its main graph the same (its Scan steps so) plus, for the operators, the
    embedding (V, E) and per layer W_l, R_l (GH, H) and B_l (2GH). A "features" model
    has no table: W_0 (GH, F), b_0 (GH) and its normalization (2F) instead.
    """
    V, H, L, C = config.vocab_size, config.hidden_size, config.num_layers, config.num_classes
    E = config.input_width
    G = gated.GATES.get(config.arch, 1)
    GH = G * H
    first = V * GH if config.reads_tokens else E * GH + GH + 2 * E  # layer 0's input term
    step = first + L * GH * H + (L - 1) * (GH * H + GH) + C * (H + 1)
    if config.arch in gated.GATED_ARCHS:
        step += L * H if config.arch == "gru" else 0
        embedding = V * E if config.input_kind == "tokens" else 0
        main = step + embedding + GH * E + L * (GH * H + 2 * GH) + (L - 1) * GH * H
        return 4 * main + -(-4 * step // 3) * 4
    main = step + (L - 1) * 2 * H + (0 if config.reads_tokens else 2 * H)
    return 4 * main + -(-4 * step // 3) * 4


def _signature(values) -> list[dict]:
    """Graph inputs or outputs as [{"name", "shape", "dtype"}], as `inspect` shows them."""
    from onnx import helper

    return [
        {
            "name": v.name,
            "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name,
        }
        for v in values
    ]


def _check_opset(opset) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise ExportError(f"opset must be an integer; got {opset!r}")
    if opset < MIN_OPSET:
        raise ExportError(
            f"opset {opset} is too old; this exporter writes opset {MIN_OPSET} or newer"
        )
    if opset > newest:
        raise ExportError(
            f"opset {opset} is newer than the installed onnx {onnx.__version__} knows "
            f"(at most {newest})"
        )


def _check_runs(model_bytes: bytes, opset: int) -> None:
    """Open the model in onnxruntime and run one tiny batch: the opset must be runnable."""
    import onnxruntime as ort

    from rnn_runtime import ModelFileError
    from rnn_runtime.metadata import MetadataError, check_signature, read_metadata
    from rnn_runtime.session import RUN_ERRORS, open_session, open_step_session, run_step_model

    version = ".".join(ort.__version__.split(".")[:2])
    try:
        session = open_session(model_bytes, quiet=True, name="the exported graph")
        meta = read_metadata(session.get_modelmeta().custom_metadata_map)
        frame = () if meta.reads_tokens else (meta.input_size,)
        dtype = np.int64 if meta.reads_tokens else np.float32
        if meta.is_step_file:
            open_step_session(meta, model_bytes, ("CPUExecutionProvider",), 1, name="the step file")
            states = [np.zeros(s.concrete_shape(2), dtype=np.float32) for s in meta.states]
            run_step_model(session, meta.step, np.zeros((2, *frame), dtype=dtype), states)
            return
        check_signature(meta, session.get_inputs(), session.get_outputs())
        session.run(
            None,
            {
                meta.tokens.name: np.zeros((2, 3, *frame), dtype=dtype),
                meta.lengths.name: np.array([3, 1], dtype=np.int64),
            }
            | {s.input: np.zeros(s.concrete_shape(2), dtype=np.float32) for s in meta.states},
        )
    except (ModelFileError, *RUN_ERRORS) as e:
        raise ExportError(f"opset {opset} cannot be run by onnxruntime {version}: {e}") from e
    except MetadataError as e:
        raise ExportError(f"the exported graph contradicts its own metadata: {e}") from e


def _check_out_path(out_path) -> Path:
    if not isinstance(out_path, (str, os.PathLike)):
        raise ExportError(f"out_path must be a file path; got {type(out_path).__name__}")
    return atomic.check_file_output(out_path, "the .onnx file")
