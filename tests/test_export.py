"""Export: ONNX outputs and new state equal PyTorch's, B and T dynamic, metadata, CLI, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import helper

from rnn_export import atomic
from rnn_export.atomic import WriteError
from rnn_export.checkpoint import load_checkpoint, save_checkpoint
from rnn_export.cli import main
from rnn_export.config import ModelConfig
from rnn_export.data import Vocabulary
from rnn_export.export import (
    DEFAULT_OPSET,
    MIN_OPSET,
    ExportError,
    _check_runs,
    build_onnx,
    estimate_file_bytes,
    export_model,
    export_onnx,
)
from rnn_export.models import build_model, model_state
from rnn_runtime.metadata import check_signature, read_metadata

ATOL, RTOL = 1e-5, 1e-4  # float32 against PyTorch: the project's parity tolerance
BATCHES = (1, 3, 17)
LENGTHS = (1, 2, 7, 64, 1000)
VOCAB = Vocabulary(("<unk>", *"abcdefghijklmno"))  # V = 16
LABELS = ("en", "fr", "de")
SHA = "ab" * 32
DATA = {"source": "embedded", "path": None, "seed": 0, "val_fraction": 0.2}
# (arch, nonlinearity, layers): every nonlinearity of every arch; stacked with L = 1 and
# L > 1; gru and lstm at L = 1, 2, 3.
CASES = [
    ("cell", "tanh", 1),
    ("cell", "relu", 1),
    ("cell", "identity", 1),
    ("stacked", "tanh", 1),
    ("stacked", "tanh", 2),
    ("stacked", "relu", 3),
    ("gru", "tanh", 1),
    ("gru", "tanh", 2),
    ("gru", "tanh", 3),
    ("lstm", "tanh", 1),
    ("lstm", "tanh", 2),
    ("lstm", "tanh", 3),
]
GATED = [case for case in CASES if case[0] in ("gru", "lstm")]


# The PyTorch reference loops step by step; extra threads only contend on a busy box.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ort_session(model_or_path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model_or_path, options, providers=["CPUExecutionProvider"])


def _newest_runnable_opset() -> int:
    """The newest opset that both onnx knows and onnxruntime loads."""
    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET - 1, -1):
        x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - any refusal means: not this opset, try the next
            continue
        return opset
    raise AssertionError(f"onnxruntime {ort.__version__} runs no opset >= {MIN_OPSET}")


OPSETS = sorted({MIN_OPSET, DEFAULT_OPSET, _newest_runnable_opset()})


def _model(arch: str, nonlinearity: str, layers: int, hidden: int = 24, seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(arch, len(VOCAB), LABELS, hidden, layers, nonlinearity)
    return build_model(config).eval()


def _session(model, opset: int) -> ort.InferenceSession:
    return _ort_session(build_onnx(model, VOCAB, SHA, opset=opset).data)


def _batch(rng, model, B: int, T: int, lengths=None):
    """Random tokens (B, T), random non-zero states (a list: h, and c for the LSTM) and
    mixed lengths (one row full)."""
    tokens = rng.integers(0, len(VOCAB), size=(B, T), dtype=np.int64)
    shape = model.config.state_shape(B)
    states = [rng.normal(0.0, 0.5, size=shape).astype(np.float32) for _ in model.config.state_names]
    if lengths is None:
        lengths = rng.integers(1, T + 1, size=B, dtype=np.int64)
        lengths[rng.integers(B)] = T
    return tokens, states, np.asarray(lengths, dtype=np.int64)


def _torch(model, tokens, states, lengths):
    """[log_probs, *new states] of PyTorch, as numpy."""
    with torch.no_grad():
        log_probs, new = model(
            torch.from_numpy(tokens),
            model_state(torch.from_numpy(s) for s in states),
            torch.from_numpy(lengths),
        )
    new = new if isinstance(new, tuple) else (new,)
    return [log_probs.numpy(), *(s.numpy() for s in new)]


def _names(session) -> list[tuple[str, str]]:
    """(input, output) of each state, from the session's metadata."""
    meta = read_metadata(session.get_modelmeta().custom_metadata_map)
    return [(s.input, s.output) for s in meta.states]


