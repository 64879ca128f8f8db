"""Atomic outputs: paths of the wrong kind refused, full disks named, kill -9 at any instant."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_export import atomic
from rnn_export.atomic import WriteError

DRIVER = Path(__file__).with_name("sigkill_driver.py")


def _dead_pid() -> int:
    """The id of a process that has ended (its temporaries are stale)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    return int(proc.stdout)


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_path_kind(tmp_path, fifo):
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    kinds = {
        tmp_path: "a folder",
        tmp_path / "file": "a regular file",
        fifo: "a FIFO (named pipe)",
        Path(os.devnull): "a character device",
        tmp_path / "link": "a broken symbolic link",
        tmp_path / "absent": None,
        tmp_path / "file" / "below": None,
    }
    assert {path: atomic.path_kind(path) for path in kinds} == kinds


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("fifo", r"fifo: is a FIFO \(named pipe\); expected the report to write: a new path or"),
        (os.devnull, r"/dev/null: is a character device; expected the report to write"),
        (".", r"is a folder; expected the path of the report to write"),
        ("file/x.json", r"x\.json: cannot write: .*file is a regular file, not a folder"),
        ("absent/x.json", r"x\.json: cannot write: folder .*absent does not exist"),
    ],
    ids=["fifo", "char-device", "folder", "parent-is-a-file", "no-parent"],
)
def test_check_file_output_refuses(tmp_path, fifo, name, match):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=match):
        atomic.check_file_output(tmp_path / name, "the report")
    assert atomic.path_kind(fifo) == "a FIFO (named pipe)"  # untouched


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("fifo", r"fifo: is a FIFO \(named pipe\); expected a run directory to write"),
        (os.devnull, r"/dev/null: is a character device; expected a run directory"),
        ("file", r"file: is a regular file; expected a run directory"),
        ("file/run", r"run: cannot create it: .*file is a regular file"),
    ],
    ids=["fifo", "char-device", "file", "under-a-file"],
)
def test_check_folder_output_refuses(tmp_path, fifo, name, match):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=match):
        atomic.check_folder_output(tmp_path / name, "a run directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "file"]  # no probe left


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_check_folder_output_tries_the_parent():
    """/proc passes every access check for root, yet no folder can be made in it."""
    with pytest.raises(WriteError, match=r"/proc/nope/x: cannot create it: /proc: "):
        atomic.check_folder_output("/proc/nope/x")


def test_replace_file_writes_and_removes_stale_temporaries(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    stale = tmp_path / f".m.onnx.{_dead_pid()}.0123abcd.tmp"
    live = tmp_path / f".m.onnx.{os.getppid()}.0123abcd.tmp"  # a process that still runs
    other = tmp_path / f".other.onnx.{_dead_pid()}.0123abcd.tmp"  # another file's
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    atomic.replace_file(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.onnx", live.name, other.name])


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_full_disk_names_the_path_and_keeps_the_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # no filename, as write gives

    monkeypatch.setattr(os, failing, full)
    with pytest.raises(WriteError, match=rf"^{path}: cannot write: No space left on device$"):
        atomic.replace_file(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_recover_folder_restores_a_run_moved_aside(tmp_path):
    """A swap killed between its two renames: the next writer renames the old run back."""
    pid = _dead_pid()
    old = tmp_path / f".run.old-{pid}-0123abcd"
    new = tmp_path / f".run.tmp-{pid}-4567cdef"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "model.safetensors").write_text(text)
    atomic.recover_folder(tmp_path / "run")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert (tmp_path / "run" / "model.safetensors").read_text() == "old"


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/x/m.onnx"), "/x/m.onnx: No space"),
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"), "a -> b: Invalid"),
        (OSError("no errno"), "no errno"),
    ],
)
def test_os_error_text(error, text):
    assert atomic.os_error_text(error).startswith(text)


def _kill_records(tmp_path, *args) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, str(DRIVER), *args[:1], str(tmp_path), *args[1:]],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records and records[-1].get("done"), records[-1:]
    assert records[-1]["status"] == "exit 0"
    return records[:-1]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_sigkill_at_every_point_of_train_keeps_a_complete_run(tmp_path, exchange):
    """kill -9 at every write, sync, mkdir, rmdir, unlink and rename of `train` over an
    earlier run: RUN_DIR holds the old or the new run whole (with two renames, the one
    gap between them is closed by the next writer), and the next run cleans up."""
    records = _kill_records(tmp_path, "train", *([] if exchange else ["--no-exchange"]))
    points = {r["at"] for r in records}
    assert {"write", "fsync", "mkdir", "rmdir", "unlink"} <= points
    assert ("exchange" in points) and (exchange or "rename" in points)
    assert len(records) >= 20
    states = [r["state"] for r in records]
    assert states[0] == "old" and states[-1] == "new"
    for r in records:
        where = f"killed at call {r['n']} ({r['at']})"
        allowed = {"old", "new"} if exchange else {"old", "new", "missing"}
        assert r["state"] in allowed, where
        assert r["recovered_state"] in {"old", "new"}, where
        if r["state"] == "missing":  # between the two renames: the old run comes back
            assert r["recovered_state"] == "old", where
        assert r["recovered_left"] == ["run"], where
        assert (r["next_status"], r["next_state"], r["next_left"]) == ("exit 0", "new", ["run"])
    if not exchange:
        assert "missing" in states  # the gap was hit, and closed


def test_sigkill_at_every_point_of_convert_keeps_a_complete_file(tmp_path):
    records = _kill_records(tmp_path, "convert")
    assert {r["at"] for r in records} >= {"write", "fsync", "replace"}
    states = [r["state"] for r in records]
    assert states[0] == "old" and states[-1] == "new" and set(states) == {"old", "new"}
    assert any(len(r["left"]) > 1 for r in records)  # some kills left a temporary file...
    for r in records:  # ...which the next convert removed
        assert (r["next_status"], r["next_state"], r["next_left"]) == ("exit 0", "new", ["m.onnx"])


def test_replacing_writes_in_pieces_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "out.txt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="half-way"), atomic.replacing(path) as f:
        f.write(b"new, ")
        raise RuntimeError("half-way")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.txt"]
    with atomic.replacing(path) as f:
        for piece in (b"a", b"b", b"c"):
            f.write(piece)
    assert path.read_bytes() == b"abc"
    assert os.listdir(tmp_path) == ["out.txt"]
