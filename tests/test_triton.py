"""rnn_export.triton and `rnn-export triton`: the batch-first variant computes what the main
graph computes (its controls doing what config.pbtxt promises), verify passes on it, and
config.pbtxt parses with tritonclient's model-config protobuf and matches the graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import rnn_runtime
from rnn_export.cli import main
from rnn_export.export import export_onnx
from rnn_export.triton import (
    KEY,
    TritonError,
    build_variant,
    model_config,
    served_states,
    write_repository,
)
from rnn_runtime.metadata import StateSpec, read_metadata
from rnn_runtime.model import read_model_file

ATOL = 1e-6  # the variant runs the same kernels; only batch layout could move the last bits


@pytest.fixture(scope="module", params=["cell", "stacked"])
def exported(request, tiny_run_dir, tmp_path_factory):
    run_dir = tiny_run_dir(request.param, num_layers=2 if request.param == "stacked" else None)
    path = export_onnx(run_dir, tmp_path_factory.mktemp("triton") / f"{request.param}.onnx")
    return run_dir, path


@pytest.fixture(scope="module")
def repo(exported, tmp_path_factory):
    _, path = exported
    out = tmp_path_factory.mktemp("repo")
    result = CliRunner().invoke(
        main, ["triton", str(path), "--out", str(out), "--max-batch-size", "8"]
    )
    assert result.exit_code == 0, result.output
    return out / path.stem


def _feeds(B, T, meta, rng, served, start=None, ready=None):
    tokens = rng.integers(0, meta.vocab_size, size=(B, T))
    lengths = rng.integers(1, T + 1, size=B)
    state = rng.uniform(-1, 1, size=meta.states[0].concrete_shape(B)).astype(np.float32)
    feeds = {
        "tokens": tokens,
        "lengths": lengths,
        served.input: np.ascontiguousarray(np.transpose(state, served.permutation)),
        "START": np.zeros((B, 1), np.int32) if start is None else start,
        "READY": np.ones((B, 1), np.int32) if ready is None else ready,
    }
    return feeds, state


@pytest.mark.parametrize(("B", "T"), [(1, 1), (1, 7), (5, 1), (5, 9)])
def test_variant_computes_the_main_graph_batch_first(repo, exported, B, T):
    _, path = exported
    model = rnn_runtime.open_model(path)
    meta = model.metadata
    (served,) = served_states(meta)
    session = ort.InferenceSession(str(repo / "1" / "model.onnx"))
    feeds, state = _feeds(B, T, meta, np.random.default_rng(B * 10 + T), served)
    log_probs, new = model.run(feeds["tokens"], {served.input: state}, feeds["lengths"])
    got_lp, got_state = session.run(None, feeds)
    np.testing.assert_allclose(got_lp, log_probs, atol=ATOL, rtol=0)
    want = np.transpose(new[served.input], served.permutation)
    assert got_state.shape == (B, *served.shape[1:])
    np.testing.assert_allclose(got_state, want, atol=ATOL, rtol=0)


def test_start_zeroes_the_state_and_ready_0_keeps_it(repo, exported):
    _, path = exported
    model = rnn_runtime.open_model(path)
    meta = model.metadata
    (served,) = served_states(meta)
    session = ort.InferenceSession(str(repo / "1" / "model.onnx"))
    start, ready = np.array([[1], [0], [0]], np.int32), np.array([[1], [1], [0]], np.int32)
    feeds, state = _feeds(3, 6, meta, np.random.default_rng(3), served, start, ready)
    got_lp, got_state = session.run(None, feeds)
    zeros = model.initial_state(1)
    lp0, new0 = model.run(feeds["tokens"][:1], zeros, feeds["lengths"][:1])  # row 0: from zeros
    np.testing.assert_allclose(got_lp[0], lp0[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(
        got_state[0], np.transpose(new0[served.input], served.permutation)[0], atol=ATOL, rtol=0
    )
    lp1, new1 = model.run(
        feeds["tokens"][1:2],
        {served.input: np.take(state, [1], axis=meta.states[0].batch_axis)},
        feeds["lengths"][1:2],
    )
    np.testing.assert_allclose(got_lp[1], lp1[0], atol=ATOL, rtol=0)  # row 1 carries its state
    np.testing.assert_array_equal(got_state[2], feeds[served.input][2])  # row 2: not ready


def test_sequences_streamed_as_triton_feeds_them_give_predict_s_numbers(repo, exported):
    """Implicit state as Triton keeps it: zeros at START, each request's state output fed
    back as the next request's input; three sequences of different chunkings in one batch."""
    _, path = exported
    model = rnn_runtime.open_model(path)
    (served,) = served_states(model.metadata)
    session = ort.InferenceSession(str(repo / "1" / "model.onnx"))
    texts = ["AAbCabcDxx", "DDDDcbaabc", "xyzABCDabc"]
    ids = [model.encode(t) for t in texts]
    state = np.full((3, *served.shape[1:]), 7.0, np.float32)  # garbage: START must clear it
    for step, t0 in enumerate(range(0, 10, 3)):
        tokens = np.stack([x[t0 : t0 + 3] for x in ids])
        feeds = {
            "tokens": tokens,
            "lengths": np.full(3, tokens.shape[1], np.int64),
            served.input: state,
            "START": np.full((3, 1), int(step == 0), np.int32),
            "READY": np.ones((3, 1), np.int32),
        }
        log_probs, state = session.run(None, feeds)
    for row, prediction in zip(log_probs, model.predict(texts), strict=True):
        np.testing.assert_allclose(row, prediction.log_probs, atol=1e-5, rtol=0)


