"""The user's own module beside the deployed file: does the file compute what the user's
class, with the user's weights, computes?

verify's other checks hold the file to the RUN_DIR it was exported from. For a model
trained elsewhere that RUN_DIR is the import's rebuild, so a tensor imported transposed,
under the wrong name or with the wrong nonlinearity passes them all. Here the user's
class (their file, their constructor arguments, their state_dict with their own tensor
names) runs in float64 on the same inputs as the file, as the reference of the user's
own math, and the file is held to the float32 allowance the RUN_DIR's model gives those
inputs (rnn_export.parity.bounds): a correct import agrees to float64 rounding, a wrong
one is off by orders of magnitude more than the allowance.

This runs the user's code: the class's file is imported as Python, and its constructor
and forward run. The weights themselves are read without running code
(rnn_export.importing.read_state_dict).

The calling conventions (ModuleSpec.call):
    sequence  forward(x) -> out: a whole sequence per call, as the PyTorch tutorial's
              CharRNN or an nn.RNN-style module; x (T, B, ...) or, batch-first,
              (B, T, ...); out (B, C), or per-step (T, B, C) / (B, T, C) whose last step
              is taken, or a tuple whose first element is that.
    step      forward(x_t, h) -> (out, h): one step per call, as the tutorial's classic
              RNN (i2h, h2h, h2o); h starts from the module's initHidden() or
              init_hidden() when it has one, else zeros (B, H).
The module's rows run in groups of equal length (a user's module rarely takes lengths),
so every row's output is after its own last real step.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnn_export.parity.bounds import Approx
from rnn_export.parity.cases import decision_agreement
from rnn_export.parity.compare import CaseFailure, compare
from rnn_export.parity.results import CaseResult, ParityUsageError

CALLS = ("sequence", "step")
OUTPUTS = ("log-probs", "probs", "logits")
ENCODINGS = ("tokens", "onehot", "features")
FAMILY = "user module"
GENERATED_ROWS = 64
GENERATED_LONGEST = 24
GROUP_ROWS = 256  # rows of one length per call of the user's module
# What a user's forward may raise on inputs it was not written for (a wrong --module-call
# or encoding); anything else is a bug that should surface with its traceback.
_CALL_ERRORS = (RuntimeError, TypeError, ValueError, IndexError, AttributeError)


@dataclass(frozen=True)
class ModuleSpec:
    """The user's module and how it is called.

    Args:
        source: "FILE.py:CLASS".
        weights: the user's state_dict file (torch.save(model.state_dict(), path) or
            .safetensors), loaded into the class with the class's own tensor names.
        kwargs: the constructor's keyword arguments.
        call: "sequence" or "step" (see the module docstring).
        batch_first: sequence calls take (B, T, ...) instead of (T, B, ...).
        output: what the module returns: "log-probs", "probs" or "logits".
        encoding: what the module takes per step: "tokens" (int64 ids), "onehot" (float
            vectors of the vocabulary's size) or "features" (float frames); None: the
            model's own input kind.
    """

    source: str
    weights: Path
    kwargs: dict = field(default_factory=dict)
    call: str = "sequence"
    batch_first: bool = False
    output: str = "log-probs"
    encoding: str | None = None

    def __post_init__(self):
        for name, value, choices in (
            ("call", self.call, CALLS),
            ("output", self.output, OUTPUTS),
            ("encoding", self.encoding, (*ENCODINGS, None)),
        ):
            if value not in choices:
                listed = ", ".join(c for c in choices if c is not None)
                raise ParityUsageError(f"module {name} must be one of {listed}; got {value!r}")
        if not isinstance(self.kwargs, dict):
            raise ParityUsageError(
                f"the module's constructor arguments must be a JSON object; got "
                f"{type(self.kwargs).__name__}"
            )


def parse_kwargs(text: str | None) -> dict:
    """A JSON object of constructor arguments ('{"input_size": 57}'); None: {}."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParityUsageError(
            f"module arguments: expected a JSON object; got {text!r}: {e}"
        ) from None
    if not isinstance(value, dict):
        raise ParityUsageError(f"module arguments: expected a JSON object; got {text!r}")
    return value


def _load_class(source: str):
    path_text, sep, name = source.rpartition(":")
    if not sep or not path_text or not name.isidentifier():
        raise ParityUsageError(f"--module: expected FILE.py:CLASS; got {source!r}")
    path = Path(path_text)
    if not path.is_file():
        raise ParityUsageError(f"--module: {path} is not a file")
    module_name = f"rnn_export_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ParityUsageError(f"--module: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look classes up here
    try:
        spec.loader.exec_module(module)
    except (SyntaxError, ImportError, OSError) as e:
        raise ParityUsageError(f"--module: cannot import {path}: {type(e).__name__}: {e}") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type))
        raise ParityUsageError(
            f"--module: {path} has no class {name}; it defines {', '.join(found) or 'none'}"
        )
    return cls


