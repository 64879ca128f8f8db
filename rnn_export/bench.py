"""Benchmarks: the runtime and onnxruntime against PyTorch eager, side by side in one process.

Four measurements, each a ratio of timings taken interleaved in the same process so that
a busy machine slows both sides alike (medians over repeated blocks):
    1. streaming: seconds per step at batch 1 of the runtime (StreamSession.step) against
       PyTorch eager stepping the same model, and against the floor: a one-node ONNX model
       (Identity) called through onnxruntime the same way (IOBinding, preallocated
       buffers), i.e. the fixed cost of one call; also the runtime stepping through the
       main graph (step_model=False), to show what the embedded step model saves;
    2. offline: tokens/s over padded batches (B x T grid, mixed lengths) of one
       onnxruntime session against PyTorch eager;
    3. pool: aggregate steps/s of the runtime's StreamPool at N streams against one stream;
    4. cold start: process start to first prediction, and peak RSS, of a fresh process
       that imports only the runtime.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rnn_export.config import MAX_THREADS, check_int
from rnn_export.errors import InputError

# The goals of issue 6, shown next to each measured ratio.
TARGETS = {
    "streaming_speedup_vs_torch": 5.0,  # at least
    "streaming_vs_floor": 2.0,  # at most
    "offline_speedup_vs_torch": 1.5,  # at least, at every grid point
    "pool_256_vs_one_stream": 20.0,  # at least
}
MAX_REPEATS = 1_000
GRID_BATCHES = (1, 32, 256)
GRID_LENGTHS = (16, 128)
POOL_SIZES = (1, 16, 256)
QUICK_GRID_BATCHES = (1, 32)
QUICK_GRID_LENGTHS = (16,)
QUICK_POOL_SIZES = (1, 16)

# Runs in a fresh interpreter: imports only the runtime, prints one JSON line. Peak RSS is
# VmHWM of /proc/self/status: getrusage's ru_maxrss would also count the forked copy of
# the (torch-sized) parent from before exec.
_COLD_START = """\
import json, resource, sys, time
import rnn_runtime
model = rnn_runtime.open_model(sys.argv[1], threads=int(sys.argv[2]))
prediction = model.stream().step(int(sys.argv[3]))
done = time.time()
try:
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "done": done,
    "label": prediction.label,
    "max_rss_kib": peak,
    "torch_imported": "torch" in sys.modules,
    "onnx_imported": "onnx" in sys.modules,
}))
"""


class BenchError(InputError):
    """A benchmark that cannot run: unreadable model or checkpoint, or the two do not match."""


@dataclass
class BenchReport:
    """All figures of one `rnn-export bench` run; times in seconds, rates per second.

    Attributes:
        machine: platform, CPU count and library versions.
        settings: model, sizes, threads, repeats, quick.
        streaming: per-step seconds of runtime, torch and floor, and their ratios.
        offline: one dict per (batch, time) grid point.
        pool: one dict per pool size.
        cold_start: median seconds to the first prediction and peak RSS.
        targets: TARGETS, for reference.
    """

    machine: dict
    settings: dict
    streaming: dict
    offline: list[dict]
    pool: list[dict]
    cold_start: dict
    targets: dict = field(default_factory=lambda: dict(TARGETS))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format_table(self) -> str:
        """The report for people: one section per measurement, ratios with their targets."""
        s, m, st = self.settings, self.machine, self.streaming
        lines = [
            f"model {s['model']} (arch {s['arch']}, H={s['hidden_size']}, L={s['num_layers']}, "
            f"V={s['vocab_size']}, C={s['num_classes']}); threads {s['threads']}, "
            f"repeats {s['repeats']}{', quick' if s['quick'] else ''}",
            f"machine: {m['cpu_count']} CPUs {m['machine']}, Python {m['python']}, "
            f"torch {m['torch']}, onnxruntime {m['onnxruntime']}",
            "",
            "1. streaming step, batch 1 (median per step)",
            f"   runtime {st['runtime_s'] * 1e6:9.1f} us",
            f"   torch   {st['torch_s'] * 1e6:9.1f} us   runtime speedup "
            f"{st['speedup_vs_torch']:6.2f}x  (target >= {TARGETS['streaming_speedup_vs_torch']}x)",
            f"   floor   {st['floor_s'] * 1e6:9.1f} us   runtime / floor "
            f"{st['runtime_vs_floor']:6.2f}x  (target <= {TARGETS['streaming_vs_floor']}x)",
            *(
                []
                if st["main_graph_s"] is None
                else [
                    f"   runtime through the main graph {st['main_graph_s'] * 1e6:.1f} us: the "
                    f"step model saves {1 - st['runtime_s'] / st['main_graph_s']:.0%} per step"
                ]
            ),
            f"   runtime steps through: {st['steps_through']}",
            "",
            "2. offline throughput, padded batches with mixed lengths (real tokens/s)",
            f"   {'B':>4} {'T':>4} {'onnxruntime':>13} {'torch':>13} {'speedup':>8}"
            f"  (target >= {TARGETS['offline_speedup_vs_torch']}x)",
        ]
        for row in self.offline:
            lines.append(
                f"   {row['batch']:>4} {row['time']:>4} {row['onnxruntime_tokens_per_s']:>13,.0f} "
                f"{row['torch_tokens_per_s']:>13,.0f} {row['speedup_vs_torch']:>7.2f}x"
            )
        lines += [
            "",
            "3. many streams: runtime pool, one step for every stream per call",
            f"   {'streams':>7} {'steps/s':>12} {'vs 1 stream':>12}"
            f"  (target at 256 >= {TARGETS['pool_256_vs_one_stream']}x)",
        ]
        for row in self.pool:
            lines.append(
                f"   {row['streams']:>7} {row['steps_per_s']:>12,.0f} "
                f"{row['vs_one_stream']:>11.2f}x"
            )
        c = self.cold_start
        lines += [
            "",
            "4. cold start of a process that imports only the runtime",
            f"   start to first prediction {c['seconds'] * 1e3:8.1f} ms (median of {c['runs']}),"
            f" peak RSS {c['peak_rss_mib']:.1f} MiB"
            f"{'' if not c['torch_imported'] else ' (torch was imported!)'}",
        ]
        return "\n".join(lines)


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
        seed: seed of the random tokens and lengths.

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
            _bench_offline(rt_model, model, B, T, repeats, block_s, rng)
            for T in lengths
            for B in batches
        ]
        pool = _bench_pool(
            rt_model, QUICK_POOL_SIZES if quick else POOL_SIZES, repeats, block_s, rng
        )
    finally:
        torch.set_num_threads(previous_threads)
    cold = _bench_cold_start(Path(model_path), threads, runs=1 if quick else 3)
    settings = {
        "model": str(model_path),
        "checkpoint": str(ckpt.run_dir),
        "arch": meta.arch,
        "hidden_size": meta.hidden_size,
        "num_layers": meta.num_layers,
        "vocab_size": meta.vocab_size,
        "num_classes": meta.num_classes,
        "threads": threads,
        "repeats": repeats,
        "quick": quick,
    }
    return BenchReport(_machine(), settings, streaming, offline, pool, cold)


def _time_blocks(
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
    from rnn_runtime.session import open_session

    ids = rng.integers(0, rt_model.metadata.vocab_size, size=997).tolist()
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

    token = torch.zeros((1, 1), dtype=torch.int64)
    state = [model.initial_state(1)]

    def run_torch(n: int) -> None:
        k = len(ids)
        with torch.inference_mode():
            h = state[0]
            for i in range(n):
                token[0, 0] = ids[i % k]
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
        run = floor_session.run_with_iobinding
        for _ in range(n):
            run(binding)

    t = _time_blocks(runs | {"torch": run_torch, "floor": run_floor}, repeats, block_s)
    return {
        "runtime_s": t["runtime"],
        "torch_s": t["torch"],
        "floor_s": t["floor"],
        "speedup_vs_torch": t["torch"] / t["runtime"],
        "runtime_vs_floor": t["runtime"] / t["floor"],
        "main_graph_s": t.get("main graph"),
        "steps_through": "the embedded step model"
        if rt_model.step_session is not None
        else "the main graph (no step model in the file)",
    }


def _bench_offline(rt_model, model, B, T, repeats, block_s, rng) -> dict:
    import torch

    from rnn_export.models import model_state

    meta = rt_model.metadata
    tokens = rng.integers(0, meta.vocab_size, size=(B, T), dtype=np.int64)
    # Padded batch: lengths spread over 1..T, and one row as long as the padding.
    lengths = rng.integers(1, T + 1, size=B, dtype=np.int64)
    lengths[0] = T
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

    t = _time_blocks({"onnxruntime": run_ort, "torch": run_torch}, repeats, block_s)
    real = int(lengths.sum())
    return {
        "batch": B,
        "time": T,
        "real_tokens": real,
        "onnxruntime_tokens_per_s": real / t["onnxruntime"],
        "torch_tokens_per_s": real / t["torch"],
        "speedup_vs_torch": t["torch"] / t["onnxruntime"],
    }


def _bench_pool(rt_model, sizes, repeats, block_s, rng) -> list[dict]:
    V = rt_model.metadata.vocab_size
    single = rt_model.stream()
    single_ids = rng.integers(0, V, size=997).tolist()

    def run_single(n: int) -> None:
        step, k = single.step, len(single_ids)
        for i in range(n):
            step(single_ids[i % k])

    runs = {"one stream": run_single}
    for size in sizes:
        pool = rt_model.pool()
        for _ in range(size):
            pool.join()
        ids = [rng.integers(0, V, size=size, dtype=np.int64) for _ in range(16)]

        def run_pool(n: int, pool=pool, ids=ids) -> None:
            for i in range(n):
                pool.step(ids[i % 16])

        runs[size] = run_pool
    t = _time_blocks(runs, repeats, block_s)
    one = 1.0 / t["one stream"]
    return [
        {
            "streams": size,
            "steps_per_s": size / t[size],
            "one_stream_steps_per_s": one,
            "vs_one_stream": size / t[size] / one,
        }
        for size in sizes
    ]


def _bench_cold_start(model_path: Path, threads: int, runs: int) -> dict:
    """Start a fresh interpreter that imports only the runtime; time to its first prediction."""
    seconds, rss = [], []
    for _ in range(runs):
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-c", _COLD_START, str(model_path), str(threads), "1"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        if proc.returncode != 0:
            raise BenchError(
                f"the cold-start process failed (exit {proc.returncode}): {proc.stderr.strip()}"
            )
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        seconds.append(out["done"] - start)
        rss.append(out["max_rss_kib"] / 1024)
    return {
        "seconds": statistics.median(seconds),
        "peak_rss_mib": statistics.median(rss),
        "runs": runs,
        "torch_imported": out["torch_imported"],
        "onnx_imported": out["onnx_imported"],
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
    }


def cpu_name() -> str:
    """The CPU's model name (for reports and the figures in the docs)."""
    cpuinfo = Path("/proc/cpuinfo")  # Linux; elsewhere platform.processor() may say more
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
