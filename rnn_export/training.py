"""Mini-batch BPTT for every arch, ending in an atomically written RUN_DIR.

Batches are padded and the model is given each row's length, so padding never
changes a result. Same seed and data give the same weights bit for bit (on the same
machine and thread count): the model is initialised from the seed, and the batch
order comes from a generator seeded per epoch.

A run that diverges (a loss that is NaN or infinite) stops at once with a TrainingError
and writes nothing; the checks of the new checkpoint (finite weights...) run before it
replaces an earlier run at the same path (rnn_export.checkpoint.save_checkpoint).
Progress: a bar per epoch only when stderr is a terminal; one line per epoch always.

A "features" model trains on float frames (rnn_export.frames): its input stage's
per-feature mean and scale are set from the training split before the first step, so the
checkpoint and every file exported from it normalize raw frames themselves. Such a run
also reports its accuracy on the held-out test split (metrics "test_accuracy").
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rnn_export.checkpoint import (
    Checkpoint,
    check_replaceable,
    load_checkpoint,
    save_checkpoint,
)
from rnn_export.config import DEFAULT_EPOCHS, TrainOptions
from rnn_export.data import Vocabulary, embedded_spec, encode_batch, load_dataset
from rnn_export.errors import InputError
from rnn_export.frames import (
    FEATURE_DEFAULTS,
    frame_batch,
    frames_embedded_spec,
    is_frames_spec,
    load_frames,
    normalization,
)
from rnn_export.models import build_model

EVAL_BATCH_SIZE = 512

# DEFAULT_EPOCHS and TrainOptions live in rnn_export.config; callers also find them here.
__all__ = [
    "DEFAULT_EPOCHS",
    "EVAL_BATCH_SIZE",
    "TrainOptions",
    "TrainingError",
    "evaluate",
    "plot_curves",
    "train",
    "train_options",
]


def train_options(**fields) -> TrainOptions:
    """TrainOptions of fields; a features model's unset options take FEATURE_DEFAULTS."""
    if fields.get("input_kind") == "features":
        fields = {**FEATURE_DEFAULTS, **fields}
    return TrainOptions(**fields)


class TrainingError(InputError):
    """A run that cannot go on (its loss diverged): nothing was written."""


def train(
    options: TrainOptions | str,
    out: str | Path,
    data: dict | None = None,
    *,
    progress: bool = True,
    **fields,
) -> Checkpoint:
    """Train a classifier and write it to out (a RUN_DIR) atomically.

    Args:
        options: the TrainOptions of the run. Older callers pass the arch here and the
            other options as keywords (train("cell", out, epochs=2)): the same options
            (train_options: a features model's unset options take FEATURE_DEFAULTS).
        out: the RUN_DIR; an earlier checkpoint there is replaced only once the new
            one is complete.
        data: a data spec (rnn_export.data; rnn_export.frames for a features model);
            None means the embedded task (of texts, or of frames) with options.seed.
        progress: show a progress bar and one line per epoch on stderr.

    Returns:
        The Checkpoint read back from out.

    Raises:
        TrainingError: the loss became NaN or infinite; out is as it was.
    """
    if isinstance(options, str):
        options = train_options(arch=options, **fields)
    elif fields:
        raise TypeError(f"train() takes TrainOptions or keywords, not both; got {sorted(fields)}")
    check_replaceable(out)
    features = options.input_kind == "features"
    if data is None:
        data = frames_embedded_spec(options.seed) if features else embedded_spec(options.seed)
    data = dict(data)
    if features != is_frames_spec(data):
        raise TrainingError(
            f"a {options.input_kind} model trains on "
            + ("float frames (a .npz or .ts file)" if features else "texts (a folder dataset)")
            + f"; the data given is {data.get('source')!r:.40} data"
        )
    if features:
        run = _frames_run(options, data)
    else:
        dataset = load_dataset(data)
        vocab = Vocabulary.build(text for text, _ in dataset.train)
        config = options.model_config(len(vocab), dataset.labels)
        splits = (_encode(dataset.train, vocab), _encode(dataset.val, vocab), None)
        run = _Run(config, vocab, splits, dataset.spec, None)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        return _train(options, run, out, progress)
    finally:
        torch.set_num_threads(previous_threads)


@dataclass(frozen=True)
class _Run:
    """What a run trains on: the model's config, its vocabulary (None for frames), the
    (inputs, lengths, labels) of train, val and test (None: no test split), the data spec
    and the input stage's normalization (mean, scale) of a features model."""

    config: object
    vocab: Vocabulary | None
    splits: tuple
    spec: dict
    normalization: tuple | None