def test_verify_passes_on_the_variant(repo, exported):
    from rnn_export.parity import verify_parity

    run_dir, _ = exported
    report = verify_parity(repo / "1" / "model.onnx", run_dir, stream_steps=300)
    assert report.passed
    assert len(report.cases) > 20
    assert not [c for c in report.cases if c.family == "step model"]  # the variant has none


def test_contract_in_metadata_and_runtime_refuses_the_variant(repo, exported):
    _, path = exported
    import onnx

    meta = rnn_runtime.open_model(path).metadata
    variant = onnx.load(str(repo / "1" / "model.onnx"))
    props = {p.key: p.value for p in variant.metadata_props}
    contract = json.loads(props[KEY])
    assert "rnn_export.step" not in props
    (served,) = served_states(meta)
    assert contract["states"] == [served.to_dict()]
    assert served.shape[0] == "B" and contract["layout"] == "batch-first"
    names = [i.name for i in variant.graph.input]
    assert sorted(names) == sorted(i["name"] for i in contract["inputs"])
    assert [c["name"] for c in contract["controls"]] == ["START", "READY"]
    with pytest.raises(rnn_runtime.MetadataError, match=r"graph inputs are \['READY', 'START'"):
        rnn_runtime.open_model(repo / "1" / "model.onnx")
    with pytest.raises(TritonError, match="is already a Triton variant"):
        build_variant(read_model_file(repo / "1" / "model.onnx"))


def test_config_parses_with_tritonclient_and_matches_the_graph(repo, exported):
    mc = pytest.importorskip(
        "tritonclient.grpc.model_config_pb2",
        reason="tritonclient[grpc] is not installed (the triton extra)",
    )
    from google.protobuf import text_format

    _, path = exported
    meta = rnn_runtime.open_model(path).metadata
    config = text_format.Parse((repo / "config.pbtxt").read_text(), mc.ModelConfig())
    session = ort.InferenceSession(str(repo / "1" / "model.onnx"))
    graph_in = {a.name: a for a in session.get_inputs()}
    graph_out = {a.name: a for a in session.get_outputs()}
    assert config.name == path.stem and config.backend == "onnxruntime"
    assert config.max_batch_size == 8
    # Every tensor Triton feeds or reads is a graph tensor with the batch dim first.
    assert [i.name for i in config.input] == ["tokens", "lengths"]
    assert list(config.input[0].dims) == [-1] and graph_in["tokens"].shape == ["B", "T"]
    assert list(config.input[1].dims) == [1] and list(config.input[1].reshape.shape) == []
    assert graph_in["lengths"].shape == ["B"]
    assert [o.name for o in config.output] == ["log_probs"]
    assert list(config.output[0].dims) == [meta.num_classes]
    batching = config.sequence_batching
    kinds = {c.name: c.control[0] for c in batching.control_input}
    assert kinds["START"].kind == mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START
    assert kinds["READY"].kind == mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY
    for name, control in kinds.items():
        assert list(control.int32_false_true) == [0, 1]
        assert graph_in[name].type == "tensor(int32)" and graph_in[name].shape == ["B", 1]
    assert len(batching.state) == len(meta.states)
    for state, spec in zip(batching.state, meta.states, strict=True):
        assert (state.input_name, state.output_name) == (spec.input, spec.output)
        assert state.data_type == mc.TYPE_FP32
        batch_first = graph_in[spec.input].shape
        assert batch_first[0] == "B" and list(state.dims) == batch_first[1:]
        assert graph_out[spec.output].shape == batch_first
        (initial,) = state.initial_state
        assert initial.zero_data and list(initial.dims) == list(state.dims)
    assert batching.oldest.max_candidate_sequences == 8
    # Every graph input is fed by Triton: a request input, a control or a state.
    fed = {i.name for i in config.input} | set(kinds) | {s.input_name for s in batching.state}
    assert fed == set(graph_in)


