"""Where a cold start goes: each phase of a fresh process, from its start to the first step.

    python scripts/cold_start.py MODEL.onnx [--runs 3]

Starts RUNS fresh interpreters that import numpy, onnxruntime and rnn_runtime in turn,
open the model (one thread) and step one token, and prints each phase in milliseconds
(the interpreter's own start is the process's wall time less the phases), the total and
the peak RSS (VmHWM), one row per run. `rnn-export bench` reports the total and the
peak; this says which part of them is ours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

_PHASES = """\
import time
t = [time.perf_counter()]
import numpy
t.append(time.perf_counter())
import onnxruntime
t.append(time.perf_counter())
import rnn_runtime
t.append(time.perf_counter())
import sys, json
model = rnn_runtime.open_model(sys.argv[1], threads=1)
t.append(time.perf_counter())
model.stream().step(1)
t.append(time.perf_counter())
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"t": t, "peak_kib": peak}))
"""
NAMES = ("import numpy", "import onnxruntime", "import rnn_runtime", "open_model", "first step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| run | interpreter | " + " | ".join(NAMES) + " | total | peak RSS |")
    print("| --- " * (len(NAMES) + 4) + "|")
    for run in range(1, args.runs + 1):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _PHASES, args.model], capture_output=True, text=True
        )
        total = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"the cold-start process failed: {done.stderr.strip()}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        t = out["t"]
        phases = [b - a for a, b in zip(t[:-1], t[1:], strict=True)]
        interpreter = total - sum(phases)
        cells = [f"{1e3 * x:.0f} ms" for x in (interpreter, *phases, total)]
        print(f"| {run} | " + " | ".join(cells) + f" | {out['peak_kib'] / 1024:.1f} MiB |")


if __name__ == "__main__":
    main()
