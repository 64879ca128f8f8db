"""The references a file is held to: the model in float64 with its float32 allowance, and
PyTorch float32.

`Recurrence` is the model's function written with the operations of
rnn_export.parity.bounds, from the PyTorch model's weights: exact float64 values and a
rigorous bound on how far a correct float32 implementation may be from them (the
allowance). `check_against_pytorch` proves, one step from given states, that it is the
function PyTorch computes in float64. `TorchFloat32` runs the PyTorch model itself.

States are tuples of arrays in the model's layout, in the metadata's order: (h,) with h
(B, H) for "cell" and (L, B, H) for "stacked" and "gru"; (h, c), each (L, B, H), for
"lstm".
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from rnn_export.parity.bounds import (
    Approx,
    Linear,
    affine,
    bias_terms,
    log_softmax,
    radius_cap,
    stack,
)
from rnn_export.parity.cells import Cell, f64

# A step of the float64 reference and of PyTorch float64 from the same states agree to
# float64 rounding; anything further apart is a bug in the reference, not in the file.
SELF_CHECK_RTOL = 1e-9


class ReferenceError(RuntimeError):
    """The float64 reference does not compute what PyTorch computes (a bug in rnn-export)."""


def _replace_rows(h: Approx, n: int, new: Approx) -> Approx:
    """h with its first n rows replaced by new."""
    if n == h.value.shape[0]:
        return new
    return Approx(
        np.concatenate([new.value, h.value[n:]]), np.concatenate([new.radius, h.radius[n:]])
    )


def _rows(layers, index) -> list[tuple[Approx, ...]]:
    return [tuple(s[index] for s in layer) for layer in layers]


class Recurrence:
    """The model's recurrence in float64 with its float32 allowance.

    A layer's state is a tuple of Approx (B, H): (h,), or (h, c) for "lstm"
    (rnn_export.parity.cells).

    Args:
        model: a model of rnn_export.models.
    """

    def __init__(self, model):
        self.config = model.config
        self.nonlinearity = model.config.nonlinearity
        self.cell = Cell(model)
        self.table = self.cell.table
        self.out = Linear(f64(self.cell.head.weight))
        self.out_bias = bias_terms(f64(self.cell.head.bias))

    def quiet_tokens(self, frames: np.ndarray | None = None) -> np.ndarray:
        """Every token id, those whose layer-0 input terms are smallest first (sum over
        units of |input term|): after them the fewest units saturate. A features model
        has no table: the given frames (n, F), sorted the same way."""
        if self.table is None:
            x = self.cell.first_input(frames).value
            size = np.abs(x @ self.cell.inputs[0].weight.T + self.cell.in_bias[0]).sum(axis=1)
            return frames[np.argsort(size, kind="stable")]
        return np.argsort(np.abs(self.table.value).sum(axis=1), kind="stable")

    # --- states -----------------------------------------------------------------------

    def layers_of(self, state: tuple[np.ndarray, ...]) -> list[tuple[Approx, ...]]:
        """Each layer's state tuple of (B, H) from a model-layout state, as exact inputs."""
        if self.config.arch == "cell":
            return [(Approx.exact(state[0]),)]
        L = state[0].shape[0]
        return [tuple(Approx.exact(s[k]) for s in state) for k in range(L)]

    def state_of(self, layers: list[tuple[Approx, ...]]) -> tuple[Approx, ...]:
        """The model-layout state from the layers' states."""
        if self.config.arch == "cell":
            return layers[0]
        return tuple(stack([layer[i] for layer in layers]) for i in range(len(layers[0])))

    # --- the recurrence ---------------------------------------------------------------

    def step(self, tokens: np.ndarray, layers: list[tuple[Approx, ...]]):
        """One step: tokens (B,) int, each layer's state -> the new layer states.

        Once every radius of every layer is at its cap (a long run has amplified the
        allowance until it says nothing), the bound stays there: only the values are
        computed, and the radius kept at the cap (a bound that always holds).
        """
        cap = radius_cap(self.nonlinearity)
        if self.config.arch in ("cell", "stacked") and all(
            bool((h.radius >= cap).all()) for (h,) in layers
        ):
            return self._step_values(tokens, layers, cap)
        x = None
        new = []
        for k, state in enumerate(layers):
            state = self.cell.step(k, tokens, x, state)
            x = state[0]
            new.append(state)
        return new

    def _step_values(self, tokens, layers, cap: float):
        """step() for layers whose bound says nothing: the exact values, radius at cap."""
        x = None
        new = []
        for k, (h,) in enumerate(layers):
            x = self.cell.step_values(k, tokens, x, h.value)
            new.append((Approx(x, np.full_like(x, cap)),))
        return new

    def head(self, top: Approx) -> Approx:
        """log_probs (B, C) from the top layer's h."""
        return log_softmax(affine([(top, self.out)], self.out_bias))

    def run(self, tokens: np.ndarray, state: tuple[np.ndarray, ...], lengths=None):
        """The model on a padded batch, from an explicit float32 state.

        Args:
            tokens: int (B, T); state: the model-layout float32 state tuple;
            lengths: (B,), 1 <= lengths <= T, or None for all T; rows past their
                length keep their state.

        Returns:
            (log_probs (B, C), state tuple), each row after its own last token, as Approx.
        """
        B, T = tokens.shape[:2]
        lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
        # Longest rows first: step t computes only the rows still running, a prefix.
        order = np.argsort(-lengths, kind="stable")
        layers = _rows(self.layers_of(state), order)
        tokens, lengths = tokens[order], lengths[order]
        for t in range(int(lengths.max(initial=0))):
            n = int(np.count_nonzero(lengths > t))
            new = self.step(tokens[:n, t], _rows(layers, slice(0, n)))
            layers = [
                tuple(_replace_rows(s, n, x) for s, x in zip(old, fresh, strict=True))
                for old, fresh in zip(layers, new, strict=True)
            ]
        layers = _rows(layers, np.argsort(order, kind="stable"))
        return self.head(layers[-1][0]), self.state_of(layers)

    def run_steps(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        """The outputs after every step of tokens (B, T), one token per step.

        Returns:
            (log_probs (T, B, C), state tuple of (T, *state shape)), as Approx.
        """
        layers = self.layers_of(state)
        per_step = []
        for t in range(tokens.shape[1]):
            layers = self.step(tokens[:, t], layers)
            per_step.append(layers)
        B, T = tokens.shape[:2]
        tops = stack([layers[-1][0] for layers in per_step])  # (T, B, H)
        H = tops.value.shape[-1]
        flat = self.head(Approx(tops.value.reshape(T * B, H), tops.radius.reshape(T * B, H)))
        log_probs = Approx(flat.value.reshape(T, B, -1), flat.radius.reshape(T, B, -1))
        states = [self.state_of(layers) for layers in per_step]
        return log_probs, tuple(stack([s[i] for s in states]) for i in range(len(states[0])))

    def check_against_pytorch(self, model, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        """One step from `state` here and in PyTorch float64 must agree to float64 rounding.

        Raises:
            ReferenceError: they do not (the reference is not the model's function).
        """
        import copy

        import torch

        log_probs, new_state = self.run(tokens[:, None], state)
        model64 = copy.deepcopy(model).double()
        with torch.inference_mode():
            lp64, state64 = model64(
                torch.from_numpy(np.ascontiguousarray(tokens[:, None])),
                to_torch_state(tuple(s.astype(np.float64) for s in state)),
            )
        theirs = from_torch_state(state64)
        pairs = [("log_probs", log_probs.value, lp64.numpy())]
        pairs += [
            (f"state {i}", mine.value, other)
            for i, (mine, other) in enumerate(zip(new_state, theirs, strict=True))
        ]
        for name, mine, theirs in pairs:
            scale = max(1.0, float(np.abs(theirs).max(initial=0.0)))
            gap = float(np.abs(mine - theirs).max(initial=0.0))
            if not gap <= SELF_CHECK_RTOL * scale:
                raise ReferenceError(
                    f"the float64 reference differs from PyTorch float64 by {gap:.3g} in "
                    f"{name} after one step: a bug in rnn-export's reference, not in the file"
                )


def to_torch_state(state: tuple[np.ndarray, ...] | None):
    """A state tuple of numpy arrays as the model takes it: one tensor, or a tuple of
    tensors ((h, c) for "lstm"); None stays None (zeros)."""
    import torch

    from rnn_export.models import model_state

    if state is None:
        return None
    return model_state(torch.from_numpy(np.ascontiguousarray(s)) for s in state)


def from_torch_state(state) -> tuple[np.ndarray, ...]:
    """The model's new state (a tensor or a tuple of tensors) as a tuple of numpy arrays."""
    if isinstance(state, tuple | list):
        return tuple(s.numpy() for s in state)
    return (state.numpy(),)


@contextmanager
def torch_threads(n: int):
    """PyTorch on n intra-op threads, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchFloat32:
    """The PyTorch model itself (float32) on numpy inputs."""

    def __init__(self, model, threads: int):
        self.model = model
        self.threads = threads

    def __call__(self, tokens, state, lengths=None) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """tokens (B, T), state tuple or None (zeros), lengths (B,) or None (all T)."""
        import torch

        with torch.inference_mode(), torch_threads(self.threads):
            log_probs, new_state = self.model(
                torch.from_numpy(np.ascontiguousarray(tokens)),
                to_torch_state(state),
                None if lengths is None else torch.from_numpy(lengths),
            )
        return log_probs.numpy(), from_torch_state(new_state)

    def run_steps(self, tokens, state) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """The outputs after every step of tokens (B, T), one token per call with the state
        fed back, as Recurrence.run_steps gives them: (log_probs (T, B, C), states (T, ...))."""
        log_probs, states = [], []
        for t in range(tokens.shape[1]):
            lp, state = self(np.ascontiguousarray(tokens[:, t : t + 1]), state)
            log_probs.append(lp)
            states.append(state)
        return np.stack(log_probs), tuple(np.stack(s) for s in zip(*states, strict=True))
