"""The bounds on every size, count and number read from a file or an option, as a table.

    python scripts/limits_table.py [--out docs/limits.md]

Reads the limits from the modules that enforce them, so the table cannot drift from the
code (tests/test_docs_limits.py checks docs/limits.md against this script's output).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HEADER = """# Limits

Every size, count and number that rnn-export reads from a file or an option is checked
against a bound before anything is allocated; past it, the command exits 2 with one line
naming the value and the limit (the library raises a typed error). Made by
`python scripts/limits_table.py --out docs/limits.md` from the constants of the modules
that enforce them.
"""


LIMITS = (
    ("model (config.json, train options)", "vocabulary size V", "rnn_export.config.MAX_VOCAB_SIZE"),
    ("model", "hidden size H", "rnn_export.config.MAX_HIDDEN_SIZE"),
    ("model", "layers L", "rnn_export.config.MAX_NUM_LAYERS"),
    ("model", "labels C", "rnn_export.config.MAX_LABELS"),
    ("model", "characters per label", "rnn_export.config.MAX_LABEL_CHARS"),
    ("train", "--epochs", "rnn_export.config.MAX_EPOCHS"),
    ("train", "--batch-size", "rnn_export.config.MAX_BATCH_SIZE"),
    ("train", "--lr (finite, > 0)", "rnn_export.config.MAX_LR"),
    ("train", "gradient clip", "rnn_export.config.MAX_CLIP"),
    ("train", "--seed (>= 0)", "rnn_export.config.MAX_SEED"),
    ("train, bench", "--threads", "rnn_export.config.MAX_THREADS"),
    ("bench", "--repeats", "rnn_export.bench.MAX_REPEATS"),
    ("data (embedded task)", "samples", "rnn_export.data.MAX_EMBEDDED_SIZE"),
    ("data (folder)", "bytes per class file", "rnn_export.data.MAX_CLASS_FILE_BYTES"),
    ("data (folder)", "samples in all", "rnn_export.data.MAX_SAMPLES"),
    ("data (folder)", "characters per sample", "rnn_export.data.MAX_SAMPLE_CHARS"),
    ("data", "characters of a path", "rnn_export.data.MAX_PATH_CHARS"),
    ("data (float frames)", "sequences N", "rnn_export.frames.MAX_SEQUENCES"),
    ("data (float frames)", "steps T of one sequence", "rnn_export.frames.MAX_STEPS"),
    ("data (float frames)", "features F", "rnn_export.frames.MAX_FEATURES"),
    ("data (float frames)", "frame values N * T * F", "rnn_export.frames.MAX_FRAME_VALUES"),
    ("data (float frames)", "bytes of a .npz file", "rnn_export.frames.MAX_NPZ_BYTES"),
    ("data (float frames)", "bytes of a .ts file", "rnn_export.frames.MAX_TS_FILE_BYTES"),
    ("RUN_DIR JSON files", "bytes", "rnn_export.runfiles.MAX_JSON_BYTES"),
    ("RUN_DIR JSON files", "nesting depth", "rnn_export.runfiles.MAX_JSON_DEPTH"),
    ("RUN_DIR JSON files", "digits of an integer", "rnn_export.runfiles.MAX_INT_DIGITS"),
    ("model.safetensors", "header bytes", "rnn_export.runfiles.MAX_HEADER_BYTES"),
    ("convert", "bytes of the .onnx file (protobuf)", "rnn_export.export.MAX_FILE_BYTES"),
    ("runtime: model file", "bytes", "rnn_runtime.model.MAX_MODEL_BYTES"),
    ("runtime: model file", "protobuf nesting", "rnn_runtime.onnxfile.MAX_DEPTH"),
    ("runtime: metadata", "vocabulary size", "rnn_runtime.metadata.MAX_VOCAB"),
    ("runtime: metadata", "classes", "rnn_runtime.metadata.MAX_CLASSES"),
    ("runtime: metadata", "hidden size", "rnn_runtime.metadata.MAX_HIDDEN"),
    ("runtime: metadata", "layers", "rnn_runtime.metadata.MAX_LAYERS"),
    ("runtime: metadata", "state tensors", "rnn_runtime.metadata.MAX_STATES"),
    ("runtime: metadata", "rank of a tensor", "rnn_runtime.metadata.MAX_RANK"),
    ("runtime: metadata", "one dimension", "rnn_runtime.metadata.MAX_DIM"),
    (
        "runtime: metadata",
        "floats in the state of one stream",
        "rnn_runtime.metadata.MAX_STATE_FLOATS",
    ),
    ("runtime: metadata", "opset", "rnn_runtime.metadata.MAX_OPSET"),
    ("runtime: open_model, stream", "--threads", "rnn_runtime.session.MAX_THREADS"),
    ("runtime: saved state", "header bytes", "rnn_runtime.snapshot.MAX_HEADER"),
    ("runtime: saved state", "tensors", "rnn_runtime.snapshot.MAX_TENSORS"),
    ("runtime: saved state", "rank", "rnn_runtime.snapshot.MAX_RANK"),
    ("runtime: saved state", "one dimension", "rnn_runtime.snapshot.MAX_DIM"),
    (
        "runtime: stream and pool feed",
        "padded tokens per call, rows x length (longer texts run in chunks)",
        "rnn_runtime.stream.MAX_CHUNK",
    ),
)


def rows() -> list[tuple[str, str, str, str]]:
    """(where it applies, what, limit, the constant that enforces it)."""
    import importlib

    out = []
    for where, what, constant in LIMITS:
        module, name = constant.rsplit(".", 1)
        if constant == "rnn_runtime.session.MAX_THREADS":
            value = "the machine's logical CPUs"  # os.cpu_count(): differs between machines
        else:
            x = getattr(importlib.import_module(module), name)
            value = f"{x:,}" if isinstance(x, int) else f"{x:g}"
        out.append((where, what, value, constant))
    return out


def table() -> str:
    lines = [HEADER, "| where | what | at most | enforced by |", "|---|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} | `{d}` |" for a, b, c, d in rows()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the table to this file")
    args = parser.parse_args()
    text = table()
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
