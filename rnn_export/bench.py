"""Benchmarks: the runtime and onnxruntime against PyTorch eager, side by side in one process.

Five measurements, each a ratio of timings taken interleaved in the same process so that
a busy machine slows both sides alike (medians over repeated blocks):
    1. streaming: seconds per step at batch 1 of the runtime (StreamSession.step) against
       PyTorch eager stepping the same model, against the loop users write by hand on the
       same file (the main graph through session.run with a feed dict per step, the state
       fed back), and against the floor: a one-node ONNX model (Identity) called through
       onnxruntime the same way as the runtime (IOBinding, preallocated buffers), i.e. the
       fixed cost of one call; also the runtime stepping through the main graph
       (step_model=False), to show what the embedded step model saves;
    2. offline: tokens/s over padded batches (B x T grid, mixed lengths) of one
       onnxruntime session against PyTorch eager and as a fraction of the roofline;
       beside it the schedule: the same products at each step's running rows, as the
       export's length-sorted Scan runs them (roofline / schedule is the most this
       schedule of products allows: smaller products run fewer GFLOP/s);
    3. pool: aggregate steps/s of the runtime's StreamPool at N streams, and the fraction
       of the roofline each pool step reaches; beside it the pool's onnxruntime call
       alone (the same IOBinding call without the pool's Python) and its fraction;
    4. threads: the pool of 256 streams and the largest offline batch at one thread and
       at all cores (skipped on a one-core machine);
    5. cold start: process start to first prediction, and peak RSS, of a fresh process
       that imports only the runtime.

The roofline (rnn_export.roofline) is onnxruntime's own matrix products at the shapes of
one step of this file, in the same run and at the same thread count: a fraction of 1.0
means the step costs nothing beyond its arithmetic.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rnn_export.bench_inputs import mixed_lengths, random_inputs
from rnn_export.bench_report import BenchReport
from rnn_export.config import MAX_THREADS, check_int
from rnn_export.errors import InputError
from rnn_export.roofline import OfflineRoofline, Product, ProductsRunner, step_products

MAX_REPEATS = 1_000
GRID_BATCHES = (1, 32, 256)
GRID_LENGTHS = (16, 128)
POOL_SIZES = (1, 16, 256, 1024)
QUICK_GRID_BATCHES = (1, 32)
QUICK_GRID_LENGTHS = (16,)
QUICK_POOL_SIZES = (1, 16)
SCALING_POOL = 256  # pool size of the threads measurement

# Runs in a fresh interpreter: imports only the runtime, prints one JSON line with the
# time.time() at the start of each phase and at the first prediction (COLD_START_PHASES
# after the interpreter's own start). Peak RSS is VmHWM of /proc/self/status: getrusage's
# ru_maxrss would also count the forked copy of the (torch-sized) parent from before exec.
_COLD_START = """\
import time
t = [time.time()]
import sys
import numpy
t.append(time.time())
import onnxruntime
t.append(time.time())
import rnn_runtime
t.append(time.time())
model = rnn_runtime.open_model(sys.argv[1], threads=int(sys.argv[2]))
t.append(time.time())
x = int(sys.argv[3]) if model.metadata.reads_tokens else model.reader.mean
prediction = model.stream().step(x)
t.append(time.time())
import importlib.util, json, os, resource
try:
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "t": t,
    "label": prediction.label,
    "max_rss_kib": peak,
    "torch_imported": "torch" in sys.modules,
    "onnx_imported": "onnx" in sys.modules,
    "bytecode_cached": os.path.exists(
        importlib.util.cache_from_source(rnn_runtime.model.__file__)
    ),
}))
"""
# The phases of a cold start, in order: the interpreter's own start (the spawn, site and
# the import hooks of the environment) and then what the _COLD_START child times.
COLD_START_PHASES = (
    "interpreter",
    "import numpy",
    "import onnxruntime",
    "import rnn_runtime",
    "open_model",
    "first step",
)


class BenchError(InputError):
    """A benchmark that cannot run: unreadable model or checkpoint, or the two do not match."""


def run_bench(
    model_path: str | Path,
    checkpoint,
    *,
    threads: int = 1,
    repeats: int = 7,
    quick: bool = False,
    seed: int = 0,
) -> BenchReport:
    """Measure the runtime and onnxruntime against PyTorch eager on the same model.

    Args:
        model_path: a .onnx file made by `rnn-export convert`.
        checkpoint: the RUN_DIR (or Checkpoint) it was exported from.
        threads: intra-op threads for both onnxruntime and torch (fixed for the run).
        repeats: timed blocks per measurement; medians are reported.
        quick: a smaller grid and short blocks (for smoke tests; figures are rough).
        seed: seed of the random inputs (token ids or frames: bench_inputs) and lengths.

    Returns:
        BenchReport.

    Raises:
        BenchError: an unreadable model or checkpoint, a model file that was not
            exported from this checkpoint, or bad arguments.
    """
    import torch

    import rnn_runtime
    from rnn_export.checkpoint import Checkpoint, CheckpointError, load_checkpoint

    # Bounded: onnxruntime crashes (SIGSEGV) or hangs on tens of thousands of threads.
    check_int("threads", threads, 1, MAX_THREADS, BenchError)
    check_int("repeats", repeats, 1, MAX_REPEATS, BenchError)
    try:
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        rt_model = rnn_runtime.open_model(model_path, threads=threads)
    except (CheckpointError, rnn_runtime.ModelFileError, rnn_runtime.MetadataError) as e:
        raise BenchError(str(e)) from e
    meta = rt_model.metadata
    if meta.checkpoint_sha256 != ckpt.sha256:
        raise BenchError(ckpt.mismatch(meta.checkpoint_sha256, model_path))
    block_s = 0.02 if quick else 0.1
    products = _products(meta)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rng = np.random.default_rng(seed)
        model = ckpt.model.eval()
        streaming = _bench_streaming(rt_model, model, threads, repeats, block_s, rng)
        batches, lengths = (
            (QUICK_GRID_BATCHES, QUICK_GRID_LENGTHS) if quick else (GRID_BATCHES, GRID_LENGTHS)
        )
        offline = [
            _bench_offline(rt_model, model, products, B, T, repeats, block_s, rng)
            for T in lengths
            for B in batches
        ]
        pool = _bench_pool(
            rt_model, products, QUICK_POOL_SIZES if quick else POOL_SIZES, repeats, block_s, rng
        )
    finally:
        torch.set_num_threads(previous_threads)
    scaling = None
    cores = os.cpu_count() or 1
    if not quick and cores > 1:
        scaling = _bench_threads(
            Path(model_path), products, cores, max(batches), max(lengths), repeats, block_s, rng
        )
    cold = _bench_cold_start(Path(model_path), threads, runs=1 if quick else 3)
    settings = {
        "model": str(model_path),
        "checkpoint": str(ckpt.run_dir),
        "arch": meta.arch,
        "hidden_size": meta.hidden_size,
        "num_layers": meta.num_layers,
        "vocab_size": meta.vocab_size,
        "input_kind": meta.input_kind,
        "input_size": meta.input_size,
        "num_classes": meta.num_classes,
        "threads": threads,
        "repeats": repeats,
        "quick": quick,
    }
    return BenchReport(
        _machine(),
        settings,
        streaming,
        offline,
        pool,
        cold,
        scaling=scaling,
        step_products=None if products is None else [asdict(p) for p in products],
    )


def _products(meta) -> tuple[Product, ...] | None:
    """The step's matrix products (from the embedded step model); None for a file without."""
    if meta.step is None:
        return None
    return step_products(meta.step.model_bytes())


