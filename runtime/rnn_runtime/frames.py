"""Float frames in: the input stage of a "features" model, checked before anything runs.

A features model reads F float32 values per step (a keyword spotter's filterbank frame,
a watch's accelerometer and gyroscope reading). Device code feeds raw frames: the
file's graph normalizes them by the training split's per-feature mean and scale. A
frame of the wrong size, of a type that is not real numbers, or holding NaN or infinity
is a StreamError before the state is touched.

Tokenizer (rnn_runtime.tokens) and FrameReader are the two input readers: both offer
`one` (one step's input), `sequence` (a (T,) or (T, F) run of them) and `probe` (the
inputs the open-time cross-check runs), so streams and pools treat them alike.
"""

from __future__ import annotations

import numpy as np

from rnn_runtime.errors import StreamError

MAX_PROBE_ROWS = 64  # frames the open-time cross-check steps in one call


class FrameReader:
    """A features model's frames: F float32 values per step.

    Attributes:
        size: F, the values of one frame.
        step_shape: (F,), the shape of one step's input.
        dtype: numpy's float32.
        mean, scale: the normalization the graph applies (F,) each, for probe.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, size: int, normalization: tuple = ()):
        self.size = size
        self.step_shape = (size,)
        mean, scale = normalization or ((0.0,) * size, (1.0,) * size)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)

    def _array(self, frames, ndim: int, what: str) -> np.ndarray:
        if isinstance(frames, (str, bytes, bytearray, dict)):
            raise StreamError(
                f"this model reads float frames of {self.size} values; got a "
                f"{type(frames).__name__}"
            )
        try:
            arr = np.asarray(frames)
        except (ValueError, TypeError) as e:  # ragged lists, objects numpy cannot hold
            raise StreamError(f"{what} must be an array of real numbers: {e}") from None
        if arr.dtype.kind not in "iuf" or arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
            raise StreamError(f"{what} must hold real numbers; got dtype {arr.dtype}")
        want = (self.size,) if ndim == 1 else ("T", self.size)
        if arr.ndim != ndim or arr.shape[-1] != self.size:
            raise StreamError(
                f"{what} has shape {arr.shape}; this model expects {want} (F = {self.size} "
                "values per frame)"
            )
        with np.errstate(over="ignore"):  # a float64 past float32's range becomes infinite
            out = np.ascontiguousarray(arr, dtype=np.float32)
        finite = np.isfinite(out)
        if not finite.all():
            where = np.unravel_index(int(np.argmin(finite)), out.shape)
            raise StreamError(
                f"{what} has {int(finite.size - finite.sum())} values that are not finite "
                f"(NaN or infinity in float32; first at {tuple(int(i) for i in where)}); "
                "frames must be finite"
            )
        return out

    def one(self, frame, *, strict: bool = False) -> np.ndarray:
        """One step's input: a float32 (F,) copy of frame, checked."""
        return self._array(frame, 1, "a frame")

    def sequence(self, frames, *, strict: bool = False) -> np.ndarray:
        """A run of steps: float32 (T, F), checked (T may be 0)."""
        return self._array(frames, 2, "frames")

    def probe(self, n: int) -> np.ndarray:
        """n distinct frames (n, F) around the training data (mean + scale * a spread of
        values in [-2, 2]), for the open-time cross-check."""
        n = min(n, MAX_PROBE_ROWS)
        rows, cols = np.meshgrid(np.arange(1, n + 1), np.arange(1, self.size + 1), indexing="ij")
        spread = 2.0 * np.sin(0.37 * rows * cols + 0.5 * cols)  # rows differ in every column
        return (self.mean + self.scale * spread).astype(np.float32)

    def shown(self, row: np.ndarray) -> str:
        """A probe row as an error message shows it."""
        return f"frame {np.array2string(row[:4], precision=3)}{'...' if row.size > 4 else ''}"