def load_user_module(spec: ModuleSpec):
    """The user's class built with spec.kwargs, the user's state_dict loaded (strict), in
    float64 and eval mode.

    Raises:
        ParityUsageError: no such file or class, a constructor that refuses the arguments,
            a weights file that is not the class's state_dict.
    """
    import torch

    from rnn_export.importing import ImportWeightsError, read_state_dict

    cls = _load_class(spec.source)
    try:
        module = cls(**spec.kwargs)
    except TypeError as e:
        raise ParityUsageError(f"--module: {cls.__name__}(**{spec.kwargs}) raised: {e}") from None
    if not isinstance(module, torch.nn.Module):
        raise ParityUsageError(f"--module: {cls.__name__} is not a torch.nn.Module")
    try:
        tensors, _, _ = read_state_dict(Path(spec.weights))
    except ImportWeightsError as e:
        raise ParityUsageError(str(e)) from None
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())
        raise ParityUsageError(
            f"{spec.weights} is not a state_dict of {cls.__name__}: {first[:300]}"
        ) from None
    return module.double().eval()


class UserModel:
    """The user's module (float64) on numpy inputs: log-probabilities after each row's
    last step.

    Args:
        module: load_user_module's module.
        spec: how it is called.
        config: the file's ModelConfig: V (the one-hot width), H (the state's width when
            the module has no initHidden()), and the input kind, the encoding the
            module takes unless spec.encoding says.
    """

    def __init__(self, module, spec: ModuleSpec, config, normalization=None):
        self.module, self.spec = module, spec
        self.V, self.H = config.vocab_size, config.hidden_size
        # A features model's (mean, scale): the file normalizes raw frames itself, the
        # user's module takes them normalized, as it was trained (docs/verify.md).
        self.normalization = normalization
        kind = getattr(config, "input_kind", "tokens")
        self.encoding = spec.encoding or kind
        if self.encoding == "features" and kind != "features":
            raise ParityUsageError(
                f"the module takes features; the model's input is {kind} (use --module-input "
                "tokens or onehot)"
            )

    def log_probs(self, inputs: np.ndarray, lengths: np.ndarray, encoding: str) -> np.ndarray:
        """inputs (B, T) token ids or (B, T, F) frames, lengths (B,) -> float64 (B, C).

        Raises:
            ParityUsageError: the module refuses the inputs or returns another shape than
                the declared convention gives.
        """
        out = [None] * len(lengths)
        for n in np.unique(lengths):
            rows = np.flatnonzero(lengths == n)
            for start in range(0, len(rows), GROUP_ROWS):
                group = rows[start : start + GROUP_ROWS]
                result = self._group(inputs[group, : int(n)], encoding)
                for i, r in enumerate(group):
                    out[r] = result[i]
        return np.stack(out)

    def _encode(self, x: np.ndarray, encoding: str):
        import torch

        if encoding == "tokens":
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))
        if encoding == "onehot":
            ids = torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))
            return torch.nn.functional.one_hot(ids, self.V).double()  # (B, T, V)
        frames = np.asarray(x, dtype=np.float64)
        if self.normalization is not None:
            mean, scale = self.normalization
            frames = (frames - mean) / scale
        return torch.from_numpy(np.ascontiguousarray(frames))  # (B, T, F)

    def _group(self, x: np.ndarray, encoding: str) -> np.ndarray:
        import torch

        B = x.shape[0]
        seq = self._encode(x, encoding)  # (B, T, ...)
        how = f"called as {self.spec.call}"
        try:
            with torch.inference_mode():
                if self.spec.call == "step":
                    h = self._initial_state(B)
                    for t in range(seq.shape[1]):
                        out, h = self.module(seq[:, t], h)
                else:
                    out = self.module(seq if self.spec.batch_first else seq.transpose(0, 1))
        except _CALL_ERRORS as e:
            raise ParityUsageError(
                f"the module raised {type(e).__name__} {how} on {tuple(seq.shape)} "
                f"{encoding} inputs (batch first: {self.spec.batch_first}): "
                f"{' '.join(str(e).split())[:200]}"
            ) from None
        if isinstance(out, tuple | list):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ParityUsageError(f"the module {how} returned {type(out).__name__}, not a tensor")
        if out.dim() == 3:  # per-step outputs: the last step
            out = out[:, -1] if self.spec.batch_first else out[-1]
        if out.dim() != 2 or out.shape[0] != B:
            raise ParityUsageError(
                f"the module {how} returned shape {tuple(out.shape)} for {B} rows; expected "
                "(B, C), or per-step (T, B, C) / (B, T, C)"
            )
        out = out.double()
        if self.spec.output == "probs":
            out = out.log()
        elif self.spec.output == "logits":
            out = torch.log_softmax(out, dim=-1)
        return out.numpy()

    def _initial_state(self, B: int):
        import torch

        for name in ("initHidden", "init_hidden"):
            init = getattr(self.module, name, None)
            if callable(init):
                try:
                    return init().double()
                except TypeError:
                    return init(B).double()
        return torch.zeros(B, self.H, dtype=torch.float64)


