"""Mini-batch BPTT for both arches, ending in an atomically written RUN_DIR.

Batches are padded and the model is given each row's length, so padding never
changes a result. Same seed and data give the same weights bit for bit (on the same
machine and thread count): the model is initialised from the seed, and the batch
order comes from a generator seeded per epoch.
"""

from __future__ import annotations

import sys
import time
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
from rnn_export.config import ModelConfig
from rnn_export.data import Vocabulary, embedded_spec, encode_batch, load_dataset
from rnn_export.models import build_model

# Chosen so that both arches pass 90% on the embedded task and 80% on the names data
# within two minutes on two cores (figures in the README).
DEFAULT_EPOCHS = 8
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 3e-3
DEFAULT_CLIP = 1.0
DEFAULT_NUM_LAYERS = {"cell": 1, "stacked": 2}
EVAL_BATCH_SIZE = 512


def train(
    arch: str,
    out: str | Path,
    data: dict | None = None,
    epochs: int = DEFAULT_EPOCHS,
    hidden_size: int = 128,
    num_layers: int | None = None,
    nonlinearity: str = "tanh",
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    clip: float = DEFAULT_CLIP,
    progress: bool = True,
    threads: int = 1,
) -> Checkpoint:
    """Train a classifier and write it to out (a RUN_DIR) atomically.

    Args:
        arch: "cell" or "stacked".
        out: the RUN_DIR; an earlier checkpoint there is replaced only once the new
            one is complete.
        data: a data spec (see rnn_export.data); None means the embedded task with seed.
        epochs: passes over the training split.
        hidden_size: H.
        num_layers: L; None means 1 for "cell" and 2 for "stacked".
        nonlinearity: "tanh", "relu" (both arches) or "identity" ("cell" only).
        batch_size: samples per BPTT step.
        lr: Adam learning rate.
        seed: seeds the weights and the batch order.
        clip: maximum gradient norm.
        progress: show a progress bar on stderr.
        threads: torch CPU threads while training (restored after). With these small
            matrices more threads gain little and collapse when cores are shared.

    Returns:
        The Checkpoint read back from out.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; got {epochs} and {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr}")
    check_replaceable(out)
    data = embedded_spec(seed) if data is None else dict(data)
    dataset = load_dataset(data)
    vocab = Vocabulary.build(text for text, _ in dataset.train)
    config = ModelConfig(
        arch=arch,
        vocab_size=len(vocab),
        labels=dataset.labels,
        hidden_size=hidden_size,
        num_layers=DEFAULT_NUM_LAYERS.get(arch, 1) if num_layers is None else num_layers,
        nonlinearity=nonlinearity,
    )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(config, vocab, dataset, out, epochs, batch_size, lr, seed, clip, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config, vocab, dataset, out, epochs, batch_size, lr, seed, clip, progress):
    data = dataset.spec
    torch.manual_seed(seed)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(dataset.train) // batch_size)
    # Cosine decay to zero: late epochs settle instead of bouncing around the optimum.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    train_set = _encode(dataset.train, vocab)
    val_set = _encode(dataset.val, vocab)

    history = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(
            len(dataset.train), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
        )
        bar = tqdm(
            order.split(batch_size),
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        train_loss = _train_epoch(model, optimizer, schedule, train_set, bar, clip)
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
        "num_train": len(dataset.train),
        "num_val": len(dataset.val),
        "history": history,
    }
    training = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": "Adam",
        "schedule": "cosine",
        "clip": clip,
        "seed": seed,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    save_checkpoint(
        out, model, vocab, data, training, metrics, lambda path: plot_curves(history, path)
    )
    return load_checkpoint(out)


def _encode(samples: list, vocab: Vocabulary):
    tokens, lengths = encode_batch([text for text, _ in samples], vocab)  # (N, T), (N,)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)  # (N,)
    return tokens, lengths, labels


def _batch(tokens, lengths, labels, index):
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
        tokens: int64 (N, T); lengths: int64 (N); labels: int64 (N).

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


def plot_curves(history: list[dict], path: Path) -> None:
    """Draw training loss and validation accuracy per epoch into a PNG at path."""
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
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
