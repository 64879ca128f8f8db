"""Where a step's time goes: onnxruntime's own per-node kernel times of a file's step model.

    python scripts/profile_step.py MODEL.onnx [--rows 1 256] [--threads 1] [--runs 2000]

Runs the embedded step model at N rows (random inputs of the file's kind, token ids or
frames, as the bench draws them; random states; IOBinding as the runtime's pool does)
under onnxruntime's profiler and prints Markdown: per node its median kernel time and
share of the median profiled run, the rest being the executor's own cost per call. The
matrix products here are what the bench's roofline times; the other nodes (Gather or the
frames' normalization, activations, LogSoftmax) and the call itself are what a pool step
pays beyond it.

    python scripts/profile_step.py MODEL.onnx --offline 256 128 [--runs 20]

profiles the main graph instead, on a padded batch of B rows and T steps with mixed
lengths (as the bench's offline grid has them), and prints per operator type its kernel
time per run and share: the If and Scan rows hold only their own cost, the nodes inside
them are counted in their own rows. It then times the graph's matrix products alone, at
each step's running rows (the length-sorted schedule) and at B rows (the bench's
roofline), against the run without the profiler: how much of the gap to the roofline is
the schedule's smaller products and how much everything else.

The profiler has a cost of its own, about a microsecond per node run, which lands
outside the kernels: in the executor's row, and in an If's or a Scan's own time for the
nodes inside them (a Scan of T steps runs its nodes T times). So every case also runs
without the profiler, on a session of its own, and both medians are printed, with their
difference as a row: what the profiler added, to subtract from the executor's or the
containers' rows before reading them as onnxruntime's own cost. Offline, the run without
the profiler and the products alone are timed interleaved in blocks, as the bench times
(rnn_export.bench.time_blocks), so that their ratios hold on a machine whose speed moves.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_run_us(run, runs: int) -> float:
    """Median microseconds of `runs` calls of run(), each timed on its own."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def profile(
    model: Path, rows: int, threads: int, runs: int
) -> tuple[dict[str, float], float, float]:
    """Median kernel microseconds per node ("op: node name"), of the whole profiled run,
    and of a run without the profiler (same inputs, a session of its own)."""
    import onnxruntime as ort

    import rnn_runtime
    from rnn_export.bench_inputs import random_inputs
    from rnn_runtime.session import open_session

    meta = rnn_runtime.load_metadata(model)
    if meta.step is None:
        raise SystemExit(f"error: {model} embeds no step model (re-export it with convert)")
    rng = np.random.default_rng(0)
    keep = []

    def bind(session):
        binding = session.io_binding()
        for spec in session.get_inputs():
            if spec.name == meta.step.token:
                value = random_inputs(meta, rng, (rows,))
            else:
                value = (0.3 * rng.standard_normal((rows, meta.hidden_size))).astype(np.float32)
            keep.append(value)
            binding.bind_ortvalue_input(spec.name, ort.OrtValue.ortvalue_from_numpy(value))
        for spec in session.get_outputs():
            binding.bind_output(spec.name)
        return binding

    plain = open_session(meta.step.model_bytes(), threads=threads)
    binding = bind(plain)
    plain.run_with_iobinding(binding)  # first-run allocations, as the profiled session's
    unprofiled = _median_run_us(lambda: plain.run_with_iobinding(binding), runs)
    with tempfile.TemporaryDirectory() as tmp:
        session = open_session(
            meta.step.model_bytes(), threads=threads, profile_prefix=Path(tmp) / "profile"
        )
        binding = bind(session)
        for _ in range(runs):
            session.run_with_iobinding(binding)
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels, whole = collections.defaultdict(list), []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            kernels[f"{e['args']['op_name']}: {e['name'][: -len('_kernel_time')]}"].append(e["dur"])
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            whole.append(e["dur"])
    medians = {k: statistics.median(v) for k, v in kernels.items()}
    return medians, statistics.median(whole), unprofiled


_CONTAINERS = ("If", "Scan", "Loop")
# The last row of every table: not a row of the sum, but how much of the rows above
# (the executor's, the containers' own) is the profiler's (profiled run - plain run).
PROFILER_ROW = "(within the rows above: the profiler's own cost)"


def offline_batch(model: Path, B: int, T: int) -> dict:
    """The main graph's feeds of a (B, T) batch with mixed lengths, as the bench's grid
    has them (the same batch every time: seed 0)."""
    import rnn_runtime
    from rnn_export.bench_inputs import mixed_lengths, random_inputs

    rt = rnn_runtime.open_model(model)
    meta = rt.metadata
    rng = np.random.default_rng(0)
    lengths = mixed_lengths(rng, B, T)
    return {
        meta.tokens.name: random_inputs(meta, rng, (B, T)),
        meta.lengths.name: lengths,
        **rt.initial_state(B),
    }


