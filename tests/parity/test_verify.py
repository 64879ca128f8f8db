"""verify_parity and `rnn-export verify`: figures, the report, exit codes, no silent fallback."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from rnn_export.checkpoint import load_checkpoint
from rnn_export.cli import main
from rnn_export.data import load_splits
from rnn_export.parity import (
    BATCH_SIZES,
    EXAMPLE_LENGTH,
    HORIZON,
    LOCAL,
    LONG_LENGTH,
    REPORT_SCHEMA,
    STREAM_STEPS,
    ParityError,
    ParityUsageError,
    Tolerance,
    parse_providers,
    runners,
    verify_parity,
)

pytestmark = pytest.mark.parity

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
FAMILIES = {
    LOCAL,
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


# --- verify_parity on good models -----------------------------------------------------


@pytest.mark.parametrize("arch, nonlinearity", [("cell", "tanh"), ("stacked", "tanh")])
def test_default_size_model_passes_every_case(make_export, arch, nonlinearity):
    """The full default verify on an H=128 model: every family, every path, 10,000 steps."""
    run_dir, path = make_export(arch, nonlinearity, hidden_size=128)
    report = verify_parity(path, run_dir)
    assert report.passed
    assert {c.family for c in report.cases} == FAMILIES
    shapes = [c for c in report.cases if c.family == "shapes"]
    assert {c.batch_size for c in shapes} == set(BATCH_SIZES)
    assert {1, EXAMPLE_LENGTH, 16 * EXAMPLE_LENGTH, LONG_LENGTH} <= {c.length for c in shapes}
    # The local checks: every path of the main graph, and the step model one token a call.
    local = [c for c in report.cases if c.family == LOCAL]
    assert [c.name.split(" from ")[0] for c in local] == [
        f"1 token per call, {HORIZON} calls",
        f"B=1 T={HORIZON}, lengths 1..{HORIZON}",
        f"B={local[0].batch_size} T={HORIZON}, mixed lengths",
    ]
    sources = report.model_info["start_states"]
    assert set(sources) == {"validation", "stream", "random", "sparse", "zero"}
    assert local[0].batch_size == sum(sources.values())
    step_local = [c for c in report.cases if c.family == "step model" and LOCAL in c.name]
    assert len(step_local) == 1 and step_local[0].passed
    for case in report.cases:
        assert [o.output for o in case.outputs] == ["log_probs", "hn"]
        for o in case.outputs:
            assert o.ratio <= 1.0 and o.torch_ratio <= 1.0, (case.name, o)
            assert o.vs_torch is not None and o.torch_vs_f64 is not None
    # A correct file uses a fraction of its allowance where the allowance is tight.
    assert max(c.ratio for c in local) < 0.6
    validation = [c for c in report.cases if c.family == "validation"]
    _, val = load_splits(load_checkpoint(run_dir).data)
    assert sum(c.batch_size for c in validation) == len(val)
    assert all(c.agreement == 1.0 and c.clear_disagreements == 0 for c in validation)
    (stream,) = [c for c in report.cases if c.family == "stream"]
    assert stream.length == STREAM_STEPS >= 10_000
    drift, step_drift = report.drift
    assert (drift.runner, step_drift.runner) == ("cpu", "cpu, step model")
    for curve in (drift, step_drift):
        assert curve.steps == STREAM_STEPS and curve.agreement == 1.0
        assert len(curve.windows["hn"]["vs_f64"]) == math.ceil(STREAM_STEPS / curve.window) >= 10
        assert max(curve.windows["hn"]["vs_f64"]) == pytest.approx(stream.outputs[1].vs_f64)


@pytest.mark.parametrize("arch", ["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def test_gated_model_checks_every_state(make_export, arch):
    """lstm (L=2; gru under --run-slow): every family, every state output (hn, cn) in every
    case and in the drift curves, the step model's per-layer states."""
    run_dir, path = make_export(arch, "tanh")
    report = verify_parity(path, run_dir, stream_steps=500)
    assert report.passed, report.summary_line()
    assert {c.family for c in report.cases} == FAMILIES
    outputs = ["log_probs", "hn"] + (["cn"] if arch == "lstm" else [])
    assert report.model_info["states"] == [o.replace("n", "0") for o in outputs[1:]]
    for case in report.cases:
        assert [o.output for o in case.outputs] == outputs, case.name
        for o in case.outputs:
            assert o.ratio <= 1.0 and o.torch_ratio <= 1.0, (case.name, o)
    local = [c for c in report.cases if LOCAL in c.name or c.family == LOCAL]
    assert len(local) == 4  # three paths of the main graph, and the step model
    # the allowance is used where it is tight: for every state, not only h
    for i in range(1, len(outputs)):
        assert max(c.outputs[i].ratio for c in local) > 0.01
    for curve in report.drift:
        assert set(curve.windows) == set(outputs)


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
    assert [d.runner for d in report.drift] == ["cpu"]


