"""Measure a stream's resident memory over a long run: it must stay flat (a stream holds
only its state, so any growth is a leak).

    python scripts/stream_memory.py MODEL.onnx [--steps 1000000] [--warmup 1000] [--samples 100]

Steps one StreamSession through the model's vocabulary over and over, reading the
process's RSS (psutil) after the warm-up, at `samples` evenly spaced points and at the
end, and prints one JSON object: {"steps", "warmup", "seconds", "us_per_step",
"rss_start_bytes", "rss_end_bytes", "growth_bytes", "rss_peak_bytes", "sample_every",
"rss_kib_samples"} (the RSS in KiB after every `sample_every` steps: a one-time
allocator step shows as one jump, a leak as a slope that grows with the step count).
Reading the RSS costs a system call, so the samples stay sparse at any step count.
Imports only the runtime (no torch, no onnx).
"""

from __future__ import annotations

import argparse
import json
import time

import psutil

import rnn_runtime


def measure(model_path: str, steps: int, warmup: int, samples: int = 100) -> dict:
    """RSS in bytes after `warmup` steps and while `steps` more steps of one stream run."""
    model = rnn_runtime.open_model(model_path)
    stream = model.stream()
    vocab = model.metadata.vocab_size
    process = psutil.Process()
    for i in range(warmup):
        stream.step(i % vocab)
    every = max(1, steps // max(1, samples))
    start = process.memory_info().rss
    kib = []
    t0 = time.perf_counter()
    step = stream.step
    for i in range(1, steps + 1):
        step(i % vocab)
        if i % every == 0:
            kib.append(process.memory_info().rss // 1024)
    seconds = time.perf_counter() - t0
    end = process.memory_info().rss
    return {
        "steps": steps,
        "warmup": warmup,
        "seconds": round(seconds, 3),
        "us_per_step": round(seconds / max(1, steps) * 1e6, 3),
        "rss_start_bytes": start,
        "rss_end_bytes": end,
        "growth_bytes": end - start,
        "rss_peak_bytes": max([start, end] + [k * 1024 for k in kib]),
        "sample_every": every,
        "rss_kib_samples": kib,
    }


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1; got {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .onnx file made by rnn-export convert")
    parser.add_argument("--steps", type=_positive, default=100_000, help="steps measured")
    parser.add_argument("--warmup", type=int, default=1_000, help="steps before the first RSS")
    parser.add_argument("--samples", type=_positive, default=100, help="RSS readings taken")
    args = parser.parse_args()
    try:
        figures = measure(args.model, args.steps, args.warmup, args.samples)
    except ValueError as e:  # the runtime's errors: a bad model file, for one
        parser.exit(2, f"error: {e}\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
