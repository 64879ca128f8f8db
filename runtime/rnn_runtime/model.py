"""Open a model file made by `rnn-export convert`: validated onnxruntime sessions.

A StreamModel holds the session, the metadata and the vocabulary; streams and pools
(stream.py, pool.py) run on it. Only numpy and onnxruntime are needed.

A file that embeds a step model (metadata key rnn_export.step) gets a second session on
it when the model runs on the CPU: streams and pools take their one-token steps through
it (fewer onnxruntime nodes per step), everything longer goes through the main graph.
At open the step model's checksum and signature are checked, and one step through it is
compared with one step through the main graph.

Thread safety: a StreamModel is immutable after it is opened and onnxruntime allows
concurrent runs on one session, so one model may be shared by any number of streams
and pools on any number of threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_errors

from rnn_runtime.metadata import MetadataError, ModelMetadata, check_signature, read_metadata

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
# Where a provider keeps its tensors: the recurrent state is allocated there and stays there.
_PROVIDER_DEVICES = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda",
    "DmlExecutionProvider": "dml",
}
# Short names accepted for providers (as `rnn-export verify --providers` spells them).
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "dml": "DmlExecutionProvider",
}
# onnxruntime's exceptions for a model it cannot load or run (the toolkit catches the same).
ORT_ERRORS = (
    _ort_errors.Fail,
    _ort_errors.InvalidArgument,
    _ort_errors.InvalidGraph,
    _ort_errors.InvalidProtobuf,
    _ort_errors.NoSuchFile,
    _ort_errors.NotImplemented,
    _ort_errors.RuntimeException,
)


class ModelFileError(ValueError):
    """A path that onnxruntime cannot load as a model."""


class ProviderError(ValueError):
    """A requested execution provider that is not available (never silently replaced)."""


class StreamError(ValueError):
    """Bad input to a stream or pool: a token id, a state, saved bytes. The stream is unchanged."""


class UnknownCharError(StreamError):
    """A character outside the model's vocabulary, in strict mode."""


def open_model(
    path: str | Path,
    *,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    threads: int = 1,
    step_model: bool = True,
) -> StreamModel:
    """Open and validate a model file; the one entry point for torch-free readers.

    Args:
        path: a .onnx file made by `rnn-export convert`.
        providers: onnxruntime execution providers in priority order (full names or
            the short names of PROVIDER_ALIASES: cpu, cuda, tensorrt, dml); each must be
            available, or ProviderError is raised (no silent fallback).
        threads: onnxruntime intra-op thread count, >= 1.
        step_model: step streams and pools through the file's embedded step model
            (CPU only; files without one always use the main graph). False: the main
            graph for everything.

    Raises:
        ModelFileError: the file is missing or is not an ONNX model.
        MetadataError: no rnn-export metadata, an unknown schema version, or metadata
            that contradicts the graph's inputs and outputs.
        ProviderError: a requested provider is not available.
    """
    return StreamModel(path, providers=providers, threads=threads, step_model=step_model)


