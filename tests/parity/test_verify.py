"""verify_parity and `rnn-export verify`: figures, exit codes, and a checker that can fail."""

from __future__ import annotations

import json
import math
import re

import fakes
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from rnn_export import parity
from rnn_export.checkpoint import load_checkpoint
from rnn_export.cli import main
from rnn_export.data import load_splits
from rnn_export.parity import (
    BATCH_SIZES,
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    EXAMPLE_LENGTH,
    LONG_LENGTH,
    STREAM_STEPS,
    CaseFailure,
    OutputError,
    ParityError,
    ParityUsageError,
    compare,
    parse_providers,
    verify_parity,
)

pytestmark = pytest.mark.parity

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
FAMILIES = {
    "shapes",
    "zero-state",
    "mixed-lengths",
    "validation",
    "step-by-step",
    "chunks",
    "stream",
    "step model",
}
SHORT_STREAM = 300  # library calls that do not test the stream itself keep it short


def run_verify(*args):
    result = CliRunner().invoke(main, ["verify", *map(str, args)])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.output
    return result


# --- the tolerance arithmetic ---------------------------------------------------------


def test_compare_reports_abs_rel_and_smallest_passing_atol():
    want = np.array([1.0, -2.0, 0.0, 4.0], dtype=np.float32)
    got = np.array([1.0, -2.5, 1e-3, 4.0004], dtype=np.float32)
    e = compare(got, want, atol=1e-5, rtol=1e-4, output="hn")
    np.testing.assert_allclose(e.max_abs, 0.5, rtol=1e-6)
    # relative error over nonzero references: 0.5 / 2 at index 1
    np.testing.assert_allclose(e.max_rel, 0.25, rtol=1e-6)
    # smallest atol: max(|a-b| - rtol|b|) = 0.5 - 1e-4 * 2
    np.testing.assert_allclose(e.min_atol, 0.5 - 2e-4, rtol=1e-6)
    assert not e.passed
    assert compare(got, want, atol=e.min_atol, rtol=1e-4, output="hn").passed


def test_compare_within_rtol_needs_no_atol():
    want = np.array([1000.0, 1.0], dtype=np.float32)
    got = want + np.array([0.05, 0.0], dtype=np.float32)  # 5e-5 relative < rtol 1e-4
    e = compare(got, want, atol=0.0, rtol=1e-4, output="log_probs")
    assert e.min_atol == 0.0 and e.passed
    np.testing.assert_allclose(e.max_abs, 0.05, rtol=1e-3)


@pytest.mark.parametrize(
    "got, want, max_abs",
    [
        ([np.nan, 1.0], [0.0, 1.0], math.inf),
        ([np.inf, 1.0], [np.inf, 1.0], 0.0),
        ([-np.inf, 1.0], [np.inf, 1.0], math.inf),
        ([0.0, 0.0], [0.0, 0.0], 0.0),
    ],
)
def test_compare_non_finite(got, want, max_abs):
    e = compare(np.array(got), np.array(want), atol=1e-5, rtol=1e-4, output="hn")
    assert e.max_abs == max_abs
    assert e.passed == (max_abs == 0.0)


def test_compare_shape_mismatch_is_a_case_failure():
    with pytest.raises(CaseFailure, match=r"hn has shape \(2, 3\); PyTorch gives \(3, 2\)"):
        compare(np.zeros((2, 3)), np.zeros((3, 2)), 1e-5, 1e-4, "hn")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("cpu", [("cpu", True)]),
        ("cuda", [("cuda", True)]),
        ("cpu,cuda", [("cpu", True), ("cuda", True)]),
        (" CPU , cuda,cpu", [("cpu", True), ("cuda", True)]),
        ("all", [("cpu", False), ("cuda", False)]),
        (("cpu",), [("cpu", True)]),
    ],
)
def test_parse_providers(spec, expected):
    assert parse_providers(spec) == expected


@pytest.mark.parametrize(
    "spec, match",
    [
        ("gpu", r"unknown provider 'gpu'; expected one of cpu, cuda or 'all'"),
        ("all,cpu", r"'all' cannot be combined"),
        ("", r"expected a provider list"),
        ("cpu,tensorrt", r"unknown provider 'tensorrt'"),
    ],
)
def test_parse_providers_rejects(spec, match):
    with pytest.raises(ParityUsageError, match=match):
        parse_providers(spec)


# --- verify_parity on good models -----------------------------------------------------


