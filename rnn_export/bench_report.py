"""The report of one `rnn-export bench` run: every figure (JSON) and the table for people,
each figure beside its goal and whether it was met.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# The goals of the runtime, shown next to each measured figure; "at least" unless it says.
TARGETS = {
    "streaming_speedup_vs_torch": 5.0,
    "streaming_vs_handwritten": 2.5,  # the runtime's step against the hand-written loop
    "offline_speedup_vs_torch": 1.5,  # at every grid point
    "offline_roofline_at_256": 0.7,  # fraction of the roofline at B = 256
    "pool_256_roofline": 0.9,  # fraction of the roofline of a pool step of 256 streams
    "pool_256_threads_scaling": 1.8,  # 2 threads against 1 (all cores against one)
    "cold_start_s": 0.150,  # at most
    "peak_rss_mib": 64.0,  # at most
}
# Goals that are upper bounds; every other goal is a lower bound.
_AT_MOST = {"cold_start_s", "peak_rss_mib"}


def meets(goal: str, value: float | None) -> bool | None:
    """Whether value meets TARGETS[goal]; None when it was not measured."""
    if value is None:
        return None
    return value <= TARGETS[goal] if goal in _AT_MOST else value >= TARGETS[goal]


def _goal(goal: str, value: float | None, unit: str = "x") -> str:
    """ "(goal >= 5.0x: met)" beside a figure."""
    sign = "<=" if goal in _AT_MOST else ">="
    verdict = {True: "met", False: "MISSED", None: "not measured"}[meets(goal, value)]
    return f"(goal {sign} {TARGETS[goal]:g}{unit}: {verdict})"


def phases_text(phases: dict[str, float]) -> str:
    """A cold start's phases in one line: "interpreter 25 ms, import numpy 72 ms, ..."."""
    return ", ".join(f"{name} {1e3 * seconds:.0f} ms" for name, seconds in phases.items())


def input_text(settings: dict) -> str:
    """A report's model input: "V=9" for token ids, "F=40 frames" for a features model
    (reports written before the input kinds hold token ids)."""
    if settings.get("input_kind") == "features":
        return f"F={settings['input_size']} frames"
    return f"V={settings['vocab_size']}"


def steps_unit(settings: dict) -> str:
    """What one step of the offline grid reads: a token or a frame."""
    return "frames" if settings.get("input_kind") == "features" else "tokens"


def _fraction(value: float | None) -> str:
    return "    n/a" if value is None else f"{value:7.1%}"


