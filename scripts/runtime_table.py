"""The runtimes table of docs/runtimes.md: every runtime x model x kind of file, through verify.

    python scripts/runtime_table.py [--hidden-size 32] [--stream-steps 1000] [--runtimes R,R]
        [--tflite-python PYTHON312] [--models ARCH:NONLINEARITY,...]

Trains one small model of each arch and nonlinearity on the embedded task (one epoch),
exports its default main graph, its portable main graph (`convert --portable`) and its
step file (`convert --step-only`), and runs `verify --runtime R` on each file under each
installed runtime. A cell is the verdict and the largest |file - PyTorch float32| over
every case and output, or why the file did not load. Prints Markdown.

With --tflite-python (an interpreter with onnx2tf and ai-edge-litert: onnx2tf 2.6 needs
Python 3.12, where this package's torch pin may not install), each step file also runs
on TFLite through scripts/tflite_step.py: TFLITE_STEPS steps from a random state, one row
per token id; verify cannot run there, so its cell holds the project's plain parity
tolerance (|file - PyTorch| <= 1e-5 + 1e-4 |PyTorch|) instead of the allowance.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import tempfile
from pathlib import Path

import numpy as np

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
TFLITE_STEPS = 100
ATOL, RTOL = 1e-5, 1e-4
KIND_NAMES = {"step": "step file", "portable": "portable main", "default": "default main"}


def installed_runtimes() -> list[str]:
    from rnn_export.parity.backends import RUNTIMES

    return [r for r, (module, _) in RUNTIMES.items() if importlib.util.find_spec(module)]


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


def tflite_cell(run_dir: Path, step: Path, python: str) -> str:
    """The step file run on TFLite for TFLITE_STEPS steps against PyTorch (see the module
    docstring): 'within 1e-5 + 1e-4 |x|: 2.4e-07' or 'FAIL ...' or why it did not run."""
    import subprocess

    import torch

    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.models import model_state
    from rnn_runtime.model import load_metadata

    ckpt, meta = load_checkpoint(run_dir), load_metadata(step)
    rng = np.random.default_rng(0)
    V = ckpt.config.vocab_size
    tokens = np.stack([np.roll(np.arange(V), t) for t in range(TFLITE_STEPS)])  # (T, V)
    # One state per kind (h, and c for the LSTM); the step model takes each layer's, kind
    # by kind (h_0 .. h_{L-1}, then c_0 ..).
    states = [
        rng.uniform(-0.9, 0.9, ckpt.config.state_shape(V)).astype(np.float32)
        for _ in ckpt.config.state_names
    ]
    layers = [v for state in states for v in ([state] if state.ndim == 2 else list(state))]
    feeds = {i: x for (i, _), x in zip(meta.step.states, layers, strict=True)}
    with tempfile.TemporaryDirectory(prefix="rnn-export-tflite-") as tmp:
        feeds_path, out_path = Path(tmp) / "feeds.npz", Path(tmp) / "out.npz"
        np.savez(feeds_path, tokens=tokens, pairs=np.array(meta.step.states), **feeds)
        script = Path(__file__).with_name("tflite_step.py")
        done = subprocess.run(
            [python, str(script), str(step), str(feeds_path), str(out_path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return "does not run: " + last[-67:].replace("|", "/")
        got = dict(np.load(out_path))
    with torch.inference_mode():
        torch_state = model_state([torch.from_numpy(v) for v in states])
        lp, new = ckpt.model(torch.from_numpy(tokens.T.copy()), torch_state)
    new = new if isinstance(new, tuple) else (new,)
    new_layers = [v for n in new for v in ([n.numpy()] if n.ndim == 2 else list(n.numpy()))]
    want = {meta.step.log_probs: lp.numpy()}
    want |= {o: v for (_, o), v in zip(meta.step.states, new_layers, strict=True)}
    worst, ok = 0.0, True
    for name, w in want.items():
        worst = max(worst, float(np.abs(got[name] - w).max()))
        ok &= bool(np.all(np.abs(got[name] - w) <= ATOL + RTOL * np.abs(w)))
    return f"{'within' if ok else 'FAIL'} 1e-5 + 1e-4 /x/: {worst:.1e}"


def table(
    hidden_size: int,
    stream_steps: int,
    runtimes: list[str],
    tflite_python: str | None = None,
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
        if tflite_python is not None:
            for (arch, nonlinearity), (run_dir, paths) in files.items():
                step = tflite_cell(run_dir, paths["step"], tflite_python)
                lines.append(
                    f"| tflite (onnx2tf) | {arch} {nonlinearity} | {step} | not run | not run |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden-size", type=int, default=32, help="H of every model")
    parser.add_argument("--stream-steps", type=int, default=1000, help="verify's long stream")
    parser.add_argument("--runtimes", default=None, help="comma-separated (default: installed)")
    parser.add_argument(
        "--tflite-python", default=None, help="a Python with onnx2tf and ai-edge-litert"
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
    runtimes = installed_runtimes() if args.runtimes is None else args.runtimes.split(",")
    runtimes = [r for r in runtimes if r]  # --runtimes "": the TFLite rows alone
    print(table(args.hidden_size, args.stream_steps, runtimes, args.tflite_python, models), end="")


if __name__ == "__main__":
    main()
