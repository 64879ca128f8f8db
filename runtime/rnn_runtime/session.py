"""The runtime's onnxruntime plumbing: providers, sessions, state buffers, bindings, step model.

One way to open a session (`open_session`, from a path or bytes) with one spelling of
providers (`resolve_providers`: "cpu", "cpu,cuda", short or full names), one set of
session options and one tuple of onnxruntime's errors (ORT_ERRORS). StreamModel opens
its sessions here; so can any other reader of a model file (verify, bench, export's run
check, inspect).

The streaming machinery lives here too, so that a stream and a pool share it without
importing each other's insides: StateBuffers (two sets of state buffers on the
provider's device that a step ping-pongs between), StepBindings (prebuilt one-token
calls through the main graph or the step model), `bind_chunk` (a longer call through
the main graph) and the step model itself (`open_step_session`, `run_step_model`).

Limits: threads in [1, MAX_THREADS], MAX_THREADS = the machine's logical CPUs
(os.cpu_count()): more only contends, and onnxruntime hangs or crashes at thousands.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_errors

from rnn_runtime.errors import (
    MetadataError,
    ModelFileError,
    ProviderError,
    StreamError,
    ThreadsError,
)
from rnn_runtime.signature import check_step_signature

# Short names (as every command spells them) -> onnxruntime's full names.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "dml": "DmlExecutionProvider",
}
DEFAULT_PROVIDERS = (PROVIDERS["cpu"],)
# Where a provider keeps its tensors: the recurrent state is allocated there and stays there.
PROVIDER_DEVICES = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda",
    "DmlExecutionProvider": "dml",
}
# onnxruntime's exceptions for a model it cannot load or run, or a provider that fails.
ORT_ERRORS = (
    _ort_errors.EPFail,
    _ort_errors.Fail,
    _ort_errors.InvalidArgument,
    _ort_errors.InvalidGraph,
    _ort_errors.InvalidProtobuf,
    _ort_errors.NoSuchFile,
    _ort_errors.NotImplemented,
    _ort_errors.RuntimeException,
)
# Also raised by onnxruntime's bindings: RuntimeError for a C++ exception (run_with_iobinding
# reports every failed run so), UnicodeDecodeError for an error message that quotes bytes of
# a damaged model that are not UTF-8.
RUN_ERRORS = (*ORT_ERRORS, RuntimeError, UnicodeDecodeError)
MAX_THREADS = os.cpu_count() or 1

# StateBuffers' finiteness check multiplies by zero on purpose (0 * inf is the NaN it looks
# for); numpy's warning about that NaN would only repeat the StreamError that follows.
warnings.filterwarnings(
    "ignore", "invalid value encountered in dot", RuntimeWarning, r"rnn_runtime\."
)


def resolve_providers(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Full onnxruntime provider names, in priority order, each available here.

    Args:
        spec: "cpu", "cpu,cuda", or a sequence of names; short names (PROVIDERS) or
            onnxruntime's full names (CUDAExecutionProvider), any case for short names.

    Raises:
        ProviderError: an empty list, an unknown name (named, with the valid ones), or
            a provider this onnxruntime build does not have (never silently dropped).
    """
    names = spec.split(",") if isinstance(spec, str) else spec
    if isinstance(names, (bytes, Mapping)) or not isinstance(names, Sequence):
        raise ProviderError(f"providers must be a name or a list of names; got {spec!r}")
    if not all(isinstance(n, str) for n in names):
        raise ProviderError(f"providers must be a non-empty list of names; got {spec!r}")
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ProviderError(f"providers must be a non-empty list of names; got {spec!r}")
    known = ort.get_all_providers()
    full = []
    for name in names:
        if name.lower() in PROVIDERS:
            full.append(PROVIDERS[name.lower()])
        elif name in known:
            full.append(name)
        else:
            raise ProviderError(
                f"unknown execution provider {name!r}; expected one of "
                f"{', '.join(PROVIDERS)} or a full onnxruntime name ({', '.join(known)})"
            )
    full = list(dict.fromkeys(full))
    available = ort.get_available_providers()
    missing = [p for p in full if p not in available]
    if missing:
        raise ProviderError(
            f"execution provider(s) {missing} not available in this onnxruntime; "
            f"available: {available}"
        )
    return tuple(full)