def _onnx(session, tokens, states, lengths):
    """[log_probs, *new states] of the main graph."""
    names = _names(session)
    feeds = {"tokens": tokens, "lengths": lengths}
    feeds |= {i: x for (i, _), x in zip(names, states, strict=True)}
    return session.run(["log_probs", *(o for _, o in names)], feeds)


def _assert_close(got, want, what: str) -> None:
    names = ("log_probs", "hn", "cn")
    assert len(got) == len(want), f"{what}: {len(got)} outputs; PyTorch {len(want)}"
    for name, g, w in zip(names, got, want, strict=False):
        assert g.shape == w.shape, f"{what} {name}: shape {g.shape}; PyTorch {w.shape}"
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=RTOL, err_msg=f"{what} {name}")


def _assert_matches(model, session, rng, shapes) -> None:
    """ONNX equals PyTorch on a random padded batch of each (B, T) in shapes."""
    for B, T in shapes:
        tokens, state, lengths = _batch(rng, model, B, T)
        want = _torch(model, tokens, state, lengths)
        _assert_close(_onnx(session, tokens, state, lengths), want, f"B={B} T={T}")


@pytest.mark.parametrize(("arch", "nonlinearity", "layers"), CASES)
def test_onnx_matches_pytorch(arch, nonlinearity, layers):
    model = _model(arch, nonlinearity, layers)
    sessions = {opset: _session(model, opset) for opset in OPSETS}
    rng = np.random.default_rng(1)
    for B in BATCHES:
        for T in LENGTHS:
            tokens, state, lengths = _batch(rng, model, B, T)
            want = _torch(model, tokens, state, lengths)
            for opset, session in sessions.items():
                got = _onnx(session, tokens, state, lengths)
                _assert_close(
                    got, want, f"{arch}/{nonlinearity}/L={layers} opset {opset} B={B} T={T}"
                )


@pytest.mark.parametrize(("arch", "layers"), [("cell", 1), ("stacked", 2), ("gru", 1), ("lstm", 2)])
def test_default_hidden_size_matches_pytorch(arch, layers):
    model = _model(arch, "tanh", layers, hidden=128)
    session = _session(model, DEFAULT_OPSET)
    _assert_matches(model, session, np.random.default_rng(2), ((3, 64), (17, 1000)))


@pytest.mark.parametrize(
    ("arch", "nonlinearity", "layers"),
    [CASES[0], CASES[4], ("gru", "tanh", 2), ("lstm", "tanh", 2)],
)
def test_padded_row_equals_the_row_alone(arch, nonlinearity, layers):
    """Y_h (and Y_c) are each row's state at its own last step: padding never counts."""
    model = _model(arch, nonlinearity, layers)
    session = _session(model, DEFAULT_OPSET)
    rng = np.random.default_rng(3)
    tokens, states, lengths = _batch(rng, model, 4, 9, lengths=[9, 1, 5, 3])
    tokens[1:, 5:] = rng.integers(1, len(VOCAB), size=(3, 4))  # non-zero garbage as padding
    log_probs, *new = _onnx(session, tokens, states, lengths)
    axis = 0 if arch == "cell" else 1
    for row, n in enumerate(lengths):
        alone_states = [np.take(s, [row], axis=axis) for s in states]
        alone = _onnx(session, tokens[row : row + 1, :n], alone_states, lengths[row : row + 1])
        np.testing.assert_allclose(log_probs[row : row + 1], alone[0], atol=ATOL, rtol=RTOL)
        for got, want in zip(new, alone[1:], strict=True):
            np.testing.assert_allclose(np.take(got, [row], axis=axis), want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    ("arch", "nonlinearity", "layers"),
    [CASES[2], CASES[5], ("gru", "tanh", 3), ("lstm", "tanh", 3)],
)
def test_one_step_loop_equals_one_call(arch, nonlinearity, layers):
    model = _model(arch, nonlinearity, layers)
    session = _session(model, DEFAULT_OPSET)
    rng = np.random.default_rng(4)
    B, T = 3, 40
    tokens, states, lengths = _batch(rng, model, B, T, lengths=[T] * B)
    whole = _onnx(session, tokens, states, lengths)
    new = states
    ones = np.ones(B, dtype=np.int64)
    for t in range(T):
        log_probs, *new = _onnx(session, tokens[:, t : t + 1], new, ones)
    _assert_close([log_probs, *new], whole, "loop vs one call")
    _assert_close([log_probs, *new], _torch(model, tokens, states, lengths), "loop vs PyTorch")


