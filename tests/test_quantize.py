"""rnn-export quantize: int8 step files (ONNX and ORT format) and verify's int8 rule."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from rnn_export.cli import main
from rnn_export.data import embedded_spec
from rnn_export.export import export_onnx
from rnn_export.quantize import (
    MAX_PROB_ERROR,
    MIN_AGREEMENT,
    MIN_WITHIN,
    WEIGHT_TYPE,
    QuantizedReport,
    QuantizeError,
    quantize_file,
    verify_quantized,
)
from rnn_runtime import open_model
from rnn_runtime.onnxfile import is_ort_format


@pytest.fixture(scope="module", params=[("cell", None), ("stacked", 2)])
def step_file(request, tiny_run_dir, tmp_path_factory):
    """(run_dir, its step file, its default main file)."""
    arch, layers = request.param
    run_dir = tiny_run_dir(arch, "tanh", num_layers=layers)
    root = tmp_path_factory.mktemp(f"quantize-{arch}")
    step = export_onnx(run_dir, root / "m.step.onnx", graph="step")
    return run_dir, step, export_onnx(run_dir, root / "m.onnx")


def _rnn_gemms(path) -> int:
    return sum(n.op_type == "Gemm" for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("fmt", ["onnx", "ort"])
def test_quantized_step_file_keeps_the_contract_and_passes_the_int8_rule(step_file, tmp_path, fmt):
    run_dir, step, _ = step_file
    out = tmp_path / f"m.int8.{fmt}"
    done = quantize_file(step, out, fmt)
    assert done.size_bytes == out.stat().st_size and done.source_bytes == step.stat().st_size
    assert done.quantized_nodes == {"MatMulInteger": _rnn_gemms(step)}
    assert is_ort_format(out.read_bytes()) == (fmt == "ort")
    float_model, int8_model = open_model(step), open_model(out)
    meta = int8_model.metadata
    assert meta.is_step_file and meta.vocab == float_model.metadata.vocab
    quantized = meta.provenance["quantized"]
    assert quantized["weight_type"] == WEIGHT_TYPE == "uint8"
    assert quantized["op_types"] == ["Gemm", "MatMul"]
    # Close to float32, not equal to it: int8 is a different computation.
    a = float_model.stream().feed("abcdefgh").probabilities
    b = int8_model.stream().feed("abcdefgh").probabilities
    assert 0 < np.abs(a - b).max() < MAX_PROB_ERROR
    # 1,000 texts, not the tiny run's 80: an all but untrained model has texts whose two
    # top classes are closer than int8's error (6.7e-4 against 7.9e-4 here); with 80
    # texts one such flip is 98.75% agreement.
    report = verify_quantized(out, run_dir, data=embedded_spec(seed=1, size=5000))
    assert report.passed and report.texts > 0 and report.source == "validation split"
    assert report.agreement >= MIN_AGREEMENT and report.within >= MIN_WITHIN
    assert 0 < report.mean_prob_error <= report.max_prob_error
    assert abs(report.accuracy_int8 - report.accuracy_float32) <= 1 - report.agreement


def test_a_damaged_int8_file_fails_the_rule(step_file, tmp_path):
    """Negated quantized output weights: verify must say FAIL (exit 1), not pass it."""
    run_dir, step, _ = step_file
    good = quantize_file(step, tmp_path / "good.onnx").path
    proto = onnx.load(str(good))
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    damaged = 0
    for init in proto.graph.initializer:
        if init.name.startswith("out_weight") and init.name.endswith("_quantized"):
            # q - zp -> zp - q: the weight negated about its zero point.
            zero_point = arrays[init.name.replace("_quantized", "_zero_point")].astype(np.int32)
            values = (2 * zero_point - arrays[init.name].astype(np.int32)).clip(0, 255)
            init.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.uint8), init.name))
            damaged += 1
    assert damaged == 1
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    report = verify_quantized(bad, run_dir)
    assert not report.passed and report.agreement < MIN_AGREEMENT
    result = CliRunner().invoke(main, ["verify", str(bad), "--checkpoint", str(run_dir), "-q"])
    assert result.exit_code == 1 and result.output.startswith("FAIL: int8 file on ")


# onnxruntime against exact integer arithmetic: the integers are equal, so only float32
# rounding of the float operations (scales, tanh, log-softmax) differs, 1e-7 here; this
# leaves room for an activation that rounds to the neighbouring uint8 level (4e-4 on 100
# texts of an H=128 model). Sums that saturate in int16 (int8 weights on an AVX2 CPU
# without VNNI) move them by 0.023 (cell) and 0.039 (stacked) on these texts.
INTEGER_TOLERANCE = 1e-3


def test_the_int8_file_computes_its_integers_exactly_on_this_cpu(step_file, tmp_path):
    """onnxruntime on this CPU gives the probabilities of the int8 graph evaluated in exact
    integer arithmetic (onnx's reference evaluator: MatMulInteger summed in int32), so the
    int8 rule's verdict does not depend on which x86 kernel (AVX2, AVX-512, VNNI) ran."""
    from onnx.reference import ReferenceEvaluator

    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.parity.verify import _validation_split

    run_dir, step, _ = step_file
    out = quantize_file(step, tmp_path / "m.int8.onnx").path
    proto = onnx.load(str(out))
    weights = {t.name: t.data_type for t in proto.graph.initializer}
    products = [n for n in proto.graph.node if n.op_type == "MatMulInteger"]
    assert products and all(weights[n.input[1]] == onnx.TensorProto.UINT8 for n in products)
    model, reference = open_model(out), ReferenceEvaluator(proto)
    token, *states = [i.name for i in proto.graph.input]
    ckpt = load_checkpoint(run_dir)
    H = ckpt.config.hidden_size
    validation = _validation_split(ckpt, embedded_spec(seed=1, size=5000))
    texts = [model.encode(text) for text, _ in validation[:100]]
    got, want = [], []
    for ids in texts:
        got.append(model.stream().feed(ids).probabilities)
        state = {name: np.zeros((1, H), np.float32) for name in states}
        for t in ids:
            log_probs, *new_state = reference.run(None, {token: np.array([t]), **state})
            state = dict(zip(states, new_state, strict=True))
        want.append(np.exp(log_probs[0]))
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=0, atol=INTEGER_TOLERANCE)


