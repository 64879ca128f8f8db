"""Kill `rnn-export train` or `convert` with SIGKILL at each write and rename, and look.

Run by tests/test_atomic.py as a subprocess:
    python sigkill_driver.py train|convert WORK [--no-exchange]
It imports everything once, then for N = 1, 2, ... forks a child that counts the calls
of os.write, os.fsync, os.mkdir, os.rmdir, os.unlink, os.rename, os.replace and the
folder exchange (rnn_export.atomic._exchange), and kills itself with SIGKILL just
before the Nth; until a child runs to its end without reaching N. After each kill it
records what the output path holds ("old", "new", "missing" or what is wrong), what else
the folder holds, the same after atomic.recover_folder (train), and the same after the
next, uninterrupted run of the command. One JSON object per N on stdout. Nothing here
is a hook in the toolkit: the child patches the os module from outside.

--no-exchange makes the exchange fail as on a filesystem without renameat2, so that the
two-rename fallback is the one killed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import sys
from pathlib import Path

os.environ["PYTHONDONTWRITEBYTECODE"] = "1"

import matplotlib  # noqa: E402 - imported before the forks, once

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402, F401
import onnx  # noqa: E402, F401
import onnxruntime  # noqa: E402, F401
import torch  # noqa: E402

import rnn_export.export  # noqa: E402, F401 - what the commands import, imported once
import rnn_export.training  # noqa: E402, F401
from rnn_export import atomic  # noqa: E402
from rnn_export.checkpoint import REQUIRED, WEIGHTS  # noqa: E402
from rnn_export.cli import main  # noqa: E402

PATCHED = ("write", "fsync", "mkdir", "rmdir", "unlink", "rename", "replace")
LOG = os.devnull  # where the children's stderr goes (set in main_loop)


def run_child(args: list[str], kill_at: int | None, no_exchange: bool) -> tuple[str, list]:
    """Run the CLI in a forked child; returns ("killed" | "exit N", the calls it made)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        log = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what the command prints
        os.dup2(log, 2)
        calls: list[str] = []
        real_write = os.write

        def counted(name, real):
            def call(*a, **k):
                calls.append(name)
                if kill_at is not None and len(calls) == kill_at:
                    real_write(write_end, json.dumps(calls).encode())
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*a, **k)

            return call

        if no_exchange:

            def refuse(a, b):
                raise OSError(errno.EINVAL, "no RENAME_EXCHANGE on this filesystem")

            atomic._exchange = refuse
        atomic._exchange = counted("exchange", atomic._exchange)
        for name in PATCHED:
            setattr(os, name, counted(name, getattr(os, name)))
        code = 0
        try:
            main(args, standalone_mode=False)
        except BaseException as e:  # noqa: BLE001 - the child reports any end as a code
            code = getattr(e, "code", 3) if isinstance(e, SystemExit) else 3
            if code != 0:
                sys.stderr.write(f"child: {type(e).__name__}: {e}\n")
        real_write(write_end, json.dumps(calls).encode())
        os._exit(code if isinstance(code, int) else 3)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        calls = json.loads(f.read() or b"[]")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ("killed" if os.WTERMSIG(status) == signal.SIGKILL else "signal"), calls
    return f"exit {os.WEXITSTATUS(status)}", calls


def make_data(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = random.Random(0)
    for label, first in (("left", "a"), ("right", "b")):
        lines = [first + "".join(rng.choice("abc") for _ in range(rng.randint(0, 5)))]
        lines += [first + "".join(rng.choice("abc") for _ in range(5)) for _ in range(20)]
        (folder / f"{label}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def run_state(run: Path, old: str, new: str) -> str:
    """What the RUN_DIR holds: "old", "new", "missing", or what is wrong with it."""
    if not run.exists():
        return "missing"
    absent = [n for n in (*REQUIRED, "curves.png") if not (run / n).is_file()]
    if absent:
        return f"incomplete: no {absent}"
    sha = hashlib.sha256((run / WEIGHTS).read_bytes()).hexdigest()
    return {old: "old", new: "new"}.get(sha, f"foreign weights {sha[:12]}")


def file_state(path: Path, old: bytes, new: bytes) -> str:
    if not path.exists():
        return "missing"
    data = path.read_bytes()
    return {old: "old", new: "new"}.get(data, f"other bytes ({len(data)})")


def main_loop(mode: str, work: Path, no_exchange: bool) -> None:
    global LOG
    LOG = str(work / "children.log")
    # One thread: no thread pool is running when the children are forked.
    torch.set_num_threads(1)
    real_stdout = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - what the setup runs print
    data = make_data(work / "data")
    train_args = ["train", "--arch", "cell", "--data", str(data), "--epochs", "1"]
    train_args += ["--hidden-size", "8", "--batch-size", "8"]
    place = work / "place"

    def setup_train(seed: int, out: Path) -> str:
        # In this process, not a child: the first run's warm-up (fonts, kernels) is then
        # paid once, and every child forked after starts warm.
        main([*train_args, "--seed", str(seed), "--out", str(out)], standalone_mode=False)
        return hashlib.sha256((out / WEIGHTS).read_bytes()).hexdigest()

    if mode == "train":
        old = setup_train(0, work / "old-run")
        new = setup_train(1, work / "new-run")
        # Drawing the curves takes most of a tiny run and writes nothing: the children
        # store the same PNG (curves.png is still written, and killed, as always).
        png = (work / "new-run" / "curves.png").read_bytes()
        rnn_export.training.plot_curves = lambda history: png
        target = place / "run"
        args = [*train_args, "--seed", "1", "--out", str(target)]

        def reset():
            shutil.rmtree(place, ignore_errors=True)
            place.mkdir()
            shutil.copytree(work / "old-run", target)

        def state():
            return run_state(target, old, new)
    else:
        setup_train(0, work / "run")
        convert = ["convert", str(work / "run"), "--out"]
        for name, opset in (("old", "14"), ("new", "18")):
            main([*convert, str(work / f"{name}.onnx"), "--opset", opset], standalone_mode=False)
        old_bytes, new_bytes = ((work / f"{n}.onnx").read_bytes() for n in ("old", "new"))
        target = place / "m.onnx"
        args = [*convert, str(target), "--opset", "18"]

        def reset():
            shutil.rmtree(place, ignore_errors=True)
            place.mkdir()
            target.write_bytes(old_bytes)

        def state():
            return file_state(target, old_bytes, new_bytes)

    sys.stdout = real_stdout
    for n in range(1, 500):
        reset()
        status, calls = run_child(args, n, no_exchange)
        if status != "killed":
            print(json.dumps({"n": n, "status": status, "calls": len(calls), "done": True}))
            return
        record = {"n": n, "status": status, "at": calls[-1], "state": state()}
        record["left"] = sorted(os.listdir(place))
        if mode == "train":
            atomic.recover_folder(target)
            record["recovered_state"] = state()
            record["recovered_left"] = sorted(os.listdir(place))
        next_status, _ = run_child(args, None, no_exchange)
        record.update(
            next_status=next_status, next_state=state(), next_left=sorted(os.listdir(place))
        )
        print(json.dumps(record), flush=True)
    raise SystemExit("more than 500 kill points: the loop does not end")


if __name__ == "__main__":
    main_loop(sys.argv[1], Path(sys.argv[2]), "--no-exchange" in sys.argv[3:])