def _all_nodes(graph):
    """Every node of graph and of the subgraphs in its nodes' attributes."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)


@pytest.mark.parametrize(
    ("arch", "layers"), [("cell", 1), ("stacked", 1), ("stacked", 3), ("gru", 2), ("lstm", 3)]
)
def test_graph_does_not_depend_on_T(arch, layers, tmp_path):
    """B and T are symbolic; the same file runs T=1 and T=5000 and its size has no T in it."""
    model = _model(arch, "tanh", layers)
    path = export_model(model, VOCAB, SHA, tmp_path / "m.onnx").path
    proto = onnx.load(path)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["B", "T"]
    ops = [n.op_type for n in _all_nodes(proto.graph)]  # subgraphs (If branches, Scan body) too
    per_layer = 30 if arch in ("gru", "lstm") else 20  # a gated step has more nodes
    assert len(ops) <= 40 + per_layer * layers  # a fixed set of nodes, whatever T
    if arch in ("gru", "lstm"):
        # B == 1: one GRU or LSTM operator per layer; B > 1: one Scan over time.
        assert ops.count(arch.upper()) == layers and ops.count("Scan") == 1
        assert "Loop" not in ops
        gates = [n for n in _all_nodes(proto.graph) if n.op_type == "GRU"]
        for node in gates:  # PyTorch's GRU: the reset gate multiplies h R_h^T + Rb_h
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["linear_before_reset"] == 1
    else:
        assert ops.count("RNN") == layers  # the B == 1 path: one RNN operator per layer
        assert ops.count("Scan") == 1 and "Loop" not in ops  # B > 1: one Scan over time
    # The Scan scans token ids; its step gathers layer 0's input term for the running rows
    # only (no (T, B, width) term is gathered up front and sliced per step).
    (scan,) = [n for n in _all_nodes(proto.graph) if n.op_type == "Scan"]
    body = next(a.g for a in scan.attribute if a.name == "body")
    scanned = [i.type.tensor_type.elem_type for i in body.input[-2:]]
    assert scanned == [onnx.TensorProto.INT64, onnx.TensorProto.INT64]  # token ids, n_t
    tables = ["table_g", "table_c"] if arch in ("gru", "lstm") else ["table"]  # gated: split
    assert [n.input[0] for n in body.node if n.op_type == "Gather"] == tables
    # Two exports of the same weights are byte-identical: nothing of a traced example leaks in.
    again = export_model(model, VOCAB, SHA, tmp_path / "again.onnx").path
    assert path.read_bytes() == again.read_bytes()
    session = _ort_session(str(path))
    _assert_matches(model, session, np.random.default_rng(5), ((1, 1), (2, 5000)))


@pytest.mark.parametrize(
    ("arch", "nonlinearity", "layers"),
    [CASES[1], CASES[4], ("gru", "tanh", 2), ("lstm", "tanh", 2)],
)
def test_metadata_round_trip(arch, nonlinearity, layers, tmp_path):
    model = _model(arch, nonlinearity, layers)
    path = export_model(model, VOCAB, SHA, tmp_path / "m.onnx", opset=MIN_OPSET).path
    proto = onnx.load(path)
    assert proto.opset_import[0].version == MIN_OPSET
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    meta = read_metadata({p.key: p.value for p in proto.metadata_props})
    config = model.config
    assert (meta.arch, meta.hidden_size, meta.num_layers, meta.nonlinearity) == (
        arch,
        config.hidden_size,
        layers,
        nonlinearity,
    )
    assert (meta.vocab, meta.unk_id, meta.labels) == (VOCAB.tokens, 0, LABELS)
    assert meta.checkpoint_sha256 == SHA
    assert meta.opset == MIN_OPSET
    assert meta.provenance["libraries"] == {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }
    names = [("h0", "hn"), ("c0", "cn")] if arch == "lstm" else [("h0", "hn")]
    assert [(s.input, s.output) for s in meta.states] == names == list(config.state_names)
    for state in meta.states:
        assert (state.dtype, state.initial) == ("float32", "zeros")
        assert state.shape == config.state_shape("B")
    kinds = [n[0][0] for n in names]
    assert meta.step.states == tuple(
        (f"{k}_{layer}", f"{k}n_{layer}") for k in kinds for layer in range(layers)
    )
    session = _ort_session(str(path))
    check_signature(meta, session.get_inputs(), session.get_outputs())


# --- RUN_DIRs and the CLI ---


@pytest.fixture
def run_dir(tmp_path) -> Path:
    model = _model("stacked", "tanh", 2, hidden=16)
    return save_checkpoint(tmp_path / "run", model, VOCAB, DATA, {}, {"val_accuracy": 0.5})


def test_export_onnx_from_run_dir_and_checkpoint(run_dir, tmp_path):
    ckpt = load_checkpoint(run_dir)
    from_dir = export_onnx(run_dir, tmp_path / "a.onnx")
    from_ckpt = export_onnx(ckpt, tmp_path / "b.onnx")
    assert from_dir.read_bytes() == from_ckpt.read_bytes()
    meta = read_metadata({p.key: p.value for p in onnx.load(from_dir).metadata_props})
    assert meta.checkpoint_sha256 == ckpt.sha256
    assert meta.opset == DEFAULT_OPSET


def test_convert_and_inspect(run_dir, tmp_path):
    out = tmp_path / "model.onnx"
    runner = CliRunner()
    result = runner.invoke(main, ["convert", str(run_dir), "--out", str(out), "--opset", "14"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    assert f"{out.stat().st_size:,} bytes" in result.output
    nodes = sum(1 for _ in _all_nodes(onnx.load(out).graph))
    assert f"nodes    {nodes} (subgraphs included)" in result.output
    assert "opset    14" in result.output
    assert "h0 float32 (2, B, 16)" in result.output
    assert "log_probs float32 (B, 3)" in result.output
    meta = read_metadata({p.key: p.value for p in onnx.load(out).metadata_props})
    step_bytes = len(meta.step.model_bytes())
    assert (
        f"step     embedded step model for the runtime: 8 nodes, {step_bytes:,} bytes "
        "(inputs token, h_0, h_1)" in result.output
    )

    text = runner.invoke(main, ["inspect", str(out)])
    assert text.exit_code == 0, text.output
    for part in ("stacked, L=2, H=16", "h0 -> hn  (2, B, 16) float32", "0 en, 1 fr, 2 de"):
        assert part in text.output
    assert load_checkpoint(run_dir).sha256 in text.output
    assert f"step model  {step_bytes:,} bytes, sha256 {meta.step.sha256[:16]}..." in text.output

    as_json = runner.invoke(main, ["inspect", str(out), "--json"])
    assert as_json.exit_code == 0, as_json.output
    info = json.loads(as_json.output)
    assert info["metadata"] == meta.to_dict()
    assert info["metadata"]["step"]["bytes"] == step_bytes
    assert info["size_bytes"] == out.stat().st_size
    assert {"name": "tokens", "shape": ["B", "T"], "dtype": "int64"} in info["inputs"]
    assert {"name": "hn", "shape": [2, "B", 16], "dtype": "float32"} in info["outputs"]


def test_convert_help_names_the_default_opset():
    result = CliRunner().invoke(main, ["convert", "--help"])
    assert f"[default: {DEFAULT_OPSET}]" in result.output


def _foreign_onnx(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _wrong_schema(path: Path) -> Path:
    proto = onnx.load_from_string(build_onnx(_model("cell", "tanh", 1), VOCAB, SHA).data)
    for prop in proto.metadata_props:
        if prop.key == "rnn_export.schema":
            prop.value = "3"
    onnx.save(proto, path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_foreign_onnx, "no rnn-export metadata"),
        (_wrong_schema, "unknown metadata schema version 3"),
        (lambda p: p.write_bytes(b"not a model") and p, "cannot load it as a model"),
        (lambda p: p, "no such model file"),
    ],
    ids=["foreign-onnx", "wrong-schema", "not-onnx", "missing"],
)
def test_inspect_rejects(make, message, tmp_path):
    path = make(tmp_path / "x.onnx")
    for args in (["inspect", str(path)], ["inspect", str(path), "--json"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert "Traceback" not in result.output


def _corrupt_config(run_dir: Path) -> None:
    (run_dir / "config.json").write_text("{ not json")


def _truncate_weights(run_dir: Path) -> None:
    weights = run_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])


@pytest.mark.parametrize(
    ("arrange", "out_name", "opset", "message"),
    [
        (lambda r: r.rename(r.with_name("gone")), "m.onnx", None, "expected a run directory"),
        (_corrupt_config, "m.onnx", None, "config.json: not valid JSON"),
        (_truncate_weights, "m.onnx", None, "model.safetensors: not a safetensors file"),
        (None, "no-such-folder/m.onnx", None, "folder .* does not exist"),
        (None, "run/config.json/m.onnx", None, "config.json is a regular file, not a folder"),
        (None, "m.onnx", "13", "opset 13 is too old"),
        (None, "m.onnx", "99", "opset 99 is newer than the installed onnx"),
    ],
    ids=[
        "missing-run-dir",
        "corrupt-config",
        "corrupt-weights",
        "missing-out-folder",
        "out-folder-is-a-file",
        "opset-too-old",
        "opset-too-new",
    ],
)
def test_convert_errors_leave_no_file(run_dir, tmp_path, arrange, out_name, opset, message):
    if arrange is not None:
        arrange(run_dir)
    out = tmp_path / out_name
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"an earlier model")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["convert", str(run_dir), "--out", str(out)] + (["--opset", opset] if opset else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert "Traceback" not in result.output
    assert re.search(message, result.output), result.output
    assert existing.read_bytes() == b"an earlier model"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "abc"}, "sha256 must be 64 lowercase hex digits"),
        ({"vocab": Vocabulary(("<unk>", "a"))}, "model expects vocab_size 16; vocabulary has 2"),
        ({"model": torch.nn.Linear(2, 2)}, "expected a CellRNN, StackedRNN or GatedRNN; got Lin"),
        ({"opset": "18"}, "opset must be an integer"),
    ],
    ids=["sha256", "vocab", "model", "opset-type"],
)
def test_export_model_rejects(change, message, tmp_path):
    args = {"model": _model("cell", "tanh", 1), "vocab": VOCAB, "sha256": SHA, "opset": 18}
    args.update(change)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=message):
        export_model(args["model"], args["vocab"], args["sha256"], out, opset=args["opset"])
    assert not out.exists()


def test_out_path_that_is_a_folder(run_dir, tmp_path):
    with pytest.raises(WriteError, match="is a folder; expected the path of the .onnx file"):
        export_onnx(run_dir, tmp_path)


def test_opset_onnxruntime_cannot_run():
    """A real onnxruntime refusal (an opset newer than it knows) becomes an ExportError."""
    proto = onnx.load_from_string(build_onnx(_model("cell", "tanh", 1), VOCAB, SHA).data)
    proto.opset_import[0].version = 99
    version = ".".join(ort.__version__.split(".")[:2])
    with pytest.raises(ExportError, match=f"opset 99 cannot be run by onnxruntime {version}: "):
        _check_runs(proto.SerializeToString(), 99)


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch, failure):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier model")

    def fail(src, dst):
        raise failure

    model = _model("cell", "tanh", 1)
    monkeypatch.setattr(os, "replace", fail)
    expected = WriteError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected, match="m.onnx: cannot write: No space left on device|^$"):
        export_model(model, VOCAB, SHA, out)
    assert out.read_bytes() == b"an earlier model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_convert_and_inspect_as_processes(run_dir, tmp_path):
    """The real entry point: convert, then inspect in a process where torch and onnx fail."""
    out = tmp_path / "model.onnx"
    convert = subprocess.run(
        [sys.executable, "-m", "rnn_export.cli", "convert", str(run_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert convert.returncode == 0, convert.stderr
    assert convert.stdout.startswith(f"wrote {out}")
    no_torch = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; "
        "from rnn_export.cli import main; main()"
    )
    inspect = subprocess.run(
        [sys.executable, "-c", no_torch, "inspect", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["metadata"]["model"]["arch"] == "stacked"


# --- the embedded step model -------------------------------------------------------------


def _step_session(proto) -> tuple[ort.InferenceSession, object]:
    meta = read_metadata({p.key: p.value for p in proto.metadata_props})
    return _ort_session(meta.step.model_bytes()), meta.step


def _layers(states: list[np.ndarray]) -> list[np.ndarray]:
    """The step model's per-layer states: every layer of h, then of c."""
    return [s[i] for s in states for i in range(s.shape[0])] if states[0].ndim == 3 else states


