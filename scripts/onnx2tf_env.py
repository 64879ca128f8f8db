"""Make the Python 3.12 environment whose onnx2tf `verify --runtime tflite` converts with.

    python scripts/onnx2tf_env.py [--python PYTHON3.12] [--dir DIR]

onnx2tf 2.6 needs Python 3.12 and pins its own onnx, onnxruntime and numpy, so it cannot
share this package's environment. This makes a venv at rnn_export.parity.tflite's
ONNX2TF_ENV (~/.cache/rnn-export/onnx2tf, where verify looks) with onnx2tf ONNX2TF_VERSION,
or says why not: with no Python 3.12 on the machine, or an install that fails, it prints
the reason and exits 0, and the TFLite tests skip naming the missing onnx2tf. An
environment that already imports that onnx2tf is kept.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rnn_export.parity.results import ParityUsageError
from rnn_export.parity.tflite import ONNX2TF_ENV, find_onnx2tf
from rnn_export.parity.tflite import ONNX2TF_VERSION as VERSION


def find_python312() -> str | None:
    """A Python 3.12 that runs (a pyenv shim on PATH may name one that is not selected)."""
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.12*/bin/python3.12")))
    candidates.append(shutil.which("python3.12"))
    for candidate in filter(None, candidates):
        version = [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"]
        if subprocess.run(version, capture_output=True).returncode == 0:
            return candidate
    return None


def _onnx2tf_version(python: Path) -> str | None:
    """onnx2tf's version under python, or None where it does not import."""
    try:
        return find_onnx2tf(python)[1]
    except ParityUsageError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=None, help="a Python 3.12 (default: found)")
    parser.add_argument("--dir", type=Path, default=ONNX2TF_ENV, help="the venv")
    args = parser.parse_args()
    env_python = args.dir / "bin" / "python"
    if env_python.is_file() and _onnx2tf_version(env_python) == VERSION:
        print(f"onnx2tf {VERSION} is ready in {args.dir}")
        return 0
    python = args.python or find_python312()
    if python is None:
        print(
            "no Python 3.12 found (onnx2tf needs it): verify --runtime tflite and its tests "
            "will skip",
            file=sys.stderr,
        )
        return 0
    started = time.perf_counter()
    print(f"making {args.dir} with {python} and onnx2tf {VERSION} ...", flush=True)
    shutil.rmtree(args.dir, ignore_errors=True)
    try:
        subprocess.run([python, "-m", "venv", str(args.dir)], check=True)
        pip = [str(env_python), "-m", "pip", "install", "-q", f"onnx2tf=={VERSION}"]
        subprocess.run(pip, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        shutil.rmtree(args.dir, ignore_errors=True)  # no half-made env for verify to find
        # Exit 0: the TFLite tests then skip, naming the missing onnx2tf.
        print(
            f"could not make the onnx2tf environment ({e}): verify --runtime tflite and "
            "its tests will skip",
            file=sys.stderr,
        )
        return 0
    print(f"onnx2tf {VERSION} ready in {args.dir} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
