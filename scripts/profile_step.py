"""Where a step's time goes: onnxruntime's own per-node kernel times of a file's step model.

    python scripts/profile_step.py MODEL.onnx [--rows 1 256] [--threads 1] [--runs 2000]

Runs the embedded step model at N rows (random tokens and states, IOBinding as the
runtime's pool does) under onnxruntime's profiler and prints Markdown: per node its
median kernel time and share of the median whole run, the rest being the executor's own
cost per call. The matrix products here are what the bench's roofline times; the other
nodes (Gather, activations, LogSoftmax) and the call itself are what a pool step pays
beyond it.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np


def profile(model: Path, rows: int, threads: int, runs: int) -> tuple[dict[str, float], float]:
    """Median kernel microseconds per node ("op: node name") and of the whole run."""
    import onnxruntime as ort

    import rnn_runtime

    meta = rnn_runtime.load_metadata(model)
    if meta.step is None:
        raise SystemExit(f"error: {model} embeds no step model (re-export it with convert)")
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(
            meta.step.model_bytes(), options, providers=["CPUExecutionProvider"]
        )
        rng = np.random.default_rng(0)
        binding = session.io_binding()
        keep = []
        for spec in session.get_inputs():
            if spec.name == meta.step.token:
                value = rng.integers(0, meta.vocab_size, size=rows, dtype=np.int64)
            else:
                value = (0.3 * rng.standard_normal((rows, meta.hidden_size))).astype(np.float32)
            keep.append(value)
            binding.bind_ortvalue_input(spec.name, ort.OrtValue.ortvalue_from_numpy(value))
        for spec in session.get_outputs():
            binding.bind_output(spec.name)
        for _ in range(runs):
            session.run_with_iobinding(binding)
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels, whole = collections.defaultdict(list), []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            kernels[f"{e['args']['op_name']}: {e['name'][: -len('_kernel_time')]}"].append(e["dur"])
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            whole.append(e["dur"])
    return {k: statistics.median(v) for k, v in kernels.items()}, statistics.median(whole)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a .onnx file made by convert")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 256], help="batch sizes N")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--runs", type=int, default=2000, help="profiled runs per N")
    args = parser.parse_args(argv)
    from rnn_export.bench import cpu_name

    print(
        f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, threads "
        f"{args.threads}, {args.runs} runs per N: "
        f"`python scripts/profile_step.py {args.model.name} --rows "
        f"{' '.join(map(str, args.rows))}`"
    )
    for rows in args.rows:
        kernels, whole = profile(args.model, rows, args.threads, args.runs)
        print(f"\nN = {rows}: median run {whole:.0f} us\n")
        print("| node | us | share |\n| --- | --- | --- |")
        for name, us in kernels.items():
            print(f"| {name.strip()} | {us:.0f} | {us / whole:.0%} |")
        rest = whole - sum(kernels.values())
        print(f"| (executor, per call) | {rest:.0f} | {rest / whole:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
