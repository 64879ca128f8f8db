"""The file under test, run by onnxruntime: its main graph under each provider, its step model.

Every runner is called like the model: (tokens (B, T), state tuple, lengths (B,)) ->
(log_probs (B, C), new state tuple), numpy in and out, in the metadata's names. Sessions
are opened through the runtime's own code (rnn_runtime), so verify runs the file as a
deployment would.

Which path of the exported graph a call takes depends only on its shape: T == 1 runs the
one-step branch, B == 1 and T > 1 the RNN-operator branch, B > 1 and T > 1 the
length-sorted Scan (rnn_export.export has the designs); the step model is a second
graph in the file's metadata that the runtime steps streams through on the CPU.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnn_export.parity.compare import CaseFailure
from rnn_export.parity.results import ParityUsageError, ProviderStatus
from rnn_runtime.session import PROVIDERS as RUNTIME_PROVIDERS

# The providers verify runs (in the runtime's spelling): the CPU, and CUDA's GPUs.
PROVIDERS = {name: RUNTIME_PROVIDERS[name] for name in ("cpu", "cuda")}
# Kernels that do the model's arithmetic: on a non-CPU provider none may run on the CPU.
# (Integer shape arithmetic such as Add or Gather may legitimately stay on the CPU.)
COMPUTE_OPS = {
    *("RNN", "GRU", "LSTM", "Scan", "Loop", "Gemm", "FusedGemm", "MatMul"),
    *("Tanh", "Relu", "Sigmoid", "LogSoftmax"),
}


def run_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's errors for a model it cannot run (the runtime's own list)."""
    from rnn_runtime.session import RUN_ERRORS

    return RUN_ERRORS


def open_session(source: str | Path | bytes, execution_provider: str, threads: int, **options):
    """An onnxruntime session opened as the runtime opens one, quiet: a failing case is
    recorded in the report, onnxruntime's own log would only repeat it. A batch-first
    Triton variant's session is wrapped (rnn_export.triton.ServingSession) so that it is
    called, and checked, as the main graph it wraps.

    Raises:
        rnn_runtime.ModelFileError, rnn_runtime.ProviderError: it cannot be opened.
    """
    from rnn_export.triton import adapt_session
    from rnn_runtime.session import open_session as runtime_session

    session = runtime_session(
        source, providers=[execution_provider], threads=threads, quiet=True, **options
    )
    # A Triton variant (`rnn-export triton`) runs as a session on the main graph it wraps.
    return adapt_session(session)


def open_errors() -> tuple[type[BaseException], ...]:
    """What open_session raises for a model or provider that cannot be opened."""
    from rnn_runtime import MetadataError, ModelFileError, ProviderError

    return (MetadataError, ModelFileError, ProviderError)


def _run_options():
    import onnxruntime as ort

    run_options = ort.RunOptions()
    run_options.log_severity_level = 4
    return run_options


class MainGraph:
    """The file's main graph under one provider."""

    family = None  # each case keeps its own family

    def __init__(self, session, meta, provider: str):
        self.session = session
        self.provider = self.label = provider
        self.errors = run_errors()
        self.inputs = (meta.tokens.name, meta.lengths.name, *(s.input for s in meta.states))
        self.outputs = [meta.log_probs.name, *(s.output for s in meta.states)]
        self.run_options = _run_options()

    def __call__(self, tokens, state: tuple, lengths):
        feed = dict(zip(self.inputs, (tokens, lengths, *state), strict=True))
        try:
            log_probs, *new_state = self.session.run(self.outputs, feed, self.run_options)
        except self.errors as e:
            raise CaseFailure(f"onnxruntime raised {type(e).__name__}: {e}") from None
        return log_probs, tuple(new_state)


class StepModel:
    """The file's embedded step model, called like the main graph with T = 1."""

    family = "step model"

    def __init__(self, session, meta, provider: str):
        from rnn_runtime.session import run_step_model

        self._run = run_step_model
        self.session = session
        self.provider = provider
        self.label = f"{provider}, step model"
        self.errors = run_errors()
        self.step = meta.step
        self.run_options = _run_options()

    def __call__(self, tokens, state: tuple, lengths):
        if tokens.shape[1] != 1 or not (lengths == 1).all():
            raise CaseFailure(f"the step model takes one token per call; got T={tokens.shape[1]}")
        try:
            log_probs, new_state = self._run(
                self.session,
                self.step,
                np.ascontiguousarray(tokens[:, 0]),
                list(state),
                self.run_options,
            )
        except self.errors as e:
            raise CaseFailure(f"onnxruntime raised {type(e).__name__}: {e}") from None
        return log_probs, tuple(new_state)