def time_blocks(
    runs: dict[str, Callable[[int], None]], repeats: int, block_s: float
) -> dict[str, float]:
    """Median seconds per call of each runner, timing blocks interleaved across runners.

    Args:
        runs: name -> run(n), which makes n calls.
        repeats: timed blocks per runner.
        block_s: the target duration of one block (sets each runner's n).
    """
    counts = {}
    for name, run in runs.items():
        run(3)  # warm-up: first-call allocations, lazy initialisation
        t0 = time.perf_counter()
        run(1)
        counts[name] = max(1, int(block_s / max(time.perf_counter() - t0, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            n = counts[name]
            t0 = time.perf_counter()
            run(n)
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(v) for name, v in samples.items()}


def _bench_streaming(rt_model, model, threads, repeats, block_s, rng) -> dict:
    import onnxruntime as ort
    import torch

    import rnn_runtime
    from rnn_runtime.session import bound_run, open_session

    meta = rt_model.metadata
    # Token ids as Python ints, frames as (F,) float32 arrays: what device code holds.
    xs = random_inputs(meta, rng, (997,))
    ids = xs.tolist() if meta.reads_tokens else list(xs)
    stream = rt_model.stream()

    def run_runtime(n: int) -> None:
        step, k = stream.step, len(ids)
        for i in range(n):
            step(ids[i % k])

    runs = {"runtime": run_runtime}
    if rt_model.step_session is not None:
        main_stream = rnn_runtime.open_model(
            rt_model.path, providers=rt_model.providers, threads=threads, step_model=False
        ).stream()

        def run_main_graph(n: int) -> None:
            step, k = main_stream.step, len(ids)
            for i in range(n):
                step(ids[i % k])

        runs["main graph"] = run_main_graph

    session, outputs = rt_model.session, [meta.log_probs.name] + [s.output for s in meta.states]
    hand_state = rt_model.initial_state(1)
    one = np.ones((1,), dtype=np.int64)

    def run_handwritten(n: int) -> None:
        # What users write on the file alone: a feed dict per step, the new state fed back.
        state, k = dict(hand_state), len(ids)
        for i in range(n):
            token = np.array([[ids[i % k]]], dtype=xs.dtype)
            _, *new = session.run(
                outputs, {meta.tokens.name: token, meta.lengths.name: one, **state}
            )
            state = {s.input: v for s, v in zip(meta.states, new, strict=True)}
        hand_state.update(state)

    runs["hand-written"] = run_handwritten
    token = torch.zeros((1, 1, *xs.shape[1:]), dtype=torch.from_numpy(xs).dtype)
    # PyTorch users hold frames as tensors (token ids as ints, as the runtime's callers).
    torch_ids = ids if meta.reads_tokens else list(torch.from_numpy(xs))
    state = [model.initial_state(1)]

    def run_torch(n: int) -> None:
        k = len(ids)
        with torch.inference_mode():
            h = state[0]
            for i in range(n):
                token[0, 0] = torch_ids[i % k]
                _, h = model(token, h)
            state[0] = h

    floor_session = open_session(
        _floor_model(rt_model.metadata.hidden_size), threads=threads, name="the floor model"
    )
    x = np.zeros((1, rt_model.metadata.hidden_size), dtype=np.float32)
    y = np.zeros_like(x)
    binding = floor_session.io_binding()
    binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x))
    binding.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(y))

    def run_floor(n: int) -> None:
        run = bound_run(floor_session, binding)  # called as the runtime calls
        for _ in range(n):
            run()

    t = time_blocks(runs | {"torch": run_torch, "floor": run_floor}, repeats, block_s)
    return {
        "runtime_s": t["runtime"],
        "torch_s": t["torch"],
        "floor_s": t["floor"],
        "speedup_vs_torch": t["torch"] / t["runtime"],
        "runtime_vs_floor": t["runtime"] / t["floor"],
        "handwritten_s": t["hand-written"],
        "speedup_vs_handwritten": t["hand-written"] / t["runtime"],
        "main_graph_s": t.get("main graph"),
        "steps_through": "the embedded step model"
        if rt_model.step_session is not None
        else "the main graph (no step model in the file)",
    }


