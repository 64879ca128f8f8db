"""The main job, end to end on the embedded task: train -> convert -> verify -> stream.

`rnn-export demo` runs it, on texts or (input_kind "features") on the embedded frame task
of rnn_export.frames. It needs no data and no download, and leaves under OUT
one RUN_DIR, one .onnx file, one parity report and one drift plot per arch, plus
summary.json with every figure it printed. Every arch runs even when an earlier one
fails verify; summary.json says which passed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from rnn_export.errors import InputError

ARCHS = ("cell", "stacked")
SUMMARY = "summary.json"


class DemoOutputError(InputError):
    """An --out folder that holds something other than an earlier demo's output."""


def demo_files(archs) -> set[str]:
    """The names the demo writes directly under its folder."""
    names = {SUMMARY}
    for arch in archs:
        names |= {arch, f"{arch}.onnx", f"{arch}.parity.json", f"{arch}.drift.png"}
    return names


def check_demo_out(out: Path) -> None:
    """Refuse an --out that exists and holds more than an earlier demo's files.

    Raises:
        DemoOutputError: out is not a folder, or holds files the demo did not write.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise DemoOutputError(f"{out}: is a file; expected a folder for the demo's output")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in demo_files(ARCHS))
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise DemoOutputError(
            f"{out}: refusing to write into a folder that is not a demo output (it holds "
            f"{', '.join(foreign[:5])}{more}); choose another --out"
        )


def run_demo(
    out: str | Path,
    archs: tuple[str, ...] = ARCHS,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    input_kind: str = "tokens",
) -> dict:
    """Train, export, verify and stream each arch on the embedded task.

    Args:
        out: folder for everything the job writes (created if missing).
        archs: which of "cell" and "stacked" to run.
        epochs: training epochs; None means the training default.
        seed: seeds the data, the weights and the parity cases.
        progress: show progress bars while training.
        echo: where the step-by-step account goes.
        input_kind: the models' input stage: "tokens", "onehot" (both on the embedded
            texts) or "features" (on the embedded frames, streamed a frame at a time).

    Returns:
        The summary (also written to out/summary.json): "passed" (every arch passed
        verify) and per arch the validation accuracy, the parity verdict and its
        deciding check, the streamed accuracy and each stage's seconds.

    Raises:
        DemoOutputError: out holds something other than an earlier demo's output.
    """
    from rnn_export.atomic import check_folder_output, replace_file
    from rnn_export.export import export_onnx
    from rnn_export.parity import ParityError, verify_parity
    from rnn_export.training import train
    from rnn_runtime import open_model

    out = check_folder_output(out, "the demo's output folder")
    check_demo_out(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"out": str(out), "passed": True, "archs": {}}
    for arch in archs:
        seconds = {}
        clock = time.perf_counter()

        echo(f"[{arch}] train on the embedded task -> {out / arch}")
        ckpt = train(
            arch, out / arch, epochs=epochs, seed=seed, progress=progress, input_kind=input_kind
        )
        seconds["train"] = _lap(clock)
        echo(f"[{arch}] val accuracy {ckpt.metrics['val_accuracy']:.4f}")

        clock = time.perf_counter()
        onnx_path = export_onnx(ckpt, out / f"{arch}.onnx")
        seconds["convert"] = _lap(clock)
        echo(f"[{arch}] convert -> {onnx_path} ({onnx_path.stat().st_size:,} bytes)")

        clock = time.perf_counter()
        try:
            report = verify_parity(onnx_path, ckpt, providers="cpu", seed=seed)
        except ParityError as e:
            report = e.report
        replace_file(out / f"{arch}.parity.json", (report.to_json() + "\n").encode("utf-8"))
        report.plot_drift(out / f"{arch}.drift.png")
        seconds["verify"] = _lap(clock)
        echo(f"[{arch}] verify: {report.summary_line()}")
        if not report.passed:
            summary["passed"] = False
            echo(f"[{arch}] verify FAILED: the table is in {out / f'{arch}.parity.json'}")

        clock = time.perf_counter()
        streamed = _stream_validation(open_model(onnx_path), _validation(ckpt), echo, arch)
        seconds["stream"] = _lap(clock)

        deciding = report.deciding()
        summary["archs"][arch] = {
            "run_dir": str(out / arch),
            "onnx": str(onnx_path),
            "val_accuracy": ckpt.metrics["val_accuracy"],
            "parity_passed": report.passed,
            "parity_summary": report.summary_line(),
            "parity_checks": len(report.cases),
            "parity_ratio": None if deciding is None else deciding.ratio,
            "streamed_accuracy": streamed,
            "seconds": seconds,
        }
    replace_file(out / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    echo(f"summary -> {out / SUMMARY}")
    return summary


def _validation(ckpt) -> list:
    """The run's validation split: [(text, label id)], or [((T, F) frames, label id)]."""
    if ckpt.config.reads_tokens:
        from rnn_export.data import load_splits

        return load_splits(ckpt.data)[1]
    from rnn_export.frames import load_frames

    val = load_frames(ckpt.data).val
    return [(x[:n], int(y)) for x, n, y in zip(val.x, val.lengths, val.labels, strict=True)]


def _stream_validation(model, val: list, echo, arch: str) -> float:
    """Stream every validation text one character (or frame) at a time; show the first."""
    stream = model.stream()
    labels = model.metadata.labels
    first, label = val[0]
    trace = []
    for t, step in enumerate(first):
        prediction = stream.step(step)
        trace.append(f"{step if isinstance(step, str) else t + 1}:{prediction.label}")
    what = repr(first) if isinstance(first, str) else f"a sequence of {len(first)} frames"
    unit, noun = ("char", "texts") if isinstance(first, str) else ("frame", "sequences")
    echo(f"[{arch}] stream {what} (label {labels[label]}), prediction after each {unit}:")
    echo("    " + " ".join(trace))
    correct = 0
    for steps, label in val:
        stream.reset()
        for step in steps:
            prediction = stream.step(step)
        correct += prediction.label_id == label
    accuracy = correct / len(val)
    echo(
        f"[{arch}] stream: {len(val)} validation {noun}, {unit} by {unit}, accuracy {accuracy:.4f}"
    )
    return accuracy


def _lap(start: float) -> float:
    return round(time.perf_counter() - start, 2)