@pytest.mark.parametrize(
    "agreement, within, passed",
    [
        (1.0, 1.0, True),
        (MIN_AGREEMENT, MIN_WITHIN, True),
        (0.985, 1.0, False),
        (1.0, 0.985, False),
    ],
)
def test_the_int8_rule_is_agreement_and_probability_error(agreement, within, passed):
    """At most 1% of the texts may change their decision, and at most 1% may have a
    probability moved by more than MAX_PROB_ERROR; the largest error is not ruled on."""
    report = QuantizedReport("m", "run", 100, "generated", agreement, within, 0.6, 0.01, None, None)
    assert report.passed is passed
    assert report.summary_line().startswith("PASS" if passed else "FAIL")
    assert f"<= {MAX_PROB_ERROR} on {within:.2%}" in report.summary_line()
    assert json.loads(report.to_json())["passed"] is passed


def test_quantize_refusals(step_file, tmp_path):
    _, step, main_file = step_file
    int8 = quantize_file(step, tmp_path / "once.onnx").path
    cases = [
        (main_file, "onnx", "is a main-graph file; quantize takes a step file"),
        (int8, "onnx", "is already quantized"),
        (tmp_path / "missing.onnx", "onnx", "no such model file"),
        (step, "tflite", "format must be one of onnx, ort; got 'tflite'"),
    ]
    for source, fmt, match in cases:
        with pytest.raises(QuantizeError, match=match):
            quantize_file(source, tmp_path / "out.onnx", fmt)
    assert not (tmp_path / "out.onnx").exists()