@pytest.mark.parametrize("arch, nonlinearity", [("cell", "tanh"), ("stacked", "tanh")])
def test_default_size_model_passes_every_case(make_export, arch, nonlinearity):
    """The full default verify on an H=128 model: every family, every shape, 10,000 steps."""
    run_dir, path = make_export(arch, nonlinearity, hidden_size=128)
    report = verify_parity(path, run_dir)
    assert report.passed and report.diagnosis() is None
    assert {c.family for c in report.cases} == FAMILIES
    shapes = [c for c in report.cases if c.family == "shapes"]
    assert {c.batch_size for c in shapes} == set(BATCH_SIZES)
    lengths = {c.length for c in shapes}
    assert {1, EXAMPLE_LENGTH, 16 * EXAMPLE_LENGTH, LONG_LENGTH} <= lengths
    for case in report.cases:
        assert [o.output for o in case.outputs] == ["log_probs", "hn"]
        for o in case.outputs:
            assert o.atol == DEFAULT_ATOL and o.rtol == DEFAULT_RTOL
            assert o.max_abs <= DEFAULT_ATOL + DEFAULT_RTOL * 20, (case.name, o)
            assert 0.0 <= o.min_atol <= DEFAULT_ATOL
    validation = [c for c in report.cases if c.family == "validation"]
    _, val = load_splits(load_checkpoint(run_dir).data)
    assert sum(c.batch_size for c in validation) == len(val)
    assert all(c.agreement == 1.0 for c in validation)
    (stream,) = [c for c in report.cases if c.family == "stream"]
    assert stream.length == STREAM_STEPS >= 10_000
    # The embedded step model (what the runtime streams through): the one-token-per-call
    # cases and the long stream again, through it.
    step_cases = [c for c in report.cases if c.family == "step model"]
    by_name = {c.name: c for c in report.cases if c.family == "step-by-step"}
    assert len(step_cases) == len(by_name) + 1
    for case in step_cases[:-1]:
        assert case.batch_size == by_name[case.name].batch_size
    assert step_cases[-1].name == stream.name and step_cases[-1].length == STREAM_STEPS
    drift, step_drift = report.drift
    assert (drift.provider, step_drift.provider) == ("cpu", "cpu, step model")
    for curve, case in ((drift, stream), (step_drift, step_cases[-1])):
        assert curve.steps == STREAM_STEPS
        assert len(curve.max_abs["hn"]) == math.ceil(STREAM_STEPS / curve.window) >= 10
        assert max(curve.max_abs["hn"]) == pytest.approx(case.outputs[1].max_abs)


def test_file_without_a_step_model(make_export, tmp_path):
    """Files from before the step model: every main-graph case, no step-model family."""
    import onnx

    run_dir, path = make_export("stacked", "tanh")
    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key != "rnn_export.step"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    older = tmp_path / "older.onnx"
    onnx.save(model, str(older))
    report = verify_parity(older, run_dir, stream_steps=SHORT_STREAM)
    assert report.passed
    assert {c.family for c in report.cases} == FAMILIES - {"step model"}
    assert [d.provider for d in report.drift] == ["cpu"]


def test_accepts_a_loaded_checkpoint(make_export):
    run_dir, path = make_export("cell", "relu")
    report = verify_parity(path, load_checkpoint(run_dir), stream_steps=SHORT_STREAM)
    assert report.passed and report.checkpoint == str(run_dir)


def test_smallest_passing_atol_is_exact(make_export):
    """With atol 0 a run fails; with atol = the worst reported min_atol, the same run passes."""
    run_dir, path = make_export("stacked", "relu")
    with pytest.raises(ParityError) as info:
        verify_parity(path, run_dir, atol=0.0, rtol=0.0, strict=True, stream_steps=SHORT_STREAM)
    report = info.value.report
    assert not report.passed and report.failures()
    worst = max(o.min_atol for c in report.cases for o in c.outputs)
    assert 0.0 < worst < DEFAULT_ATOL
    # at rtol 0 the smallest passing atol is the max abs error itself
    assert worst == max(o.max_abs for c in report.cases for o in c.outputs)
    again = verify_parity(
        path, run_dir, atol=worst, rtol=0.0, strict=True, stream_steps=SHORT_STREAM
    )
    assert again.passed


