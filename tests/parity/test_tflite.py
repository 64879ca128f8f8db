"""verify --runtime tflite: onnx2tf converts the file, LiteRT's interpreter runs it.

onnx2tf needs a Python 3.12 of its own (scripts/onnx2tf_env.py, which the README's test
command runs); where there is none these tests skip with the reason. LiteRT's interpreter
is the `tflite` extra, installed by the test extra.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from rnn_export.cli import main
from rnn_export.export import export_onnx
from rnn_export.parity import ParityError, verify_parity
from rnn_export.parity.backends import open_backend
from rnn_export.parity.results import ParityUsageError

SHORT_STREAM = 300

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ai_edge_litert") is None,
    reason="ai-edge-litert is not installed (pip install -e '.[tflite]')",
)


@pytest.fixture(scope="module")
def onnx2tf_python():
    from rnn_export.parity.tflite import find_onnx2tf

    try:
        return find_onnx2tf()[0]
    except ParityUsageError as e:
        pytest.skip(f"no onnx2tf: {e}")


@pytest.fixture(scope="module")
def step_files(make_export, tmp_path_factory):
    made = {}

    def make(arch, nonlinearity="tanh"):
        if arch not in made:
            run_dir, default = make_export(arch, nonlinearity)
            step = export_onnx(run_dir, tmp_path_factory.mktemp(arch) / "step.onnx", graph="step")
            made[arch] = run_dir, default, step
        return made[arch]

    return make


@pytest.mark.parametrize(
    "arch, nonlinearity",
    [("cell", "identity"), ("stacked", "relu"), ("gru", "tanh"), ("lstm", "tanh")],
)
def test_step_files_pass_on_tflite(onnx2tf_python, step_files, arch, nonlinearity):
    run_dir, _, step = step_files(arch, nonlinearity)
    report = verify_parity(step, run_dir, runtime="tflite", stream_steps=SHORT_STREAM)
    assert report.passed
    assert {c.provider for c in report.cases} == {"tflite"}
    assert {c.family for c in report.cases} == {"step model"}
    assert len(report.cases) == 4
    worst = max(o.ratio for c in report.cases for o in c.outputs)
    assert 0.0 < worst < 1.0


def _broken_step_file(src, dst, weight):
    model = onnx.load(src)
    tensor = next(t for t in model.graph.initializer if t.name == weight)
    value = numpy_helper.to_array(tensor).copy()
    value[0, 0] += 1e-3
    tensor.CopyFrom(numpy_helper.from_array(value, weight))
    onnx.save(model, dst)
    return dst


@pytest.mark.parametrize("arch, weight", [("cell", "R0"), ("gru", "Rh0")])
def test_a_broken_step_file_fails_on_tflite(onnx2tf_python, step_files, tmp_path, arch, weight):
    run_dir, _, step = step_files(arch)
    broken = _broken_step_file(step, tmp_path / "broken.onnx", weight)
    with pytest.raises(ParityError) as failed:
        verify_parity(broken, run_dir, runtime="tflite", stream_steps=SHORT_STREAM)
    worst = max(o.ratio for c in failed.value.report.cases for o in c.outputs)
    assert worst > 10.0


def test_a_main_file_runs_its_step_model_and_fails_its_main_graph(onnx2tf_python, step_files):
    """onnx2tf turns the default graph's If into a custom op that TFLite cannot run."""
    run_dir, default, _ = step_files("cell", "identity")
    with pytest.raises(ParityError) as failed:
        verify_parity(default, run_dir, runtime="tflite", stream_steps=SHORT_STREAM)
    cases = failed.value.report.cases
    step = [c for c in cases if c.family == "step model"]
    main_graph = [c for c in cases if c.family != "step model"]
    assert step and all(c.passed for c in step)
    assert main_graph and all(not c.passed for c in main_graph)
    assert any("ONNX_IF" in (c.error or "") for c in main_graph)


def test_a_tflite_converted_elsewhere_is_verified_as_given(onnx2tf_python, step_files, tmp_path):
    from rnn_export.parity.tflite import convert

    run_dir, _, step = step_files("lstm")
    given = tmp_path / "mine.tflite"
    given.write_bytes(convert(step.read_bytes(), onnx2tf_python))
    report = verify_parity(
        step, run_dir, runtime="tflite", stream_steps=SHORT_STREAM, tflite_model=given
    )
    assert report.passed
    assert "mine.tflite" in report.providers[0].execution_provider


def test_the_tflite_session_runs_a_step_like_onnxruntime(onnx2tf_python, step_files):
    from rnn_export.parity.tflite import convert, open_tflite

    _, _, step = step_files("gru")
    data = step.read_bytes()
    tflite = open_tflite(convert(data, onnx2tf_python), threads=1)
    reference = open_backend("onnxruntime", data)
    rng = np.random.default_rng(0)
    graph = onnx.load(step).graph
    names = [o.name for o in graph.output]
    states = {i.name: i.type.tensor_type.shape.dim[1].dim_value for i in graph.input[1:]}
    vocab = next(t.dims[0] for t in graph.initializer if t.name == "table")
    for batch in (1, 5, 3):  # resized between calls
        feeds = {"token": rng.integers(0, vocab, size=batch)}
        for name, hidden in states.items():
            feeds[name] = rng.standard_normal((batch, hidden)).astype(np.float32)
        want = reference.run(names, feeds)
        got = tflite.run(names, feeds)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_usage_errors(step_files, tmp_path, monkeypatch):
    from rnn_export.parity import tflite

    run_dir, _, step = step_files("cell", "identity")
    monkeypatch.delenv("RNN_EXPORT_ONNX2TF_PYTHON", raising=False)
    monkeypatch.setattr(tflite, "ONNX2TF_ENV", tmp_path / "none")
    if importlib.util.find_spec("onnx2tf") is None:
        with pytest.raises(ParityUsageError, match="scripts/onnx2tf_env.py"):
            verify_parity(step, run_dir, runtime="tflite", stream_steps=SHORT_STREAM)
    with pytest.raises(ParityUsageError, match="cannot import onnx2tf"):
        tflite.find_onnx2tf("/bin/false")
    not_tflite = tmp_path / "x.tflite"
    not_tflite.write_bytes(b"not a flatbuffer")
    with pytest.raises(ParityUsageError, match="not a TFLite model"):
        verify_parity(step, run_dir, runtime="tflite", tflite_model=not_tflite)
    with pytest.raises(ParityUsageError, match="with --runtime tflite"):
        verify_parity(step, run_dir, runtime="onnx-reference", tflite_model=not_tflite)
    result = CliRunner().invoke(
        main,
        [
            "verify",
            str(step),
            "--checkpoint",
            str(run_dir),
            "--runtime",
            "tflite",
            "--tflite-model",
            str(not_tflite),
        ],
    )
    assert result.exit_code == 2
    assert "not a TFLite model" in result.output