def drive(runner, tokens: np.ndarray, lengths: np.ndarray, zeros) -> np.ndarray:
    """The file's log_probs (B, C) after each row's last step, from zero states: one call
    for a main graph, one token per call (state fed back) for a step model."""
    if runner.family is None:
        return runner(tokens, zeros, lengths)[0]
    B, T = tokens.shape
    out, state = None, zeros
    ones = np.ones(B, dtype=np.int64)
    for t in range(int(lengths.max())):
        lp, state = runner(np.ascontiguousarray(tokens[:, t : t + 1]), state, ones)
        out = lp if out is None else np.where((lengths == t + 1)[:, None], lp, out)
    return out


def generated_rows(model, rng) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (B, T) token ids or (B, T, F) frames, lengths (B,)): random inputs of the
    model's kind, lengths 1..GENERATED_LONGEST with both extremes, several rows of each
    length (the module's groups)."""
    from rnn_export.parity.cases import draw_inputs

    lengths = rng.integers(1, GENERATED_LONGEST + 1, size=GENERATED_ROWS).astype(np.int64)
    lengths[:2] = (1, GENERATED_LONGEST)
    return draw_inputs(model, rng, (GENERATED_ROWS, GENERATED_LONGEST)), lengths


def user_model(module, spec: ModuleSpec, model) -> UserModel:
    """The user's module around the toolkit's model of the same weights (its config, and
    a features model's normalization, which the user's module takes already applied)."""
    normalization = None
    if model.config.input_kind == "features":
        normalization = tuple(
            t.detach().double().numpy() for t in (model.frames.mean, model.frames.scale)
        )
    return UserModel(module, spec, model.config, normalization)


def module_cases(runners, user: UserModel, recurrence, inputs, zeros, output: str):
    """The file against the user's module under every runner, one CaseResult per runner
    and input set, each held to the allowance the RUN_DIR's model gives those inputs; on
    real inputs, with the agreement of the file's top label with the module's.

    Args:
        runners: the file's runners (main graphs, step models).
        inputs: [(name, tokens (B, T), lengths (B,), real)] input sets.
        zeros: B -> the zero state tuple for B rows.
        output: the log-probabilities' name in the file.
    """
    results = []
    for name, tokens, lengths, real in inputs:
        state = zeros(tokens.shape[0])
        ref, _ = recurrence.run(tokens, state, lengths)
        theirs = user.log_probs(tokens, lengths, user.encoding)
        if theirs.shape != ref.value.shape:
            raise ParityUsageError(
                f"the module returns {theirs.shape[-1]} classes; the file has {ref.value.shape[-1]}"
            )
        expected = Approx(theirs, ref.radius)
        lo, hi = int(lengths.min()), int(lengths.max())
        for runner in runners:
            base = dict(
                provider=runner.provider,
                name=name if runner.family is None else f"{name}, {runner.family}",
                family=FAMILY,
                batch_size=tokens.shape[0],
                length=hi if lo == hi else f"{lo}..{hi}",
            )
            try:
                got = drive(runner, tokens, lengths, state)
                check = compare(got, expected, output)
            except CaseFailure as e:
                results.append(CaseResult(**base, error=str(e)))
                continue
            agreement = clear = None
            if real:  # top labels: the module's in float64 against the file's
                agreement, clear = decision_agreement(got, expected)
            results.append(
                CaseResult(**base, outputs=(check,), agreement=agreement, clear_disagreements=clear)
            )
    return results


def check_run_dir(ckpt, spec: ModuleSpec, seed: int = 0):
    """Does a RUN_DIR compute what the user's module computes? Its model's float64
    reference (verify's) against the module on generated rows from zeros, no file needed.

    Returns:
        The OutputCheck of the log-probabilities: error / the float32 allowance those rows
        get. A correct import is a tiny fraction of it, a wrong one far over it.

    Raises:
        ParityUsageError: the module cannot be loaded or called as declared.
    """
    from rnn_export.parity.cases import zero_state
    from rnn_export.parity.reference import Recurrence

    user = user_model(load_user_module(spec), spec, ckpt.model)
    tokens, lengths = generated_rows(ckpt.model, np.random.default_rng(seed))
    ref, _ = Recurrence(ckpt.model).run(tokens, zero_state(ckpt.config, len(lengths)), lengths)
    theirs = user.log_probs(tokens, lengths, user.encoding)
    if theirs.shape != ref.value.shape:
        raise ParityUsageError(
            f"the module returns {theirs.shape[-1]} classes; the model has {ref.value.shape[-1]}"
        )
    return compare(theirs, ref, "log_probs")
