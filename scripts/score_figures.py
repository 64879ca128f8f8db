"""The figures of docs/scale.md: score's throughput (local, Ray with 1 and 2 workers) and
its resident memory on a 1 GB input and on one long line among a million short ones.

    python scripts/score_figures.py MODEL.onnx --out DIR [--texts 100000] [--gigabytes 1]
        [--long-line-mb 10] [--short-lines 1000000] [--parts throughput,memory,long-line]

1. Throughput and agreement: writes --texts generated texts (seeded; 1 to 40 characters
   of the model's vocabulary) to a text file, runs `rnn-export predict --file --json` on
   it, then `rnn-export score` with the local engine and with --engine ray --workers 1
   and 2 (each on a local cluster it starts: workers + 1 CPUs), each as a subprocess;
   records each summary line's throughput, the wall clock, and how many labels differ
   from predict's and by how much the probabilities do.
2. Memory: writes a JSONL file of --gigabytes GB (records of a 24-character text and a
   padding field, so that the bytes read are many and the texts few enough to score in
   minutes) and samples the RSS of `rnn-export score` (psutil, every 0.5 s, the
   process and its children) until it ends.
3. Long line: writes a text file of --short-lines lines of 1 to 40 characters with one
   line of --long-line-mb MB (10,000,000 characters) in the middle, and samples the RSS
   of `rnn-export score` on it the same way.
Writes DIR/score_figures.json (the parts run replace theirs in an existing one),
DIR/score_throughput.png, DIR/score_rss.png and DIR/score_rss_long_line.png, each dated
and naming the machine (CPU model, logical CPUs) and its load average before and after
(the machine may be shared).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psutil

CLI = [sys.executable, "-m", "rnn_export.cli"]
PARTS = ("throughput", "memory", "long-line")


def machine() -> dict:
    from rnn_export.bench import cpu_name

    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_texts(model_path: Path, path: Path, n: int) -> None:
    import rnn_runtime

    vocab = [t for t in rnn_runtime.open_model(model_path).metadata.vocab if len(t) == 1]
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write("".join(rng.choice(vocab) for _ in range(rng.randint(1, 40))) + "\n")


def run(args: list[str]) -> tuple[str, float]:
    started = time.perf_counter()
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, check=True)
    return result.stdout, time.perf_counter() - started


def throughput(model_path: Path, work: Path, n: int) -> dict:
    texts = work / "texts.txt"
    write_texts(model_path, texts, n)
    predicted, predict_s = run(["predict", str(model_path), "--file", str(texts), "--json"])
    want = [json.loads(line) for line in predicted.splitlines()]
    rows = {"predict": {"wall_s": round(predict_s, 2), "texts_per_s": round(n / predict_s)}}
    for name, extra in (
        ("local", []),
        ("ray, 1 worker", ["--engine", "ray", "--workers", "1"]),
        ("ray, 2 workers", ["--engine", "ray", "--workers", "2"]),
    ):
        out = work / f"scored-{len(rows)}.jsonl"
        jsonl = work / "texts.jsonl"
        if not jsonl.exists():  # the same texts as JSONL: the output keeps probabilities whole
            with open(texts, encoding="utf-8") as f, open(jsonl, "w", encoding="utf-8") as g:
                for line in f:
                    g.write(json.dumps({"text": line.rstrip("\n")}) + "\n")
        line, wall = run(
            ["score", str(model_path), "--input", str(jsonl), "--output", str(out), *extra]
        )
        got = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
        differ = sum(a["label"] != b["label"] for a, b in zip(got, want, strict=True))
        worst = max(
            abs(a["probability"] - b["probability"]) for a, b in zip(got, want, strict=True)
        )
        rate = float(line.split("(")[1].split(" texts/s")[0].replace(",", ""))
        rows[name] = {
            "summary": line.strip(),
            "texts_per_s": rate,
            "wall_s": round(wall, 2),
            "labels_differing_from_predict": differ,
            "max_probability_difference": worst,
        }
        out.unlink()
    return rows


def memory(model_path: Path, work: Path, gigabytes: float) -> dict:
    src, out = work / "big.jsonl", work / "big-scored.jsonl"
    target = int(gigabytes * 1e9)
    rng = random.Random(1)
    pad = "p" * 470
    records = 0
    with open(src, "w", encoding="utf-8") as f:
        size = 0
        while size < target:
            text = "".join(rng.choice("ABCDabcd") for _ in range(24))
            line = json.dumps({"id": records, "text": text, "padding": pad}) + "\n"
            f.write(line)
            size += len(line)
            records += 1
    return score_rss(model_path, src, out, records)


def long_line(model_path: Path, work: Path, megabytes: float, short_lines: int) -> dict:
    """RSS of score on short_lines short texts with one of `megabytes` MB in the middle."""
    import rnn_runtime

    src, out = work / "long-line.txt", work / "long-line-scored.txt"
    vocab = [t for t in rnn_runtime.open_model(model_path).metadata.vocab if len(t) == 1]
    rng = random.Random(2)
    long_chars = int(megabytes * 1e6)
    with open(src, "w", encoding="utf-8") as f:
        for n in range(short_lines):
            if n == short_lines // 2:
                block = "".join(rng.choice(vocab) for _ in range(1000))
                f.write(block * (long_chars // 1000) + "\n")
            f.write("".join(rng.choice(vocab) for _ in range(rng.randint(1, 40))) + "\n")
    result = score_rss(model_path, src, out, short_lines + 1)
    result["long_line_characters"] = long_chars
    return result


def score_rss(model_path: Path, src: Path, out: Path, records: int) -> dict:
    """Run `rnn-export score` on src, sampling its RSS every 0.5 s; src and out removed."""
    cmd = [*CLI, "score", str(model_path), "--input", str(src), "--output", str(out)]
    started = time.perf_counter()
    process = psutil.Popen(cmd, stdout=subprocess.PIPE, text=True)
    samples = []
    while process.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
        except psutil.NoSuchProcess:
            break
        samples.append((round(time.perf_counter() - started, 2), rss))
        time.sleep(0.5)
    summary = process.stdout.read().strip()
    if process.returncode != 0:
        raise SystemExit(f"score failed ({process.returncode}): {summary}")
    result = {
        "input_bytes": src.stat().st_size,
        "records": records,
        "summary": summary,
        "rss_mib_first": round(samples[0][1] / 2**20, 1) if samples else None,
        "rss_mib_peak": round(max(r for _, r in samples) / 2**20, 1),
        "rss_mib_last": round(samples[-1][1] / 2**20, 1),
        "samples": samples,
    }
    src.unlink()
    out.unlink()
    return result


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")

    def where(part: dict) -> str:
        m = part["machine"]
        return f"{m['cpu']}, {m['logical_cpus']} logical CPUs, {m['date']}; load {part['load']}"

    if "throughput" in results:
        plot_throughput(results, where(results), out)
    for key, name, what in (
        ("memory", "score_rss.png", "JSONL input"),
        ("long_line", "score_rss_long_line.png", "text input with one long line"),
    ):
        if key in results:
            part = results[key]
            plot_rss(part, where(part if "machine" in part else results), out / name, what)


def plot_throughput(results: dict, where: str, out: Path) -> None:
    import matplotlib.pyplot as plt

    rows = results["throughput"]
    names = [n for n in rows if n != "predict"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(names, [rows[n]["texts_per_s"] for n in names], color=["#4477aa", "#ee6677", "#228833"])
    for i, n in enumerate(names):
        ax.text(
            i, rows[n]["texts_per_s"], f"{rows[n]['texts_per_s']:,.0f}", ha="center", va="bottom"
        )
    ax.set_ylabel("texts per second")
    ax.set_title(f"rnn-export score on {results['texts']:,} texts", fontsize=10)
    fig.text(0.5, 0.01, where, ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out / "score_throughput.png", dpi=100)
    plt.close(fig)


def plot_rss(mem: dict, where: str, path: Path, what: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    t = [s for s, _ in mem["samples"]]
    ax.plot(t, [r / 2**20 for _, r in mem["samples"]])
    ax.set_ylim(0, max(r for _, r in mem["samples"]) / 2**20 * 1.3)
    ax.set(xlabel="seconds", ylabel="RSS (MiB)")
    ax.set_title(
        f"RSS of rnn-export score on a {mem['input_bytes'] / 1e9:.2f} GB {what} "
        f"({mem['records']:,} records)",
        fontsize=10,
    )
    fig.text(0.5, 0.01, where, ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_text(before: tuple) -> str:
    return f"{before[0]:.1f} before, {os.getloadavg()[0]:.1f} after (1-minute average)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a .onnx file made by rnn-export convert")
    parser.add_argument("--out", type=Path, required=True, help="folder for the figures")
    parser.add_argument("--texts", type=int, default=100_000, help="texts for the throughput")
    parser.add_argument("--gigabytes", type=float, default=1.0, help="size of the memory input")
    parser.add_argument(
        "--long-line-mb", type=float, default=10.0, help="size of the long line (MB)"
    )
    parser.add_argument(
        "--short-lines", type=int, default=1_000_000, help="short lines around the long one"
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"which to run, of {', '.join(PARTS)}"
    )
    args = parser.parse_args()
    parts = args.parts.split(",")
    if not set(parts) <= set(PARTS):
        parser.error(f"--parts: expected some of {', '.join(PARTS)}; got {args.parts}")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    figures = args.out / "score_figures.json"
    results = json.loads(figures.read_text()) if figures.exists() else {}
    if "throughput" in parts or "memory" in parts:
        load_before = os.getloadavg()
        results.update({"machine": machine(), "model": str(args.model), "texts": args.texts})
        if "throughput" in parts:
            results["throughput"] = throughput(args.model, work, args.texts)
        if "memory" in parts:
            results["memory"] = memory(args.model, work, args.gigabytes)
        results["load"] = load_text(load_before)
    if "long-line" in parts:  # with its own machine and load: it may run on another day
        load_before = os.getloadavg()
        part = long_line(args.model, work, args.long_line_mb, args.short_lines)
        part.update(
            {"machine": machine(), "model": str(args.model), "load": load_text(load_before)}
        )
        results["long_line"] = part
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    figures.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out)
    rss = ("memory", "long_line")
    print(json.dumps({k: v for k, v in results.items() if k not in rss}, indent=1))
    for key in rss:
        if key in results:
            print(json.dumps({k: v for k, v in results[key].items() if k != "samples"}, indent=1))


if __name__ == "__main__":
    main()
