"""The portable main graph and the step file (`convert --portable`, `convert --step-only`)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from rnn_export.checkpoint import load_checkpoint
from rnn_export.cli import main
from rnn_export.export import ExportError, build_onnx
from rnn_export.models import model_state
from rnn_runtime import open_model

# Constructs other runtimes compute wrongly or cannot run (the tables of docs/runtimes.md).
AVOIDED = {"RNN", "If", "ScatterElements", "Split", "TopK"}
ATOL, RTOL = 1e-5, 1e-4


def _op_types(graph) -> set[str]:
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops |= _op_types(attr.g)
    return ops


@pytest.fixture(
    scope="module",
    params=[
        ("cell", "identity", None),
        ("stacked", "relu", 2),
        ("gru", "tanh", 2),
        ("lstm", "tanh", 2),
    ],
    ids=["cell", "stacked", "gru", "lstm"],
)
def run(request, tiny_run_dir):
    arch, nonlinearity, layers = request.param
    return load_checkpoint(tiny_run_dir(arch, nonlinearity, num_layers=layers))


def test_portable_graph_avoids_the_constructs_and_matches_pytorch(run, tmp_path):
    built = build_onnx(run.model, run.vocab, run.sha256, graph="portable")
    proto = onnx.load_from_string(built.data)
    ops = _op_types(proto.graph)
    assert not ops & AVOIDED and {"Scan", "Where", "Gemm"} <= ops
    path = tmp_path / "portable.onnx"
    path.write_bytes(built.data)
    rt = open_model(path)  # the open-time cross-check of its paths and its step model
    assert rt.step_session is not None
    rng = np.random.default_rng(0)
    B, T = 5, 23
    tokens = rng.integers(0, run.config.vocab_size, size=(B, T))
    lengths = np.array([23, 1, 7, 23, 2], dtype=np.int64)
    names = run.config.state_names  # h0 -> hn, and c0 -> cn for the LSTM
    states = {
        i: rng.standard_normal(run.config.state_shape(B)).astype(np.float32) * 0.5 for i, _ in names
    }
    log_probs, new = rt.run(tokens, states, lengths)
    with torch.inference_mode():
        torch_state = model_state([torch.from_numpy(states[i]) for i, _ in names])
        want_lp, want_state = run.model(
            torch.from_numpy(tokens), torch_state, torch.from_numpy(lengths)
        )
    want = want_state if isinstance(want_state, tuple) else (want_state,)
    np.testing.assert_allclose(log_probs, want_lp.numpy(), atol=ATOL, rtol=RTOL)
    for (i, _), w in zip(names, want, strict=True):
        np.testing.assert_allclose(new[i], w.numpy(), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("params", [("cell", "identity", None), ("stacked", "relu", 2)])
def test_step_file_is_the_step_graph_with_the_metadata(params, tiny_run_dir):
    """The plain arches' step file is the embedded step graph (the gated one slices: below)."""
    arch, nonlinearity, layers = params
    run = load_checkpoint(tiny_run_dir(arch, nonlinearity, num_layers=layers))
    full = build_onnx(run.model, run.vocab, run.sha256)
    step = build_onnx(run.model, run.vocab, run.sha256, graph="step")
    proto = onnx.load_from_string(step.data)
    L = run.config.num_layers
    assert [i.name for i in proto.graph.input] == ["token", *(f"h_{x}" for x in range(L))]
    assert [o.name for o in proto.graph.output] == ["log_probs", *(f"hn_{x}" for x in range(L))]
    assert _op_types(proto.graph) <= {"Gather", "Gemm", "Tanh", "Relu", "LogSoftmax"}
    # The same step graph as the one embedded in the full file, and far smaller than it.
    assert step.nodes == full.step["nodes"]
    assert step.size_bytes < full.size_bytes / 2
    keys = {p.key for p in proto.metadata_props}
    assert {"rnn_export.model", "rnn_export.vocab", "rnn_export.io", "rnn_export.step"} <= keys


def test_unknown_graph_kind_is_refused(run):
    with pytest.raises(ExportError, match="graph must be one of default, portable, step; got 'x'"):
        build_onnx(run.model, run.vocab, run.sha256, graph="x")


def test_convert_step_only_and_portable_through_the_cli(tiny_run_dir, tmp_path):
    run_dir = tiny_run_dir()
    out = tmp_path / "m.step.onnx"
    result = CliRunner().invoke(main, ["convert", str(run_dir), "--out", str(out), "--step-only"])
    assert result.exit_code == 0, result.output
    assert "this file is the step model (no main graph)" in result.output
    result = CliRunner().invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0 and "step model  this file (a step file" in result.output
    result = CliRunner().invoke(main, ["stream", str(out)], input="abcd\n")
    assert result.exit_code == 0 and len(result.output.splitlines()) == 1
    both = ["convert", str(run_dir), "--out", str(tmp_path / "x.onnx"), "--step-only", "--portable"]
    result = CliRunner().invoke(main, both)
    assert result.exit_code == 2 and "exclude each other" in result.output
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_gated_step_file_slices_instead_of_split_and_steps_as_the_embedded_model(
    arch, tiny_run_dir, tmp_path
):
    """A gated step file has no Split (onnx2tf makes it a custom op) and streams exactly
    what the default file's embedded step model streams."""
    run = load_checkpoint(tiny_run_dir(arch, "tanh", num_layers=2))
    step = build_onnx(run.model, run.vocab, run.sha256, graph="step")
    proto = onnx.load_from_string(step.data)
    ops = _op_types(proto.graph)
    assert "Split" not in ops and {"Slice", "Sigmoid", "Gemm"} <= ops
    full_path, step_path = tmp_path / "full.onnx", tmp_path / "step.onnx"
    full_path.write_bytes(build_onnx(run.model, run.vocab, run.sha256).data)
    step_path.write_bytes(step.data)
    embedded = onnx.load_from_string(open_model(full_path).metadata.step.model_bytes())
    assert "Split" in _op_types(embedded.graph)  # the default keeps onnxruntime's cheaper node
    a, b = open_model(full_path).stream(), open_model(step_path).stream()
    for char in "abcdefgh" * 3:
        pa, pb = a.step(char), b.step(char)
        np.testing.assert_allclose(pa.log_probs, pb.log_probs, atol=ATOL, rtol=RTOL)
    state_a, state_b = a.get_state(), b.get_state()
    assert set(state_a) == {i for i, _ in run.config.state_names}
    for name, value in state_a.items():
        np.testing.assert_allclose(state_b[name], value, atol=ATOL, rtol=RTOL)
