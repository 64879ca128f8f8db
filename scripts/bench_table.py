"""The Markdown table of docs/benchmarks.md, produced by `rnn-export bench` rather than typed.

    python scripts/bench_table.py MODEL.onnx --checkpoint RUN_DIR [--threads N] [--quick]
    python scripts/bench_table.py --from-json bench.json
    python scripts/bench_table.py --goals cell.json gru.json ...

Runs `rnn-export bench MODEL --checkpoint RUN --json FILE` (or reads a FILE written by an
earlier run) and prints Markdown: a header with the date, the machine and the command,
then one table of the streaming, pool, thread and cold-start figures with their goals and
whether each was met, and one of the offline throughput grid with its roofline fractions.
--goals prints one row per earlier --json file: every goal's figure and whether it was
met, to set runs and arches side by side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

VERDICTS = {True: "met", False: "missed", None: "not measured"}  # BenchReport.goals() values


def run_bench(model: Path, run_dir: Path, threads: int, quick: bool, out: Path) -> list[str]:
    """Run the bench command, writing its JSON to `out`; returns the command as argv."""
    argv = ["rnn-export", "bench", str(model), "--checkpoint", str(run_dir)]
    argv += ["--threads", str(threads)] + (["--quick"] if quick else [])
    subprocess.run([*argv, "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
    return argv


def format_tables(report: dict, command: str | None, date: str) -> str:
    """The Markdown for one bench report (the dict of `BenchReport.to_dict`)."""
    from rnn_export.bench_report import BenchReport, input_text, phases_text, steps_unit

    goals = BenchReport(**report).goals()
    s, m, st, t = report["settings"], report["machine"], report["streaming"], report["targets"]
    us = 1e6

    def goal(name: str, sign: str = ">=", unit: str = "x") -> str:
        return f"{sign} {t[name]:g}{unit} | {verdict(name)}"

    def verdict(name: str) -> str:
        return VERDICTS[goals[name]]

    def fraction(x) -> str:
        return "n/a" if x is None else f"{x:.0%}"

    lines = [
        f"Measured {date} on {m['processor']} ({m['cpu_count']} CPUs, {m['machine']}), "
        f"Python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}"
        + ("" if m.get("load_average") is None else f", load average {m['load_average']:.2f}")
        + "; "
        f"model {s['arch']} H={s['hidden_size']} L={s['num_layers']} {input_text(s)} "
        f"C={s['num_classes']}, threads {s['threads']}, repeats {s['repeats']}"
        f"{', quick (rough figures)' if s['quick'] else ''}.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += [
        "",
        "| measurement | value | goal | |",
        "| --- | --- | --- | --- |",
        f"| streaming step: runtime | {st['runtime_s'] * us:.1f} us | | |",
    ]
    if st.get("main_graph_s") is not None:
        lines.append(
            "| streaming step: runtime through the main graph "
            f"| {st['main_graph_s'] * us:.1f} us | | |"
        )
    lines += [
        f"| streaming step: PyTorch eager | {st['torch_s'] * us:.1f} us | | |",
        f"| streaming step: hand-written loop (session.run, feed dict) "
        f"| {st['handwritten_s'] * us:.1f} us | | |",
        f"| streaming step: floor (one-node model) | {st['floor_s'] * us:.1f} us | | |",
        f"| runtime speedup over PyTorch | {st['speedup_vs_torch']:.2f}x "
        f"| {goal('streaming_speedup_vs_torch')} |",
        f"| runtime speedup over the hand-written loop | {st['speedup_vs_handwritten']:.2f}x "
        f"| {goal('streaming_vs_handwritten')} |",
        f"| runtime / floor | {st['runtime_vs_floor']:.2f}x | | |",
    ]
    for row in report["pool"]:
        g = goal("pool_256_roofline", unit="") if row["streams"] == 256 else " |"
        alone = row.get("graph_fraction")  # not in a --json file of an earlier version
        lines.append(
            f"| pool, {row['streams']} streams: steps/s, fraction of the roofline "
            + ("" if alone is None else "(its onnxruntime call alone) ")
            + f"| {row['steps_per_s']:,.0f}, {fraction(row['roofline_fraction'])}"
            + ("" if alone is None else f" ({fraction(alone)})")
            + f" | {g} |"
        )
    sc = report.get("scaling")
    if sc is not None:
        lines.append(
            f"| pool, {sc['pool_streams']} streams: {sc['cores']} threads against 1 "
            f"| {sc['pool_scaling']:.2f}x | {goal('pool_256_threads_scaling')} |"
        )
    c = report["cold_start"]
    lines += [
        f"| cold start to first prediction | {c['seconds'] * 1e3:.0f} ms "
        f"| {goal('cold_start_s', '<=', ' s')} |",
        *(
            [f"| cold start, by phase | {phases_text(c['phases'])} | | |"]
            if "phases" in c  # not in a --json file of an earlier version
            else []
        ),
        f"| peak RSS | {c['peak_rss_mib']:.1f} MiB | {goal('peak_rss_mib', '<=', ' MiB')} |",
        "",
        f"Offline throughput (padded batches, mixed lengths; goal >= "
        f"{t['offline_speedup_vs_torch']}x PyTorch at every point, "
        f"{verdict('offline_speedup_vs_torch')}; >= {t['offline_roofline_at_256']:.0%} of the "
        f"roofline at B = 256, {verdict('offline_roofline_at_256')}):",
        "",
        f"| B | T | onnxruntime {steps_unit(s)}/s | PyTorch {steps_unit(s)}/s | speedup "
        "| roofline "
        "| the products alone (sorted schedule) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["offline"]:
        lines.append(
            f"| {row['batch']} | {row['time']} | {row['onnxruntime_tokens_per_s']:,.0f} "
            f"| {row['torch_tokens_per_s']:,.0f} | {row['speedup_vs_torch']:.2f}x "
            f"| {fraction(row['roofline_fraction'])} "
            f"| {fraction(row.get('schedule_fraction'))} |"
        )
    return "\n".join(lines)


# Column heads of --goals, in TARGETS order, and how each figure is printed.
_GOAL_COLUMNS = {
    "streaming_speedup_vs_torch": ("step vs PyTorch", "{:.2f}x"),
    "streaming_vs_handwritten": ("step vs hand loop", "{:.2f}x"),
    "offline_speedup_vs_torch": ("offline vs PyTorch, lowest", "{:.2f}x"),
    "offline_roofline_at_256": ("offline roofline, B=256", "{:.0%}"),
    "pool_256_roofline": ("pool 256 roofline", "{:.0%}"),
    "pool_256_threads_scaling": ("pool 256, 2 threads", "{:.2f}x"),
    "cold_start_s": ("cold start", "{:.3f} s"),
    "peak_rss_mib": ("peak RSS", "{:.1f} MiB"),
}


def format_goals(reports: list[dict]) -> str:
    """One Markdown row per bench report: each goal's figure, "met" or "missed"."""
    from rnn_export.bench_report import TARGETS, BenchReport, input_text, steps_unit

    heads = [_GOAL_COLUMNS[g][0] for g in TARGETS]
    lines = [
        "| model | repeats | load | " + " | ".join(heads) + " |",
        "| --- " * (len(heads) + 3) + "|",
    ]
    for report in reports:
        bench = BenchReport(**report)
        figures, goals = bench.figures(), bench.goals()
        cells = []
        for goal in TARGETS:
            value, fmt = figures[goal], _GOAL_COLUMNS[goal][1]
            # A goal is not measured exactly where its figure is None.
            cells.append("n/a" if value is None else f"{fmt.format(value)} {VERDICTS[goals[goal]]}")
        s, load = report["settings"], report["machine"].get("load_average")
        # The input is named where it is not token ids (every earlier row's).
        frames = "" if steps_unit(s) == "tokens" else f" {input_text(s)}"
        lines.append(
            f"| {s['arch']} H={s['hidden_size']} L={s['num_layers']}{frames} | {s['repeats']} "
            f"| {'n/a' if load is None else f'{load:.2f}'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="a .onnx file made by convert")
    parser.add_argument("--checkpoint", type=Path, help="the RUN_DIR it was exported from")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="rough figures in seconds")
    parser.add_argument("--from-json", type=Path, help="format an earlier bench --json file")
    parser.add_argument(
        "--goals", type=Path, nargs="+", metavar="JSON", help="one row of goals per file"
    )
    args = parser.parse_args(argv)
    date = datetime.date.today().isoformat()
    if args.goals:
        print(format_goals([json.loads(p.read_text()) for p in args.goals]))
        return 0
    if args.from_json is not None:
        report = json.loads(args.from_json.read_text())
        print(format_tables(report, None, date))
        return 0
    if args.model is None or args.checkpoint is None:
        parser.error("give MODEL.onnx and --checkpoint RUN_DIR, or --from-json FILE")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        try:
            command = run_bench(args.model, args.checkpoint, args.threads, args.quick, out)
        except subprocess.CalledProcessError as e:
            print(f"error: rnn-export bench exited {e.returncode}", file=sys.stderr)
            return 2
        report = json.loads(out.read_text())
    print(format_tables(report, shlex.join(command), date))
    return 0


if __name__ == "__main__":
    sys.exit(main())
