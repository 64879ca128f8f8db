"""verify --runtime onnxruntime-node and onnxruntime-web: the same verdict with the file
run by the JavaScript runtime's platforms (rnn_export.parity.js).

They skip with the reason where node, the npm packages (python scripts/js_env.py) or, for
the web, Debian's Chromium are missing. Streams are short (SHORT_STREAM steps): every call
crosses a process (and for the web a browser page), and the long stream is the JavaScript
suite's (runtime/js/test/parity.test.js, 10,000 steps).
"""

from __future__ import annotations

import fakes
import pytest
from click.testing import CliRunner

from rnn_export.cli import main
from rnn_export.export import export_onnx
from rnn_export.parity import ParityError, verify_parity
from rnn_export.parity.backends import check_runtime
from rnn_export.parity.results import ParityUsageError

pytestmark = pytest.mark.parity

SHORT_STREAM = 300
MARGIN = 10.0  # a broken file fails by at least this many times its allowance (test_fakes)


def _runtime_or_skip(name: str) -> str:
    try:
        check_runtime(name)
    except ParityUsageError as e:
        pytest.skip(str(e))
    return name


def _verdict(path, run_dir, runtime):
    try:
        return verify_parity(path, run_dir, runtime=runtime, stream_steps=SHORT_STREAM)
    except ParityError as e:
        return e.report


@pytest.fixture(scope="module")
def cell(tiny_run_dir, tmp_path_factory):
    run_dir = tiny_run_dir("cell")
    return run_dir, export_onnx(run_dir, tmp_path_factory.mktemp("js") / "cell.onnx")


@pytest.mark.parametrize("runtime", ["onnxruntime-node", "onnxruntime-web"])
def test_a_trained_export_passes(cell, runtime):
    _runtime_or_skip(runtime)
    report = _verdict(cell[1], cell[0], runtime)
    assert report.passed, report.summary_line()
    assert [p.name for p in report.providers] == [runtime]
    assert report.deciding().ratio <= 1


@pytest.mark.parametrize(
    "runtime, name",
    [
        ("onnxruntime-node", "perturbed-bias"),
        ("onnxruntime-node", "state-passthrough"),
        ("onnxruntime-web", "perturbed-bias"),
    ],
)
def test_broken_files_fail_by_a_wide_margin(cell, tmp_path, runtime, name):
    _runtime_or_skip(runtime)
    broken = fakes.write_fake(cell[1], tmp_path / f"{name}.onnx", fakes.broken_for("cell")[name])
    report = _verdict(broken, cell[0], runtime)
    assert not report.passed
    assert report.deciding().ratio >= MARGIN, report.summary_line()


def test_runtime_is_a_choice():
    result = CliRunner().invoke(main, ["verify", "m.onnx", "--checkpoint", "r", "--runtime", "v8"])
    assert result.exit_code == 2
    assert "'v8' is not one of" in result.output and "onnxruntime-node" in result.output
