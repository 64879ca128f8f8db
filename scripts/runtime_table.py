"""The runtimes table of docs/runtimes.md: every runtime x model x kind of file, through verify.

    python scripts/runtime_table.py [--hidden-size 32] [--stream-steps 1000] [--runtimes R,R]
        [--tflite-python PYTHON312] [--models ARCH:NONLINEARITY,...]

Trains one small model of each arch and nonlinearity on the embedded task (one epoch),
exports its default main graph, its portable main graph (`convert --portable`) and its
step file (`convert --step-only`), and runs `verify --runtime R` on each file under each
installed runtime. A cell is the verdict and the largest |file - PyTorch float32| over
every case and output, or why the file did not load. Prints Markdown.

TFLite (`verify --runtime tflite`) is among the installed runtimes when ai-edge-litert is
installed and onnx2tf is found (rnn_export.parity.tflite.find_onnx2tf; --tflite-python
names the Python 3.12 that has it, as verify's --onnx2tf-python does).
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
from pathlib import Path

MODELS = (
    ("cell", "tanh"),
    ("cell", "relu"),
    ("cell", "identity"),
    ("stacked", "tanh"),
    ("stacked", "relu"),
    ("gru", "tanh"),
    ("lstm", "tanh"),
)
KINDS = ("step", "portable", "default")
KIND_NAMES = {"step": "step file", "portable": "portable main", "default": "default main"}


def installed_runtimes() -> list[str]:
    from rnn_export.parity.backends import check_runtime
    from rnn_export.parity.results import ParityUsageError
    from rnn_export.runtimes import RUNTIME_NAMES

    found = []
    # The JavaScript runtimes have figures of their own (docs/javascript.md).
    for name in (r for r in RUNTIME_NAMES if r not in ("onnxruntime-node", "onnxruntime-web")):
        try:
            check_runtime(name)
        except ParityUsageError:
            continue
        found.append(name)
    if "tflite" in found:
        from rnn_export.parity.tflite import find_onnx2tf

        try:
            find_onnx2tf()
        except ParityUsageError:
            found.remove("tflite")
    return found


def cell(path: Path, run_dir: Path, runtime: str, stream_steps: int, kind: str) -> str:
    """One table cell: 'pass 2.4e-07', 'FAIL 3.5e-01, 2 of 30 cases raise', 'does not run:
    REASON'. For a main-graph file only the main graph's cases count (not its embedded
    step model's, which the step file's column shows)."""
    from rnn_export.parity import ParityError, verify_parity

    try:
        report = verify_parity(path, run_dir, runtime=runtime, stream_steps=stream_steps)
    except ParityError as e:
        report = e.report
    cases = [c for c in report.cases if kind == "step" or c.family != "step model"]
    raised = [c for c in cases if c.error]
    checked = [o.vs_torch for c in cases for o in c.outputs if o.vs_torch is not None]
    if not checked:
        reason = raised[0].error if raised else "no case ran"
        reason = reason.split(": ", 1)[-1]  # the runtime named, the backend's prefix dropped
        if len(reason) > 70:  # the end says what failed; the start, where
            reason = "..." + reason[-67:]
        return "does not run: " + reason.replace("|", "/")
    verdict = "pass" if all(c.passed for c in cases) else "FAIL"
    broken = f", {len(raised)} of {len(cases)} cases raise" if raised else ""
    return f"{verdict} {max(checked):.1e}{broken}"


def table(
    hidden_size: int,
    stream_steps: int,
    runtimes: list[str],
    models: tuple[tuple[str, str], ...] = MODELS,
) -> str:
    from rnn_export.bench import cpu_name
    from rnn_export.data import embedded_spec
    from rnn_export.export import export_onnx
    from rnn_export.parity.backends import check_runtime
    from rnn_export.training import train

    versions = ", ".join(check_runtime(r) for r in runtimes)
    lines = [
        f"Made {datetime.date.today()} by `python scripts/runtime_table.py --hidden-size "
        f"{hidden_size} --stream-steps {stream_steps}` on {cpu_name()} ({versions}). A cell "
        "is verify's verdict and the largest |file - PyTorch float32| over every case and "
        "output; OpenVINO runs at f32.",
        "",
        "| runtime | model | " + " | ".join(KIND_NAMES[k] for k in KINDS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in KINDS) + " |",
    ]
    with tempfile.TemporaryDirectory(prefix="rnn-export-runtimes-") as tmp:
        files = {}
        for arch, nonlinearity in models:
            run_dir = Path(tmp) / f"{arch}-{nonlinearity}"
            train(
                arch,
                run_dir,
                data=embedded_spec(seed=0, size=2000),
                epochs=1,
                hidden_size=hidden_size,
                nonlinearity=nonlinearity,
                seed=0,
                progress=False,
            )
            paths = {k: export_onnx(run_dir, run_dir / f"{k}.onnx", graph=k) for k in KINDS}
            files[arch, nonlinearity] = run_dir, paths
        for runtime in runtimes:
            for (arch, nonlinearity), (run_dir, paths) in files.items():
                cells = [cell(paths[k], run_dir, runtime, stream_steps, k) for k in KINDS]
                lines.append(f"| {runtime} | {arch} {nonlinearity} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden-size", type=int, default=32, help="H of every model")
    parser.add_argument("--stream-steps", type=int, default=1000, help="verify's long stream")
    parser.add_argument("--runtimes", default=None, help="comma-separated (default: installed)")
    parser.add_argument(
        "--tflite-python", default=None, help="the Python 3.12 whose onnx2tf converts for TFLite"
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated arch:nonlinearity, e.g. gru:tanh,lstm:tanh (default: all)",
    )
    args = parser.parse_args()
    models = (
        MODELS
        if args.models is None
        else tuple(tuple(m.split(":", 1)) for m in args.models.split(","))
    )
    if args.tflite_python is not None:
        os.environ["RNN_EXPORT_ONNX2TF_PYTHON"] = args.tflite_python
    runtimes = installed_runtimes() if args.runtimes is None else args.runtimes.split(",")
    print(table(args.hidden_size, args.stream_steps, runtimes, models), end="")


if __name__ == "__main__":
    main()