def test_report_json_table_and_plot(make_export, tmp_path):
    run_dir, path = make_export("cell", "identity")
    report = verify_parity(path, run_dir, stream_steps=SHORT_STREAM)
    data = json.loads(report.to_json())
    assert data["passed"] is True
    assert data["atol"] == DEFAULT_ATOL and data["rtol"] == DEFAULT_RTOL
    assert len(data["cases"]) == len(report.cases)
    first = data["cases"][0]["outputs"][0]
    assert set(first) == {
        "output",
        "max_abs",
        "max_rel",
        "atol",
        "rtol",
        "min_atol",
        "noise",
        "eff_atol",
        "passed",
        "torch_vs_f64",
        "onnx_vs_f64",
    }
    assert first["max_abs"] == report.cases[0].outputs[0].max_abs
    for case in report.cases:
        for o in case.outputs:
            # float64 diagnostics: both float32 results sit within rounding of the exact one
            assert 0.0 <= o.torch_vs_f64 < 1e-5 and 0.0 <= o.onnx_vs_f64 < 1e-5, (case.name, o)
    assert {row["family"] for row in data["summary"]} == FAMILIES
    assert [d["steps"] for d in data["drift"]] == [SHORT_STREAM, SHORT_STREAM]
    table = report.format_table()
    assert "PASSED" in table and "max abs" in table and "decision agreement 100.00%" in table
    png = report.plot_drift(tmp_path / "drift.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _report_with(*outputs):
    case = parity.CaseResult("cpu", "c", "shapes", 1, 1, outputs=outputs)
    return parity.ParityReport("m", "r", "0" * 64, {}, 1e-5, 1e-4, [], [case], [])


def test_diagnosis_tells_rounding_from_a_different_computation():
    ok = OutputError("hn", 1e-6, 1e-6, 0.0, 1e-5, 1e-4, torch_vs_f64=1e-6, onnx_vs_f64=1e-6)
    assert _report_with(ok).diagnosis() is None
    rounding = OutputError("hn", 5e-5, 1e-3, 4e-5, 1e-5, 1e-4, torch_vs_f64=3e-5, onnx_vs_f64=6e-5)
    assert "consistent with float32 rounding" in _report_with(ok, rounding).diagnosis()
    wrong = OutputError("hn", 5e-4, 1e-2, 4e-4, 1e-5, 1e-4, torch_vs_f64=3e-5, onnx_vs_f64=5e-4)
    assert _report_with(rounding, wrong).diagnosis() == (
        "1 of 2 failing outputs are further from float64 than 4x PyTorch float32's own "
        "error: the file computes something else"
    )


# --- usage errors ---------------------------------------------------------------------


def test_mismatched_checkpoint_is_a_usage_error(make_export):
    _, path = make_export("cell", "tanh")
    other_run, _ = make_export("cell", "tanh", seed=1)
    with pytest.raises(ParityUsageError, match="do not belong together"):
        verify_parity(path, other_run)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("missing-model", r"expected an \.onnx file .* not found"),
        ("garbage-model", r"onnxruntime cannot load it"),
        ("missing-run", r"cannot load the checkpoint: .* not found"),
        ("bad-atol", r"tolerances must be >= 0"),
    ],
)
def test_usage_errors(make_export, tmp_path, bad, match):
    run_dir, path = make_export("cell", "tanh")
    kwargs = {}
    if bad == "missing-model":
        path = tmp_path / "nope.onnx"
    elif bad == "garbage-model":
        path = tmp_path / "garbage.onnx"
        path.write_bytes(b"not a model")
    elif bad == "missing-run":
        run_dir = tmp_path / "no-run"
    else:
        kwargs["atol"] = -1.0
    with pytest.raises(ParityUsageError, match=match):
        verify_parity(path, run_dir, **kwargs)


# --- the CLI --------------------------------------------------------------------------


def test_cli_passes_with_report_and_plot(make_export, tmp_path):
    run_dir, path = make_export("stacked", "tanh")
    report_path, plot_path = tmp_path / "r.json", tmp_path / "drift.png"
    result = run_verify(path, "--checkpoint", run_dir, "--report", report_path, "--plot", plot_path)
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "drift (cpu)" in result.output
    data = json.loads(report_path.read_text())
    assert data["passed"] is True
    (cpu,) = data["providers"]
    assert cpu["name"] == "cpu" and cpu["execution_provider"] == "CPUExecutionProvider"
    assert cpu["status"] == "ran" and cpu["reason"] is None
    assert list(cpu["placement"]) == ["CPUExecutionProvider"]
    for case in data["cases"]:
        for o in case["outputs"]:
            assert o["passed"] and 0.0 <= o["max_abs"] <= DEFAULT_ATOL + 20 * DEFAULT_RTOL
    assert data["drift"][0]["steps"] == STREAM_STEPS
    assert plot_path.read_bytes()[:4] == b"\x89PNG"