def session_options(threads: int) -> ort.SessionOptions:
    """The runtime's onnxruntime session options: `threads` intra-op threads, sequential."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def load_metadata(path: str | Path) -> ModelMetadata:
    """The validated metadata of a model file (opens it on the CPU provider)."""
    return open_model(path).metadata


class StreamModel:
    """One opened model: onnxruntime session, validated metadata, vocabulary.

    Attributes:
        path: the model file.
        metadata: its ModelMetadata.
        session: the onnxruntime InferenceSession on the main graph.
        step_session: the InferenceSession on the embedded step model, or None (no step
            model in the file, a non-CPU provider, or step_model=False).
        providers: the providers the session runs on, as requested.
        device: where the state lives ("cpu", "cuda", ...), from the first provider.
        threads: onnxruntime intra-op thread count.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        threads: int = 1,
        step_model: bool = True,
    ):
        self.path = Path(path)
        providers = tuple(providers)
        if not providers or not all(isinstance(p, str) for p in providers):
            raise ProviderError(f"providers must be a non-empty list of names; got {providers!r}")
        providers = tuple(PROVIDER_ALIASES.get(p.lower(), p) for p in providers)
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise ProviderError(
                f"execution provider(s) {missing} not available in this onnxruntime; "
                f"available: {available}"
            )
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1; got {threads!r}")
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such model file")
        try:
            session = ort.InferenceSession(
                str(self.path), session_options(threads), providers=list(providers)
            )
        except ORT_ERRORS as e:
            raise ModelFileError(f"{self.path}: onnxruntime cannot load it as a model: {e}") from e
        got = session.get_providers()
        dropped = [p for p in providers if p not in got]
        if dropped:
            raise ProviderError(
                f"{self.path}: onnxruntime did not start provider(s) {dropped}; "
                f"the session runs on {got}"
            )
        try:
            meta = read_metadata(session.get_modelmeta().custom_metadata_map)
            check_signature(meta, session.get_inputs(), session.get_outputs())
        except MetadataError as e:
            raise MetadataError(f"{self.path}: {e}") from None
        if any(s.dtype != "float32" for s in meta.states):
            raise MetadataError(
                f"{self.path}: this runtime streams float32 states; got "
                f"{[s.dtype for s in meta.states]}"
            )
        self.metadata = meta
        self.session = session
        self.providers = providers
        self.device = _PROVIDER_DEVICES.get(providers[0], "cpu")
        self.threads = threads
        self._char_ids = {c: i for i, c in enumerate(meta.vocab) if i != meta.unk_id}
        self.step_session = None
        if step_model and meta.step is not None and self.device == "cpu":
            try:
                self.step_session = _open_step_session(meta, session, providers, threads)
            except MetadataError as e:
                raise MetadataError(f"{self.path}: {e}") from None
            except ORT_ERRORS as e:
                raise ModelFileError(
                    f"{self.path}: onnxruntime cannot load or run its embedded step model: {e}"
                ) from e

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"StreamModel({str(self.path)!r}, arch={m.arch!r}, H={m.hidden_size}, "
            f"L={m.num_layers}, V={m.vocab_size}, C={m.num_classes}, providers={self.providers})"
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    def encode(self, text: str, *, strict: bool = False) -> np.ndarray:
        """Map characters to token ids through the model's vocabulary.

        Args:
            text: any string.
            strict: raise UnknownCharError for a character the model never saw,
                instead of mapping it to the unknown id.

        Returns:
            int64 (T,) token ids.
        """
        if not isinstance(text, str):
            raise StreamError(f"text must be a str; got {type(text).__name__}")
        unk = self.metadata.unk_id
        ids = [self._char_ids.get(c, unk) for c in text]
        if strict and unk in ids:
            pos = ids.index(unk)
            raise UnknownCharError(
                f"character {text[pos]!r} at position {pos} is not in the model's vocabulary "
                f"({len(self._char_ids)} characters); strict mode refuses it"
            )
        return np.array(ids, dtype=np.int64)

    def token_ids(self, tokens: str | Iterable[int] | np.ndarray, *, strict: bool = False):
        """Validated int64 (T,) token ids from text or from ids in [0, V)."""
        if isinstance(tokens, str):
            return self.encode(tokens, strict=strict)
        if isinstance(tokens, np.ndarray):
            arr = tokens
        else:
            tokens = list(tokens)
            if any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) for t in tokens):
                raise StreamError(f"token ids must be integers; got {tokens[:8]!r}")
            arr = np.array(tokens, dtype=np.int64)
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise StreamError(
                f"token ids must be a 1-D integer array; got dtype {arr.dtype}, shape {arr.shape}"
            )
        V = self.metadata.vocab_size
        bad = (arr < 0) | (arr >= V)
        if bad.any():
            pos = int(np.argmax(bad))
            raise StreamError(
                f"token id {int(arr[pos])} at position {pos} is out of range; "
                f"this model expects ids in [0, {V})"
            )
        return arr.astype(np.int64, copy=False)

    def token_id(self, token: str | int, *, strict: bool = False) -> int:
        """One validated token id from a single character or an int id."""
        if isinstance(token, str):
            if len(token) != 1:
                raise StreamError(f"a step takes one character; got {token!r}")
            return int(self.encode(token, strict=strict)[0])
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
            raise StreamError(f"a step takes a character or an int id; got {token!r}")
        V = self.metadata.vocab_size
        if not 0 <= token < V:
            raise StreamError(f"token id {int(token)} is out of range; this model expects [0, {V})")
        return int(token)

    def state_shapes(self, batch_size: int) -> tuple[tuple[int, ...], ...]:
        """Concrete shape of each state (metadata order) for batch_size streams."""
        return tuple(s.concrete_shape(batch_size) for s in self.metadata.states)

    def initial_state(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        """The initial state of batch_size streams: {state input name: float32 zeros}."""
        return {
            s.input: np.zeros(shape, dtype=np.float32)
            for s, shape in zip(self.metadata.states, self.state_shapes(batch_size), strict=True)
        }

    def check_state(self, state: Mapping[str, np.ndarray] | np.ndarray, batch_size: int):
        """Validate a state for batch_size streams; returns {name: float32 C-contiguous array}.

        Raises:
            StreamError: wrong names, type, dtype, shape, or non-finite values.
        """
        specs = self.metadata.states
        if isinstance(state, np.ndarray) and len(specs) == 1:
            state = {specs[0].input: state}
        if not isinstance(state, Mapping):
            raise StreamError(
                f"a state is a dict {{name: array}} with names {[s.input for s in specs]}; "
                f"got {type(state).__name__}"
            )
        want = sorted(s.input for s in specs)
        if sorted(state) != want:
            raise StreamError(f"state names are {sorted(state)}; this model expects {want}")
        out = {}
        for spec, shape in zip(specs, self.state_shapes(batch_size), strict=True):
            value = state[spec.input]
            if not isinstance(value, np.ndarray):
                raise StreamError(
                    f"state {spec.input!r} must be a numpy array; got {type(value).__name__}"
                )
            if value.dtype != np.float32:
                raise StreamError(
                    f"state {spec.input!r} has dtype {value.dtype}; this model expects float32"
                )
            if value.shape != shape:
                raise StreamError(
                    f"state {spec.input!r} has shape {value.shape}; this model expects {shape} "
                    f"(its {tuple(spec.shape)} with B={batch_size})"
                )
            finite = np.isfinite(value)
            if not finite.all():
                raise StreamError(
                    f"state {spec.input!r} has {int(finite.size - finite.sum())} non-finite "
                    f"values (first at {np.unravel_index(int(np.argmin(finite)), shape)}); "
                    "a state must be finite"
                )
            out[spec.input] = np.ascontiguousarray(value)
        return out

    def run(
        self,
        tokens: np.ndarray,
        state: Mapping[str, np.ndarray],
        lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One plain session.run over a padded batch (no validation: the callers validate).

        Args:
            tokens: int64 (B, T).
            state: {state input name: float32 array of concrete_shape(B)}.
            lengths: int64 (B), 1 <= lengths <= T; None means all T.

        Returns:
            log_probs float32 (B, C) and {state input name: new state}, both new arrays.
        """
        meta = self.metadata
        B, T = tokens.shape
        if lengths is None:
            lengths = np.full((B,), T, dtype=np.int64)
        feeds = {meta.tokens.name: tokens, meta.lengths.name: lengths, **state}
        names = [meta.log_probs.name] + [s.output for s in meta.states]
        log_probs, *states = self.session.run(names, feeds)
        return log_probs, {s.input: v for s, v in zip(meta.states, states, strict=True)}

    def stream(self, *, strict: bool = False):
        """A new StreamSession at the initial state."""
        from rnn_runtime.stream import StreamSession

        return StreamSession(self, strict=strict)

    def pool(self):
        """A new, empty StreamPool on this model."""
        from rnn_runtime.pool import StreamPool

        return StreamPool(self)


def layer_views(state: np.ndarray) -> list[np.ndarray]:
    """The step model's per-layer (B, H) states as views of a model state (no copy):
    state[l] of an (L, B, H) state, the state itself when it is (B, H)."""
    if state.ndim == 3:
        return [state[layer] for layer in range(state.shape[0])]
    return [state]


def run_step_model(session, step, tokens: np.ndarray, state: np.ndarray, run_options=None):
    """One plain call of a step-model session on a state in the model's layout.

    Args:
        session: an InferenceSession on `step.model_bytes()`.
        step: the file's StepSpec (metadata.step).
        tokens: int64 (B,) token ids.
        state: float32 (B, H) or (L, B, H), the main graph's state layout.

    Returns:
        log_probs (B, C) and the new state in the layout of `state`.
    """
    feeds = {step.token: tokens}
    feeds |= {i: x for (i, _), x in zip(step.states, layer_views(state), strict=True)}
    log_probs, *new = session.run(
        [step.log_probs, *(o for _, o in step.states)], feeds, run_options
    )
    return log_probs, (np.stack(new) if state.ndim == 3 else new[0])


def _open_step_session(meta: ModelMetadata, main, providers, threads: int):
    """Open the embedded step model and prove it steps as the main graph does.

    Raises:
        MetadataError: damaged bytes, a signature that differs from the metadata, or a
            step that disagrees with the main graph's.
        onnxruntime errors: bytes onnxruntime cannot load or run.
    """
    step = meta.step
    session = ort.InferenceSession(
        step.model_bytes(), session_options(threads), providers=list(providers)
    )
    want_in = {step.token: ("tensor(int64)", 1)} | {i: ("tensor(float)", 2) for i, _ in step.states}
    want_out = {step.log_probs: ("tensor(float)", 2)} | {
        o: ("tensor(float)", 2) for _, o in step.states
    }
    for kind, want, got in (
        ("input", want_in, session.get_inputs()),
        ("output", want_out, session.get_outputs()),
    ):
        found = {a.name: (a.type, len(a.shape)) for a in got}
        if found != want:
            raise MetadataError(
                f"the embedded step model's {kind}s are {found}; the metadata promises {want}"
            )
    # One step of two rows through both graphs, from a non-zero state.
    B = 2
    state = meta.states[0]
    h0 = np.linspace(-0.9, 0.9, num=int(np.prod(state.concrete_shape(B))), dtype=np.float32)
    h0 = h0.reshape(state.concrete_shape(B))
    tokens = np.array([0, meta.vocab_size - 1], dtype=np.int64)
    main_lp, main_hn = main.run(
        [meta.log_probs.name, state.output],
        {
            meta.tokens.name: tokens[:, None],
            state.input: h0,
            meta.lengths.name: np.ones(B, dtype=np.int64),
        },
    )
    step_lp, step_hn = run_step_model(session, step, tokens, h0)
    for name, got, want in (("log_probs", step_lp, main_lp), ("state", step_hn, main_hn)):
        if got.shape != want.shape or not np.allclose(
            got, want, rtol=1e-4, atol=1e-5, equal_nan=True
        ):
            diff = np.abs(got - want).max() if got.shape == want.shape else got.shape
            raise MetadataError(
                f"the embedded step model disagrees with the main graph on one step "
                f"({name}: max |difference| {diff}); the file is inconsistent"
            )
    return session
