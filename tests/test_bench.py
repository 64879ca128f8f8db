"""Smoke tests of rnn_export.bench and `rnn-export bench`: structure and sane numbers.

No timing assertions: the machine is shared, so only the shape of the report and
that every figure is a positive, finite number are checked.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from click.testing import CliRunner

from rnn_export import atomic
from rnn_export.bench import (
    QUICK_GRID_BATCHES,
    QUICK_GRID_LENGTHS,
    QUICK_POOL_SIZES,
    BenchError,
    run_bench,
)
from rnn_export.bench_report import TARGETS
from rnn_export.cli import main
from rnn_export.config import ModelConfig
from rnn_export.models import build_model

CHARS = "abcdefgh"
F = 5  # values per frame of a features model (not H, so that its input product shows)


def _run_dir_and_model(tmp_path, arch: str, seed: int, input_kind: str = "tokens"):
    from rnn_export.checkpoint import save_checkpoint
    from rnn_export.data import Vocabulary, embedded_spec
    from rnn_export.export import export_onnx

    torch.manual_seed(seed)
    vocab = ("<unk>", *CHARS)
    frames = input_kind == "features"
    config = ModelConfig(
        arch,
        0 if frames else len(vocab),
        ("x", "y", "z"),
        hidden_size=16,
        num_layers=1 if arch == "cell" else 2,
        input_kind=input_kind,
        **({"input_size": F} if frames else {}),
    )
    model = build_model(config).eval()
    if frames:  # a normalization far from the identity: frames are drawn around it
        model.frames.mean.copy_(torch.randn(F) * 3)
        model.frames.scale.copy_(torch.rand(F) * 4 + 0.25)
    name = f"{arch}-{input_kind}-{seed}"
    run_dir = save_checkpoint(
        tmp_path / f"run-{name}",
        model,
        None if frames else Vocabulary(vocab),
        None if frames else embedded_spec(),
        {"imported": {"source": "random weights"}} if frames else {"epochs": 0},
        {} if frames else {"val_accuracy": 0.0},
    )
    return run_dir, export_onnx(run_dir, tmp_path / f"{name}.onnx")


@pytest.fixture(scope="module", params=["cell", "stacked"])
def exported(request, tmp_path_factory):
    """(RUN_DIR, .onnx path) of a tiny random model of each arch."""
    return _run_dir_and_model(tmp_path_factory.mktemp("bench"), request.param, seed=0)


def _numbers(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)
    elif isinstance(x, float):
        yield x


def _check_report(d: dict, run_dir, threads: int) -> None:
    sections = {"machine", "settings", "streaming", "offline", "pool", "cold_start", "targets"}
    assert set(d) == sections | {"scaling", "step_products"}
    assert d["scaling"] is None  # quick: one thread only
    # The roofline times the file's own step products: the H x C head, and per layer the
    # recurrent product (and above layer 0 the input product) with G*H rows in all, G the
    # gate count (1 plain, 3 GRU, 4 LSTM), whatever way the export splits them. Layer 0's
    # input term is a table lookup for token ids and one-hot symbols, a product of the F
    # normalized values of a frame for a features model.
    s = d["settings"]
    H, C, L = s["hidden_size"], s["num_classes"], s["num_layers"]
    gates = {"cell": 1, "stacked": 1, "gru": 3, "lstm": 4}[s["arch"]]
    products = [(p["k"], p["m"], p["head"]) for p in d["step_products"]]
    assert products[-1] == (H, C, True)
    assert not any(head for _, _, head in products[:-1])
    want = {H: gates * H * (2 * L - 1)}  # the rows of the products of each width k
    if s["input_kind"] == "features":
        assert s["input_size"] == F
        want[F] = gates * H
    widths = {}
    for k, m, _ in products[:-1]:
        widths[k] = widths.get(k, 0) + m
    assert widths == want
    assert d["targets"] == TARGETS
    assert d["settings"]["threads"] == threads
    assert d["settings"]["checkpoint"] == str(run_dir)
    assert d["machine"]["cpu_count"] >= 1
    st = d["streaming"]
    assert set(st) == {
        "runtime_s",
        "torch_s",
        "floor_s",
        "speedup_vs_torch",
        "runtime_vs_floor",
        "main_graph_s",
        "steps_through",
        "handwritten_s",
        "speedup_vs_handwritten",
    }
    # The file embeds a step model: the runtime steps through it; the main graph is the
    # ablation (timed, not compared: timings are noisy here).
    assert st["steps_through"] == "the embedded step model"
    assert st["main_graph_s"] > 0
    assert st["speedup_vs_torch"] == pytest.approx(st["torch_s"] / st["runtime_s"])
    assert st["runtime_vs_floor"] == pytest.approx(st["runtime_s"] / st["floor_s"])
    assert st["speedup_vs_handwritten"] == pytest.approx(st["handwritten_s"] / st["runtime_s"])
    grid = [(r["batch"], r["time"]) for r in d["offline"]]
    assert sorted(grid) == sorted((B, T) for B in QUICK_GRID_BATCHES for T in QUICK_GRID_LENGTHS)
    for row in d["offline"]:
        # Mixed lengths: at least one full row, never more than B * T real tokens.
        assert row["time"] <= row["real_tokens"] <= row["batch"] * row["time"]
        assert row["speedup_vs_torch"] == pytest.approx(
            row["onnxruntime_tokens_per_s"] / row["torch_tokens_per_s"]
        )
        seconds = row["real_tokens"] / row["onnxruntime_tokens_per_s"]
        assert row["roofline_fraction"] == pytest.approx(row["roofline_s"] / seconds)
        # The sorted schedule's products: B > 1 only (B == 1 runs the RNN operator).
        if row["batch"] == 1:
            assert row["schedule_s"] is None and row["schedule_fraction"] is None
        else:
            assert row["schedule_fraction"] == pytest.approx(row["roofline_s"] / row["schedule_s"])
    assert any(row["schedule_s"] is not None for row in d["offline"])
    assert [r["streams"] for r in d["pool"]] == list(QUICK_POOL_SIZES)
    for row in d["pool"]:
        assert row["steps_per_s"] == pytest.approx(row["streams"] / row["step_s"])
        assert row["roofline_fraction"] == pytest.approx(row["roofline_s"] / row["step_s"])
        assert row["graph_fraction"] == pytest.approx(row["roofline_s"] / row["graph_s"])
        flops = sum(2 * row["streams"] * k * m for k, m, _ in products)
        assert row["roofline_gflops"] == pytest.approx(flops / row["roofline_s"] / 1e9)
    cold = d["cold_start"]
    assert cold["runs"] == 1
    assert cold["torch_imported"] is False and cold["onnx_imported"] is False
    assert cold["bytecode_cached"] is True
    assert sum(cold["phases"].values()) == pytest.approx(cold["seconds"])  # one run
    numbers = list(_numbers({k: v for k, v in d.items() if k != "targets"}))
    assert st["main_graph_s"] in numbers
    assert len(numbers) >= 10
    assert all(math.isfinite(x) and x > 0 for x in numbers), numbers


def test_run_bench_quick_report(exported):
    run_dir, model_path = exported
    report = run_bench(model_path, run_dir, repeats=1, quick=True)
    _check_report(report.to_dict(), run_dir, threads=1)
    table = report.format_table()
    for heading in (
        "1. streaming",
        "2. offline",
        "3. many streams",
        "4. one thread against all cores",
        "5. cold start",
    ):
        assert heading in table
    # Every goal is shown with its verdict; quick runs measure no thread scaling.
    assert table.count("(goal ") == len(TARGETS)
    goals = report.goals()
    assert set(goals) == set(TARGETS)
    assert goals["pool_256_threads_scaling"] is None  # quick: not measured
    assert goals["pool_256_roofline"] is None  # quick: no pool of 256
    assert "hand-written" in table
    assert "runtime steps through: the embedded step model" in table
    assert "runtime through the main graph" in table


def test_cli_bench_writes_json(exported, tmp_path):
    run_dir, model_path = exported
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(model_path),
            "--checkpoint",
            str(run_dir),
            "--quick",
            "--repeats",
            "1",
            "--threads",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "runtime speedup" in result.output
    _check_report(json.loads(out.read_text()), run_dir, threads=2)


def test_cli_bench_rejects_a_foreign_checkpoint(exported, tmp_path):
    _, model_path = exported
    other_run, _ = _run_dir_and_model(tmp_path, "cell", seed=1)
    result = CliRunner().invoke(
        main, ["bench", str(model_path), "--checkpoint", str(other_run), "--quick"]
    )
    assert result.exit_code == 2
    assert "model and checkpoint do not belong together" in result.output


def test_cli_bench_names_a_file_exported_before_the_identity_change(exported, tmp_path):
    """A file whose checkpoint_sha256 is the weights' sha256, as exports once were."""
    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.export import export_model

    run_dir, _ = exported
    ckpt = load_checkpoint(run_dir)
    old = export_model(ckpt.model, ckpt.vocab, ckpt.weights_sha256, tmp_path / "old.onnx").path
    result = CliRunner().invoke(main, ["bench", str(old), "--checkpoint", str(run_dir)])
    assert result.exit_code == 2
    assert result.output == f"error: {ckpt.mismatch(ckpt.weights_sha256, old)}\n"
    assert "exported by an earlier rnn-export" in result.output


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"repeats": 0}, r"repeats must be in 1 \.\. 1,000; got 0"),
        ({"threads": True}, "threads must be an integer; got True"),
        ({"threads": 100_000}, r"threads must be in 1 \.\. 256; got 100,000"),
        ({"threads": 2**31}, r"threads must be in 1 \.\. 256; got 2,147,483,648"),
    ],
)
def test_run_bench_bad_arguments(exported, kwargs, match):
    run_dir, model_path = exported
    with pytest.raises(BenchError, match=match):
        run_bench(model_path, run_dir, **kwargs)


