"""`rnn-export score --engine ray` on a local Ray cluster of 2 CPUs: the same output as the
local engine (hence as `rnn-export predict`) in every format, bad input as one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_scoring import make_texts, write_input

from rnn_export import corpus
from rnn_export.export import export_onnx
from rnn_export.scoring import ScoreError, ScoreJob, score_file

ray = pytest.importorskip(
    "ray", reason="Ray is not installed (the ray extra: pip install -e '.[ray]')"
)
pytest.importorskip("ray.data", reason="Ray Data is not installed (the ray extra)")

from rnn_export.scoring_ray import score_file_on_ray  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for this module (scoring uses a running one)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_path(tiny_run_dir, tmp_path_factory):
    return export_onnx(tiny_run_dir("stacked"), tmp_path_factory.mktemp("ray") / "m.onnx")


@pytest.mark.parametrize("fmt", ["text", "jsonl", "csv", "parquet"])
def test_ray_writes_what_the_local_engine_writes(cluster, model_path, tmp_path, fmt):
    texts = make_texts(5000, seed=1)
    suffix = corpus.FORMATS[fmt][0]
    src = tmp_path / f"in{suffix}"
    write_input(fmt, src, texts, with_id=fmt in ("jsonl", "parquet"))
    local, on_ray = tmp_path / f"local{suffix}", tmp_path / f"ray{suffix}"
    want = score_file(ScoreJob(model_path, src, local, top_k=2))
    got = score_file_on_ray(ScoreJob(model_path, src, on_ray, top_k=2), workers=1)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        a, b = pq.read_table(on_ray), pq.read_table(local)
        assert a.schema == b.schema and a.to_pylist() == b.to_pylist()
    else:
        # The same batches of the same texts in the same order: the same bytes.
        assert on_ray.read_bytes() == local.read_bytes()
    assert (got.texts, got.empty, got.unknown, got.labels) == (
        want.texts,
        want.empty,
        want.unknown,
        want.labels,
    )
    assert got.texts == 5000 and got.engine == "ray" and got.workers == 1
    assert sorted(os.listdir(tmp_path)) == sorted([src.name, local.name, on_ray.name])


def test_workers_need_a_cpu_each_and_one_for_reading(cluster, model_path, tmp_path):
    (tmp_path / "in.txt").write_text("AB\n")
    with pytest.raises(
        ScoreError, match=r"--workers 2 needs 3 CPUs of the Ray cluster .*; it has 2"
    ):
        score_file_on_ray(ScoreJob(model_path, tmp_path / "in.txt", tmp_path / "o.txt"), workers=2)


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (
            "AB\nA#B\n",
            {"strict": True},
            r"the text 'A#B': 1 of 3 characters are not in the model's vocabulary; "
            "--strict refuses them",
        ),
        (
            '{"id": 7, "text": "AB"}\n',
            {"text_field": "body"},
            r"no field 'body' \(it has 'id', 'text'\)",
        ),
    ],
)
def test_bad_input_found_on_ray_is_raised_on_the_driver(
    cluster, model_path, tmp_path, content, extra, message
):
    src = tmp_path / ("in.jsonl" if content.startswith("{") else "in.txt")
    src.write_text(content)
    out = tmp_path / ("out" + src.suffix)
    out.write_text("old\n")
    with pytest.raises(ScoreError if "strict" in extra else corpus.CorpusError, match=message):
        score_file_on_ray(ScoreJob(model_path, src, out, **extra), workers=1)
    assert out.read_text() == "old\n"


def test_cli_ray_engine_starts_a_local_cluster_with_two_workers(model_path, tmp_path):
    """The command as a user runs it: its own local cluster (3 CPUs: 2 workers, 1 reader)."""
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_input("csv", src, make_texts(2000, seed=2), with_id=True)
    local = tmp_path / "local.csv"
    score_file(ScoreJob(model_path, src, local))
    args = ["score", str(model_path), "--input", str(src), "--output", str(out)]
    cmd = [sys.executable, "-m", "rnn_export.cli", *args, "--engine", "ray", "--workers", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("scored 2,000 texts in ")
    assert "texts/s, ray, 2 workers) -> " in result.stdout
    assert out.read_bytes() == local.read_bytes()


def test_local_engine_refuses_ray_options(model_path, tmp_path):
    from click.testing import CliRunner

    from rnn_export.cli import main

    (tmp_path / "in.txt").write_text("AB\n")
    args = [
        "score",
        str(model_path),
        "--input",
        str(tmp_path / "in.txt"),
        "--output",
        str(tmp_path / "o.txt"),
        "--workers",
        "2",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--address and --workers go with --engine ray" in result.output