def _bench_offline(rt_model, model, products, B, T, repeats, block_s, rng) -> dict:
    import torch

    from rnn_export.models import model_state

    meta = rt_model.metadata
    tokens = random_inputs(meta, rng, (B, T))
    lengths = mixed_lengths(rng, B, T)
    state = rt_model.initial_state(B)
    t_tokens, t_lengths = torch.from_numpy(tokens), torch.from_numpy(lengths)
    t_state = model_state([torch.from_numpy(state[s.input]) for s in meta.states])

    with torch.inference_mode():
        want, _ = model(t_tokens, t_state, t_lengths)
    got, _ = rt_model.run(tokens, state, lengths)
    if not np.allclose(got, want.numpy(), atol=1e-4, rtol=1e-3):
        raise BenchError(
            f"onnxruntime and torch disagree at B={B}, T={T} (max |diff| "
            f"{np.abs(got - want.numpy()).max():.2e}): not the same model; run `rnn-export verify`"
        )

    def run_ort(n: int) -> None:
        for _ in range(n):
            rt_model.run(tokens, state, lengths)

    def run_torch(n: int) -> None:
        with torch.inference_mode():
            for _ in range(n):
                model(t_tokens, t_state, t_lengths)

    runs = {"onnxruntime": run_ort, "torch": run_torch}
    # The sorted schedule for B > 1 only: B == 1 runs the RNN operator, not the Scan.
    roofline = (
        None
        if products is None
        else OfflineRoofline(products, lengths, rt_model.threads, schedule=B > 1)
    )
    if roofline is not None:
        runs |= {("roofline", k): run for k, run in roofline.runs.items()}
    t = time_blocks(runs, repeats, block_s)
    real = int(lengths.sum())
    row = {
        "batch": B,
        "time": T,
        "real_tokens": real,
        "onnxruntime_tokens_per_s": real / t["onnxruntime"],
        "torch_tokens_per_s": real / t["torch"],
        "speedup_vs_torch": t["torch"] / t["onnxruntime"],
        "roofline_s": None,
        "roofline_fraction": None,
        "schedule_s": None,
        "schedule_fraction": None,
    }
    if roofline is not None:
        s = roofline.seconds({k: t[("roofline", k)] for k in roofline.runs})
        row |= {"roofline_s": s["roofline_s"], "schedule_s": s["schedule_s"]}
        row["roofline_fraction"] = s["roofline_s"] / t["onnxruntime"]
        if s["schedule_s"] is not None:
            row["schedule_fraction"] = s["roofline_s"] / s["schedule_s"]
    return row


