"""The Python side of the JavaScript runtime's tests: models and what Python makes of them.

Usage: python tests/js_fixtures.py OUT [ARCH=RUN_DIR ...]

For each default arch (a RUN_DIR given, else a tiny one trained here: one epoch, H = 16)
it writes to OUT: ARCH.onnx (`convert`); ARCH.json (the stream's token ids and the Python
runtime's label at every step); ARCH.ref.f64 / ARCH.radius.f64 (the float64 reference of
the stream's log-probabilities and verify's float32 allowance around it, (S, C)); ARCH.py.f32
(the Python runtime's log-probabilities, (S, C)); ARCH.saved.bin (a Python stream after
SAVED_STEPS steps, saved) and ARCH.continued.bin (it restored in Python, stepped through
the next CONTINUE_STEPS tokens, saved). With the names data present, names.json: NAMES
texts and the Python runtime's prediction of each through the gru model. demo.json: the
text the browser test types and the Python runtime's prediction after it (gru model).
features.onnx / features.json: a features model (F = 5) with random weights, FRAMES random
frames and its main graph's log-probabilities after each prefix of them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

STEPS = 10_000
SAVED_STEPS = 500
CONTINUE_STEPS = 1_000
NAMES = 2_000
FRAMES = 40
DEMO_TEXT = "a cat, a bat and a dog: ABBA DD"
ARCHS = ("cell", "stacked", "gru", "lstm")
# The real data lives next to the repository (../shared/data), never inside it.
NAMES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "names"


def _model(arch: str, out: Path, run_dir: Path | None) -> Path:
    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.export import export_onnx

    if run_dir is None:
        from rnn_export.data import embedded_spec
        from rnn_export.training import train

        run_dir = out / f"run-{arch}"
        train(arch, run_dir, data=embedded_spec(size=400), epochs=1, hidden_size=16, progress=False)
    path = out / f"{arch}.onnx"
    export_onnx(load_checkpoint(run_dir), path)
    return run_dir


def _stream(arch: str, out: Path, run_dir: Path) -> None:
    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.parity.reference import Recurrence
    from rnn_runtime import StreamModel

    model = StreamModel(out / f"{arch}.onnx")
    meta = model.metadata
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, meta.vocab_size, size=STEPS)
    stream = model.stream()
    log_probs = np.stack([stream.step(int(t)).log_probs for t in tokens])
    zeros = tuple(np.zeros(s.concrete_shape(1), dtype=np.float32) for s in meta.states)
    ref, _ = Recurrence(load_checkpoint(run_dir).model).run_steps(tokens[None, :], zeros)
    ref.value[:, 0].astype("<f8").tofile(out / f"{arch}.ref.f64")
    ref.radius[:, 0].astype("<f8").tofile(out / f"{arch}.radius.f64")
    log_probs.astype("<f4").tofile(out / f"{arch}.py.f32")
    stream.reset()
    stream.feed(tokens[:SAVED_STEPS])
    saved = stream.save()
    (out / f"{arch}.saved.bin").write_bytes(saved)
    again = model.stream()
    again.restore(saved)
    for t in tokens[SAVED_STEPS : SAVED_STEPS + CONTINUE_STEPS]:
        again.step(int(t))
    (out / f"{arch}.continued.bin").write_bytes(again.save())
    labels = [meta.labels[i] for i in log_probs.argmax(axis=1)]
    record = {
        "tokens": tokens.tolist(),
        "labels": labels,
        "saved_steps": SAVED_STEPS,
        "continue_steps": CONTINUE_STEPS,
    }
    (out / f"{arch}.json").write_text(json.dumps(record))


def _names(out: Path) -> None:
    from rnn_runtime import StreamModel

    if not NAMES_DIR.is_dir():
        return
    texts = []
    for path in sorted(NAMES_DIR.glob("*.txt")):
        texts += [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.choice(len(texts), size=min(NAMES, len(texts)), replace=False)]
    model = StreamModel(out / "gru.onnx")
    predictions = model.predict(texts)
    record = {
        "texts": texts,
        "labels": [p.label for p in predictions],
        "log_probs": [p.log_probs.tolist() for p in predictions],
    }
    (out / "names.json").write_text(json.dumps(record, ensure_ascii=False))


def _demo(out: Path) -> None:
    from rnn_runtime import StreamModel

    stream = StreamModel(out / "gru.onnx").stream()
    prediction = stream.feed(DEMO_TEXT)
    record = {
        "text": DEMO_TEXT,
        "label": prediction.label,
        "log_probs": prediction.log_probs.tolist(),
    }
    (out / "demo.json").write_text(json.dumps(record))


def _features(out: Path) -> None:
    """A features model (schema 2: F float32 values per frame) with random weights, and its
    main graph's log-probabilities after each prefix of random frames (row r of one call
    stops at length r + 1), run by onnxruntime."""
    import onnxruntime as ort
    import torch

    from rnn_export.config import ModelConfig
    from rnn_export.export import build_onnx
    from rnn_export.models import build_model
    from rnn_runtime.metadata import read_metadata

    torch.manual_seed(0)
    config = ModelConfig(
        arch="gru",
        labels=("x", "y", "z"),
        hidden_size=8,
        input_kind="features",
        input_size=5,
        vocab_size=0,
    )
    data = build_onnx(build_model(config).eval(), None, "0" * 64).data
    (out / "features.onnx").write_bytes(data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    meta = read_metadata(session.get_modelmeta().custom_metadata_map)
    frames = np.random.default_rng(0).normal(size=(FRAMES, 5)).astype(np.float32)
    feeds = {
        meta.tokens.name: np.repeat(frames[None], FRAMES, axis=0),
        meta.lengths.name: np.arange(1, FRAMES + 1, dtype=np.int64),
    }
    feeds |= {s.input: np.zeros(s.concrete_shape(FRAMES), np.float32) for s in meta.states}
    (log_probs,) = session.run([meta.log_probs.name], feeds)
    record = {"frames": frames.tolist(), "log_probs": log_probs.tolist()}
    (out / "features.json").write_text(json.dumps(record))


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    given = dict(a.split("=", 1) for a in argv[1:])
    for arch in ARCHS:
        run_dir = _model(arch, out, Path(given[arch]) if arch in given else None)
        _stream(arch, out, run_dir)
    _names(out)
    _demo(out)
    _features(out)


if __name__ == "__main__":
    main(sys.argv[1:])
