"""int8 step files (`rnn-export quantize`) and the rule that verifies them.

quantize_file runs onnxruntime's dynamic 8-bit quantization (onnxruntime.quantization.
quantize_dynamic) on the matrix products of a step file (`convert --step-only`): each
Gemm becomes DynamicQuantizeLinear + MatMulInteger with uint8 weights (one scale and zero
point per tensor), the activations quantized to uint8 per call. Unsigned weights, not
signed: on x86 CPUs without VNNI (AVX2, and AVX-512 before VNNI) onnxruntime multiplies
uint8 activations by int8 weights with VPMADDUBSW, whose int16 sums of two products
saturate (255 * 127 * 2 > 32767), so such a file computes other integers there than on a
VNNI, AMX or ARM CPU and its decisions depend on the CPU; uint8 x uint8 products are
summed in int32 on every CPU, so the file computes the integers its graph says everywhere
(docs/runtimes.md#int8-step-files has the measured figures). onnxruntime quantizes no RNN
operator, so the default main graph (whose B = 1 path is one) is refused; a portable main
graph is refused too, because dynamic quantization picks an activation's scale from the whole
batch, so its paths (and the rows of one batch) no longer agree to float32 rounding and
the runtime's open-time cross-check would refuse it. The metadata is kept, and its
provenance gains "quantized": {"method", "op_types", "weight_type", "source_sha256"}.
`--format ort` writes onnxruntime's ORT format (for its minimal and mobile builds)
through the session option that saves an optimised model (basic graph optimisations:
those that do not depend on the machine), the metadata kept.

An int8 file cannot meet verify's float32 allowance (its weights alone are off by up to
half a quantization step, (max w - min w) / 510). verify holds it to INT8_RULE instead, on the
validation texts, each run alone (B = 1) from the zero state as a stream runs it,
against PyTorch float32:
    decision agreement (same top label) on >= MIN_AGREEMENT of the texts, and
    every class probability within MAX_PROB_ERROR of float32's on >= MIN_WITHIN of them.
At most 1% of the texts may differ in either way: texts the float32 model is itself
unsure of, whose probabilities int8 moves far (the largest error is reported, not ruled
on: on the default cell model with int8 weights it was 0.59 while 99.7% of the texts
were within 0.05). The
accuracy of both on the texts' labels is reported (the delta), not ruled on.
A model without validation texts (an imported one) is checked on generated texts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rnn_export import atomic
from rnn_export.errors import InputError

FORMATS = ("onnx", "ort")
OP_TYPES = ("Gemm", "MatMul")
# uint8 weights: the one 8-bit format whose products no x86 kernel saturates (see above).
WEIGHT_TYPE = "uint8"
MIN_AGREEMENT = 0.99
MAX_PROB_ERROR = 0.05
MIN_WITHIN = 0.99
INT8_RULE = (
    f"int8 rule: against PyTorch float32, the same decision on >= {MIN_AGREEMENT:.0%} of the "
    f"texts and |p_int8 - p_float32| <= {MAX_PROB_ERROR} for every class on >= "
    f"{MIN_WITHIN:.0%} of them (each text alone, from the zero state)"
)
GENERATED_TEXTS = 500


class QuantizeError(InputError):
    """A file that cannot be quantized: not a step file, already int8, unreadable."""


@dataclass(frozen=True)
class Quantized:
    """What quantize_file wrote: sizes in bytes and the op types it quantized."""

    path: Path
    format: str
    source_bytes: int
    size_bytes: int
    quantized_nodes: dict


def quantize_file(source: str | Path, out_path: str | Path, fmt: str = "onnx") -> Quantized:
    """Quantize a step file's matrix products to int8 and write the result atomically.

    Args:
        source: a step file (`rnn-export convert --step-only`).
        out_path: the file to write (replaced only on success).
        fmt: "onnx" or "ort" (onnxruntime's ORT format).

    Raises:
        QuantizeError: a bad format, a file that is not a float32 step file.
        WriteError: out_path cannot be written (nothing is changed then).
    """
    import onnx

    if fmt not in FORMATS:
        raise QuantizeError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    source = Path(source)
    out_path = atomic.check_file_output(out_path, "the quantized file")
    if atomic.same_file(out_path, source):
        raise QuantizeError(f"{out_path}: is the source file; write the int8 file elsewhere")
    data, meta = _checked_source(source)
    if meta.provenance.get("quantized"):
        raise QuantizeError(f"{source}: is already quantized ({meta.provenance['quantized']})")
    if not meta.is_step_file:
        raise QuantizeError(
            f"{source}: is a main-graph file; quantize takes a step file (make one with "
            "`rnn-export convert RUN_DIR --out M.step.onnx --step-only`): onnxruntime "
            "quantizes no RNN operator, and int8 paths of a main graph disagree"
        )
    proto = onnx.load_from_string(data)
    _check_classes(proto, meta, source)
    props = {p.key: p.value for p in proto.metadata_props}
    with tempfile.TemporaryDirectory(prefix="rnn-export-quantize-") as tmp:
        src, dst = Path(tmp) / "float32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(data)
        logging.disable(logging.WARNING)  # its advice to pre-process applies to CNNs, not here
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                src, dst, op_types_to_quantize=list(OP_TYPES), weight_type=QuantType.QUInt8
            )
        finally:
            logging.disable(logging.NOTSET)
        quantized = onnx.load(str(dst))
    counts: dict[str, int] = {}
    for node in quantized.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    provenance = dict(meta.provenance)
    provenance["quantized"] = {
        "method": "onnxruntime dynamic",
        "op_types": list(OP_TYPES),
        "weight_type": WEIGHT_TYPE,
        "source_sha256": hashlib.sha256(data).hexdigest(),
    }
    props["rnn_export.provenance"] = json.dumps(provenance)
    del quantized.metadata_props[:]
    for key, value in props.items():
        quantized.metadata_props.add(key=key, value=value)
    out = quantized.SerializeToString()
    if fmt == "ort":
        out = _to_ort_format(out)
    _check_output(out, source)
    atomic.replace_file(out_path, out)
    return Quantized(
        out_path,
        fmt,
        len(data),
        len(out),
        {k: counts[k] for k in ("MatMulInteger",) if k in counts},
    )


_RUNTIME_ERRORS = ("ModelFileError", "MetadataError", "ProviderError", "StreamError")


def _checked_source(source: Path):
    """(the file's bytes, its metadata), once the runtime opens it (every check it makes:
    a model file, no external data, finite weights, metadata that matches the graph).

    Raises:
        QuantizeError: the runtime refuses the file (its message).
    """
    import rnn_runtime
    from rnn_runtime.model import read_model_file
    from rnn_runtime.onnxfile import is_ort_format

    errors = tuple(getattr(rnn_runtime, name) for name in _RUNTIME_ERRORS)
    try:
        data = read_model_file(source)
        if is_ort_format(data):
            raise QuantizeError(f"{source}: is in ORT format; quantize takes an .onnx step file")
        meta = rnn_runtime.open_model(source).metadata
    except errors as e:
        raise QuantizeError(str(e)) from None
    return data, meta


def _check_classes(proto, meta, source: Path) -> None:
    """Refuse a step file whose metadata promises another number of classes than its
    graph's log-probabilities have (a file nothing could run).

    Raises:
        QuantizeError: naming both counts.
    """
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        if output.name != meta.step.log_probs or not dims or not dims[-1].HasField("dim_value"):
            continue
        if dims[-1].dim_value != meta.num_classes:
            raise QuantizeError(
                f"{source}: its metadata lists {meta.num_classes} classes; its graph's "
                f"{output.name} has {dims[-1].dim_value}"
            )


def _check_output(out: bytes, source: Path) -> None:
    """Refuse to write an int8 file that the runtime would not open.

    Raises:
        QuantizeError: the runtime refuses the result (its message).
    """
    import rnn_runtime

    errors = tuple(getattr(rnn_runtime, name) for name in _RUNTIME_ERRORS)
    with tempfile.TemporaryDirectory(prefix="rnn-export-quantize-") as tmp:
        path = Path(tmp) / "int8.onnx"
        path.write_bytes(out)
        try:
            rnn_runtime.open_model(path)
        except errors as e:
            raise QuantizeError(
                f"{source}: its int8 file would not open, so none was written: {e}"
            ) from None


def _to_ort_format(model_bytes: bytes) -> bytes:
    """The model in onnxruntime's ORT format, through the session option that saves it."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="rnn-export-ort-") as tmp:
        path = Path(tmp) / "model.ort"
        options = ort.SessionOptions()
        # Basic optimisations only: the extended ones may fuse for this machine's CPU.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(path)
        options.add_session_config_entry("session.save_model_format", "ORT")
        options.log_severity_level = 3
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        return path.read_bytes()


@dataclass
class QuantizedReport:
    """verify's result for an int8 file under INT8_RULE (a ParityReport's interface)."""

    model: str
    checkpoint: str
    texts: int
    source: str  # "validation split" or "generated"
    agreement: float
    within: float  # fraction of texts whose every probability is within MAX_PROB_ERROR
    max_prob_error: float
    mean_prob_error: float
    accuracy_float32: float | None
    accuracy_int8: float | None
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.agreement >= MIN_AGREEMENT and self.within >= MIN_WITHIN

    def summary_line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        delta = ""
        if self.accuracy_int8 is not None:
            delta = (
                f", accuracy {self.accuracy_int8:.4f} int8 vs {self.accuracy_float32:.4f} "
                f"float32 ({self.accuracy_int8 - self.accuracy_float32:+.4f})"
            )
        return (
            f"{verdict}: int8 file on {self.texts} {self.source} texts: decision agreement "
            f"{self.agreement:.2%} (>= {MIN_AGREEMENT:.0%}), |p error| <= {MAX_PROB_ERROR} on "
            f"{self.within:.2%} (>= {MIN_WITHIN:.0%}), max {self.max_prob_error:.3g}, mean "
            f"{self.mean_prob_error:.3g}{delta} ({self.wall_s:.1f} s)"
        )

    def format_table(self) -> str:
        return "\n".join(
            [
                self.summary_line(),
                "",
                f"model       {self.model}",
                f"checkpoint  {self.checkpoint}",
                f"rule        {INT8_RULE}",
            ]
        )

    def to_json(self) -> str:
        return json.dumps(
            asdict(self)
            | {"passed": self.passed, "rule": INT8_RULE, "summary_line": self.summary_line()},
            indent=2,
        )

    def plot_drift(self, path) -> None:
        raise InputError("an int8 file has no drift plot (its rule is decisions and probabilities)")


def is_quantized(path: str | Path) -> bool:
    """True when the model file's provenance says it was quantized (read through the runtime);
    False for a file the runtime cannot read (verify then says what is wrong with it)."""
    from rnn_runtime import MetadataError, ModelFileError
    from rnn_runtime.model import load_metadata

    try:
        return bool(load_metadata(path).provenance.get("quantized"))
    except (ModelFileError, MetadataError, OSError):
        return False


def verify_quantized(path: str | Path, checkpoint, data: dict | None = None) -> QuantizedReport:
    """Hold an int8 file to INT8_RULE against its checkpoint's PyTorch float32 model.

    Args:
        path: a file written by `rnn-export quantize`.
        checkpoint: its RUN_DIR or a loaded Checkpoint (the source step file's).
        data: a data spec for the validation texts (None: the checkpoint's own).

    Returns:
        The QuantizedReport (check .passed).

    Raises:
        ParityUsageError: a file and checkpoint that do not belong together.
    """
    import torch

    from rnn_export.parity.results import ParityUsageError
    from rnn_export.parity.verify import _load_checkpoint
    from rnn_runtime.model import open_model

    started = time.perf_counter()
    ckpt = _load_checkpoint(checkpoint)
    model = open_model(path)
    if model.metadata.checkpoint_sha256 != ckpt.sha256:
        raise ParityUsageError(ckpt.mismatch(model.metadata.checkpoint_sha256, Path(path)))
    texts, labels, source = _validation_inputs(ckpt, model, data)
    torch_model = ckpt.model.eval()
    want, got = [], []
    for ids in texts:  # token ids (T,), or a features model's raw frames (T, F)
        with torch.inference_mode():
            lp, _ = torch_model(torch.from_numpy(ids[None]))
        want.append(lp[0].numpy())
        stream = model.stream()
        got.append(stream.feed(ids).log_probs)
    want, got = np.exp(np.stack(want)), np.exp(np.stack(got))  # (N, C) probabilities
    errors = np.abs(got - want)  # (N, C)
    accuracy = {}
    if labels is not None:
        accuracy = {
            "accuracy_float32": float((want.argmax(1) == labels).mean()),
            "accuracy_int8": float((got.argmax(1) == labels).mean()),
        }
    return QuantizedReport(
        model=str(path),
        checkpoint=str(ckpt.run_dir),
        texts=len(texts),
        source=source,
        agreement=float((want.argmax(1) == got.argmax(1)).mean()),
        within=float((errors.max(axis=1) <= MAX_PROB_ERROR).mean()),
        max_prob_error=float(errors.max()),
        mean_prob_error=float(errors.mean()),
        accuracy_float32=accuracy.get("accuracy_float32"),
        accuracy_int8=accuracy.get("accuracy_int8"),
        wall_s=time.perf_counter() - started,
    )


def _validation_inputs(ckpt, model, data: dict | None):
    """The inputs verify_quantized runs: (inputs, labels or None, source).

    Each input is one sequence: int64 (T,) token ids, or for a features model float32
    (T, F) raw frames. The validation split of data (else of the checkpoint's own) where
    there is one; else GENERATED_TEXTS generated ones of 5 to 40 steps: random token ids,
    or frames around the training data (the file's normalization: mean + scale * a
    standard normal, per feature), so that int8 is checked on the inputs it will see.
    """
    from rnn_export.parity.verify import _validation_split

    if ckpt.config.reads_tokens:
        validation = _validation_split(ckpt, data)
    else:
        validation = _validation_frames(ckpt, data)
    if validation:
        if ckpt.config.reads_tokens:
            inputs = [model.encode(text) for text, _ in validation]
        else:
            inputs = [model.sequence(frames) for frames, _ in validation]
        labels = np.array([label_id for _, label_id in validation])
        keep = [i for i, x in enumerate(inputs) if len(x)]
        return [inputs[i] for i in keep], labels[keep], "validation split"
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 41, GENERATED_TEXTS)
    if ckpt.config.reads_tokens:
        V = ckpt.config.vocab_size
        return [rng.integers(0, V, size=int(n)) for n in lengths], None, "generated"
    reader = model.reader  # the file's normalization, as its graph applies it
    inputs = [
        (reader.mean + reader.scale * rng.standard_normal((int(n), reader.size))).astype(np.float32)
        for n in lengths
    ]
    return inputs, None, "generated"


def _validation_frames(ckpt, data: dict | None):
    """A features model's validation split as [(frames (T, F), label id)], from data or
    the checkpoint's own frames data spec; None where there is none."""
    spec = ckpt.data if data is None else data
    if spec is None:
        return None
    from rnn_export.data import DataError
    from rnn_export.frames import load_frames  # the frames data of `train --input features`
    from rnn_export.parity.results import ParityUsageError

    try:
        val = load_frames(spec).val
    except DataError as e:
        source = ckpt.run_dir if data is None else spec.get("path")
        raise ParityUsageError(f"cannot rebuild the validation split of {source}: {e}") from None
    return [(x[:n], int(y)) for x, n, y in zip(val.x, val.lengths, val.labels, strict=True)]
