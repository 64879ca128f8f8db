"""Export a trained RNN to one self-contained ONNX file with explicit state and dynamic B, T.

The recurrence is the native ONNX `RNN` operator, one per layer, so B and T stay
symbolic: one file runs at any batch size and any length, and its size and node
count do not depend on T (tracing would unroll the loop into the example's T steps).
The graph is written with onnx.helper straight from the model's weights; the parity
suite (rnn_export.parity) proves it computes what the PyTorch model computes.

Graph (B, T symbolic; "cell" has L=1 and its state has no layer axis):
    tokens (B, T) -> Transpose -> Gather(embedding) -> x (T, B, H)
    lengths (B) -> Cast int32 -> sequence_lens (B)
    h0 -> Split (stacked) / Unsqueeze (cell) -> per-layer initial_h (1, B, H)
    layer l: RNN(x, W_l, R_l, B_l, sequence_lens, initial_h_l) -> Y (T, 1, B, H), Y_h (1, B, H)
        Y_h is each row's state after its own last real step; Squeeze(Y) feeds layer l+1
    hn = Concat(Y_h) (L, B, H) (cell: Squeeze -> (B, H))
    log_probs = LogSoftmax(Gemm(top layer's Y_h, out_weight^T, out_bias)) (B, C)

The hand-built cell h = f(i2h([x, h])) is exactly one RNN layer with
W = i2h.weight[:, :H], R = i2h.weight[:, H:], Wb = i2h.bias, Rb = 0; its "identity"
nonlinearity is the RNN activation Affine(alpha=1, beta=0), which is exact.

Layers of the API: `export_onnx` (a RUN_DIR or Checkpoint) -> `export_model` (a model
object, writes atomically) -> `build_onnx` (graph + metadata, checked and run in
onnxruntime) -> `onnx_graph` (the bare graph: `onnx_weights` + `_rnn_graph`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rnn_export import __version__
from rnn_export.config import LENGTHS, LOG_PROBS, STATE_IN, STATE_OUT, TOKENS
from rnn_export.models import CellRNN, StackedRNN

DEFAULT_OPSET = 18
MIN_OPSET = 14  # the oldest opset tested (the graph needs >= 13: axes as Squeeze/Split inputs)
_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "identity": "Affine"}


class ExportError(ValueError):
    """A model that cannot be exported: bad source, output path or opset."""


def export_onnx(source, out_path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export a trained run to one self-contained .onnx file, written atomically.

    Args:
        source: a RUN_DIR path or a Checkpoint (rnn_export.checkpoint).
        out_path: the .onnx file to write; an existing file is replaced only on success.
        opset: ONNX opset, MIN_OPSET up to the newest that onnx and onnxruntime support.

    Returns:
        out_path as a Path.

    Raises:
        ExportError: a missing or corrupt RUN_DIR, an unwritable out_path, or an opset
            that onnx or onnxruntime cannot handle. Nothing is written then.
    """
    from rnn_export.checkpoint import Checkpoint, CheckpointError, load_checkpoint

    out_path = _check_out_path(out_path)
    _check_opset(opset)
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
    return export_model(ckpt.model, ckpt.vocab, ckpt.sha256, out_path, opset=opset)


def export_model(
    model: nn.Module, vocab, sha256: str, out_path: str | Path, *, opset: int = DEFAULT_OPSET
) -> Path:
    """Export a model object (as export_onnx does for a checkpoint).

    Args:
        model: a CellRNN or StackedRNN (rnn_export.models); it is not modified.
        vocab: its Vocabulary (.tokens, .unk_id).
        sha256: hex sha256 of the weights it came from (64 hex digits).
        out_path: the .onnx file to write atomically.
        opset: ONNX opset.

    Returns:
        out_path as a Path.
    """
    out_path = _check_out_path(out_path)
    proto = build_onnx(model, vocab, sha256, opset=opset)
    _write_atomic(proto.SerializeToString(), out_path)
    return out_path


