"""Measure a stream's resident memory over a long run: it must stay flat (issue 5).

    python scripts/stream_memory.py MODEL.onnx [--steps 100000] [--warmup 1000]

Steps one StreamSession through the model's vocabulary over and over, reading the
process's RSS (psutil) after the warm-up and at the end, and prints one JSON object:
{"steps", "warmup", "rss_start_bytes", "rss_end_bytes", "growth_bytes", "rss_peak_bytes",
"rss_kib_every_10000"} (the last: RSS in KiB after each 10,000 steps, to tell a one-time
allocator step from a leak, which grows with the step count).
Imports only the runtime (no torch, no onnx).
"""

from __future__ import annotations

import argparse
import json

import psutil

import rnn_runtime


def measure(model_path: str, steps: int, warmup: int) -> dict:
    """RSS in bytes after `warmup` steps and after `steps` more steps of one stream."""
    model = rnn_runtime.open_model(model_path)
    stream = model.stream()
    vocab = len(model.metadata.vocab)
    process = psutil.Process()
    for i in range(warmup):
        stream.step(i % vocab)
    start = process.memory_info().rss
    samples = []
    for i in range(1, steps + 1):
        stream.step(i % vocab)
        if i % 10_000 == 0:
            samples.append(process.memory_info().rss // 1024)
    end = process.memory_info().rss
    return {
        "steps": steps,
        "warmup": warmup,
        "rss_start_bytes": start,
        "rss_end_bytes": end,
        "growth_bytes": end - start,
        "rss_peak_bytes": max([start, end] + [k * 1024 for k in samples]),
        "rss_kib_every_10000": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .onnx file made by rnn-export convert")
    parser.add_argument("--steps", type=int, default=100_000, help="steps measured")
    parser.add_argument("--warmup", type=int, default=1_000, help="steps before the first RSS")
    args = parser.parse_args()
    print(json.dumps(measure(args.model, args.steps, args.warmup)))


if __name__ == "__main__":
    main()
