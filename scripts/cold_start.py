"""Where a cold start goes: each phase of a fresh process, from its start to the first step.

    python scripts/cold_start.py MODEL.onnx [--runs 3] [--threads 1]

Starts RUNS fresh interpreters (after one untimed start that lets Python cache the
runtime's bytecode) that import numpy, onnxruntime and rnn_runtime in turn, open the
model and step one token, and prints each phase in milliseconds (the interpreter's own
start: from the spawn to its first statement), the total and the peak RSS (VmHWM), one
row per run. `rnn-export bench` reports the medians of the same processes
(rnn_export.bench.cold_start_runs); this says which part of them is ours.
"""

from __future__ import annotations

import argparse

from rnn_export.bench import COLD_START_PHASES, cold_start_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print("| run | " + " | ".join(COLD_START_PHASES) + " | total | peak RSS |")
    print("| --- " * (len(COLD_START_PHASES) + 3) + "|")
    for i, run in enumerate(cold_start_runs(args.model, args.threads, args.runs), start=1):
        cells = [f"{1e3 * run['phases'][name]:.0f} ms" for name in COLD_START_PHASES]
        cells.append(f"{1e3 * run['seconds']:.0f} ms")
        cached = "" if run["bytecode_cached"] else " (runtime parsed from source)"
        print(f"| {i} | " + " | ".join(cells) + f" | {run['peak_rss_mib']:.1f} MiB{cached} |")


if __name__ == "__main__":
    main()
