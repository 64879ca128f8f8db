"""Mutated weights files through `rnn-export import`: the import fuzz test's worker.

Run as a script (in a subprocess, so that a crash or a hang fails the test instead of
killing it):

    python import_fuzz.py OUT_DIR SEED N

Writes a small cell model's state_dict as a .pt and a .safetensors, imports the .pt into
OUT_DIR/run, then imports N mutants (bit flips, truncations, overwritten or inserted
bytes, a changed safetensors header, a changed pickle inside the .pt's zip, tensors of
other kinds, dtypes and shapes) with --out OUT_DIR/run each time. Prints one JSON object:
{"outcomes": {outcome: count}, "problems": [...]}, where a problem is anything but exit 0
with a RUN_DIR that loads, or exit 2 with one line on stderr and OUT_DIR/run exactly as
it was (no file changed, none added, nothing left beside it).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import sys
import traceback
import zipfile
from collections import Counter
from pathlib import Path

import torch
from click.testing import CliRunner

from rnn_export.checkpoint import load_checkpoint
from rnn_export.cli import main

V, H, C = 5, 4, 3
ST_DTYPES = ["F8_E4M3", "F8_E5M2", "I64", "BF16", "F16", "F64", "BOOL", "U8", "C64", "XX", ""]


def _state(rng: random.Random) -> dict:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    return {
        "embed.weight": torch.randn(V, H, generator=g),
        "i2h.weight": torch.randn(H, 2 * H, generator=g) * 0.1,
        "i2h.bias": torch.randn(H, generator=g),
        "h2o.weight": torch.randn(C, H, generator=g),
        "h2o.bias": torch.randn(C, generator=g),
    }


def _odd_tensor(rng: random.Random, like: torch.Tensor):
    """A value of another kind, dtype or shape in place of a tensor."""
    return rng.choice(
        [
            lambda: like.to_sparse(),
            lambda: like.to(torch.float8_e4m3fn),
            lambda: like.to(torch.int64),
            lambda: like.to(torch.float16),
            lambda: like.to(torch.bool),
            lambda: torch.full_like(like, float("nan")),
            lambda: like.reshape(-1),
            lambda: like[..., :1],
            lambda: torch.zeros(()),
            lambda: torch.empty(like.shape, device="meta"),
            lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]),
            lambda: 3,
            lambda: "x",
            lambda: [like],
        ]
    )()


def _pickle_mutant(rng: random.Random, data: bytes) -> bytes:
    """The .pt (a zip) with its data.pkl changed and the zip written again (valid CRCs)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename.endswith("data.pkl") and body:
                body = bytearray(body)
                for _ in range(rng.randint(1, 3)):
                    body[rng.randrange(len(body))] = rng.randrange(256)
                body = bytes(body)
            target.writestr(info.filename, body)
    return out.getvalue()


def _header_mutant(rng: random.Random, data: bytes) -> bytes:
    """The .safetensors with one value of its JSON header changed (lengths kept right)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    name = rng.choice([k for k in header if k != "__metadata__"])
    field = rng.choice(["dtype", "shape", "data_offsets"])
    value = {
        "dtype": lambda: rng.choice(ST_DTYPES),
        "shape": lambda: rng.choice([[], [0], [-1, 4], [2**40, 2**40], [V * H], [1, 1, 1, 1]]),
        "data_offsets": lambda: rng.choice([[0, 0], [0, 10**12], [8, 4], [-1, 3], [0]]),
    }[field]()
    header[name][field] = value
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def _bytes_mutant(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncated
        del data[rng.randrange(len(data)) :]
    elif kind == 2:  # a range overwritten
        i = rng.randrange(len(data))
        data[i : i + rng.randint(1, 64)] = bytes(rng.randrange(256) for _ in range(64))
    elif kind == 3:  # bytes inserted
        i = rng.randrange(len(data))
        data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    else:  # a range zeroed
        i = rng.randrange(len(data))
        data[i : i + rng.randint(1, 256)] = bytes(256)
    return bytes(data)


def _mutant(rng: random.Random, folder: Path, clean: dict[str, bytes]) -> Path:
    suffix = rng.choice([".pt", ".safetensors"])
    path = folder / f"mutant{suffix}"
    how = rng.randrange(3)
    if how == 0:
        path.write_bytes(_bytes_mutant(rng, clean[suffix]))
    elif how == 1:
        mutate = _pickle_mutant if suffix == ".pt" else _header_mutant
        path.write_bytes(mutate(rng, clean[suffix]))
    else:
        state = _state(rng)
        name = rng.choice(sorted(state))
        state[name] = _odd_tensor(rng, state[name])
        if suffix == ".pt":
            torch.save(state, path)
        else:  # safetensors holds only dense tensors: the kinds it cannot hold go to .pt
            path = folder / "mutant.pt"
            torch.save(state, path)
    return path


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run(out_dir: Path, seed: int, n: int) -> dict:
    from safetensors.torch import save_file

    rng = random.Random(seed)
    (out_dir / "vocab.json").write_text(json.dumps(list("abcde")))
    (out_dir / "labels.json").write_text(json.dumps(["x", "y", "z"]))
    state = _state(rng)
    torch.save(state, out_dir / "clean.pt")
    save_file(state, out_dir / "clean.safetensors")
    clean = {s: (out_dir / f"clean{s}").read_bytes() for s in (".pt", ".safetensors")}
    run_dir = out_dir / "run"
    options = ["--arch", "cell", "--vocab", str(out_dir / "vocab.json")]
    options += ["--labels", str(out_dir / "labels.json"), "--out", str(run_dir)]
    mutants = out_dir / "mutants"
    mutants.mkdir()
    outcomes: Counter = Counter()
    problems: list[str] = []

    def attempt(path: Path, what: str) -> None:
        before = _snapshot(run_dir) if run_dir.exists() else None
        beside = sorted(p.name for p in out_dir.iterdir())
        result = CliRunner().invoke(main, ["import", str(path), *options])
        if isinstance(result.exception, Exception) and not isinstance(result.exception, SystemExit):
            trace = "".join(traceback.format_exception(result.exception))[-1500:]
            problems.append(f"{what}: {type(result.exception).__name__}: {trace}")
            return
        if result.exit_code == 0:
            try:
                load_checkpoint(run_dir)
            except Exception as e:  # noqa: BLE001 - any failure here is the problem reported
                problems.append(f"{what}: exit 0 but the RUN_DIR does not load: {e!r:.300}")
                return
            outcomes["imported"] += 1
        elif result.exit_code == 2:
            err = result.stderr
            if not err.startswith("error: ") or err.count("\n") != 1 or "Traceback" in err:
                problems.append(f"{what}: exit 2 without one error line: {err[-600:]!r}")
            if before is not None and _snapshot(run_dir) != before:
                problems.append(f"{what}: exit 2 changed the RUN_DIR")
            outcomes["refused"] += 1
        else:
            problems.append(f"{what}: exit {result.exit_code}: {result.output[-600:]!r}")
        if sorted(p.name for p in out_dir.iterdir()) != beside and what != "clean":
            problems.append(f"{what}: left {sorted(p.name for p in out_dir.iterdir())}")

    attempt(out_dir / "clean.pt", "clean")
    if outcomes["imported"] != 1:
        problems.append("the clean file does not import")
    for i in range(n):
        path = _mutant(rng, mutants, clean)
        attempt(path, f"mutant {i} ({path.name})")
    return {"outcomes": dict(outcomes), "problems": problems}


if __name__ == "__main__":
    out, seed, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(run(out, seed, count)))