def _bench_pool(rt_model, products, sizes, repeats, block_s, rng) -> list[dict]:
    runs, rooflines = {}, {}
    for size in sizes:
        pool = rt_model.pool()
        for _ in range(size):
            pool.join()
        ids = [random_inputs(rt_model.metadata, rng, (size,)) for _ in range(16)]

        def run_pool(n: int, pool=pool, ids=ids) -> None:
            for i in range(n):
                pool.step(ids[i % 16])

        runs[size] = run_pool
        # The pool's own onnxruntime call alone (what the pool runs per step, without its
        # Python): the graph's cost apart from the runtime's. StepBindings keeps its
        # buffers, whose arrays its bindings point into.
        steps = rt_model.bind_steps(rt_model.state_buffers(size), size)
        steps.tokens[:] = ids[0]

        def run_graph(n: int, steps=steps) -> None:
            call = steps.calls[0]
            for _ in range(n):
                call()

        runs[("graph", size)] = run_graph
        if products is not None:
            rooflines[size] = ProductsRunner(products, size, rt_model.threads)
            runs[("roofline", size)] = rooflines[size].run
    t = time_blocks(runs, repeats, block_s)
    rows = []
    for size in sizes:
        row = {
            "streams": size,
            "steps_per_s": size / t[size],
            "step_s": t[size],
            "graph_s": t[("graph", size)],
            "roofline_s": None,
            "roofline_gflops": None,
            "roofline_fraction": None,
            "graph_fraction": None,
        }
        if size in rooflines:
            roof = t[("roofline", size)]
            row |= {
                "roofline_s": roof,
                "roofline_gflops": rooflines[size].flops / roof / 1e9,
                "roofline_fraction": roof / t[size],
                "graph_fraction": roof / t[("graph", size)],
            }
        rows.append(row)
    return rows