@dataclass
class BenchReport:
    """All figures of one `rnn-export bench` run; times in seconds, rates per second.

    Attributes:
        machine: platform, CPU count and library versions.
        settings: model, sizes, threads, repeats, quick.
        streaming: per-step seconds of runtime, torch, hand-written loop and floor, and
            their ratios.
        offline: one dict per (batch, time) grid point, with the roofline fraction.
        pool: one dict per pool size, with the roofline fraction.
        cold_start: median seconds to the first prediction and peak RSS.
        scaling: one thread against all cores (None: quick, or a one-core machine).
        step_products: the step's matrix products the roofline times ({k, m, head}).
        targets: TARGETS, for reference.
    """

    machine: dict
    settings: dict
    streaming: dict
    offline: list[dict]
    pool: list[dict]
    cold_start: dict
    scaling: dict | None = None
    step_products: list[dict] | None = None
    targets: dict = field(default_factory=lambda: dict(TARGETS))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def figures(self) -> dict[str, float | None]:
        """The figure each goal of TARGETS is judged on (None: not measured)."""
        st, c = self.streaming, self.cold_start
        pool = {row["streams"]: row for row in self.pool}
        return {
            "streaming_speedup_vs_torch": st["speedup_vs_torch"],
            "streaming_vs_handwritten": st["speedup_vs_handwritten"],
            "offline_speedup_vs_torch": min(r["speedup_vs_torch"] for r in self.offline),
            "offline_roofline_at_256": self._offline_roofline_256(),
            "pool_256_roofline": pool.get(256, {}).get("roofline_fraction"),
            "pool_256_threads_scaling": None
            if self.scaling is None
            else self.scaling["pool_scaling"],
            "cold_start_s": c["seconds"],
            "peak_rss_mib": c["peak_rss_mib"],
        }

    def goals(self) -> dict[str, bool | None]:
        """Every goal of TARGETS -> met (True), missed (False) or not measured (None)."""
        return {goal: meets(goal, value) for goal, value in self.figures().items()}

    def _offline_roofline_256(self) -> float | None:
        """The lowest roofline fraction over the grid points at B = 256 (None: not measured)."""
        at_256 = [r["roofline_fraction"] for r in self.offline if r["batch"] == 256]
        return min(at_256) if at_256 and None not in at_256 else None

    def format_table(self) -> str:
        """The report for people: one section per measurement, figures with their goals."""
        s, m, st = self.settings, self.machine, self.streaming
        lines = [
            f"model {s['model']} (arch {s['arch']}, H={s['hidden_size']}, L={s['num_layers']}, "
            f"{input_text(s)}, C={s['num_classes']}); threads {s['threads']}, "
            f"repeats {s['repeats']}{', quick' if s['quick'] else ''}",
            f"machine: {m['cpu_count']} CPUs {m['machine']} ({m['processor']}), Python "
            f"{m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}"
            + ("" if m.get("load_average") is None else f"; load average {m['load_average']:.2f}"),
        ]
        if self.step_products is not None:
            shapes = ", ".join(
                f"{p['k']}x{p['m']}{' (head)' if p['head'] else ''}" for p in self.step_products
            )
            lines.append(f"roofline: onnxruntime Gemm at the step's products (N x) {shapes}")
        lines += [
            "",
            "1. streaming step, batch 1 (median per step)",
            f"   runtime      {st['runtime_s'] * 1e6:9.1f} us",
            f"   torch        {st['torch_s'] * 1e6:9.1f} us   runtime speedup "
            f"{st['speedup_vs_torch']:6.2f}x  "
            + _goal("streaming_speedup_vs_torch", st["speedup_vs_torch"]),
            f"   hand-written {st['handwritten_s'] * 1e6:9.1f} us   runtime speedup "
            f"{st['speedup_vs_handwritten']:6.2f}x  "
            + _goal("streaming_vs_handwritten", st["speedup_vs_handwritten"]),
            f"   floor        {st['floor_s'] * 1e6:9.1f} us   runtime / floor "
            f"{st['runtime_vs_floor']:6.2f}x  (one call of a one-node model)",
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
            f"2. offline throughput, padded batches with mixed lengths (real {steps_unit(s)}/s)",
            f"   {'B':>4} {'T':>4} {'onnxruntime':>13} {'torch':>13} {'speedup':>8} "
            f"{'roofline':>8} {'schedule':>8}",
        ]
        for row in self.offline:
            lines.append(
                f"   {row['batch']:>4} {row['time']:>4} {row['onnxruntime_tokens_per_s']:>13,.0f} "
                f"{row['torch_tokens_per_s']:>13,.0f} {row['speedup_vs_torch']:>7.2f}x "
                f"{_fraction(row['roofline_fraction']):>8} "
                f"{_fraction(row.get('schedule_fraction')):>8}"
            )
        worst = min(r["speedup_vs_torch"] for r in self.offline)
        lines += [
            f"   slowest speedup {worst:.2f}x " + _goal("offline_speedup_vs_torch", worst),
            f"   roofline at B=256 {_fraction(self._offline_roofline_256())} "
            + _goal("offline_roofline_at_256", self._offline_roofline_256(), ""),
            "   schedule: the most of the roofline that the products alone reach at each",
            "   step's running rows, as the length-sorted Scan runs them (B > 1)",
            "",
            "3. many streams: runtime pool, one step for every stream per call",
            f"   {'streams':>7} {'steps/s':>12} {'us/step':>9} {'graph us':>9} "
            f"{'roofline us':>12} {'GFLOP/s':>8} {'fraction':>8} {'graph':>8}",
        ]
        for row in self.pool:
            roof, graph = row["roofline_s"], row.get("graph_s")
            lines.append(
                f"   {row['streams']:>7} {row['steps_per_s']:>12,.0f} {row['step_s'] * 1e6:>9.1f} "
                + ("      n/a" if graph is None else f"{graph * 1e6:>9.1f}")
                + (
                    "          n/a      n/a"
                    if roof is None
                    else f" {roof * 1e6:>12.1f} {row['roofline_gflops']:>8.1f}"
                )
                + f" {_fraction(row['roofline_fraction']):>8}"
                + f" {_fraction(row.get('graph_fraction')):>8}"
            )
        pool_256 = {r["streams"]: r for r in self.pool}.get(256, {}).get("roofline_fraction")
        lines += [
            "   at 256 streams " + _goal("pool_256_roofline", pool_256, ""),
            "   graph: the pool's onnxruntime call alone, without the pool's Python",
        ]
        lines += ["", "4. one thread against all cores"]
        sc = self.scaling
        if sc is None:
            lines.append(
                "   quick run or a one-core machine " + _goal("pool_256_threads_scaling", None)
            )
        else:
            lines += [
                f"   pool of {sc['pool_streams']}: {sc['pool_steps_per_s_one']:,.0f} -> "
                f"{sc['pool_steps_per_s_all']:,.0f} steps/s with {sc['cores']} threads, "
                f"{sc['pool_scaling']:.2f}x "
                + _goal("pool_256_threads_scaling", sc["pool_scaling"]),
                f"   offline B={sc['batch']} T={sc['time']}: "
                f"{sc['offline_tokens_per_s_one']:,.0f} -> "
                f"{sc['offline_tokens_per_s_all']:,.0f} {steps_unit(s)}/s, "
                f"{sc['offline_scaling']:.2f}x",
            ]
            if sc["roofline_scaling"] is not None:
                lines.append(
                    f"   the roofline itself (Gemm at {sc['pool_streams']} rows): "
                    f"{sc['roofline_scaling']:.2f}x"
                )
        c = self.cold_start
        lines += [
            "",
            "5. cold start of a process that imports only the runtime",
            f"   start to first prediction {c['seconds'] * 1e3:8.1f} ms (median of {c['runs']}) "
            + _goal("cold_start_s", c["seconds"], " s"),
            "   of which "
            + phases_text(c["phases"])
            + ("" if c["bytecode_cached"] else " (the runtime parsed from source)"),
            f"   peak RSS {c['peak_rss_mib']:.1f} MiB "
            + _goal("peak_rss_mib", c["peak_rss_mib"], " MiB")
            + f"{'' if not c['torch_imported'] else ' (torch was imported!)'}",
        ]
        return "\n".join(lines)