def test_states_are_generic_over_names_and_layouts():
    """Two states (an LSTM's h and c), (L, B, H) and (B, H): each gets its own pair."""

    class Meta:
        states = (
            StateSpec("h0", "hn", (2, "B", 8), "float32"),
            StateSpec("c0", "cn", ("B", 8), "float32"),
        )

    h, c = served_states(Meta)
    assert (h.input, h.output, h.shape, h.permutation) == ("h0", "hn", ("B", 2, 8), (1, 0, 2))
    assert (c.input, c.output, c.shape, c.permutation) == ("c0", "cn", ("B", 8), (0, 1))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "a/b"], r"a model name is a folder name of .*; got 'a/b'"),
        (["--name", 'a"b'], r"a model name is a folder name of .*; got 'a\"b'"),
        (["--name", "a\nb"], r"a model name is a folder name of .*; got 'a\\nb'"),
        (["--name", ".."], r"a model name is a folder name of .*; got '\.\.'"),
        (["--max-batch-size", "0"], r"Invalid value for '--max-batch-size'"),
        (["--max-batch-size", str(2**31)], r"max_batch_size must be an integer in 1 \.\. 65,536"),
        (
            ["--instances", str(2**31)],
            r"instances must be an integer in 1 \.\. 256; got 2147483648",
        ),
    ],
)
def test_cli_bad_options(exported, tmp_path, args, message):
    _, path = exported
    result = CliRunner().invoke(main, ["triton", str(path), "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert __import__("re").search(message, result.output), result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_not_a_model_file(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    with pytest.raises(rnn_runtime.ModelFileError):
        write_repository(tmp_path / "x.onnx", tmp_path / "repo")
    assert not (tmp_path / "repo" / "x").exists()


def test_model_config_names_every_state(exported):
    _, path = exported
    meta = rnn_runtime.open_model(path).metadata
    _, contract = build_variant(read_model_file(path))
    text = model_config("m", contract, meta, 4, 2)
    assert text.count("input_name:") == len(meta.states)
    assert "count: 2" in text and "max_batch_size: 4" in text


def _two_state_file(path) -> bytes:
    """The stacked file with a second state c0 (B, H) -> cn = -c0, listed in its metadata
    (as an LSTM's cell state would be): the variant must wire every state it lists."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    H = rnn_runtime.open_model(path).metadata.hidden_size
    model.graph.input.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, ["B", H]))
    model.graph.output.append(helper.make_tensor_value_info("cn", TensorProto.FLOAT, ["B", H]))
    model.graph.node.append(helper.make_node("Neg", ["c0"], ["cn"]))
    for prop in model.metadata_props:
        if prop.key == "rnn_export.io":
            io = json.loads(prop.value)
            io["states"].append(
                {
                    "input": "c0",
                    "output": "cn",
                    "shape": ["B", H],
                    "dtype": "float32",
                    "initial": "zeros",
                }
            )
            prop.value = json.dumps(io)
    keep = [p for p in model.metadata_props if p.key != "rnn_export.step"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    return model.SerializeToString()


def test_variant_wires_every_state_the_metadata_lists(tiny_run_dir, tmp_path):
    path = export_onnx(tiny_run_dir("stacked", num_layers=2), tmp_path / "s.onnx")
    two = tmp_path / "two.onnx"
    two.write_bytes(_two_state_file(path))
    model = rnn_runtime.open_model(path)  # for h: the main graph without c0
    variant, contract = build_variant(two.read_bytes())
    assert [(s["input"], s["permutation"]) for s in contract["states"]] == [
        ("h0", [1, 0, 2]),
        ("c0", [0, 1]),
    ]
    session = ort.InferenceSession(variant)
    rng = np.random.default_rng(5)
    meta = model.metadata
    B, H = 3, meta.hidden_size
    h = rng.uniform(-1, 1, size=(2, B, H)).astype(np.float32)
    c = rng.uniform(-1, 1, size=(B, H)).astype(np.float32)
    tokens, lengths = rng.integers(0, meta.vocab_size, size=(B, 4)), np.array([4, 2, 1])
    feeds = {
        "tokens": tokens,
        "lengths": lengths,
        "h0": np.ascontiguousarray(h.transpose(1, 0, 2)),
        "c0": c,
        "START": np.array([[1], [0], [0]], np.int32),
        "READY": np.array([[1], [1], [0]], np.int32),
    }
    _, hn, cn = session.run(None, feeds)
    np.testing.assert_array_equal(cn, np.stack([np.zeros(H), -c[1], c[2]]).astype(np.float32))
    np.testing.assert_array_equal(hn[2], feeds["h0"][2])
    _, new = model.run(tokens[1:2], {"h0": np.ascontiguousarray(h[:, 1:2])}, lengths[1:2])
    np.testing.assert_allclose(hn[1], new["h0"][:, 0], atol=ATOL, rtol=0)
    two_meta = read_metadata(_props(two))
    assert len(two_meta.states) == 2
    text = model_config("two", contract, two_meta, 4, 1)
    assert text.count("input_name:") == 2 and 'output_name: "cn"' in text


def _props(path):
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _tree(folder):
    """Every file under folder with its bytes: what must stay as it was."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_refuses_a_folder_it_did_not_write_and_keeps_it(exported, tmp_path):
    """`triton run.onnx --out .` names the model folder after a training run: refused."""
    run_dir, path = exported
    model = tmp_path / "run.onnx"
    model.write_bytes(path.read_bytes())
    import shutil

    shutil.copytree(run_dir, tmp_path / "run")
    before = _tree(tmp_path)
    result = CliRunner().invoke(main, ["triton", str(model), "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "is not a model folder written by rnn-export triton" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert _tree(tmp_path) == before


def test_adds_a_version_beside_the_others_and_keeps_them(exported, tmp_path):
    _, path = exported
    out = tmp_path / "repo"
    args = ["triton", str(path), "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    folder = out / path.stem
    (folder / "labels.txt").write_text("mine\n")
    (folder / "2").mkdir()
    (folder / "2" / "model.onnx").write_bytes(b"another version")
    before = _tree(folder)
    result = CliRunner().invoke(main, [*args, "--max-batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "version 3" in result.output
    after = _tree(folder)
    for kept in ("labels.txt", "1/model.onnx", "2/model.onnx"):
        assert after[Path(kept)] == before[Path(kept)]
    assert after[Path("3/model.onnx")] == before[Path("1/model.onnx")]
    assert "max_batch_size: 4" in (folder / "config.pbtxt").read_text()
    assert set(after) == {*before, Path("3/model.onnx")}


def test_an_empty_folder_becomes_version_1(exported, tmp_path):
    _, path = exported
    (tmp_path / "m").mkdir()
    assert write_repository(path, tmp_path, name="m") == tmp_path / "m" / "1"
    assert (tmp_path / "m" / "config.pbtxt").is_file()


@pytest.fixture(scope="module")
def other_files(tiny_run_dir, tmp_path_factory):
    """A step file, its int8 file and the int8 file in ORT format."""
    from rnn_export.quantize import quantize_file

    root = tmp_path_factory.mktemp("other-files")
    step = export_onnx(tiny_run_dir("cell"), root / "m.step.onnx", graph="step")
    return {
        "step": step,
        "int8": quantize_file(step, root / "m.int8.onnx").path,
        "ort": quantize_file(step, root / "m.int8.ort", "ort").path,
    }


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("step", r"m\.step\.onnx: is a step file, which has no main graph"),
        ("int8", r"m\.int8\.onnx: is an int8 step file, which has no main graph"),
        ("ort", r"m\.int8\.ort: is in ORT format; triton takes the \.onnx model file"),
    ],
)
def test_files_without_a_main_graph_are_refused(other_files, tmp_path, kind, message):
    result = CliRunner().invoke(main, ["triton", str(other_files[kind]), "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert __import__("re").search(message, result.output), result.output
    assert list(tmp_path.iterdir()) == []


def test_a_tensor_name_config_pbtxt_cannot_hold_is_refused(exported, tmp_path):
    _, path = exported
    meta = rnn_runtime.open_model(path).metadata
    _, contract = build_variant(read_model_file(path))
    contract["states"][0]["input"] = 'h0"\nbackend: "python'
    with pytest.raises(TritonError, match=r"tensor name .* cannot be written into config\.pbtxt"):
        model_config("m", contract, meta, 4, 1)


@pytest.mark.parametrize("tritonclient", [True, False], ids=["tritonclient", "without"])
def test_config_is_checked_with_or_without_tritonclient(
    exported, tmp_path, monkeypatch, tritonclient
):
    """The fields are bounded either way; with tritonclient the text is parsed back."""
    import sys

    from rnn_export.triton import check_config

    _, path = exported
    if not tritonclient:
        monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    meta = rnn_runtime.open_model(path).metadata
    _, contract = build_variant(read_model_file(path))
    text = model_config("m", contract, meta, 4, 2)
    check_config(text, "m", contract, 4, 2)
    broken = text.replace("max_batch_size: 4", "max_batch_size: 2147483648")
    if tritonclient:
        with pytest.raises(TritonError, match="does not parse as Triton's ModelConfig"):
            check_config(broken, "m", contract, 4, 2)
        with pytest.raises(TritonError, match="expected"):
            check_config(text, "m", contract, 5, 2)
    with pytest.raises(TritonError, match=r"max_batch_size must be an integer in 1 \.\. 65,536"):
        write_repository(path, tmp_path, max_batch_size=2**31)


def test_a_features_model_serves_frames_of_f_values(tmp_path):
    """A features model's config.pbtxt takes [-1, F] float32 frames; the variant computes
    the main graph's numbers from raw frames."""
    mc = pytest.importorskip(
        "tritonclient.grpc.model_config_pb2",
        reason="tritonclient[grpc] is not installed (the triton extra)",
    )
    import torch
    from google.protobuf import text_format

    from rnn_export.config import ModelConfig
    from rnn_export.export import build_onnx
    from rnn_export.models import build_model

    F = 6
    torch.manual_seed(0)
    config = ModelConfig(
        "gru", 0, ("a", "b", "c"), hidden_size=8, input_kind="features", input_size=F
    )
    model = build_model(config).eval()
    model.frames.mean.copy_(torch.randn(F))
    model.frames.scale.copy_(torch.rand(F) + 0.5)
    path = tmp_path / "kws.onnx"
    path.write_bytes(build_onnx(model, None, "c" * 64).data)
    dest = write_repository(path, tmp_path / "repo", max_batch_size=4)
    config_text = (dest.parent / "config.pbtxt").read_text()
    parsed = text_format.Parse(config_text, mc.ModelConfig())
    assert [i.name for i in parsed.input] == ["features", "lengths"]
    assert parsed.input[0].data_type == mc.TYPE_FP32 and list(parsed.input[0].dims) == [-1, F]
    assert parsed.input[1].data_type == mc.TYPE_INT64
    session = ort.InferenceSession(str(dest / "model.onnx"))
    graph_in = {a.name: a for a in session.get_inputs()}
    assert graph_in["features"].type == "tensor(float)"
    assert graph_in["features"].shape == ["B", "T", F]
    rt = rnn_runtime.open_model(path)
    frames = np.random.default_rng(3).normal(size=(2, 5, F)).astype(np.float32)
    lengths = np.array([5, 3], np.int64)
    want, _ = rt.run(frames, rt.initial_state(2), lengths)
    served = served_states(rt.metadata)
    feed = {"features": frames, "lengths": lengths, "START": np.ones((2, 1), np.int32)}
    feed["READY"] = np.ones((2, 1), np.int32)
    for s in served:
        feed[s.input] = np.zeros([2 if d == "B" else d for d in s.shape], np.float32)
    got = session.run(["log_probs"], feed)[0]
    np.testing.assert_allclose(got, want, atol=ATOL)