def open_step_model(meta, provider: str, threads: int):
    """A StepModel, or the error message saying why the embedded step model won't load."""
    try:
        session = open_session(meta.step.model_bytes(), PROVIDERS[provider], threads)
    except open_errors() as e:
        return f"{type(e).__name__}: {e}"
    return StepModel(session, meta, provider)


def parse_providers(spec: str | Sequence[str]) -> list[tuple[str, bool]]:
    """Provider names from "cpu", "cuda", "all" or "cpu,cuda" (or a sequence of names).

    Returns:
        [(name, explicit)]: explicit is False under "all", where an unavailable provider
        is skipped instead of failing.

    Raises:
        ParityUsageError: an unknown name, or "all" mixed with other names.
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise ParityUsageError(
            f"expected a provider list such as 'cpu' or 'cpu,cuda'; got {spec!r}"
        )
    if "all" in names:
        if names != ["all"]:
            raise ParityUsageError(f"'all' cannot be combined with other providers; got {spec!r}")
        return [(name, False) for name in PROVIDERS]
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise ParityUsageError(
            f"unknown provider {unknown[0]!r}; expected one of {', '.join(PROVIDERS)} or 'all'"
        )
    return [(n, True) for n in dict.fromkeys(names)]


def open_main_graph(path: Path, meta, name: str, explicit: bool, cpu_session, threads: int):
    """(MainGraph or None, ProviderStatus): a runner on provider `name`, or why not."""
    import onnxruntime as ort

    ep = PROVIDERS[name]
    status = "unavailable" if explicit else "skipped"
    available = ort.get_available_providers()
    if ep not in available:
        reason = (
            f"{ep} is not available in this onnxruntime build (available: "
            f"{', '.join(available)}); CUDA needs the gpu extra (onnxruntime-gpu) and a CUDA GPU"
        )
        return None, ProviderStatus(name, ep, status, reason)
    if ep == PROVIDERS["cpu"]:
        session = cpu_session
    else:
        try:
            session = open_session(path, ep, threads)
        except open_errors() as e:
            return None, ProviderStatus(name, ep, status, f"{ep} failed to start: {e}")
    # onnxruntime may fall back to the CPU when a provider fails to initialise: refuse it.
    running = session.get_providers()
    if not running or running[0] != ep:
        reason = f"asked for {ep}, but the session runs on {running}"
        return None, ProviderStatus(name, ep, status, reason)
    placement = kernel_placement(path, ep, threads, meta)
    # Shape bookkeeping may run on the CPU by design; the arithmetic must not.
    on_cpu = set(placement.get(PROVIDERS["cpu"], [])) & COMPUTE_OPS
    if ep != PROVIDERS["cpu"] and on_cpu:
        reason = f"asked for {ep}, but these kernels ran on the CPU: {', '.join(sorted(on_cpu))}"
        return None, ProviderStatus(name, ep, status, reason, placement)
    return MainGraph(session, meta, name), ProviderStatus(name, ep, "ran", None, placement)


def kernel_placement(path: Path, ep: str, threads: int, meta) -> dict[str, list[str]]:
    """Execution provider -> op types of the kernels that ran there, read from onnxruntime's
    profile of one call per graph branch (T=1; T>1 at B=1; T>1 at B>1)."""
    with tempfile.TemporaryDirectory(prefix="rnn-export-profile-") as tmp:
        session = open_session(path, ep, threads, profile_prefix=Path(tmp) / "profile")
        runner = MainGraph(session, meta, ep)
        for B, T in ((1, 1), (1, 3), (2, 3)):
            state = tuple(np.zeros(s.concrete_shape(B), dtype=np.float32) for s in meta.states)
            try:
                runner(np.zeros((B, T), dtype=np.int64), state, np.full(B, T, dtype=np.int64))
            except CaseFailure:
                continue  # a broken model: its cases record the error
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    placement: dict[str, set[str]] = {}
    for event in events:
        if event.get("cat") == "Node" and "provider" in event.get("args", {}):
            args = event["args"]
            placement.setdefault(args["provider"], set()).add(args.get("op_name", "?"))
    return {k: sorted(v) for k, v in sorted(placement.items())}