def _unlayer(layers: list[np.ndarray], like: list[np.ndarray]) -> list[np.ndarray]:
    """The model-layout states of the step model's per-layer outputs."""
    if like[0].ndim == 2:
        return layers
    L = like[0].shape[0]
    return [np.stack(layers[k * L : (k + 1) * L]) for k in range(len(like))]


@pytest.mark.parametrize(("arch", "nonlinearity", "layers"), CASES)
def test_step_model_matches_pytorch_and_the_main_graph(arch, nonlinearity, layers):
    """The embedded step model, stepped token by token from a random state, equals PyTorch
    and the main graph's T = 1 path at every opset and batch size."""
    model = _model(arch, nonlinearity, layers)
    rng = np.random.default_rng(5)
    for opset in OPSETS:
        built = build_onnx(model, VOCAB, SHA, opset=opset)
        proto = onnx.load_from_string(built.data)
        main_graph = _ort_session(built.data)
        step_session, step = _step_session(proto)
        names = [step.log_probs, *(o for _, o in step.states)]
        for B in BATCHES:
            tokens, states, _ = _batch(rng, model, B, 6, lengths=[6] * B)
            new, new_main = states, states
            ones = np.ones(B, dtype=np.int64)
            for t in range(tokens.shape[1]):
                feed = {step.token: np.ascontiguousarray(tokens[:, t])}
                feed |= {i: x for (i, _), x in zip(step.states, _layers(new), strict=True)}
                log_probs, *out = step_session.run(names, feed)
                new = _unlayer(out, states)
                main = _onnx(main_graph, np.ascontiguousarray(tokens[:, t : t + 1]), new_main, ones)
                new_main = main[1:]
                where = f"{arch}/{nonlinearity}/L={layers} opset {opset} B={B} step {t}"
                _assert_close([log_probs, *new], main, f"{where} vs main graph")
            want = _torch(model, tokens, states, np.full(B, 6, dtype=np.int64))
            _assert_close([log_probs, *new], want, f"{where} vs PyTorch")