def build_onnx(model: nn.Module, vocab, sha256: str, *, opset: int = DEFAULT_OPSET):
    """The complete ModelProto: graph plus metadata, checked by onnx and run by onnxruntime.

    Returns:
        onnx.ModelProto, ready to serialize.

    Raises:
        ExportError: a bad opset, vocabulary or sha256, or a graph onnxruntime cannot run.
    """
    import onnx
    import onnxruntime as ort

    from rnn_runtime.metadata import MetadataError, StateSpec, build_metadata

    _check_opset(opset)
    if not isinstance(model, (CellRNN, StackedRNN)):
        raise ExportError(f"expected a CellRNN or StackedRNN; got {type(model).__name__}")
    config = model.config
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ExportError(f"sha256 must be 64 lowercase hex digits; got {sha256!r}")
    if len(vocab.tokens) != config.vocab_size:
        raise ExportError(
            f"model expects vocab_size {config.vocab_size}; vocabulary has {len(vocab.tokens)}"
        )
    state = StateSpec(STATE_IN, STATE_OUT, config.state_shape("B"), "float32", "zeros")
    try:
        props = build_metadata(
            arch=config.arch,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            nonlinearity=config.nonlinearity,
            vocab=vocab.tokens,
            unk_id=vocab.unk_id,
            labels=config.labels,
            states=[state],
            checkpoint_sha256=sha256,
            opset=opset,
            libraries={
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
            },
            tool_version=__version__,
            tokens_name=TOKENS,
            lengths_name=LENGTHS,
            log_probs_name=LOG_PROBS,
        )
    except MetadataError as e:
        raise ExportError(f"cannot describe this model in the file's metadata: {e}") from e

    proto = onnx_graph(model, opset)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"rnn-export {__version__}: {config.arch} RNN classifier"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported graph fails onnx's check at opset {opset}: {e}") from e
    _check_runs(proto.SerializeToString(), opset)
    return proto


# --- the graph: replaceable as a whole (onnx_graph, onnx_weights and _rnn_graph) ---


def onnx_graph(model: nn.Module, opset: int):
    """The bare graph (no metadata) for model at opset, with symbolic B and T.

    Returns:
        onnx.ModelProto with inputs tokens, h0, lengths and outputs log_probs, hn.
    """
    return _rnn_graph(model.config, onnx_weights(model), opset)


def onnx_weights(model: nn.Module) -> dict:
    """The model's weights in the layout of the ONNX graph, as float32 numpy arrays.

    Returns:
        {"embedding": (V, H), "layers": [(W (1, H, H), R (1, H, H), B (1, 2H)), ...],
         "out_weight": (C, H), "out_bias": (C,)}; one layer per RNN operator, where
        B = [Wb, Rb] and h_t = f(x_t W^T + h_{t-1} R^T + Wb + Rb).
    """

    def arr(t):
        return t.detach().to(torch.float32).cpu().numpy().copy()

    config = model.config
    if config.arch == "cell":
        H = config.hidden_size
        w, b = arr(model.i2h.weight), arr(model.i2h.bias)  # (H, 2H): [input part | recurrent]
        # The cell's one bias plays Wb; Rb is zero, so the sum is the same bias exactly.
        layers = [(w[None, :, :H], w[None, :, H:], np.concatenate([b, np.zeros_like(b)])[None])]
        return {
            "embedding": arr(model.embed.weight),
            "layers": layers,
            "out_weight": arr(model.h2o.weight),
            "out_bias": arr(model.h2o.bias),
        }
    rnn = model.rnn
    layers = []
    for layer in range(rnn.num_layers):
        w_ih, w_hh = (arr(getattr(rnn, f"weight_{k}_l{layer}")) for k in ("ih", "hh"))
        b_ih, b_hh = (arr(getattr(rnn, f"bias_{k}_l{layer}")) for k in ("ih", "hh"))
        layers.append((w_ih[None], w_hh[None], np.concatenate([b_ih, b_hh])[None]))
    return {
        "embedding": arr(model.embedding.weight),
        "layers": layers,
        "out_weight": arr(model.fc.weight),
        "out_bias": arr(model.fc.bias),
    }