def test_run_bench_missing_model(exported, tmp_path):
    run_dir, _ = exported
    with pytest.raises(BenchError, match="no such model file"):
        run_bench(tmp_path / "absent.onnx", run_dir, quick=True)


def test_cli_bench_writes_json_atomically(exported, tmp_path, monkeypatch):
    """A full disk names the path and leaves the earlier report whole."""
    run_dir, model_path = exported
    out = tmp_path / "bench.json"
    out.write_text('{"earlier": true}')

    def full(fd, data):
        raise OSError(28, "No space left on device")

    real_replace = atomic.replace_file

    def replace_on_a_full_disk(path, data):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(os, "write", full)
            real_replace(path, data)

    monkeypatch.setattr(atomic, "replace_file", replace_on_a_full_disk)
    args = ["bench", str(model_path), "--checkpoint", str(run_dir), "--quick", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        f"error: {out}: cannot write: No space left on device"
    )
    assert out.read_text() == '{"earlier": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]


def test_bench_table_script_formats_a_report_with_its_verdicts(exported):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "bench_table.py"
    spec = importlib.util.spec_from_file_location("bench_table", path)
    bench_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_table)
    run_dir, model_path = exported
    report = run_bench(model_path, run_dir, repeats=1, quick=True)
    text = bench_table.format_tables(report.to_dict(), "rnn-export bench ...", "2026-01-01")
    goals = report.goals()
    verdict = {True: "met", False: "missed", None: "not measured"}
    row = next(line for line in text.splitlines() if "over the hand-written loop" in line)
    assert row.endswith(f"| {verdict[goals['streaming_vs_handwritten']]} |")
    row = next(line for line in text.splitlines() if line.startswith("| peak RSS"))
    assert row.endswith(f"| {verdict[goals['peak_rss_mib']]} |")
    assert "load average" in text.splitlines()[0]
    offline = [line for line in text.splitlines() if line.startswith("| 32 | 16 |")]
    assert len(offline) == 1 and offline[0].endswith("% |")  # the roofline fraction
    row = next(line for line in text.splitlines() if line.startswith("| cold start, by phase"))
    assert row.count(" ms") == len(report.cold_start["phases"])
    # --goals: one row per report, each goal's own figure and verdict in TARGETS order.
    quick = report.to_dict()
    slow = quick | {"streaming": quick["streaming"] | {"speedup_vs_handwritten": 1.0}}
    lines = bench_table.format_goals([quick, slow]).splitlines()
    s = quick["settings"]
    assert len(lines) == 4
    assert lines[2].startswith(f"| {s['arch']} H={s['hidden_size']} L={s['num_layers']} | 1 |")
    cells = [c.strip() for c in lines[2].split("|")[4:-1]]
    figures = report.figures()
    assert len(cells) == len(figures) == len(goals)
    for cell, (goal, value) in zip(cells, figures.items(), strict=True):
        assert cell == "n/a" if value is None else cell.endswith(" " + verdict[goals[goal]])
    assert (
        cells[1]
        == f"{figures['streaming_vs_handwritten']:.2f}x "
        + verdict[goals["streaming_vs_handwritten"]]
    )
    assert lines[3].split("|")[5].strip() == "1.00x missed"


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_run_bench_quick_report_of_a_gated_arch(tmp_path, arch):
    """bench runs a gru and an lstm (PyTorch fed every state, the LSTM's h and c)."""
    run_dir, model_path = _run_dir_and_model(tmp_path, arch, seed=0)
    report = run_bench(model_path, run_dir, repeats=1, quick=True)
    _check_report(report.to_dict(), run_dir, threads=1)
    assert f"arch {arch}, H=16, L=2" in report.format_table()


