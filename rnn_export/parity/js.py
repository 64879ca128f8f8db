"""The JavaScript runtime's platforms behind verify's verdict: onnxruntime-node, and
onnxruntime-web (WASM, one thread) in Debian's headless Chromium.

Each backend starts runtime/js/bin/ort-server.mjs (`node`, the package's npm packages
installed by `python scripts/js_env.py`; Chromium for the web) and sends it the model's
bytes and every call as JSON lines: the file goes through rnn-runtime first (its contract
read and validated in JavaScript, the step model's sha256 checked), then each graph runs
in that platform's onnxruntime, and verify's runners and cases hold its outputs to the
float32 allowance as on any other runtime.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import weakref
from pathlib import Path

import numpy as np

from rnn_export.parity.backends import Backend
from rnn_export.parity.compare import CaseFailure
from rnn_export.parity.results import ParityUsageError

JS_DIR = Path(__file__).resolve().parents[2] / "runtime" / "js"
CHROMIUM = Path("/usr/bin/chromium")
_DTYPES = {"float32": np.float32, "int64": np.int64, "int32": np.int32, "float64": np.float64}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise ParityUsageError("node is not on PATH: the JavaScript runtime needs Node 20+")
    return node


def _package_version(package: str) -> str:
    path = JS_DIR / "node_modules" / package / "package.json"
    if not path.is_file():
        raise ParityUsageError(
            f"{package} is not installed in {JS_DIR}: run python scripts/js_env.py"
        )
    return json.loads(path.read_text(encoding="utf-8"))["version"]


class OrtServer(Backend):
    """A session in bin/ort-server.mjs on `platform`; run() sends the feeds as JSON."""

    platform = ""
    package = ""

    @classmethod
    def version(cls) -> str:
        node = _node()
        node_version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return f"{cls.name} {_package_version(cls.package)} (node {node_version})"

    def __init__(self, model_bytes: bytes, threads: int = 1, precision: str = "f32"):
        server = [_node(), str(JS_DIR / "bin" / "ort-server.mjs"), self.platform]
        self._process = subprocess.Popen(
            server, cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        weakref.finalize(self, _stop, self._process)
        self._call({"op": "open", "model": base64.b64encode(model_bytes).decode("ascii")})

    def _call(self, request: dict) -> dict:
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except OSError as e:
            raise CaseFailure(f"{self.name}: the session server is gone ({e})") from None
        if not line:
            raise CaseFailure(f"{self.name}: the session server exited without an answer")
        reply = json.loads(line)
        if "error" in reply:
            raise CaseFailure(f"{self.name}: {reply['error']}")
        return reply

    def _run(self, feeds):
        wire = [
            {
                "name": name,
                "dtype": str(np.asarray(x).dtype),
                "shape": list(np.shape(x)),
                "data": base64.b64encode(np.ascontiguousarray(x).tobytes()).decode("ascii"),
            }
            for name, x in feeds.items()
        ]
        reply = self._call({"op": "run", "feeds": wire})
        return {
            o["name"]: np.frombuffer(base64.b64decode(o["data"]), dtype=_DTYPES[o["dtype"]])
            .reshape(o["shape"])
            .copy()
            for o in reply["outputs"]
        }


def _stop(process: subprocess.Popen) -> None:
    """End a session server: it exits when its stdin closes."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class OrtNode(OrtServer):
    name = "onnxruntime-node"
    platform = "node"
    package = "onnxruntime-node"


class OrtWeb(OrtServer):
    name = "onnxruntime-web"
    platform = "web"
    package = "onnxruntime-web"

    @classmethod
    def version(cls) -> str:
        if not CHROMIUM.is_file():
            raise ParityUsageError(
                f"no Chromium at {CHROMIUM}: install Debian's chromium (python "
                "scripts/js_env.py as root)"
            )
        _package_version("playwright-core")
        return f"{super().version()}, Chromium WASM"