@pytest.mark.parametrize(("arch", "nonlinearity", "layers"), CASES[:6])
def test_step_model_has_the_fewest_nodes(arch, nonlinearity, layers):
    """Gather, per layer [Gemm (input term, layers > 0)] Gemm + f, then Gemm + LogSoftmax:
    at batch 1 every node costs about as much as its math (docs/benchmarks.md: a cell
    step 6.6 us through the step model, 9.5 us through the main graph)."""
    proto = onnx.load_from_string(build_onnx(_model(arch, nonlinearity, layers), VOCAB, SHA).data)
    meta = read_metadata({p.key: p.value for p in proto.metadata_props})
    step = onnx.load_from_string(meta.step.model_bytes())
    ops = [node.op_type for node in step.graph.node]
    act = {"tanh": ["Tanh"], "relu": ["Relu"], "identity": []}[nonlinearity]
    want = ["Gather"]
    for layer in range(layers):
        want += (["Gemm"] if layer else []) + ["Gemm"] + act
    assert ops == [*want, "Gemm", "LogSoftmax"]
    # Only the weights it uses, and the sizes the metadata promises.
    used = {name for node in step.graph.node for name in node.input}
    assert {init.name for init in step.graph.initializer} <= used
    assert meta.step.to_dict()["bytes"] == len(meta.step.model_bytes())
    assert [i.name for i in step.graph.input] == [
        meta.step.token,
        *(i for i, _ in meta.step.states),
    ]


