"""Tiny exported models for the runtime's tests, their PyTorch reference, and file edits.

Imported by the tests of tests/runtime (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np

# The parity tolerance of the project, runtime against PyTorch: float32 log-probabilities
# agree to 1e-5 absolute, 1e-4 relative over the short runs these tests make.
ATOL, RTOL = 1e-5, 1e-4
CHARS = "abcdefghij"
LABELS = ("north", "south", "east")
TEXT = "abcjjqa" + "hgfedcba" * 3  # "q" is outside the vocabulary: the unknown id
REPO = Path(__file__).resolve().parents[2]


def export_tiny(model, vocab: list[str], path: Path) -> Path:
    """Export through the project's exporter (a checkpoint in a run dir first)."""
    from rnn_export.checkpoint import save_checkpoint
    from rnn_export.data import Vocabulary, embedded_spec
    from rnn_export.export import export_onnx

    run_dir = save_checkpoint(
        path.parent / f"run-{path.stem}",
        model,
        Vocabulary(tuple(vocab)),
        embedded_spec(),
        {"epochs": 0},
        {"val_accuracy": 0.0},
    )
    return export_onnx(run_dir, path)


def ids(text: str) -> list[int]:
    return [CHARS.index(c) + 1 if c in CHARS else 0 for c in text]


def torch_run(model, token_ids, state=None):
    """PyTorch's (log_probs (C,), state with B=1) after token_ids from state (zeros if None)."""
    import torch

    with torch.inference_mode():
        lp, h = model(torch.tensor([token_ids], dtype=torch.int64), state)
    return lp[0].numpy(), h


def close(got, want):
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)


def rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a model file through onnx, applying edit(props: dict, proto) on the way."""
    import onnx

    m = onnx.load(str(src))
    props = {p.key: p.value for p in m.metadata_props}
    edit(props, m)
    del m.metadata_props[:]
    for key, value in props.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(m, str(dst))
    return dst


def edit_json(key: str, change):
    """An edit that rewrites the JSON value of metadata key rnn_export.<key> by change(value)."""

    def edit(props, m):
        value = json.loads(props[f"rnn_export.{key}"])
        changed = change(value)
        props[f"rnn_export.{key}"] = json.dumps(value if changed is None else changed)

    return edit


def step_edit(change):
    """An edit of the step model's proto that keeps the metadata's sha256 consistent."""

    def edit(props, m):
        import onnx

        step = json.loads(props["rnn_export.step"])
        proto = onnx.load_from_string(base64.b64decode(step["onnx_base64"]))
        change(proto)
        data = proto.SerializeToString()
        step["onnx_base64"] = base64.b64encode(data).decode("ascii")
        step["sha256"] = hashlib.sha256(data).hexdigest()
        props["rnn_export.step"] = json.dumps(step)

    return edit


def set_initializer(proto, name: str, change) -> None:
    """Replace the graph initializer `name` by change(its numpy value)."""
    from onnx import numpy_helper

    for i, init in enumerate(proto.graph.initializer):
        if init.name == name:
            value = change(numpy_helper.to_array(init).copy())
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
            return
    raise KeyError(f"no initializer {name!r}; have {[x.name for x in proto.graph.initializer]}")
