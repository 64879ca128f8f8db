"""verify --runtime: the same verdict with OpenVINO, tract or the ONNX reference running the file.

The ONNX reference always runs (onnx is a dependency); OpenVINO and tract run where their
extras are installed (the test extra installs both) and skip with the reason otherwise.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from rnn_export.export import export_onnx
from rnn_export.parity import ParityError, backends, verify_parity
from rnn_export.parity.backends import check_runtime, open_backend
from rnn_export.parity.compare import CaseFailure
from rnn_export.parity.results import ParityUsageError

SHORT_STREAM = 300


def _installed(module: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed (pip install -e '.[{module}]')",
    )


OTHER_RUNTIMES = [
    "onnx-reference",
    pytest.param("openvino", marks=_installed("openvino")),
    pytest.param("tract", marks=_installed("tract")),
]


@pytest.fixture(scope="module")
def files(make_export, tmp_path_factory):
    """files(arch, nonlinearity) -> (run_dir, {"default", "portable", "step": path})."""
    made = {}

    def make(arch, nonlinearity):
        if (arch, nonlinearity) not in made:
            run_dir, default = make_export(arch, nonlinearity)
            root = tmp_path_factory.mktemp(f"{arch}-{nonlinearity}")
            paths = {"default": default}
            for graph in ("portable", "step"):
                paths[graph] = export_onnx(run_dir, root / f"{graph}.onnx", graph=graph)
            made[arch, nonlinearity] = run_dir, paths
        return made[arch, nonlinearity]

    return make


@pytest.mark.parametrize("runtime", OTHER_RUNTIMES)
@pytest.mark.parametrize("arch, nonlinearity", [("cell", "identity"), ("stacked", "relu")])
def test_step_file_and_portable_graph_pass_on_every_runtime(files, runtime, arch, nonlinearity):
    run_dir, paths = files(arch, nonlinearity)
    portable = verify_parity(paths["portable"], run_dir, runtime=runtime, stream_steps=SHORT_STREAM)
    assert portable.passed
    label = "openvino-f32" if runtime == "openvino" else runtime
    assert {c.provider for c in portable.cases} == {label}
    # The main graph's families and the embedded step model's.
    assert {"local error", "mixed-lengths", "step model"} <= {c.family for c in portable.cases}
    step = verify_parity(paths["step"], run_dir, runtime=runtime, stream_steps=SHORT_STREAM)
    assert step.passed
    # A step file runs the cases of one token per call (in the "step model" family) only:
    # the local error from many states, the step-by-step runs and the long stream.
    assert {c.family for c in step.cases} == {"step model"}
    assert [c.name.split(" ")[-1] for c in step.cases] == [
        "states",
        "token/call",
        "token/call",
        "token/call",
    ]
    worst = max(o.ratio for c in step.cases for o in c.outputs)
    assert 0.0 < worst < 1.0


def test_reference_refuses_the_default_graph_of_a_relu_rnn(files):
    """The ONNX reference has no Relu RNN activation: the default graph fails there, with the
    reason, while the same model's portable graph passes (test above)."""
    run_dir, paths = files("stacked", "relu")
    with pytest.raises(ParityError) as info:
        verify_parity(
            paths["default"], run_dir, runtime="onnx-reference", stream_steps=SHORT_STREAM
        )
    errors = [c.error for c in info.value.report.cases if c.error]
    assert errors and all("Relu" in e for e in errors)


@_installed("openvino")
def test_openvino_fails_the_default_graph_on_sequence_lens(files):
    """OpenVINO with dynamic shapes ignores the RNN operator's sequence_lens (docs/runtimes.md): the
    B=1 path of the default graph is wrong for a row shorter than T, and verify says so."""
    run_dir, paths = files("stacked", "relu")
    with pytest.raises(ParityError) as info:
        verify_parity(paths["default"], run_dir, runtime="openvino", stream_steps=SHORT_STREAM)
    failed = [c for c in info.value.report.cases if not c.passed]
    assert any(c.name.startswith("B=1 T=4, lengths 1..4") for c in failed)
    assert all(c.error is None for c in failed)  # wrong numbers, not a refusal
    assert max(o.error for c in failed for o in c.outputs) > 1e-3


@pytest.mark.parametrize("runtime", OTHER_RUNTIMES)
def test_backends_run_the_step_model_like_onnxruntime(files, runtime):
    from rnn_runtime.metadata import read_metadata

    _, paths = files("stacked", "relu")
    import onnx

    proto = onnx.load(str(paths["step"]))
    meta = read_metadata({p.key: p.value for p in proto.metadata_props})
    names = [meta.step.log_probs, *(o for _, o in meta.step.states)]
    rng = np.random.default_rng(0)
    feeds = {meta.step.token: rng.integers(0, meta.vocab_size, size=5)}
    feeds |= {i: rng.standard_normal((5, 16)).astype(np.float32) for i, _ in meta.step.states}
    data = paths["step"].read_bytes()
    want = open_backend("onnxruntime", data).run(names, feeds)
    got = open_backend(runtime, data).run(names, feeds)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_unknown_or_missing_runtime_is_a_usage_error(monkeypatch):
    with pytest.raises(ParityUsageError, match="unknown runtime 'tflite2'; expected one of"):
        check_runtime("tflite2")
    missing = staticmethod(lambda: backends.installed("tract", "no_such_module_here", "tract"))
    monkeypatch.setattr(backends.Tract, "version", missing)
    with pytest.raises(ParityUsageError, match=r"tract is not installed; .*rnn-export\[tract\]"):
        check_runtime("tract")


def test_a_model_a_runtime_cannot_load_is_a_case_failure():
    with pytest.raises(CaseFailure, match="onnx-reference cannot load it"):
        open_backend("onnx-reference", b"not an onnx model")


def test_other_runtimes_take_the_cpu_only(files):
    run_dir, paths = files("cell", "identity")
    with pytest.raises(ParityUsageError, match="verified on the CPU; --providers must be cpu"):
        verify_parity(paths["portable"], run_dir, providers="cuda", runtime="onnx-reference")