# One step of a gated layer: the ONNX operators' setup costs more than these few nodes.
GATED_STEP_OPS = {  # after the layer's input term: its gate block and candidate block
    "gru": ["Gemm", "Sigmoid", "Split", "Gemm", "Mul", "Add", "Tanh", "Sub", "Mul", "Add"],
    "lstm": ["Gemm", "Sigmoid", "Gemm", "Tanh", "Split", "Mul", "Mul", "Add", "Tanh", "Mul"],
}


@pytest.mark.parametrize(("arch", "nonlinearity", "layers"), GATED)
def test_gated_step_model_is_gemm_and_elementwise(arch, nonlinearity, layers):
    """Per layer its input term in two blocks (two Gathers at layer 0, two Gemms above)
    and the cell's nodes, then the head; no Split copies an input term apart, and each
    activation of an LSTM's gate products follows its Gemm (fused by onnxruntime); its
    inputs are token, every layer's h, then (LSTM) every layer's c."""
    proto = onnx.load_from_string(build_onnx(_model(arch, nonlinearity, layers), VOCAB, SHA).data)
    meta = read_metadata({p.key: p.value for p in proto.metadata_props})
    step = onnx.load_from_string(meta.step.model_bytes())
    want = []
    for layer in range(layers):
        want += (["Gemm", "Gemm"] if layer else ["Gather", "Gather"]) + GATED_STEP_OPS[arch]
    assert [node.op_type for node in step.graph.node] == [*want, "Gemm", "LogSoftmax"]
    gathers = [n.input[0] for n in step.graph.node if n.op_type == "Gather"]
    assert gathers == ["table_g", "table_c"]
    produced_by = {o: n.op_type for n in step.graph.node for o in n.output}
    splits = [n for n in step.graph.node if n.op_type == "Split"]
    assert [produced_by[n.input[0]] for n in splits] == ["Sigmoid"] * layers
    used = {name for node in step.graph.node for name in node.input}
    assert {init.name for init in step.graph.initializer} <= used
    kinds = ("h", "c") if arch == "lstm" else ("h",)
    assert [i.name for i in step.graph.input] == ["token"] + [
        f"{k}_{layer}" for k in kinds for layer in range(layers)
    ]
    assert [o.name for o in step.graph.output] == ["log_probs"] + [
        f"{k}n_{layer}" for k in kinds for layer in range(layers)
    ]


