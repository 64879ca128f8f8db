"""The table of verify's margins on trained models: correct files, and broken ones.

    python scripts/parity_margins.py RUN_DIR [RUN_DIR ...] [--opset N] [--correct-only]
                                     [--out FILE.md]

For each RUN_DIR: export it, then run `verify` on the export, on two correct files that
round differently (hidden units permuted inside the file; every new state scaled by up
to 4 ulp per step) and on every broken fake of the parity suite that applies to its arch
(tests/parity/fakes.py: the generic ones, and for gru and lstm their own).
Prints a Markdown table: per file, PASS/FAIL and the deciding check's error / allowance
(a correct file must pass below 1, a broken one fail at 10 or more). The header says
when, on which machine and with which command it was made.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "parity"))

import fakes  # noqa: E402  (the parity suite's fakes: one definition for tests and docs)

CORRECT = ("export", "permuted-units", "ulp-scaled")


def _variants(run_dir: Path, path: Path, tmp: Path, opset: int, correct_only: bool, arch: str):
    yield "export", path
    yield "permuted-units", fakes.export_permuted(run_dir, tmp / "permuted.onnx", opset=opset)
    yield "ulp-scaled", fakes.write_fake(path, tmp / "ulp.onnx", fakes.ulp_scaled)
    if correct_only:
        return
    for name, make in fakes.broken_for(arch).items():
        yield name, fakes.write_fake(path, tmp / f"{name}.onnx", make)
    yield "fixed-length", fakes.write_fake(path, tmp / "fixed.onnx", fakes.fixed_length, 7)


def margins(run_dir: Path, opset: int, correct_only: bool = False) -> list[dict]:
    """One row per file made from run_dir: its verdict and deciding check."""
    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.export import export_onnx
    from rnn_export.parity import ParityError, verify_parity

    ckpt = load_checkpoint(run_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = export_onnx(ckpt, tmp / "model.onnx", opset=opset)
        variants = _variants(run_dir, path, tmp, opset, correct_only, ckpt.config.arch)
        for name, file in variants:
            started = time.perf_counter()
            try:
                report = verify_parity(file, ckpt)
            except ParityError as e:
                report = e.report
            case = report.deciding()
            options = ckpt.options  # None for an imported model
            epochs, seed = ("?", "?") if options is None else (options.epochs, options.seed)
            rows.append(
                {
                    "model": f"{ckpt.config.arch} {ckpt.config.nonlinearity} "
                    f"L={ckpt.config.num_layers} ({epochs} epochs, seed {seed}, opset {opset})",
                    "file": name,
                    "expected": "pass" if name in CORRECT else "fail",
                    "passed": report.passed,
                    "ratio": case.ratio,
                    "check": f"{case.family}: {case.name}",
                    "seconds": time.perf_counter() - started,
                }
            )
            print(f"{rows[-1]['model']:<18} {name:<22} {rows[-1]['ratio']:.3g}", file=sys.stderr)
    return rows


def table(rows: list[dict], command: str) -> str:
    import onnxruntime
    import torch

    from rnn_export.bench import cpu_name

    lines = [
        f"Made {datetime.date.today().isoformat()} on {cpu_name()} ({platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}) by `{command}`.",
        "",
        "| model | file | expected | verdict | error / allowance | deciding check |",
        "|---|---|---|---|---:|---|",
    ]
    for r in rows:
        verdict = "PASS" if r["passed"] else "FAIL"
        ok = verdict.lower() == r["expected"] and (r["passed"] or r["ratio"] >= 10)
        mark = "" if ok else " (!)"
        lines.append(
            f"| {r['model']} | {r['file']} | {r['expected']} | {verdict}{mark} | "
            f"{r['ratio']:.3g} | {r['check']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="trained RUN_DIRs")
    parser.add_argument("--opset", type=int, default=18, help="opset of the exports")
    parser.add_argument(
        "--correct-only", action="store_true", help="only the export and the two correct variants"
    )
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    rows = [
        row for run_dir in args.run_dirs for row in margins(run_dir, args.opset, args.correct_only)
    ]
    names = " ".join(p.name for p in args.run_dirs)
    flags = " --correct-only" if args.correct_only else ""
    text = table(rows, f"python scripts/parity_margins.py {names} --opset {args.opset}{flags}")
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
