"""The inputs the bench feeds a model, of the model's own input kind.

One generator serves every measurement (the streaming step, the hand-written loop,
PyTorch eager, pools, offline batches, the profiling script): token ids for a model
that reads characters ("tokens", "onehot"), raw float frames for a "features" model.
Frames are drawn around the file's normalization (mean + scale * a standard normal per
feature), so that the values the graph sees after normalizing are those of training
data, and the device's own work (raw frames in) is what is timed.
"""

from __future__ import annotations

import numpy as np


def random_inputs(meta, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random inputs for `shape` steps of a model with this metadata.

    Args:
        meta: the file's ModelMetadata (rnn_runtime.metadata).
        rng: the source of randomness.
        shape: the steps' shape, for example (T,) for one stream or (B, T) for a batch.

    Returns:
        int64 token ids in 0 .. V-1 of `shape` for a model that reads tokens, or float32
        frames of (*shape, F) for a features model.
    """
    if meta.reads_tokens:
        return rng.integers(0, meta.vocab_size, size=shape, dtype=np.int64)
    F = meta.input_size
    mean, scale = meta.normalization or ((0.0,) * F, (1.0,) * F)
    normal = rng.standard_normal((*shape, F))
    return (np.asarray(mean) + np.asarray(scale) * normal).astype(np.float32)


def mixed_lengths(rng: np.random.Generator, B: int, T: int) -> np.ndarray:
    """int64 (B,) lengths of a padded batch: spread over 1..T, and one row (row 0) as long
    as the padding."""
    lengths = rng.integers(1, T + 1, size=B, dtype=np.int64)
    lengths[0] = T
    return lengths