@pytest.mark.parametrize("opset", [MIN_OPSET, DEFAULT_OPSET])
def test_two_exports_of_one_checkpoint_are_byte_identical(run_dir, tmp_path, opset):
    """A re-export reproduces the file byte for byte: nothing of the moment (time, paths,
    random names) goes into it, so a file can be checked against its RUN_DIR by rebuilding."""
    paths = [tmp_path / f"{name}.onnx" for name in ("first", "second")]
    for path in paths:
        result = CliRunner().invoke(
            main, ["convert", str(run_dir), "--out", str(path), "--opset", str(opset)]
        )
        assert result.exit_code == 0, result.output
    first, second = (p.read_bytes() for p in paths)
    assert len(first) > 10_000 and first == second


def test_convert_with_swapped_arguments_says_so(run_dir, tmp_path):
    """`convert model.onnx --out x.onnx` names what model.onnx is."""
    model = export_onnx(run_dir, tmp_path / "model.onnx")
    result = CliRunner().invoke(main, ["convert", str(model), "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2
    assert result.output.startswith(
        f"error: {model}: expected a run directory (a folder made by `rnn-export train`); it is "
        "a regular file that looks like an exported model: pass the RUN_DIR it was converted from"
    )
    assert "not found" not in result.output and "swapped?" in result.output


def test_convert_on_a_full_disk_names_the_path(run_dir, tmp_path, monkeypatch):
    """The error names the file it could not write (an OSError raised by os.write
    carries no filename of its own: "error: None: No space left on device")."""
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier model")

    def full(fd, data):
        raise OSError(28, "No space left on device")

    real_replace = atomic.replace_file

    def replace_on_a_full_disk(path, data):
        monkeypatch.setattr(os, "write", full)
        try:
            real_replace(path, data)
        finally:
            monkeypatch.undo()

    monkeypatch.setattr(atomic, "replace_file", replace_on_a_full_disk)
    result = CliRunner().invoke(main, ["convert", str(run_dir), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output == f"error: {out}: cannot write: No space left on device\n"
    assert out.read_bytes() == b"an earlier model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "run"]


@pytest.mark.parametrize(
    ("arch", "layers", "hidden"),
    [("stacked", 3, 256), ("cell", 1, 384), ("stacked", 1, 40), ("gru", 2, 96), ("lstm", 3, 64)],
)
def test_estimated_file_size_is_the_real_one(arch, layers, hidden):
    model = _model(arch, "tanh", layers, hidden=hidden)
    built = build_onnx(model, VOCAB, SHA)
    estimate = estimate_file_bytes(model.config)
    assert estimate <= built.size_bytes <= estimate * 1.01 + 16_384


# GiB by hand: float32 weights in the main graph, plus their base64 copy (4/3) in the step
# model: L=16, H=4096: 31 H^2 (R of 16 layers, W of 15) -> 1.94 * (1 + 4/3) = 4.52;
# V=65,536, H=4096, L=1: the table V H + R H^2 -> 1.06 * (1 + 4/3) = 2.48.
@pytest.mark.parametrize(
    ("vocab", "hidden", "layers", "gib"), [(16, 4096, 16, "4.52"), (65_536, 4096, 1, "2.48")]
)
def test_an_export_over_2_gib_is_refused_up_front(tmp_path, vocab, hidden, layers, gib):
    """Refused from the config, before a weight is copied (a model on the meta
    device has no data: any attempt to read it would fail)."""
    config = ModelConfig("stacked", vocab, LABELS, hidden, layers)
    with torch.device("meta"):
        model = build_model(config)
    chars = [chr(c) for c in range(0x100, 0x100 + vocab + 2048) if not 0xD800 <= c < 0xE000]
    match = rf"would make an ONNX file of about {gib} GiB; ONNX files are limited to 2 GiB"
    with pytest.raises(ExportError, match=match):
        export_model(model, Vocabulary(("<unk>", *chars[: vocab - 1])), SHA, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def _metadata(proto):
    return read_metadata({p.key: p.value for p in proto.metadata_props})


def test_reversed_labels_export_a_file_of_another_identity(run_dir, tmp_path):
    """Same weights, labels reversed: the files differ in checkpoint_sha256."""
    first = export_onnx(run_dir, tmp_path / "a.onnx")
    config = run_dir / "config.json"
    record = json.loads(config.read_text())
    record["labels"] = record["labels"][::-1]
    config.write_text(json.dumps(record))
    second = export_onnx(run_dir, tmp_path / "b.onnx")
    a, b = (
        read_metadata({p.key: p.value for p in onnx.load(f).metadata_props})
        for f in (first, second)
    )
    assert a.labels == LABELS and b.labels == LABELS[::-1]
    assert a.checkpoint_sha256 != b.checkpoint_sha256
    assert b.checkpoint_sha256 == load_checkpoint(run_dir).sha256
