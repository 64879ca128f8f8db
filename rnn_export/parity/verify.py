"""verify_parity: does an exported file compute what its checkpoint's PyTorch model computes?"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnn_export.config import state_names
from rnn_export.parity.backends import check_runtime, open_runtime_runners
from rnn_export.parity.cases import (
    EXAMPLE_LENGTH,
    HORIZON,
    START_STATES,
    LocalCase,
    draw_inputs,
    plan_cases,
    plan_start_states,
    state_axes,
)
from rnn_export.parity.compare import CaseFailure, Tolerance
from rnn_export.parity.reference import Recurrence, TorchFloat32
from rnn_export.parity.results import (
    LOCAL,
    CaseResult,
    ParityError,
    ParityReport,
    ParityUsageError,
)
from rnn_export.parity.runners import (
    PROVIDERS,
    open_errors,
    open_main_graph,
    open_session,
    open_step_model,
    parse_providers,
)
from rnn_export.parity.stream import STREAM_STEPS, run_stream, stream_reference


def verify_parity(
    onnx_path: str | Path,
    checkpoint,
    providers: str | Sequence[str] = ("cpu",),
    *,
    tolerance: Tolerance | None = None,
    example_length: int = EXAMPLE_LENGTH,
    stream_steps: int = STREAM_STEPS,
    seed: int = 0,
    threads: int = 1,
    data: dict | None = None,
    runtime: str = "onnxruntime",
    precision: str = "f32",
    onnx2tf_python: str | Path | None = None,
    tflite_model: str | Path | None = None,
    module=None,
) -> ParityReport:
    """Run the ONNX file and the model side by side over the parity cases.

    An output passes when |file - float64| is within the float32 allowance at every
    element (rnn_export.parity.bounds): local-error checks from many states of real
    trajectories decide for a correct file, whole runs up to 10,000 steps are held to the
    same allowance carried along them and report their drift.

    Args:
        onnx_path: a file written by `rnn-export convert`.
        checkpoint: its RUN_DIR (str or Path) or a loaded Checkpoint.
        providers: "cpu", "cuda", "all", "cpu,cuda" or a sequence of names.
        tolerance: also require |file - PyTorch float32| <= atol + rtol * |PyTorch| in
            every case (None: the allowance alone).
        example_length: the "export example" length: one of the lengths tried, with
            16x it as the "many times longer" one.
        stream_steps: length of the long stream (one token per call).
        seed: seeds every random token, state and length.
        threads: intra-op threads for PyTorch and onnxruntime (the cases are many small
            calls, for which one thread is fastest); results do not depend on it.
        data: a data spec (rnn_export.data) whose validation split gives the real texts;
            None: the checkpoint's own, and none for an imported model (generated
            tokens only).
        runtime: the runtime that executes the file (rnn_export.parity.backends.RUNTIMES);
            another than onnxruntime runs on the CPU, providers "cpu" only. A step file
            (`convert --step-only`) runs the step-by-step families only.
        precision: OpenVINO's inference precision (f32 unless asked otherwise).
        onnx2tf_python: under runtime tflite, the Python whose onnx2tf converts the file
            (None: rnn_export.parity.tflite.find_onnx2tf's search).
        tflite_model: under runtime tflite, a .tflite converted elsewhere from this file's
            step model, run as the step model instead of converting.
        module: a rnn_export.parity.module.ModuleSpec: the user's own class and weights,
            run (their code) in float64 beside the file on generated rows and, with
            `data`, on its validation texts; the file is held to its allowance against
            the module. None: the file against its RUN_DIR alone.

    Returns:
        The ParityReport (report.passed is True).

    Raises:
        ParityUsageError: unreadable files, a model and checkpoint that do not belong
            together, an unknown provider name, bad arguments.
        ParityError: any case out of its allowance, or a provider asked for by name that
            is unavailable; `.report` holds everything.
    """
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    _check_arguments(tolerance, stream_steps, threads, example_length)
    # The reference's many small float64 products: BLAS threads beyond `threads` only spin,
    # and on a busy machine they make verify two to three times slower.
    with threadpool_limits(limits=threads, user_api="blas"):
        report = _verify(
            onnx_path,
            checkpoint,
            providers,
            tolerance,
            data,
            (example_length, stream_steps),
            seed,
            threads,
            (runtime, precision, onnx2tf_python, tflite_model),
            module,
        )
    report.wall_s = time.perf_counter() - started
    if not report.passed:
        raise ParityError(report)
    return report


def _verify(
    onnx_path, checkpoint, providers, tolerance, data, sizes, seed, threads, backend, module
):
    """verify_parity's work, under its thread limits; returns the report.

    sizes = (example_length, stream_steps),
    backend = (runtime, precision, onnx2tf_python, tflite_model).
    """
    example_length, stream_steps = sizes
    runtime, precision, onnx2tf_python, tflite_model = backend
    wanted = parse_providers(providers)
    check_runtime(runtime)
    _check_not_swapped(Path(onnx_path), checkpoint)
    ckpt = _load_checkpoint(checkpoint)
    onnx_path = Path(onnx_path)
    meta, cpu_session = _open_model(onnx_path, threads)
    _check_belongs(meta, ckpt, onnx_path)
    user = _user_model(module, ckpt.model)
    if (runtime != "onnxruntime" or meta.is_step_file) and wanted != [("cpu", True)]:
        what = "a step file" if meta.is_step_file else f"runtime {runtime}"
        raise ParityUsageError(
            f"{what} is verified on the CPU; --providers must be cpu, got {providers!r}"
        )

    model = ckpt.model
    recurrence = Recurrence(model)
    torch32 = TorchFloat32(model, threads)
    names = (meta.log_probs.name, *(s.output for s in meta.states))
    axes = state_axes(meta)
    rng = np.random.default_rng(seed)
    validation = _validation_split(ckpt, data)
    cases = plan_cases(ckpt, example_length, rng, validation)
    stream_tokens = draw_inputs(model, rng, (1, stream_steps))
    zeros = tuple(np.zeros(s.concrete_shape(1), dtype=np.float32) for s in meta.states)
    stream = stream_reference(recurrence, torch32, stream_tokens, zeros)
    start = plan_start_states(
        ckpt,
        torch32,
        axes,
        rng,
        validation,
        (stream_tokens, stream.torch_states),
        recurrence.quiet_tokens(
            None if ckpt.config.reads_tokens else draw_inputs(model, rng, (QUIET_FRAMES,))
        ),
    )
    recurrence.check_against_pytorch(model, start.tokens[:, 0], start.states)
    local_ref = recurrence.run_steps(start.tokens, start.states)
    local_torch = torch32.run_steps(start.tokens, start.states)
    local = [LocalCase(kind, start, axes, names) for kind in ("T=1", "B=1", "B>1")]

    statuses, runners, results, drift = [], [], [], []
    if runtime == "onnxruntime" and not meta.is_step_file:
        for name, explicit in wanted:
            runner, status = open_main_graph(onnx_path, meta, name, explicit, cpu_session, threads)
            statuses.append(status)
            if runner is None:
                continue
            runners.append(runner)
            if name == "cpu" and meta.step is not None:
                step = open_step_model(meta, name, threads)
                if isinstance(step, str):
                    results.append(
                        CaseResult(
                            name, "load the embedded step model", "step model", 0, 0, error=step
                        )
                    )
                else:
                    runners.append(step)
    else:
        status, opened, failures = open_runtime_runners(
            runtime, onnx_path, meta, threads, precision, onnx2tf_python, tflite_model
        )
        statuses.append(status)
        runners += opened
        results += failures
    for r in runners:
        kinds = ("T=1",) if r.family else ("T=1", "B=1", "B>1")
        results += [c.run(r, local_ref, local_torch, tolerance) for c in local if c.kind in kinds]
        for case in cases:
            if r.family is None or case.family == "step-by-step":
                results.append(case.run(r, recurrence, torch32, names, tolerance))
        result, curve = run_stream(r, stream, names, tolerance)
        results.append(result)
        if curve is not None:
            drift.append(curve)
    results += _against_user(runners, ckpt, meta, recurrence, user, data, validation, rng)

    return ParityReport(
        model=str(onnx_path),
        checkpoint=str(ckpt.run_dir),
        checkpoint_sha256=ckpt.sha256,
        model_info={
            "arch": meta.arch,
            "hidden_size": meta.hidden_size,
            "num_layers": meta.num_layers,
            "nonlinearity": meta.nonlinearity,
            "states": [s.input for s in meta.states],
            "vocab_size": meta.vocab_size,
            "num_classes": meta.num_classes,
            "opset": meta.opset,
            "example_length": example_length,
            "stream_steps": stream_steps,
            "horizon": HORIZON,
            "start_states": dict(Counter(start.sources.tolist())),
        },
        providers=statuses,
        cases=results,
        drift=drift,
        tolerance=tolerance,
    )


def _check_arguments(tolerance, stream_steps, threads, example_length) -> None:
    if tolerance is not None:
        for name in ("atol", "rtol"):
            value = getattr(tolerance, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ParityUsageError(f"{name} must be a finite number >= 0; got {value!r}")
    for name, value in (
        ("stream_steps", stream_steps),
        ("threads", threads),
        ("example_length", example_length),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ParityUsageError(f"{name} must be an integer >= 1; got {value!r}")


def _user_model(module, model):
    """The user's module (rnn_export.parity.module), loaded before the minutes of checks."""
    if module is None:
        return None
    from rnn_export.parity.module import load_user_module, user_model

    return user_model(load_user_module(module), module, model)


def _against_user(runners, ckpt, meta, recurrence, user, data, validation, rng):
    """The checks on the user's own terms: the module's outputs, and (with data) the
    file's label order against the data's labels."""
    from rnn_export.data import encode_batch, load_dataset
    from rnn_export.parity.labels import check_labels
    from rnn_export.parity.module import generated_rows, module_cases

    real = None
    if data is not None and validation:
        texts = [t for t, _ in validation]
        tokens, lengths = (a.numpy() for a in encode_batch(texts, ckpt.vocab))
        real = (f"{len(texts)} validation texts", tokens, lengths, True)

    def zeros(B):
        return tuple(np.zeros(s.concrete_shape(B), dtype=np.float32) for s in meta.states)

    results = []
    if user is not None:
        tokens, lengths = generated_rows(ckpt.model, rng)
        inputs = [(f"{len(lengths)} generated rows from zeros", tokens, lengths, False)]
        inputs += [] if real is None else [real]
        results += module_cases(runners, user, recurrence, inputs, zeros, meta.log_probs.name)
    main = [r for r in runners if r.family is None]
    if real is not None and main:
        _, tokens, lengths, _ = real
        try:
            predicted = main[0](tokens, zeros(len(lengths)), lengths)[0].argmax(axis=-1)
        except CaseFailure as e:
            name = f"{len(lengths)} labelled rows"
            results.append(
                CaseResult(main[0].provider, name, "labels", len(lengths), "-", error=str(e))
            )
            return results
        truth = np.array([label for _, label in validation])
        labels = load_dataset(data).labels
        results.append(check_labels(meta.labels, labels, truth, predicted, main[0].provider))
    return results


# --- loading and matching -------------------------------------------------------------


def _check_not_swapped(onnx_path: Path, checkpoint) -> None:
    """A folder given as the model and a file as the checkpoint: say so, not "not found"."""
    if isinstance(checkpoint, str | Path) and onnx_path.is_dir() and Path(checkpoint).is_file():
        raise ParityUsageError(
            f"{onnx_path} is a folder and {checkpoint} a file: the arguments look swapped; "
            "verify takes MODEL.onnx and --checkpoint RUN_DIR"
        )


def _load_checkpoint(checkpoint):
    if not isinstance(checkpoint, str | Path):
        return checkpoint
    from rnn_export.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(checkpoint)
    except CheckpointError as e:
        raise ParityUsageError(f"cannot load the checkpoint: {e}") from None


QUIET_FRAMES = 256  # a features model's candidate frames for the sparse states


def _validation_split(ckpt, data: dict | None = None):
    """The validation split of data, else of the checkpoint's own data spec; None for an
    imported model without data. Texts its vocabulary cannot encode (a vocabulary
    without an unknown token) are left out."""
    from rnn_export.data import DataError, load_splits

    spec = ckpt.data if data is None else data
    if spec is None or not ckpt.config.reads_tokens:  # frames data: the generated cases
        return None
    try:
        val = load_splits(spec)[1]
    except DataError as e:
        source = ckpt.run_dir if data is None else spec.get("path")
        raise ParityUsageError(f"cannot rebuild the validation split of {source}: {e}") from None
    if ckpt.vocab.unk_id is None:
        known = set(ckpt.vocab.tokens)
        val = [(text, label) for text, label in val if set(text) <= known]
    return val


def _open_model(path: Path, threads: int):
    """Read and validate the file's metadata and signature through a CPU session.

    The file is read and checked as the runtime reads it (rnn_runtime.model.read_file),
    and the session opened from those bytes: a tensor kept in an external file, which
    onnxruntime would load next to a path, is refused with the runtime's message.
    """
    from rnn_export.atomic import path_kind
    from rnn_runtime.metadata import MetadataError, check_signature, read_metadata
    from rnn_runtime.model import read_file
    from rnn_runtime.session import open_step_session

    if not path.is_file():
        kind = path_kind(path)
        raise ParityUsageError(
            f"{path}: expected an .onnx file made by `rnn-export convert`; "
            + ("not found" if kind is None else f"it is {kind}")
        )
    try:
        data = read_file(path)
        session = open_session(data, PROVIDERS["cpu"], threads, name=str(path))
    except open_errors() as e:
        raise ParityUsageError(str(e)) from None
    try:
        meta = read_metadata(session.get_modelmeta().custom_metadata_map)
        if meta.is_step_file:
            open_step_session(meta, data, (PROVIDERS["cpu"],), threads, str(path))
        else:
            check_signature(meta, session.get_inputs(), session.get_outputs())
    except MetadataError as e:
        raise ParityUsageError(f"{path}: {e}") from None
    expected = [i for i, _ in state_names(meta.arch)]
    if [s.input for s in meta.states] != expected:
        listed = ", ".join(s.input for s in meta.states) or "none"
        raise ParityUsageError(
            f"{path}: expected the state inputs {', '.join(expected)} of arch "
            f"{meta.arch!r}; the metadata lists {listed}"
        )
    return meta, session


def _check_belongs(meta, ckpt, path: Path) -> None:
    if meta.checkpoint_sha256 != ckpt.sha256:
        raise ParityUsageError(ckpt.mismatch(meta.checkpoint_sha256, path))
    cfg = ckpt.config
    pairs = {
        "arch": (meta.arch, cfg.arch),
        "hidden_size": (meta.hidden_size, cfg.hidden_size),
        "num_layers": (meta.num_layers, cfg.num_layers),
        "nonlinearity": (meta.nonlinearity, cfg.nonlinearity),
        "labels": (meta.labels, cfg.labels),
        "vocab": (meta.vocab, () if ckpt.vocab is None else tuple(ckpt.vocab.tokens)),
        "input": ((meta.input_kind, meta.input_size), (cfg.input_kind, cfg.input_width)),
    }
    for key, (in_file, in_ckpt) in pairs.items():
        if in_file != in_ckpt:
            raise ParityUsageError(
                f"{path} metadata says {key} {in_file!r:.80}; the checkpoint has {in_ckpt!r:.80}"
            )


__all__ = ["LOCAL", "START_STATES", "verify_parity"]
