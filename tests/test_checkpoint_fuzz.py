"""Fuzz: damaged RUN_DIRs through load_checkpoint and `convert`, seeded and quick.

Each case copies a small valid RUN_DIR and damages one of its files: a JSON file edited
as JSON (a key removed, a value of another type or size, deep nesting, odd strings) or
as bytes (truncated, a byte flipped, bytes inserted), or model.safetensors truncated or
bit-flipped (in its header or its data). A case passes when loading either succeeds or
refuses with a CheckpointError whose message names the file; any other exception (a
traceback for a user) fails it. A sample also goes through `rnn-export convert`: exit 0,
or exit 2 with one line.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
from click.testing import CliRunner

from rnn_export.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rnn_export.cli import main
from rnn_export.config import ModelConfig
from rnn_export.data import Vocabulary, embedded_spec
from rnn_export.models import build_model

CASES = 300
CONVERTED = 12  # of them, also through `convert`
JSON_FILES = ("config.json", "vocab.json", "train.json", "metrics.json")
ODD_VALUES = [
    None, True, 0, -1, 1.5, 2**70, 10**30, 1e308, "", "x" * 300, "\ud800", "\x00", [], {},
    [[[[]]]], {"a": {"b": {}}}, ["<unk>"], ["a", "a"], "cell", "stacked", 4096, 4097,
]  # fmt: skip


@pytest.fixture(scope="module")
def base_runs(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("fuzz-base")
    runs = []
    for arch, layers in (("cell", 1), ("stacked", 2)):
        torch.manual_seed(0)
        vocab = Vocabulary(("<unk>", *"abcde"))
        model = build_model(ModelConfig(arch, len(vocab), ("p", "q"), 8, layers))
        data = embedded_spec(size=40)
        training = {"options": {"arch": arch, "hidden_size": 8, "num_layers": layers}}
        runs.append(
            save_checkpoint(root / arch, model, vocab, data, training, {"val_accuracy": 0.5})
        )
    return runs


def _paths(value, path=()):
    """Every (path of keys, value) inside a JSON value, the value itself first."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


def _edit_json(value, rng: random.Random):
    places = [p for p, _ in _paths(value) if p]
    if not places:
        return rng.choice(ODD_VALUES)
    path = rng.choice(places)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    kind = rng.random()
    if kind < 0.2 and isinstance(parent, dict):
        del parent[path[-1]]
    elif kind < 0.3:
        parent[path[-1]] = [parent[path[-1]]] * rng.randint(0, 3)
    elif kind < 0.35:
        parent[path[-1]] = json.loads("[" * 80 + "]" * 80)
    else:
        parent[path[-1]] = rng.choice(ODD_VALUES)
    return value


def _edit_bytes(raw: bytes, rng: random.Random, keep: int = 0) -> bytes:
    """Truncate, flip a byte or insert bytes, at or after offset keep."""
    at = rng.randint(min(keep, len(raw)), max(len(raw) - 1, 0))
    kind = rng.random()
    if kind < 0.35:
        return raw[:at]
    if kind < 0.75 and raw:
        return raw[:at] + bytes([raw[at] ^ (1 << rng.randint(0, 7))]) + raw[at + 1 :]
    return raw[:at] + rng.randbytes(rng.randint(1, 16)) + raw[at:]


def _damage(run_dir, rng: random.Random) -> str:
    name = rng.choice((*JSON_FILES, "model.safetensors", "model.safetensors"))
    path = run_dir / name
    raw = path.read_bytes()
    if name == "model.safetensors":
        header = 8 + int.from_bytes(raw[:8], "little")
        # Half in the 8-byte length and the JSON header, half in the tensor data.
        start = 0 if rng.random() < 0.5 else header
        path.write_bytes(_edit_bytes(raw, rng, keep=start))
    elif rng.random() < 0.7:
        text = json.dumps(_edit_json(json.loads(raw), rng), ensure_ascii=rng.random() < 0.5)
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
    else:
        path.write_bytes(_edit_bytes(raw, rng))
    return name


def test_damaged_run_dirs_are_loaded_or_refused_by_name(base_runs, tmp_path):
    rng = random.Random(20240611)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(CASES):
        run_dir = shutil.copytree(rng.choice(base_runs), tmp_path / f"run{case}")
        name = _damage(run_dir, rng)
        try:
            load_checkpoint(run_dir)
            outcomes["loaded"] += 1
        except CheckpointError as e:
            outcomes["refused"] += 1
            assert str(run_dir) in str(e), f"case {case} ({name}): {e}"
        if case % (CASES // CONVERTED) == 0:
            out = tmp_path / f"m{case}.onnx"
            result = CliRunner().invoke(main, ["convert", str(run_dir), "--out", str(out)])
            assert result.exit_code in (0, 2), f"case {case} ({name}): {result.output}"
            if result.exit_code == 2:
                assert result.output.startswith("error: ") and result.output.count("\n") == 1
                assert not out.exists()
        shutil.rmtree(run_dir)
    # Both outcomes occur: the damage is neither always harmless nor always fatal.
    assert outcomes["refused"] > CASES // 3 and outcomes["loaded"] > 10, outcomes