def test_cli_mismatched_checkpoint_exits_2(make_export):
    _, path = make_export("stacked", "tanh")
    other_run, _ = make_export("stacked", "tanh", seed=1)
    result = run_verify(path, "--checkpoint", other_run)
    assert result.exit_code == 2
    assert "do not belong together" in result.output


@pytest.mark.parametrize(
    "args, match",
    [
        (["--providers", "gpu"], "unknown provider 'gpu'"),
        (["--atol", "-1"], "-1"),
    ],
)
def test_cli_bad_options_exit_2(make_export, args, match):
    run_dir, path = make_export("cell", "tanh")
    result = run_verify(path, "--checkpoint", run_dir, *args)
    assert result.exit_code == 2
    assert match in result.output


def test_cli_unreadable_model_exits_2(make_export, tmp_path):
    run_dir, _ = make_export("cell", "tanh")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00" * 16)
    result = run_verify(bad, "--checkpoint", run_dir)
    assert result.exit_code == 2 and "cannot load" in result.output


@pytest.mark.skipif(HAS_CUDA, reason="this test needs a machine without CUDAExecutionProvider")
def test_cli_cuda_asked_for_but_unavailable_fails(make_export, tmp_path):
    run_dir, path = make_export("cell", "tanh")
    report_path = tmp_path / "r.json"
    result = run_verify(
        path, "--checkpoint", run_dir, "--providers", "cuda", "--report", report_path
    )
    assert result.exit_code == 1
    assert "CUDAExecutionProvider is not available" in result.output
    assert "FAILED: provider cuda was asked for but is unavailable" in result.output
    data = json.loads(report_path.read_text())
    assert data["passed"] is False and data["cases"] == []
    (cuda,) = data["providers"]
    assert cuda["status"] == "unavailable" and "onnxruntime-gpu" in cuda["reason"]


@pytest.mark.skipif(HAS_CUDA, reason="this test needs a machine without CUDAExecutionProvider")
def test_cli_all_skips_cuda_with_reason(make_export, tmp_path):
    run_dir, path = make_export("cell", "tanh")
    report_path = tmp_path / "r.json"
    result = run_verify(
        path, "--checkpoint", run_dir, "--providers", "all", "--report", report_path
    )
    assert result.exit_code == 0, result.output
    assert "cuda (CUDAExecutionProvider) SKIPPED: CUDAExecutionProvider is not available" in (
        result.output
    )
    data = json.loads(report_path.read_text())
    assert [(p["name"], p["status"]) for p in data["providers"]] == [
        ("cpu", "ran"),
        ("cuda", "skipped"),
    ]
    assert {c["provider"] for c in data["cases"]} == {"cpu"}


@pytest.mark.skipif(not HAS_CUDA, reason="CUDAExecutionProvider is not available here")
def test_cli_cuda_runs_on_cuda(make_export, tmp_path):
    run_dir, path = make_export("stacked", "relu")
    report_path = tmp_path / "r.json"
    result = run_verify(
        path, "--checkpoint", run_dir, "--providers", "cpu,cuda", "--report", report_path
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report_path.read_text())
    assert [(p["name"], p["status"]) for p in data["providers"]] == [
        ("cpu", "ran"),
        ("cuda", "ran"),
    ]
    assert {c["provider"] for c in data["cases"]} == {"cpu", "cuda"}


# --- the checker must be able to fail -------------------------------------------------