def _bench_threads(model_path, products, cores, B, T, repeats, block_s, rng) -> dict:
    """The pool of SCALING_POOL streams and offline (B, T) at one thread and at all cores."""
    import rnn_runtime

    models = {n: rnn_runtime.open_model(model_path, threads=n) for n in (1, cores)}
    meta = models[1].metadata
    ids = [random_inputs(meta, rng, (SCALING_POOL,)) for _ in range(16)]
    tokens = random_inputs(meta, rng, (B, T))
    lengths = mixed_lengths(rng, B, T)
    state = models[1].initial_state(B)
    runs = {}
    for threads, model in models.items():
        pool = model.pool()
        for _ in range(SCALING_POOL):
            pool.join()

        def run_pool(n: int, pool=pool) -> None:
            for i in range(n):
                pool.step(ids[i % 16])

        def run_offline(n: int, model=model) -> None:
            for _ in range(n):
                model.run(tokens, state, lengths)

        runs[("pool", threads)] = run_pool
        runs[("offline", threads)] = run_offline
        if products is not None:
            runs[("roofline", threads)] = ProductsRunner(products, SCALING_POOL, threads).run
    t = time_blocks(runs, repeats, block_s)
    real = int(lengths.sum())
    out = {"cores": cores, "pool_streams": SCALING_POOL, "batch": B, "time": T}
    for threads, key in ((1, "one"), (cores, "all")):
        out[f"pool_steps_per_s_{key}"] = SCALING_POOL / t[("pool", threads)]
        out[f"offline_tokens_per_s_{key}"] = real / t[("offline", threads)]
        out[f"roofline_s_{key}"] = t.get(("roofline", threads))
    out["pool_scaling"] = t[("pool", 1)] / t[("pool", cores)]
    out["offline_scaling"] = t[("offline", 1)] / t[("offline", cores)]
    out["roofline_scaling"] = (
        None if products is None else t[("roofline", 1)] / t[("roofline", cores)]
    )
    return out


def cold_start_runs(model_path: str | Path, threads: int = 1, runs: int = 3) -> list[dict]:
    """Start fresh interpreters that import only the runtime and step once; time each phase.

    First one untimed process runs with Python's default of caching bytecode (the
    environment's PYTHONDONTWRITEBYTECODE is dropped for it), so that the runtime's
    modules are timed as an install has them, compiled, not parsed from source on every
    start; each result says whether they were.

    Returns:
        One dict per run: "phases" {COLD_START_PHASES name: seconds}, "seconds" (the
        process start to its first prediction), "peak_rss_mib", "torch_imported",
        "onnx_imported", "bytecode_cached".

    Raises:
        BenchError: a process failed (its stderr is in the message).
    """
    command = [sys.executable, "-c", _COLD_START, str(model_path), str(threads), "1"]
    caching = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    results = []
    for run in range(runs + 1):
        start = time.time()
        proc = subprocess.run(
            command, capture_output=True, text=True, env=caching if run == 0 else None
        )
        if proc.returncode != 0:
            raise BenchError(
                f"the cold-start process failed (exit {proc.returncode}): {proc.stderr.strip()}"
            )
        if run == 0:
            continue
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        t = [start, *out["t"]]
        results.append(
            {
                "phases": {
                    name: b - a for name, a, b in zip(COLD_START_PHASES, t[:-1], t[1:], strict=True)
                },
                "seconds": t[-1] - start,
                "peak_rss_mib": out["max_rss_kib"] / 1024,
                "torch_imported": out["torch_imported"],
                "onnx_imported": out["onnx_imported"],
                "bytecode_cached": out["bytecode_cached"],
            }
        )
    return results


def _bench_cold_start(model_path: Path, threads: int, runs: int) -> dict:
    """The median cold start of `runs` fresh processes (cold_start_runs), and its phases."""
    results = cold_start_runs(model_path, threads, runs)
    last = results[-1]
    return {
        "seconds": statistics.median(r["seconds"] for r in results),
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in results),
        "phases": {
            name: statistics.median(r["phases"][name] for r in results)
            for name in COLD_START_PHASES
        },
        "runs": runs,
        "torch_imported": last["torch_imported"],
        "onnx_imported": last["onnx_imported"],
        "bytecode_cached": all(r["bytecode_cached"] for r in results),
    }


def _floor_model(hidden_size: int) -> bytes:
    """A one-node model (Identity on a (1, H) float32 tensor): the fixed cost of one call."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "floor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, hidden_size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, hidden_size])],
    )
    opsets = [helper.make_opsetid("", 14)]
    return helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    ).SerializeToString()


def _machine() -> dict:
    import onnxruntime as ort
    import torch

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        # Other work on the machine slows every side of a ratio alike, but not exactly:
        # the 1-minute load average (Unix) says how busy it was when the run ended.
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def cpu_name() -> str:
    """The CPU's model name (for reports and the figures in the docs)."""
    cpuinfo = Path("/proc/cpuinfo")  # Linux; elsewhere platform.processor() may say more
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