def test_quantize_and_verify_through_the_cli(step_file, tmp_path):
    run_dir, step, main_file = step_file
    out = tmp_path / "m.int8.ort"
    result = CliRunner().invoke(main, ["quantize", str(step), "--out", str(out), "--format", "ort"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "format   ort" in result.output
    result = CliRunner().invoke(main, ["verify", str(out), "--checkpoint", str(run_dir), "-q"])
    assert result.exit_code == 0 and result.output.startswith("PASS: int8 file on ")
    args = ["verify", str(out), "--checkpoint", str(run_dir), "--runtime", "tract"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "verified with --runtime onnxruntime" in result.output
    result = CliRunner().invoke(main, ["quantize", str(main_file), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1


def _with_props(path, out, **changes):
    """A copy of the model file at path with some metadata values replaced (key -> fn(value))."""
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key in changes:
            prop.value = changes[prop.key](prop.value)
    onnx.save(model, str(out))
    return out


def _bad_sources(step, main_file, tmp_path):
    from onnx import numpy_helper

    data = step.read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.onnx").write_bytes(b"not a model at all\n")
    external = onnx.load(str(step))
    onnx.save(
        external,
        str(tmp_path / "external.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="external.data",
        size_threshold=0,
    )
    nan = onnx.load(str(step))
    weight = next(t for t in nan.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = np.nan
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(nan, str(tmp_path / "nan.onnx"))
    step_props = {p.key: p.value for p in onnx.load(str(step)).metadata_props}

    def five_classes(key):
        def change(value):
            value = json.loads(value)
            if key == "rnn_export.model":
                value["num_classes"] = 5
            elif key == "rnn_export.labels":
                value = [*value, "E"]
            else:
                value["log_probs"]["shape"][-1] = 5
            return json.dumps(value)

        return change

    return {
        "truncated": tmp_path / "truncated.onnx",
        "not ONNX": tmp_path / "text.onnx",
        "external data": tmp_path / "external.onnx",
        "NaN weight": tmp_path / "nan.onnx",
        "main file claiming a step file": _with_props(
            main_file,
            tmp_path / "claims.onnx",
            **{"rnn_export.step": lambda _: step_props["rnn_export.step"]},
        ),
        "5 classes for 4": _with_props(
            step,
            tmp_path / "five.onnx",
            **{
                k: five_classes(k)
                for k in ("rnn_export.model", "rnn_export.labels", "rnn_export.io")
            },
        ),
    }


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", r"truncated\.onnx"),
        ("not ONNX", r"text\.onnx"),
        ("external data", r"external\.onnx.*external"),
        ("NaN weight", r"nan\.onnx.*(NaN|not finite)"),
        ("main file claiming a step file", r"claims\.onnx"),
        ("5 classes for 4", r"five\.onnx.*5"),
    ],
)
def test_quantize_checks_its_input_as_the_runtime_does(step_file, tmp_path, case, message):
    _, step, main_file = step_file
    source = _bad_sources(step, main_file, tmp_path)[case]
    before = source.read_bytes()
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(main, ["quantize", str(source), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert re.search(message, result.output), result.output
    assert not out.exists() and source.read_bytes() == before


def test_quantize_refuses_to_write_over_its_source(step_file, tmp_path):
    _, step, _ = step_file
    source = tmp_path / "m.step.onnx"
    source.write_bytes(step.read_bytes())
    (tmp_path / "link.onnx").symlink_to(source)
    for out in (source, tmp_path / "link.onnx"):
        result = CliRunner().invoke(main, ["quantize", str(source), "--out", str(out)])
        assert result.exit_code == 2 and "is the source file" in result.output, result.output
    assert source.read_bytes() == step.read_bytes()


def test_quantize_checks_its_output_before_writing(step_file, tmp_path, monkeypatch):
    """An int8 file the runtime would refuse is never written."""
    from rnn_export import quantize

    _, step, _ = step_file
    out = tmp_path / "out.onnx"
    out.write_bytes(b"earlier")
    monkeypatch.setattr(quantize, "_to_ort_format", lambda data: data[: len(data) // 2])
    with pytest.raises(QuantizeError, match="its int8 file would not open, so none was written"):
        quantize_file(step, out, "ort")
    assert out.read_bytes() == b"earlier"


def test_a_features_model_is_checked_on_frames_around_its_training_data(tmp_path):
    """Without validation data, the int8 rule runs on generated raw frames around the
    file's normalization (far from it, every frame would look the same to the model)."""
    import torch

    from rnn_export.checkpoint import save_checkpoint
    from rnn_export.config import ModelConfig
    from rnn_export.models import build_model
    from rnn_export.parity.verify import _load_checkpoint
    from rnn_export.quantize import _validation_inputs

    F = 6
    torch.manual_seed(0)
    config = ModelConfig(
        "gru", 0, ("a", "b", "c"), hidden_size=16, input_kind="features", input_size=F
    )
    model = build_model(config).eval()
    model.frames.mean.copy_(torch.linspace(-50.0, 50.0, F))
    model.frames.scale.copy_(torch.linspace(0.5, 20.0, F))
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir, model, None, None, {"imported": {"source": "x"}}, {})
    step = export_onnx(run_dir, tmp_path / "kws.step.onnx", graph="step")
    out = quantize_file(step, tmp_path / "kws.int8.onnx").path
    int8 = open_model(out)
    inputs, labels, source = _validation_inputs(_load_checkpoint(run_dir), int8, None)
    assert source == "generated" and labels is None and len(inputs) > 100
    assert all(x.dtype == np.float32 and x.shape[1] == F and 5 <= len(x) <= 40 for x in inputs)
    normalized = (np.concatenate(inputs) - model.frames.mean.numpy()) / model.frames.scale.numpy()
    np.testing.assert_allclose(normalized.mean(0), 0, atol=0.1)  # a standard normal, per feature
    np.testing.assert_allclose(normalized.std(0), 1, atol=0.1)
    report = verify_quantized(out, run_dir)
    assert report.texts == len(inputs) and report.source == "generated"
    # The probabilities are int8's to hold; the decisions of an untrained model are not
    # ruled on here: its top two classes are often closer than int8's error.
    assert report.within >= MIN_WITHIN and report.max_prob_error < MAX_PROB_ERROR
    assert report.mean_prob_error > 0 and report.accuracy_int8 is None


def test_a_trained_features_model_is_checked_on_its_validation_frames(tmp_path):
    """A features model trained on frames data: the int8 rule runs on its validation
    split, each sequence's real frames and label."""
    from rnn_export.frames import frames_embedded_spec, load_frames
    from rnn_export.parity.verify import _load_checkpoint
    from rnn_export.quantize import _validation_inputs
    from rnn_export.training import train

    spec = frames_embedded_spec(seed=2, size=120, features=4)
    train(
        "gru",
        tmp_path / "run",
        spec,
        input_kind="features",
        epochs=1,
        hidden_size=8,
        progress=False,
    )
    step = export_onnx(tmp_path / "run", tmp_path / "f.step.onnx", graph="step")
    int8 = open_model(quantize_file(step, tmp_path / "f.int8.onnx").path)
    inputs, labels, source = _validation_inputs(_load_checkpoint(tmp_path / "run"), int8, None)
    val = load_frames(spec).val
    assert source == "validation split" and labels.tolist() == val.labels.tolist()
    for got, x, n in zip(inputs, val.x, val.lengths, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, x[:n])
    report = verify_quantized(tmp_path / "f.int8.onnx", tmp_path / "run")
    assert report.texts == len(val) and report.accuracy_int8 is not None