def _frames_run(options: TrainOptions, data: dict) -> _Run:
    dataset = load_frames(data)
    config = options.model_config(0, dataset.labels, dataset.features)
    test = None if dataset.test is None else frame_batch(dataset.test)
    splits = (frame_batch(dataset.train), frame_batch(dataset.val), test)
    return _Run(config, None, splits, dataset.spec, normalization(dataset.train))


def _train(options: TrainOptions, run: _Run, out, progress: bool) -> Checkpoint:
    epochs, seed = options.epochs, options.seed
    torch.manual_seed(seed)
    model = build_model(run.config)
    if run.normalization is not None:
        stage = model.frames  # the input stage: (x - mean) / scale
        with torch.no_grad():
            for buffer, values in zip((stage.mean, stage.scale), run.normalization, strict=True):
                buffer.copy_(torch.from_numpy(values))
    train_set, val_set, test_set = run.splits
    num_train = len(train_set[2])
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    steps = epochs * -(-num_train // options.batch_size)
    # Cosine decay to zero: late epochs settle instead of bouncing around the optimum.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    history = []
    start = time.perf_counter()
    bars = progress and sys.stderr.isatty()  # redirected output: one line per epoch only
    for epoch in range(1, epochs + 1):
        order = torch.randperm(
            num_train, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
        )
        bar = tqdm(
            order.split(options.batch_size),
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            disable=not bars,
            leave=False,
        )
        train_loss = _train_epoch(model, optimizer, schedule, train_set, bar, options.clip)
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"training diverged in epoch {epoch}: the loss is {train_loss}; nothing was "
                f"written to {out}. Lower the learning rate (lr {options.lr:g}) or the "
                f"gradient clip (clip {options.clip:g})"
            )
        val_accuracy = evaluate(model, *val_set)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_accuracy": val_accuracy,
                "seconds": time.perf_counter() - start,
            }
        )
        if progress:
            tqdm.write(
                f"epoch {epoch}: train loss {train_loss:.4f}, val accuracy {val_accuracy:.4f}",
                file=sys.stderr,
            )
    seconds = time.perf_counter() - start

    metrics = {
        "val_accuracy": history[-1]["val_accuracy"],
        "train_loss": history[-1]["train_loss"],
        "train_seconds": seconds,
        "num_train": num_train,
        "num_val": len(val_set[2]),
        "history": history,
    }
    if test_set is not None:
        metrics["test_accuracy"] = evaluate(model, *test_set)
        metrics["num_test"] = len(test_set[2])
    training = {
        "options": options.to_dict(),
        "optimizer": "Adam",
        "schedule": "cosine",
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    save_checkpoint(out, model, run.vocab, run.spec, training, metrics, plot_curves(history))
    return load_checkpoint(out)


def _encode(samples: list, vocab: Vocabulary):
    tokens, lengths = encode_batch([text for text, _ in samples], vocab)  # (N, T), (N,)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)  # (N,)
    return tokens, lengths, labels


def _batch(tokens, lengths, labels, index):
    """The rows at index of a padded split: token ids (N, T) or frames (N, T, F)."""
    lengths = lengths[index]
    # Trim to this batch's longest row: less padding, same result.
    return tokens[index, : int(lengths.max())], lengths, labels[index]


def _train_epoch(model, optimizer, schedule, train_set, batches, clip: float) -> float:
    """One pass of BPTT; returns the mean training loss per sample."""
    model.train()
    total, count = 0.0, 0
    for index in batches:
        tokens, lengths, labels = _batch(*train_set, index)
        log_probs, _ = model(tokens, lengths=lengths)  # (B, C)
        loss = F.nll_loss(log_probs, labels)
        if not torch.isfinite(loss):
            return loss.item()  # diverged: the caller stops the run, no step is taken
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        schedule.step()
        total += loss.item() * len(index)
        count += len(index)
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    return total / count


@torch.no_grad()
def evaluate(model, tokens, lengths, labels, batch_size: int = EVAL_BATCH_SIZE) -> float:
    """Accuracy of model on a padded split.

    Args:
        tokens: int64 (N, T) token ids, or float32 (N, T, F) frames; lengths: int64 (N);
            labels: int64 (N).

    Returns:
        The fraction of rows whose most likely class is the label.
    """
    was_training = model.training
    model.eval()
    correct = 0
    for index in torch.arange(len(labels)).split(batch_size):
        t, n, y = _batch(tokens, lengths, labels, index)
        log_probs, _ = model(t, lengths=n)  # (B, C)
        correct += int((log_probs.argmax(dim=-1) == y).sum())
    model.train(was_training)
    return correct / len(labels)


def plot_curves(history: list[dict]) -> bytes:
    """Training loss and validation accuracy per epoch, drawn as a PNG (its bytes)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss (NLL)", title="training loss")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], marker="o", color="tab:green")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()