@pytest.mark.parametrize("arch", ["cell", "stacked"])
@pytest.mark.parametrize(
    "fake, failing_families",
    [
        # one recurrent weight + 1e-3: every family sees it
        ("perturbed-weight", {"shapes", "stream", "validation", "step-by-step"}),
        # the same in the embedded step model only: its own cases fail, no others
        ("perturbed-step-model", {"step model"}),
        # hn = h0: any case with a random state or any step past the first
        ("state-passthrough", {"shapes", "mixed-lengths", "step-by-step", "chunks", "stream"}),
        # padding counted as input: only padded batches differ
        ("ignored-lengths", {"mixed-lengths", "validation"}),
        # T fixed to the example's length: other lengths raise or mismatch
        ("fixed-length", {"shapes", "zero-state", "stream"}),
    ],
)
def test_cli_fails_on_broken_models(make_export, tmp_path, arch, fake, failing_families):
    run_dir, path = make_export(arch, "tanh")
    broken = tmp_path / f"{fake}.onnx"
    if fake == "fixed-length":
        fakes.write_fake(path, broken, fakes.fixed_length, EXAMPLE_LENGTH)
    else:
        fakes.write_fake(path, broken, fakes.FAKES[fake])
    report_path = tmp_path / "r.json"
    result = run_verify(broken, "--checkpoint", run_dir, "--report", report_path)
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output
    data = json.loads(report_path.read_text())
    assert data["passed"] is False
    failed = {c["family"] for c in data["cases"] if not c["passed"]}
    assert failing_families <= failed, failed
    if fake == "perturbed-weight":
        # the float64 diagnostics point at the file: onnx is far from the exact result,
        # PyTorch float32 is not
        for case in data["cases"]:
            for o in case["outputs"]:
                if not o["passed"]:
                    assert o["onnx_vs_f64"] > 10 * o["torch_vs_f64"], (case["name"], o)
        assert data["diagnosis"].endswith("the file computes something else")
        assert "diagnosis: " in result.output
    if fake == "perturbed-step-model":
        assert failed == {"step model"}
    if fake == "ignored-lengths":
        # rows of one length are untouched: the fake fails only where padding exists
        assert failed == {"mixed-lengths", "validation"}
    if fake == "fixed-length":
        (own,) = [
            c
            for c in data["cases"]
            if c["family"] == "shapes" and c["name"] == f"B=1 T={EXAMPLE_LENGTH} random h0"
        ]
        assert own["passed"], own  # right at its own length, wrong everywhere else


# --- no silent fallback ---------------------------------------------------------------


def test_placement_lists_the_kernels_per_provider(make_export):
    run_dir, path = make_export("stacked", "tanh")
    report = verify_parity(path, run_dir, stream_steps=SHORT_STREAM)
    (cpu,) = report.providers
    assert list(cpu.placement) == ["CPUExecutionProvider"]
    assert {"LogSoftmax", "Gather"} <= set(cpu.placement["CPUExecutionProvider"])
    assert "kernels on CPUExecutionProvider:" in report.format_table()


class _FakeSession:
    def __init__(self, providers):
        self.providers = providers

    def get_providers(self):
        return self.providers


@pytest.mark.parametrize(
    "running, placement, match",
    [
        # onnxruntime fell back to the CPU when CUDA failed to initialise
        (["CPUExecutionProvider"], None, r"but the session runs on \['CPUExecutionProvider'\]"),
        # CUDA first, but the recurrence ran on the CPU
        (
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            {"CPUExecutionProvider": ["RNN", "Shape"], "CUDAExecutionProvider": ["Gemm"]},
            r"but these kernels ran on the CPU: RNN$",
        ),
    ],
)
@pytest.mark.parametrize("explicit, status", [(True, "unavailable"), (False, "skipped")])
def test_cuda_fallback_is_refused(monkeypatch, running, placement, match, explicit, status):
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(parity, "_session", lambda *args: _FakeSession(running))
    monkeypatch.setattr(parity, "_placement", lambda *args: placement)
    runner, got = parity._open_runner(None, None, "cuda", explicit, None, 1)
    assert runner is None
    assert got.status == status and got.execution_provider == "CUDAExecutionProvider"
    assert re.search(match, got.reason), got.reason


def test_cuda_with_only_bookkeeping_on_cpu_runs(monkeypatch):
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    running = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    placement = {"CPUExecutionProvider": ["Equal", "Shape"], "CUDAExecutionProvider": ["RNN"]}
    monkeypatch.setattr(parity, "_session", lambda *args: _FakeSession(running))
    monkeypatch.setattr(parity, "_placement", lambda *args: placement)
    meta = type("Meta", (), {})()
    meta.states = [type("State", (), {"input": "h0", "output": "hn"})()]
    meta.tokens = meta.lengths = meta.log_probs = type("T", (), {"name": "x"})()
    runner, got = parity._open_runner(None, meta, "cuda", True, None, 1)
    assert runner is not None and got.status == "ran" and got.placement == placement
