"""The JavaScript runtime (runtime/js) under Node's test runner, on models made here.

The Python side makes the models and what the Python runtime makes of them
(tests/js_fixtures.py, on the session's tiny RUN_DIRs); `node --test` then
checks the JavaScript runtime against them, and the saved streams it writes back are
restored here. The browser test drives the demo page in Debian's Chromium. Each skips
with the reason where node, the npm packages (`python scripts/js_env.py`) or Chromium
are missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rnn_runtime import StreamModel

JS_DIR = Path(__file__).resolve().parents[1] / "runtime" / "js"
ARCHS = ("cell", "stacked", "gru", "lstm")
CHROMIUM = Path("/usr/bin/chromium")


def _node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH (the JavaScript runtime's tests need Node 20+)")
    if not (JS_DIR / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("runtime/js's npm packages are not installed: run python scripts/js_env.py")
    return node


@pytest.fixture(scope="module")
def js_fixtures(tiny_run_dir, tmp_path_factory) -> Path:
    _node_or_skip()
    spec = importlib.util.spec_from_file_location(
        "js_fixtures", Path(__file__).with_name("js_fixtures.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("js-fixtures")
    module.main([str(out), *(f"{arch}={tiny_run_dir(arch)}" for arch in ARCHS)])
    return out


def _node_test(files: list[str], env: dict) -> None:
    node = _node_or_skip()
    run = subprocess.run(
        [node, "--test", "--test-concurrency=1", *files],
        cwd=JS_DIR,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]


def test_node_suite(js_fixtures, tmp_path):
    """Parity over 10,000 steps, save/restore, errors, pools and predict, in Node; the
    streams Node continued from Python's saves restore here and save to the same bytes."""
    files = sorted(str(p.relative_to(JS_DIR)) for p in (JS_DIR / "test").glob("*.test.js"))
    files = [f for f in files if not f.endswith("browser.test.js")]
    _node_test(
        files, {"RNN_RUNTIME_JS_FIXTURES": str(js_fixtures), "RNN_RUNTIME_JS_OUT": str(tmp_path)}
    )
    for arch in ARCHS:
        saved = (tmp_path / f"{arch}.js.bin").read_bytes()
        stream = StreamModel(js_fixtures / f"{arch}.onnx").stream()
        stream.restore(saved)
        assert stream.save() == saved


def test_browser_demo(js_fixtures, tmp_path):
    """The demo page in headless Chromium: a model opened, a text typed, the label and
    probabilities read from the page equal the Python runtime's."""
    if not CHROMIUM.is_file():
        pytest.skip(
            f"no Chromium at {CHROMIUM} (Debian's chromium: python scripts/js_env.py as root)"
        )
    _node_test(
        ["test/browser.test.js"],
        {"RNN_RUNTIME_JS_FIXTURES": str(js_fixtures), "RNN_RUNTIME_JS_BROWSER": "required"},
    )