def _rnn_graph(config, weights: dict, opset: int):
    """Tokens -> Gather -> one ONNX RNN per layer -> Gemm -> LogSoftmax, B and T symbolic."""
    from onnx import TensorProto, helper, numpy_helper

    L, C = len(weights["layers"]), config.num_classes
    activation = {"activations": [_ACTIVATIONS[config.nonlinearity]]}
    if config.nonlinearity == "identity":
        activation.update(activation_alpha=[1.0], activation_beta=[0.0])
    inits = [
        numpy_helper.from_array(weights["embedding"], "embedding"),
        numpy_helper.from_array(weights["out_weight"], "out_weight"),
        numpy_helper.from_array(weights["out_bias"], "out_bias"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
    ]
    if L > 1:
        inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
    nodes = [
        helper.make_node("Transpose", [TOKENS], ["tokens_tb"], perm=[1, 0]),  # (T, B)
        helper.make_node("Gather", ["embedding", "tokens_tb"], ["x0"], axis=0),  # (T, B, H)
        helper.make_node("Cast", [LENGTHS], ["sequence_lens"], to=TensorProto.INT32),  # (B,)
    ]
    # Per-layer initial states (1, B, H).
    if config.arch == "cell":
        nodes.append(helper.make_node("Unsqueeze", [STATE_IN, "axis0"], ["h0_0"]))
        h0s = ["h0_0"]
    elif L == 1:
        h0s = [STATE_IN]
    else:
        inits.append(numpy_helper.from_array(np.ones(L, dtype=np.int64), "split"))
        h0s = [f"h0_{layer}" for layer in range(L)]
        nodes.append(helper.make_node("Split", [STATE_IN, "split"], h0s, axis=0))
    x, hns = "x0", []
    for layer, (W, R, B) in enumerate(weights["layers"]):
        inits += [
            numpy_helper.from_array(W, f"W{layer}"),
            numpy_helper.from_array(R, f"R{layer}"),
            numpy_helper.from_array(B, f"B{layer}"),
        ]
        top = layer == L - 1
        y = "" if top else f"y{layer}"  # the top layer's Y is not needed: not computed
        hn = STATE_OUT if config.arch == "stacked" and L == 1 else f"hn{layer}"
        nodes.append(
            helper.make_node(
                "RNN",
                [x, f"W{layer}", f"R{layer}", f"B{layer}", "sequence_lens", h0s[layer]],
                [y, hn],  # Y (T, 1, B, H), Y_h (1, B, H): each row's state at its last step
                hidden_size=W.shape[1],
                **activation,
            )
        )
        if not top:
            x = f"x{layer + 1}"
            nodes.append(helper.make_node("Squeeze", [y, "axis1"], [x]))  # (T, B, H)
        hns.append(hn)
    if config.arch == "cell":
        nodes.append(helper.make_node("Squeeze", [hns[0], "axis0"], [STATE_OUT]))  # (B, H)
        top_state = STATE_OUT
    else:
        if L > 1:
            nodes.append(helper.make_node("Concat", hns, [STATE_OUT], axis=0))  # (L, B, H)
        top_state = "h_top"
        nodes.append(helper.make_node("Squeeze", [hns[-1], "axis0"], [top_state]))  # (B, H)
    nodes += [
        helper.make_node(
            "Gemm", [top_state, "out_weight", "out_bias"], ["logits"], transB=1
        ),  # (B, C)
        helper.make_node("LogSoftmax", ["logits"], [LOG_PROBS], axis=-1),  # (B, C)
    ]
    state_shape = list(config.state_shape("B"))
    graph = helper.make_graph(
        nodes,
        f"rnn_export_{config.arch}",
        inputs=[
            helper.make_tensor_value_info(TOKENS, TensorProto.INT64, ["B", "T"]),
            helper.make_tensor_value_info(STATE_IN, TensorProto.FLOAT, state_shape),
            helper.make_tensor_value_info(LENGTHS, TensorProto.INT64, ["B"]),
        ],
        outputs=[
            helper.make_tensor_value_info(LOG_PROBS, TensorProto.FLOAT, ["B", C]),
            helper.make_tensor_value_info(STATE_OUT, TensorProto.FLOAT, state_shape),
        ],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    # The oldest IR version that carries this opset: older runtimes on devices can load it.
    return helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="rnn-export",
        producer_version=__version__,
    )


# --- end of the graph ---


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
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    from rnn_runtime.metadata import MetadataError, check_signature, read_metadata

    version = ".".join(ort.__version__.split(".")[:2])
    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        meta = read_metadata(session.get_modelmeta().custom_metadata_map)
        check_signature(meta, session.get_inputs(), session.get_outputs())
        state = meta.states[0]
        session.run(
            None,
            {
                meta.tokens.name: np.zeros((2, 3), dtype=np.int64),
                meta.lengths.name: np.array([3, 1], dtype=np.int64),
                state.input: np.zeros(state.concrete_shape(2), dtype=np.float32),
            },
        )
    except (
        ort_errors.Fail,
        ort_errors.InvalidArgument,
        ort_errors.InvalidGraph,
        ort_errors.InvalidProtobuf,
        ort_errors.NotImplemented,
        ort_errors.RuntimeException,
    ) as e:
        raise ExportError(f"opset {opset} cannot be run by onnxruntime {version}: {e}") from e
    except MetadataError as e:
        raise ExportError(f"the exported graph contradicts its own metadata: {e}") from e


def _check_out_path(out_path) -> Path:
    if not isinstance(out_path, (str, os.PathLike)):
        raise ExportError(f"out_path must be a file path; got {type(out_path).__name__}")
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ExportError(f"{out_path}: is a folder; expected the path of the .onnx file to write")
    folder = out_path.parent
    if not folder.is_dir():
        raise ExportError(f"{out_path}: cannot write: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ExportError(f"{out_path}: cannot write: folder {folder} is not writable")
    return out_path


def _write_atomic(data: bytes, out_path: Path) -> None:
    """Write data to out_path via a synced temporary file in the same folder and a rename."""
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise ExportError(f"{out_path}: cannot write: {e}") from e
    except BaseException:
        # An interruption (KeyboardInterrupt...) must not leave the temporary file behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(out_path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