def run_failed(error: BaseException) -> StreamError:
    """The StreamError for a run that onnxruntime failed (its result is not kept)."""
    return StreamError(f"onnxruntime failed to run the step; nothing changed: {error}")


def check_threads(threads) -> int:
    """`threads` itself when it is an int in [1, MAX_THREADS]; else ThreadsError."""
    if (
        not isinstance(threads, (int, np.integer))
        or isinstance(threads, bool)
        or not 1 <= threads <= MAX_THREADS
    ):
        raise ThreadsError(
            f"threads must be an integer in [1, {MAX_THREADS}] (this machine's logical "
            f"CPUs); got {threads!r}"
        )
    return int(threads)


def session_options(
    threads: int, *, quiet: bool = False, profile_prefix: str | Path | None = None
) -> ort.SessionOptions:
    """The toolkit's onnxruntime session options.

    Args:
        threads: intra-op threads (checked by check_threads); one inter-op thread, sequential.
        quiet: silence onnxruntime's own log (a caller that reports errors itself).
        profile_prefix: write an onnxruntime profile to files with this prefix.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = check_threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if quiet:
        options.log_severity_level = 4
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return options


def open_session(
    model: str | Path | bytes,
    *,
    providers: str | Sequence[str] = DEFAULT_PROVIDERS,
    threads: int = 1,
    quiet: bool = False,
    profile_prefix: str | Path | None = None,
    name: str | None = None,
) -> ort.InferenceSession:
    """Open an onnxruntime session: the one place the toolkit does it.

    Args:
        model: a path, or a serialized model (bytes).
        providers: as resolve_providers takes them.
        threads, quiet, profile_prefix: as session_options takes them.
        name: how messages name the model (default: the path, or "the model").

    Returns:
        An InferenceSession running on every provider asked for.

    Raises:
        ProviderError: as resolve_providers, a provider that fails to start, or one
            that onnxruntime dropped from the session.
        ThreadsError: a bad thread count.
        ModelFileError: onnxruntime cannot load the model.
    """
    providers = resolve_providers(providers)
    options = session_options(threads, quiet=quiet, profile_prefix=profile_prefix)
    is_bytes = isinstance(model, (bytes, bytearray, memoryview))
    where = name or ("the model" if is_bytes else str(model))
    try:
        # enable_fallback=0: onnxruntime would otherwise print to stdout and retry on the
        # CPU when a provider fails, at open and again at run: a silent fallback.
        session = ort.InferenceSession(
            bytes(model) if is_bytes else str(model),
            options,
            providers=list(providers),
            enable_fallback=0,
        )
    except _ort_errors.EPFail as e:
        raise ProviderError(f"{where}: an execution provider failed to start: {e}") from e
    except RUN_ERRORS as e:
        raise ModelFileError(f"{where}: onnxruntime cannot load it as a model: {e}") from e
    got = session.get_providers()
    dropped = [p for p in providers if p not in got]
    if dropped:
        raise ProviderError(
            f"{where}: onnxruntime did not start provider(s) {dropped}; the session runs on {got}"
        )
    return session


def bound_run(session: ort.InferenceSession, binding: ort.IOBinding) -> Callable[[], None]:
    """A call with no arguments that runs `binding` on `session` (raises as
    run_with_iobinding does): the one way the toolkit's hot loops call onnxruntime.

    onnxruntime's Python InferenceSession.run_with_iobinding checks on every call
    whether the binding belongs to the session and whether WebGPU graph capture is on,
    then calls its C++ session; that is 0.3 to 0.6 us of a step of a few microseconds
    (docs/design.md, "Where the time goes"). Where the wrapper has its usual C++ session
    (`_sess`) and binding (`_iobinding`) and capture is off, the call goes to them
    directly, with the check of the session done once here; otherwise through the public
    method (tests/runtime/test_private_paths.py fails if the steps stop going direct).
    The binding must be kept alive by the caller (its arrays and OrtValues with it).
    """
    c_session = getattr(session, "_sess", None)
    c_binding = getattr(binding, "_iobinding", None)
    if (
        c_session is not None
        and c_binding is not None
        and getattr(binding, "_session", None) is c_session
        and hasattr(c_session, "run_with_iobinding")
        and not getattr(c_session, "is_webgpu_graph_capture_enabled", lambda: False)()
    ):
        return functools.partial(c_session.run_with_iobinding, c_binding, None)
    return functools.partial(session.run_with_iobinding, binding)


class StateBuffers:
    """Two sets of state buffers for n streams, each with the log-probabilities it came with.

    Set k holds every state of the model (metadata order, concrete_shape(n)) and the
    log_probs (n, C) of the step that produced it; a call reads set `current` and
    writes set `current ^ 1`, and the caller keeps the result by flipping `current`
    only when it is finite (`nonfinite[k]()` is truthy when set k is not).

    On the CPU each set is one float32 arena: the states and log_probs are views of it
    that their OrtValues (`sets`, and per layer `layer_sets` for the step model) share,
    so the main graph and the step model read and write the same bytes, and one dot
    product with zeros checks the whole set (0 * inf and 0 * NaN are NaN, any other
    product is 0). On another device the states live there and log_probs on the CPU.
    """

    def __init__(self, meta, n: int, device: str = "cpu"):
        self.meta = meta
        shapes = [s.concrete_shape(n) for s in meta.states]
        C = meta.num_classes
        self.current = 0
        if device == "cpu":
            sizes = [int(np.prod(shape)) for shape in shapes]
            ends = np.cumsum(sizes + [n * C]).tolist()
            self.arenas = tuple(np.zeros(ends[-1], dtype=np.float32) for _ in range(2))
            spans = list(zip(sizes, ends[:-1], shapes, strict=True))
            self.arrays = tuple(
                [a[e - size : e].reshape(shape) for size, e, shape in spans] for a in self.arenas
            )
            self.log_probs = tuple(a[ends[-1] - n * C :].reshape(n, C) for a in self.arenas)
            self.sets = tuple(
                [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays] for arrays in self.arrays
            )
            self.layer_sets = tuple(
                [ort.OrtValue.ortvalue_from_numpy(v) for a in arrays for v in layer_views(a)]
                for arrays in self.arrays
            )
            zeros = np.zeros(ends[-1], dtype=np.float32)
            self.nonfinite = tuple(functools.partial(a.dot, zeros) for a in self.arenas)
        else:
            self.arenas = self.arrays = self.layer_sets = None
            self.log_probs = tuple(np.zeros((n, C), dtype=np.float32) for _ in range(2))
            self.sets = tuple(
                [
                    ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, device, 0)
                    for shape in shapes
                ]
                for _ in range(2)
            )
            self.nonfinite = tuple(functools.partial(self._device_nonfinite, k) for k in (0, 1))

    def _device_nonfinite(self, k: int) -> bool:
        values = [v.numpy() for v in self.sets[k]] + [self.log_probs[k]]
        return not all(np.isfinite(v).all() for v in values)

    def read(self) -> dict[str, np.ndarray]:
        """A copy of the current states: {state input name: array}."""
        if self.arrays is not None:
            values = self.arrays[self.current]
        else:
            values = [v.numpy() for v in self.sets[self.current]]
        return {s.input: v.copy() for s, v in zip(self.meta.states, values, strict=True)}

    def write(self, state: Mapping[str, np.ndarray]) -> None:
        """Overwrite the current states with {state input name: array of the same shape}."""
        if self.arrays is not None:
            for s, a in zip(self.meta.states, self.arrays[self.current], strict=True):
                a[...] = state[s.input]
            return
        for s, v in zip(self.meta.states, self.sets[self.current], strict=True):
            v.update_inplace(np.ascontiguousarray(state[s.input], dtype=np.float32))

    def nonfinite_rows(self, k: int) -> list[int]:
        """The rows (streams) of set k with a non-finite state or log-probability."""
        values = self.arrays[k] if self.arrays is not None else [v.numpy() for v in self.sets[k]]
        return nonfinite_rows(self.meta.states, self.log_probs[k], values)


def nonfinite_rows(specs, log_probs: np.ndarray, states: Sequence[np.ndarray]) -> list[int]:
    """The rows whose log_probs (B, C) or states (StateSpec order, batch along each
    spec's batch_axis) hold NaN or infinity."""
    bad = ~np.isfinite(log_probs).all(axis=1)
    for spec, v in zip(specs, states, strict=True):
        other = tuple(i for i in range(v.ndim) if i != spec.batch_axis)
        bad |= ~np.isfinite(v).all(axis=other)
    return np.flatnonzero(bad).tolist()


def bind_chunk(session, meta, tokens, lengths, buffers: StateBuffers, k: int) -> ort.IOBinding:
    """An IOBinding of the main graph: tokens (B, T) and lengths (B,) OrtValues, states
    from buffers' set k, new states and log_probs into set k ^ 1."""
    binding = session.io_binding()
    binding.bind_ortvalue_input(meta.tokens.name, tokens)
    binding.bind_ortvalue_input(meta.lengths.name, lengths)
    binding.bind_ortvalue_output(
        meta.log_probs.name, ort.OrtValue.ortvalue_from_numpy(buffers.log_probs[k ^ 1])
    )
    pairs = zip(meta.states, buffers.sets[k], buffers.sets[k ^ 1], strict=True)
    for spec, v_in, v_out in pairs:
        binding.bind_ortvalue_input(spec.input, v_in)
        binding.bind_ortvalue_output(spec.output, v_out)
    return binding


class StepBindings:
    """Prebuilt one-token-per-row calls at batch n over a StateBuffers.

    Write the ids into `tokens` (n,) (frames: (n, F)), then `advance()`: it runs
    bindings[k] (through calls[k], see bound_run) with k = buffers.current, which reads
    set k and writes set k ^ 1, and keeps the result only if it is finite. Through the
    step model when `step_session` is given (per-layer states, CPU only), else through
    the main graph (T = 1, lengths 1).
    """

    def __init__(self, meta, buffers: StateBuffers, n: int, session, step_session=None):
        # One step's input per row: a token id, or a features model's frame of F values.
        dtype, frame = (np.int64, ()) if meta.reads_tokens else (np.float32, (meta.input_size,))
        if step_session is not None:
            step = meta.step
            self.session = step_session
            self.tokens = np.zeros((n, *frame), dtype=dtype)
            tokens = ort.OrtValue.ortvalue_from_numpy(self.tokens)
            bindings = []
            for k in (0, 1):
                binding = step_session.io_binding()
                binding.bind_ortvalue_input(step.token, tokens)
                log_probs = ort.OrtValue.ortvalue_from_numpy(buffers.log_probs[k ^ 1])
                binding.bind_ortvalue_output(step.log_probs, log_probs)
                pairs = zip(
                    step.states, buffers.layer_sets[k], buffers.layer_sets[k ^ 1], strict=True
                )
                for (name_in, name_out), v_in, v_out in pairs:
                    binding.bind_ortvalue_input(name_in, v_in)
                    binding.bind_ortvalue_output(name_out, v_out)
                bindings.append(binding)
        else:
            self.session = session
            self._tokens = np.zeros((n, 1, *frame), dtype=dtype)
            self.tokens = self._tokens[:, 0]  # a view: writing it feeds the graph
            tokens = ort.OrtValue.ortvalue_from_numpy(self._tokens)
            ones = ort.OrtValue.ortvalue_from_numpy(np.ones((n,), dtype=np.int64))
            bindings = [bind_chunk(session, meta, tokens, ones, buffers, k) for k in (0, 1)]
        self.bindings = tuple(bindings)
        self.calls = tuple(bound_run(self.session, b) for b in self.bindings)
        self._buffers = buffers

    def advance(self) -> bool:
        """Run the step on the current set of the buffers: True and the new set current,
        or False (its result is not finite) with nothing changed.

        Raises:
            StreamError: onnxruntime failed the run (nothing changed either).
        """
        buffers = self._buffers
        k = buffers.current
        try:
            self.calls[k]()
        except RUN_ERRORS as e:
            raise run_failed(e) from e
        if buffers.nonfinite[k ^ 1]():
            return False
        buffers.current = k ^ 1
        return True


def layer_views(state: np.ndarray) -> list[np.ndarray]:
    """The step model's per-layer (B, H) states as views of a model state (no copy):
    state[l] of an (L, B, H) state, the state itself when it is (B, H)."""
    if state.ndim == 3:
        return [state[layer] for layer in range(state.shape[0])]
    return [state]


def run_step_model(session, step, tokens: np.ndarray, state, run_options=None):
    """One plain call of a step-model session on states in the model's layout.

    The step model's states are each model state's per-layer views, in metadata order.

    Args:
        session: an InferenceSession on `step.model_bytes()`.
        step: the file's StepSpec (metadata.step).
        tokens: int64 (B,) token ids.
        state: the model's one state, float32 (B, H) or (L, B, H); or a sequence of
            all its states in metadata order.

    Returns:
        log_probs (B, C) and the new state(s) in the form and layout of `state`.
    """
    states = [state] if isinstance(state, np.ndarray) else list(state)
    layers = [v for s in states for v in layer_views(s)]
    feeds = {step.token: tokens} | {i: x for (i, _), x in zip(step.states, layers, strict=True)}
    log_probs, *new = session.run(
        [step.log_probs, *(o for _, o in step.states)], feeds, run_options
    )
    out, start = [], 0
    for s in states:
        count = s.shape[0] if s.ndim == 3 else 1
        out.append(np.stack(new[start : start + count]) if s.ndim == 3 else new[start])
        start += count
    return log_probs, (out[0] if isinstance(state, np.ndarray) else out)


def open_step_session(
    meta, step_bytes: bytes, providers, threads: int, name: str = "the embedded step model"
):
    """Open the embedded step model and check its signature against the metadata
    (crosscheck.py then proves that it steps as the main graph does).

    Args:
        meta: the file's ModelMetadata (meta.step is not None).
        step_bytes: the step model (already checked by onnxfile.scan_model).

    Raises:
        MetadataError: inputs or outputs that differ from what the metadata promises
            (names, types, ranks; classes and hidden size: signature.check_step_signature).
        ModelFileError, ProviderError: as open_session.
    """
    step = meta.step
    session = open_session(step_bytes, providers=providers, threads=threads, quiet=True, name=name)
    first = ("tensor(int64)", 1) if meta.reads_tokens else ("tensor(float)", 2)  # ids or frames
    want_in = {step.token: first} | {i: ("tensor(float)", 2) for i, _ in step.states}
    want_out = {step.log_probs: ("tensor(float)", 2)} | {
        o: ("tensor(float)", 2) for _, o in step.states
    }
    for kind, want, got in (
        ("input", want_in, session.get_inputs()),
        ("output", want_out, session.get_outputs()),
    ):
        found = {a.name: (a.type, len(a.shape)) for a in got}
        if found != want:
            raise MetadataError(f"{name}'s {kind}s are {found}; the metadata promises {want}")
    check_step_signature(meta, session.get_outputs(), name)
    return session