def profile_offline(model: Path, feeds: dict, threads: int, runs: int):
    """Kernel milliseconds per run by operator type (containers: their own time only) and
    the median whole profiled run, of the main graph on feeds (offline_batch)."""
    from rnn_runtime.session import open_session

    with tempfile.TemporaryDirectory() as tmp:
        session = open_session(
            model.read_bytes(), threads=threads, profile_prefix=Path(tmp) / "profile"
        )
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    # Events come in the order nodes end: the nodes inside an If or a Scan end before it,
    # right after the nodes that started before it. `ended` holds (start, duration) of the
    # nodes not yet claimed by a container; a container claims the tail that started
    # within it (a container inside it already stands for its own nodes).
    per_op, whole, ended = collections.defaultdict(float), [], []
    for e in events:
        if e.get("cat") == "Session" and e["name"] == "model_run":
            whole.append(e["dur"])
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op, start, dur = e["args"]["op_name"], e["ts"], e["dur"]
        own = dur
        if op in _CONTAINERS:
            while ended and ended[-1][0] >= start:
                own -= ended.pop()[1]
        per_op[op] += own
        ended.append((start, dur))
    per_run = {op: us / runs / 1e3 for op, us in per_op.items()}
    return per_run, statistics.median(whole) / 1e3


def unprofiled_and_products(
    model: Path, feeds: dict, threads: int, repeats: int = 7
) -> dict[str, float]:
    """Milliseconds a run, timed interleaved in blocks (rnn_export.bench.time_blocks, as
    the bench times), on feeds (offline_batch): "run" the main graph without the
    profiler; its matrix products alone (rnn_export.roofline.OfflineRoofline, the
    bench's), "sorted" at each step's running rows (the length-sorted Scan's schedule)
    and "roofline" at B rows for the same real tokens."""
    import rnn_runtime
    from rnn_export.bench import time_blocks
    from rnn_export.roofline import OfflineRoofline, step_products
    from rnn_runtime.session import open_session

    meta = rnn_runtime.load_metadata(model)
    products = OfflineRoofline(
        step_products(meta.step.model_bytes()), feeds[meta.lengths.name], threads
    )
    plain = open_session(model.read_bytes(), threads=threads)

    def run_plain(n: int) -> None:
        for _ in range(n):
            plain.run(None, feeds)

    t = time_blocks({"run": run_plain, **products.runs}, repeats, block_s=0.1)
    s = products.seconds(t)
    return {
        "run": t["run"] * 1e3,
        "sorted": s["schedule_s"] * 1e3,
        "roofline": s["roofline_s"] * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a .onnx file made by convert")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 256], help="batch sizes N")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--runs", type=int, default=None, help="profiled runs (2000 per N; 20)")
    parser.add_argument(
        "--offline", type=int, nargs=2, metavar=("B", "T"), help="profile the main graph"
    )
    args = parser.parse_args(argv)
    from rnn_export.bench import cpu_name

    if args.offline:
        B, T = args.offline
        runs = args.runs or 20
        feeds = offline_batch(args.model, B, T)
        per_op, whole = profile_offline(args.model, feeds, args.threads, runs)
        products = unprofiled_and_products(args.model, feeds, args.threads)
        plain = products["run"]
        print(
            f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, threads "
            f"{args.threads}, {runs} runs: `python scripts/profile_step.py {args.model.name} "
            f"--offline {B} {T}`\n\nB = {B}, T = {T} (mixed lengths): median run "
            f"{whole:.2f} ms under the profiler, {plain:.2f} ms without it\n\n"
            "| operator | ms per run | share |\n| --- | --- | --- |"
        )
        for op, ms in sorted(per_op.items(), key=lambda x: -x[1]):
            own = " (its own cost)" if op in _CONTAINERS else ""
            print(f"| {op}{own} | {ms:.2f} | {ms / whole:.0%} |")
        print(_profiler_row(whole, plain, "ms", ".2f"))
        print(
            f"\nWithout the profiler: the run {plain:.3f} ms; its matrix products alone, "
            f"at each step's running rows (the length-sorted schedule), "
            f"{products['sorted']:.3f} ms ({products['sorted'] / plain:.0%} of the run); "
            f"the same products at B = {B} rows for the same real tokens (the bench's "
            f"roofline) {products['roofline']:.3f} ms ({products['roofline'] / plain:.0%} "
            f"of the run, {products['roofline'] / products['sorted']:.0%} of the sorted "
            "schedule's)."
        )
        return 0
    args.runs = args.runs or 2000

    print(
        f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, threads "
        f"{args.threads}, {args.runs} runs per N: "
        f"`python scripts/profile_step.py {args.model.name} --rows "
        f"{' '.join(map(str, args.rows))}`"
    )
    for rows in args.rows:
        kernels, whole, plain = profile(args.model, rows, args.threads, args.runs)
        print(
            f"\nN = {rows}: median run {whole:.0f} us under the profiler, "
            f"{plain:.1f} us without it\n"
        )
        print("| node | us | share |\n| --- | --- | --- |")
        for name, us in kernels.items():
            print(f"| {name.strip()} | {us:.0f} | {us / whole:.0%} |")
        rest = whole - sum(kernels.values())
        print(f"| (executor, per call) | {rest:.0f} | {rest / whole:.0%} |")
        print(_profiler_row(whole, plain, "us", ".0f"))
    return 0


def _profiler_row(profiled: float, plain: float, unit: str, spec: str) -> str:
    """The table row of what the profiler added: in the executor's or the containers' rows
    above, not a row of its own in the sum of the shares."""
    added = profiled - plain
    return f"| {PROFILER_ROW} | {added:{spec}} | {added / profiled:.0%} |"


if __name__ == "__main__":
    sys.exit(main())
