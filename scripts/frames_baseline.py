"""Test accuracy of a plain PyTorch GRU/LSTM classifier on a frame dataset, and its cost.

    python scripts/frames_baseline.py ../shared/data/basic_motions/BasicMotions_TRAIN.ts \
        --seeds 0 1 2

The model is the math of rnn-export's feature models written with torch.nn alone: frames
normalized by the training split's per-feature mean and scale, nn.GRU or nn.LSTM, a Linear
head on the top layer's state after each row's last real step, log-softmax; trained as
rnn_export.training trains (Adam, gradient clipping, cosine decay to zero, one torch
thread). It measures which default settings reach an accuracy on the held-out test file,
and in what wall and CPU time. Prints one line per seed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnn_export.frames import (
    FEATURE_DEFAULTS,
    FRAMES_VAL_FRACTION,
    frame_batch,
    frames_embedded_spec,
    frames_file_spec,
    load_frames,
)
from rnn_export.frames import normalization as frame_normalization


class FrameClassifier(nn.Module):
    def __init__(self, arch, features, hidden, layers, classes, mean, scale):
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("scale", torch.from_numpy(scale))
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[arch](
            features, hidden, layers, batch_first=True
        )
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x, lengths):
        x = (x - self.mean) / self.scale  # (B, T, F)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, hn = self.rnn(packed)
        top = hn[0][-1] if isinstance(hn, tuple) else hn[-1]  # (B, H)
        return F.log_softmax(self.fc(top), dim=-1)  # (B, C)


@torch.no_grad()
def accuracy(model, split) -> float:
    model.eval()
    x, lengths, labels = frame_batch(split)
    correct = int((model(x, lengths).argmax(-1) == labels).sum())
    model.train()
    return correct / len(labels)


def run(dataset, args, seed: int) -> dict:
    torch.manual_seed(seed)
    mean, scale = frame_normalization(dataset.train)
    model = FrameClassifier(
        args.arch,
        dataset.features,
        args.hidden_size,
        args.num_layers,
        len(dataset.labels),
        mean,
        scale,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    n = len(dataset.train)
    steps = args.epochs * -(-n // args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    wall, cpu = time.perf_counter(), time.process_time()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for index in order.split(args.batch_size):
            x, lengths, labels = frame_batch(dataset.train, index.numpy())
            loss = F.nll_loss(model(x, lengths), labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            schedule.step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    val = accuracy(model, dataset.val) if len(dataset.val) else float("nan")
    return {"test": accuracy(model, dataset.test), "val": val, "wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="a .ts or .npz train file; default: embedded")
    parser.add_argument("--arch", choices=("gru", "lstm"), default="gru")
    # The defaults of `rnn-export train --input features`.
    parser.add_argument("--hidden-size", type=int, default=FEATURE_DEFAULTS["hidden_size"])
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=FEATURE_DEFAULTS["epochs"])
    parser.add_argument("--batch-size", type=int, default=FEATURE_DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=FEATURE_DEFAULTS["lr"])
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--val-fraction", type=float, default=FRAMES_VAL_FRACTION)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in args.seeds:
        if args.data:
            spec = frames_file_spec(args.data, seed=seed, val_fraction=args.val_fraction)
        else:
            spec = frames_embedded_spec(seed, args.val_fraction)
        dataset = load_frames(spec)
        r = run(dataset, args, seed)
        print(
            f"seed {seed}: test {r['test']:.4f} val {r['val']:.4f} "
            f"wall {r['wall']:.1f} s cpu {r['cpu']:.1f} s "
            f"(train {len(dataset.train)}, test {len(dataset.test)})",
            flush=True,
        )


if __name__ == "__main__":
    np.seterr(all="raise")
    main()