def test_accepts_a_loaded_checkpoint(make_export):
    run_dir, path = make_export("cell", "relu")
    report = verify_parity(path, load_checkpoint(run_dir), stream_steps=SHORT_STREAM)
    assert report.passed and report.checkpoint == str(run_dir)


def test_a_plain_tolerance_adds_to_the_allowance(make_export):
    """--atol 0: the smallest passing atol is reported; at that atol the run passes."""
    run_dir, path = make_export("stacked", "relu")
    with pytest.raises(ParityError) as info:
        verify_parity(path, run_dir, tolerance=Tolerance(0.0, 0.0), stream_steps=SHORT_STREAM)
    report = info.value.report
    assert all(o.within_allowance for c in report.cases for o in c.outputs)
    worst = max(o.min_atol for c in report.cases for o in c.outputs)
    assert 0.0 < worst < 1e-5
    assert worst == max(o.vs_torch for c in report.cases for o in c.outputs)  # rtol 0
    again = verify_parity(path, run_dir, tolerance=Tolerance(worst, 0.0), stream_steps=SHORT_STREAM)
    assert again.passed and "|file - torch| <=" in again.rule()


def test_report_json_table_and_plot(make_export, tmp_path):
    run_dir, path = make_export("cell", "identity")
    report = verify_parity(path, run_dir, stream_steps=SHORT_STREAM)
    data = json.loads(report.to_json())
    assert data["schema_version"] == REPORT_SCHEMA == 2
    assert data["passed"] is True and data["tolerance"] is None
    assert data["summary_line"] == report.summary_line()
    assert data["deciding"]["name"] == report.deciding().name
    assert len(data["cases"]) == len(report.cases)
    first = data["cases"][0]["outputs"][0]
    assert set(first) == {
        "output",
        "passed",
        "ratio",
        "error",
        "allowance",
        "vs_f64",
        "vs_torch",
        "torch_vs_f64",
        "torch_ratio",
        "min_atol",
        "within_tolerance",
    }
    assert first["ratio"] == report.cases[0].outputs[0].ratio
    assert {row["family"] for row in data["families"]} == FAMILIES
    assert data["rounding"]["unit_roundoff"] == 2.0**-24
    assert [d["steps"] for d in data["drift"]] == [SHORT_STREAM, SHORT_STREAM]
    table = report.format_table()
    lines = table.splitlines()
    assert lines[0] == report.summary_line() == lines[-1]
    assert "allowance" in table and "decision agreement with float64 100.00%" in table
    png = report.plot_drift(tmp_path / "drift.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_line_names_the_deciding_check_and_its_margin(make_export):
    run_dir, path = make_export("stacked", "tanh")
    report = verify_parity(path, run_dir, stream_steps=SHORT_STREAM)
    case = report.deciding()
    assert case.ratio == max(c.ratio for c in report.cases)
    line = report.summary_line()
    o = case.worst
    assert line.startswith(f"PASS: worst cpu/{case.family}: {case.name}, {o.output} error ")
    assert f"is {o.ratio:.3g} of its allowance" in line
    assert f"({len(report.cases)} checks passed;" in line


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
        ("garbage-model", r"cannot load it as a model: not a valid ONNX protobuf"),
        ("missing-run", r"cannot load the checkpoint: .* not found"),
        ("negative-atol", r"atol must be a finite number >= 0; got -1"),
        ("nan-atol", r"atol must be a finite number >= 0; got nan"),
        ("zero-steps", r"stream_steps must be an integer >= 1; got 0"),
        (
            "swapped",
            r"is a folder and .*model-opsetdefault\.onnx a file: the arguments look swapped",
        ),
        ("folder-model", r"expected an \.onnx file made by `rnn-export convert`; it is a folder"),
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
    elif bad == "zero-steps":
        kwargs["stream_steps"] = 0
    elif bad == "swapped":
        path, run_dir = run_dir, path
    elif bad == "folder-model":
        path = tmp_path
    else:
        kwargs["tolerance"] = Tolerance(-1.0 if bad == "negative-atol" else math.nan, 1e-4)
    with pytest.raises(ParityUsageError, match=match):
        verify_parity(path, run_dir, **kwargs)


def test_a_file_with_external_data_is_refused_as_the_runtime_refuses_it(make_export, tmp_path):
    """onnxruntime would load the weights from the sidecar next to the path; the runtime
    refuses the file, so verify judges those bytes and refuses it with the same message."""
    import onnx

    from rnn_runtime import ModelFileError, open_model

    run_dir, path = make_export("cell", "tanh")
    sidecar = tmp_path / "sidecar.onnx"
    onnx.save_model(
        onnx.load(str(path)),
        str(sidecar),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="sidecar.weights",
        size_threshold=0,
    )
    assert (tmp_path / "sidecar.weights").stat().st_size > 0
    with pytest.raises(ModelFileError, match=r"keeps its data in an external file") as runtime:
        open_model(sidecar)
    with pytest.raises(ParityUsageError) as verify:
        verify_parity(sidecar, run_dir, stream_steps=SHORT_STREAM)
    assert str(verify.value) == str(runtime.value)
    result = run_verify(sidecar, "--checkpoint", run_dir)
    assert result.exit_code == 2
    assert result.stderr == f"error: {runtime.value}\n"


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


# --- the CLI --------------------------------------------------------------------------


def test_cli_passes_with_report_and_plot(make_export, tmp_path):
    run_dir, path = make_export("stacked", "tanh")
    report_path, plot_path = tmp_path / "r.json", tmp_path / "drift.png"
    result = run_verify(path, "--checkpoint", run_dir, "--report", report_path, "--plot", plot_path)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("PASS: worst cpu/")
    assert "drift (cpu)" in result.output
    data = json.loads(report_path.read_text())
    assert data["passed"] is True
    (cpu,) = data["providers"]
    assert cpu["name"] == "cpu" and cpu["execution_provider"] == "CPUExecutionProvider"
    assert cpu["status"] == "ran" and cpu["reason"] is None
    assert list(cpu["placement"]) == ["CPUExecutionProvider"]
    assert all(o["passed"] for case in data["cases"] for o in case["outputs"])
    assert data["drift"][0]["steps"] == STREAM_STEPS
    assert plot_path.read_bytes()[:4] == b"\x89PNG"


def test_cli_quiet_prints_only_the_summary_line(make_export, tmp_path):
    run_dir, path = make_export("cell", "tanh")
    result = run_verify(path, "--checkpoint", run_dir, "--quiet", "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    assert line == json.loads((tmp_path / "r.json").read_text())["summary_line"]


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
        (["--atol", "nan"], "expected a finite number >= 0; got nan"),
        (["--rtol", "inf"], "expected a finite number >= 0; got inf"),
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
    assert result.output.startswith("FAIL: no check ran (0 checks passed; provider cuda asked")
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
    monkeypatch.setattr(runners, "open_session", lambda *args, **kw: _FakeSession(running))
    monkeypatch.setattr(runners, "kernel_placement", lambda *args: placement)
    runner, got = runners.open_main_graph(None, None, "cuda", explicit, None, 1)
    assert runner is None
    assert got.status == status and got.execution_provider == "CUDAExecutionProvider"
    assert re.search(match, got.reason), got.reason


def test_cuda_with_only_bookkeeping_on_cpu_runs(monkeypatch):
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    running = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    placement = {"CPUExecutionProvider": ["Equal", "Shape"], "CUDAExecutionProvider": ["RNN"]}
    monkeypatch.setattr(runners, "open_session", lambda *args, **kw: _FakeSession(running))
    monkeypatch.setattr(runners, "kernel_placement", lambda *args: placement)
    meta = type("Meta", (), {})()
    meta.states = [type("State", (), {"input": "h0", "output": "hn"})()]
    meta.tokens = meta.lengths = meta.log_probs = type("T", (), {"name": "x"})()
    runner, got = runners.open_main_graph(None, meta, "cuda", True, None, 1)
    assert runner is not None and got.status == "ran" and got.placement == placement


def test_whole_runs_are_held_to_the_allowance_carried_along_them(make_export):
    """A long run's allowance grows with the run; it is never below the one-step one."""
    run_dir, path = make_export("cell", "tanh")
    report = verify_parity(path, run_dir, stream_steps=SHORT_STREAM)
    by_name = {c.name: c for c in report.cases if c.family == "shapes"}
    one = by_name["B=8 T=1 random h0"].outputs[1]
    long = by_name[f"B=8 T={LONG_LENGTH} random h0"].outputs[1]
    assert long.passed and one.passed
    assert np.isfinite(long.allowance) and long.allowance >= one.allowance


@pytest.mark.parametrize("option", ["--report", "--plot"])
@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_cli_refuses_an_output_path_that_is_not_a_regular_file(make_export, tmp_path, option, kind):
    """Before any work, and leaving the path as it was."""
    import os

    run_dir, path = make_export("cell", "tanh")
    if kind == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)
        match = "is a FIFO (named pipe)"
    elif kind == "device":
        target, match = "/dev/null", "is a character device"
    else:
        target, match = tmp_path, "is a folder"
    result = run_verify(path, "--checkpoint", run_dir, option, target)
    assert result.exit_code == 2, result.output
    assert match in result.output and len(result.output.splitlines()) == 1
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_cli_report_is_written_whole_or_not_at_all(make_export, tmp_path, monkeypatch):
    """A write that fails (a full disk) leaves the earlier report and names the path."""
    from rnn_export import atomic

    run_dir, path = make_export("cell", "tanh")
    report = tmp_path / "r.json"
    report.write_text("earlier\n")

    def full_disk(tmp, data):
        raise OSError(28, "No space left on device", str(tmp))

    monkeypatch.setattr(atomic, "_write_synced", full_disk)
    result = run_verify(path, "--checkpoint", run_dir, "--report", report)
    assert result.exit_code == 2
    assert f"error: {report}: cannot write: No space left on device" in result.output
    assert report.read_text() == "earlier\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