@pytest.mark.parametrize(("input_kind", "arch"), [("features", "gru"), ("onehot", "lstm")])
def test_run_bench_quick_report_of_every_input_kind(tmp_path, input_kind, arch):
    """Every measurement feeds the model's own input kind: frames (F,) a step, (N, F) a
    pool step and (B, T, F) a batch for a features model, symbols for a one-hot one; the
    offline check (onnxruntime against PyTorch on the same batch) runs on them too."""
    run_dir, model_path = _run_dir_and_model(tmp_path, arch, seed=0, input_kind=input_kind)
    report = run_bench(model_path, run_dir, repeats=1, quick=True)
    _check_report(report.to_dict(), run_dir, threads=1)
    assert report.settings["input_kind"] == input_kind
    table = report.format_table()
    if input_kind == "features":
        assert f"arch {arch}, H=16, L=2, F={F} frames, C=3" in table
        assert "(real frames/s)" in table
    else:
        assert f"arch {arch}, H=16, L=2, V={len(CHARS) + 1}, C=3" in table
        assert "(real tokens/s)" in table


def test_random_inputs_are_of_the_files_input_kind(tmp_path):
    """One generator for every measurement: token ids in 0..V-1 for a model reading
    tokens; raw float32 frames around the file's normalization for a features model."""
    import numpy as np

    import rnn_runtime
    from rnn_export.bench_inputs import random_inputs

    tokens = rnn_runtime.load_metadata(_run_dir_and_model(tmp_path, "cell", 0)[1])
    ids = random_inputs(tokens, np.random.default_rng(0), (3, 4000))
    assert ids.dtype == np.int64 and ids.shape == (3, 4000)
    assert set(np.unique(ids)) == set(range(tokens.vocab_size))
    meta = rnn_runtime.load_metadata(_run_dir_and_model(tmp_path, "gru", 0, "features")[1])
    frames = random_inputs(meta, np.random.default_rng(0), (3, 4000))
    assert frames.dtype == np.float32 and frames.shape == (3, 4000, F)
    mean, scale = (np.array(v) for v in meta.normalization)
    normalized = (frames.reshape(-1, F) - mean) / scale  # what the graph's first stage sees
    # 12,000 draws a feature: their mean within 0.05 of 0 and spread within 5% of 1
    # (both more than 5 standard errors).
    assert np.abs(normalized.mean(axis=0)).max() < 0.05
    assert np.abs(normalized.std(axis=0) - 1).max() < 0.05
