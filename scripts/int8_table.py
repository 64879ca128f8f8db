"""The int8 table of docs/runtimes.md: size, accuracy and step time of int8 step files.

    python scripts/int8_table.py RUN_DIR [RUN_DIR ...] [--steps 2000] [--repeats 5]

For each trained RUN_DIR: its step file (`convert --step-only`), the int8 file
(`rnn-export quantize`, ONNX and ORT format), verify's int8 rule on the validation texts
(accuracy of float32 and int8, decision agreement, max probability error), and the
streaming step time of both files (one stream, one thread, `--steps` steps, the median
of `--repeats` runs). Prints Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def step_times_us(paths: list[Path], steps: int, repeats: int) -> list[float]:
    """Median microseconds per stream.step of each file over `repeats` runs of `steps`
    random tokens; the files' runs interleave, so a busy machine slows them alike."""
    from rnn_runtime import open_model

    models = [open_model(p) for p in paths]
    V = models[0].metadata.vocab_size
    tokens = np.random.default_rng(0).integers(0, V, steps).tolist()
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for model, out in zip(models, times, strict=True):
            stream = model.stream()
            started = time.perf_counter()
            for t in tokens:
                stream.step(t)
            out.append((time.perf_counter() - started) / steps * 1e6)
    return [statistics.median(t) for t in times]


def row(run_dir: Path, tmp: Path, steps: int, repeats: int) -> str:
    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.export import export_onnx
    from rnn_export.quantize import quantize_file, verify_quantized

    config = load_checkpoint(run_dir).config
    step = export_onnx(run_dir, tmp / f"{run_dir.name}.step.onnx", graph="step")
    int8 = quantize_file(step, tmp / f"{run_dir.name}.int8.onnx").path
    ort = quantize_file(step, tmp / f"{run_dir.name}.int8.ort", "ort").path
    report = verify_quantized(int8, run_dir)
    f32_us, int8_us = step_times_us([step, int8], steps, repeats)
    sizes = [p.stat().st_size for p in (step, int8, ort)]
    return (
        f"| {config.arch} {config.nonlinearity} | {config.hidden_size} | "
        f"{sizes[0]:,} | {sizes[1]:,} ({sizes[1] / sizes[0]:.2f}) | {sizes[2]:,} | "
        f"{report.accuracy_float32:.4f} | {report.accuracy_int8:.4f} "
        f"({report.accuracy_int8 - report.accuracy_float32:+.4f}) | {report.agreement:.2%} | "
        f"{report.within:.2%} | {report.max_prob_error:.3g} | "
        f"{'pass' if report.passed else 'FAIL'} | "
        f"{f32_us:.1f} | {int8_us:.1f} |"
    )


def main() -> None:
    from rnn_export.bench import cpu_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="trained RUN_DIRs")
    parser.add_argument("--steps", type=int, default=2000, help="stream steps per timing run")
    parser.add_argument("--repeats", type=int, default=5, help="timing runs (the median)")
    args = parser.parse_args()
    lines = [
        f"Made {datetime.date.today()} by `python scripts/int8_table.py` on {cpu_name()}: "
        f"step time is the median of {args.repeats} runs of {args.steps} stream steps (one "
        "thread, the two files' runs interleaved); accuracy, agreement, the texts within "
        "0.05 and the largest probability error are verify's int8 rule on the validation "
        "texts, each text alone.",
        "",
        "| model | H | float32 bytes | int8 bytes (ratio) | int8 ORT bytes | accuracy f32 | "
        "accuracy int8 (delta) | agreement | within 0.05 | max abs p error | int8 rule | "
        "step us f32 | "
        "step us int8 |",
        "| --- " + "| ---: " * 9 + "| --- | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory(prefix="rnn-export-int8-") as tmp:
        for run_dir in args.run_dirs:
            lines.append(row(run_dir, Path(tmp), args.steps, args.repeats))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
