"""The main job, end to end on the embedded task: train -> convert -> verify -> stream.

`rnn-export demo` runs it. It needs no data and no download, and leaves under OUT
one RUN_DIR, one .onnx file, one parity report and one drift plot per arch, plus
summary.json with every figure it printed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

ARCHS = ("cell", "stacked")


def run_demo(
    out: str | Path,
    archs: tuple[str, ...] = ARCHS,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Train, export, verify and stream each arch on the embedded task.

    Args:
        out: folder for everything the job writes (created if missing).
        archs: which of "cell" and "stacked" to run.
        epochs: training epochs; None means the training default.
        seed: seeds the data, the weights and the parity cases.
        progress: show progress bars while training.
        echo: where the step-by-step account goes.

    Returns:
        The summary (also written to out/summary.json): per arch, the validation
        accuracy, the parity figures, the streamed accuracy and each stage's seconds.

    Raises:
        rnn_export.parity.ParityError: the exported file does not match PyTorch.
    """
    from rnn_export.data import load_splits
    from rnn_export.export import export_onnx
    from rnn_export.parity import verify_parity
    from rnn_export.training import DEFAULT_EPOCHS, train
    from rnn_runtime import open_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"out": str(out), "archs": {}}
    for arch in archs:
        seconds = {}
        clock = time.perf_counter()

        echo(f"[{arch}] train on the embedded task -> {out / arch}")
        ckpt = train(
            arch, out / arch, epochs=epochs or DEFAULT_EPOCHS, seed=seed, progress=progress
        )
        seconds["train"] = _lap(clock)
        echo(f"[{arch}] val accuracy {ckpt.metrics['val_accuracy']:.4f}")

        clock = time.perf_counter()
        onnx_path = export_onnx(ckpt, out / f"{arch}.onnx")
        seconds["convert"] = _lap(clock)
        echo(f"[{arch}] convert -> {onnx_path} ({onnx_path.stat().st_size:,} bytes)")

        clock = time.perf_counter()
        report = verify_parity(onnx_path, ckpt, providers="cpu", seed=seed)
        (out / f"{arch}.parity.json").write_text(report.to_json() + "\n", encoding="utf-8")
        report.plot_drift(out / f"{arch}.drift.png")
        seconds["verify"] = _lap(clock)
        outputs = [o for case in report.cases for o in case.outputs]
        worst = max((o.max_abs for o in outputs), default=0.0)
        widest = max((o.eff_atol or o.atol for o in outputs), default=report.atol)
        echo(
            f"[{arch}] verify: {len(report.cases)} cases passed on CPU, worst abs error "
            f"{worst:.2e}; rule: {report.rule()} (largest eff_atol {widest:.2e})"
        )

        clock = time.perf_counter()
        streamed = _stream_validation(open_model(onnx_path), load_splits(ckpt.data)[1], echo, arch)
        seconds["stream"] = _lap(clock)

        summary["archs"][arch] = {
            "run_dir": str(out / arch),
            "onnx": str(onnx_path),
            "val_accuracy": ckpt.metrics["val_accuracy"],
            "parity_cases": len(report.cases),
            "parity_worst_abs_error": worst,
            "parity_largest_eff_atol": widest,
            "streamed_accuracy": streamed,
            "seconds": seconds,
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    echo(f"summary -> {out / 'summary.json'}")
    return summary


def _stream_validation(model, val: list, echo, arch: str) -> float:
    """Stream every validation text one character at a time; show the first one."""
    stream = model.stream()
    labels = model.metadata.labels
    text, label = val[0]
    trace = []
    for char in text:
        prediction = stream.step(char)
        trace.append(f"{char}:{prediction.label}")
    echo(f"[{arch}] stream {text!r} (label {labels[label]}), prediction after each char:")
    echo("    " + " ".join(trace))
    correct = 0
    for text, label in val:
        stream.reset()
        for char in text:
            prediction = stream.step(char)
        correct += prediction.label_id == label
    accuracy = correct / len(val)
    echo(f"[{arch}] stream: {len(val)} validation texts, char by char, accuracy {accuracy:.4f}")
    return accuracy


def _lap(start: float) -> float:
    return round(time.perf_counter() - start, 2)
