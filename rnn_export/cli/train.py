"""`rnn-export train`: BPTT on a dataset, ending in a RUN_DIR."""

from __future__ import annotations

from pathlib import Path

import click

from rnn_export.config import (
    ALL_NONLINEARITIES,
    ARCHS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_EPOCHS_BY_ARCH,
    DEFAULT_HIDDEN_SIZE,
    DEFAULT_LR,
)


@click.command("train")
@click.option(
    "--arch",
    required=True,
    type=click.Choice(ARCHS),
    help="cell: the notes' hand-built RNN; stacked: the notes' nn.RNN wrapper; gru, "
    "lstm: the same wrapper around nn.GRU or nn.LSTM (state h, and c for lstm).",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder with one UTF-8 .txt file per class (label = file name, one sample a "
    "line). Default: the embedded task (which marker letter A-D occurs most often).",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="RUN_DIR to write; an earlier checkpoint there is replaced only when the new "
    "one is complete.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help=f"Passes over the data [default: {DEFAULT_EPOCHS}; "
    f"{DEFAULT_EPOCHS_BY_ARCH['gru']} for gru and lstm].",
)
@click.option(
    "--hidden-size",
    type=click.IntRange(min=1),
    default=DEFAULT_HIDDEN_SIZE,
    show_default=True,
    help="H, the hidden state size.",
)
@click.option(
    "--num-layers",
    type=click.IntRange(min=1),
    default=None,
    help="L, stacked RNN layers [default: 2 for stacked, 1 for gru and lstm; cell has exactly 1].",
)
@click.option(
    "--nonlinearity",
    type=click.Choice(ALL_NONLINEARITIES),
    default="tanh",
    show_default=True,
    help="identity (cell only) is the notes' linear recurrence; gru and lstm take tanh "
    "only (their native gates).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Samples per BPTT step.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_LR,
    show_default=True,
    help="Adam learning rate, decayed to 0 by a cosine schedule.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds the weights, the batch order, the split and the embedded task.",
)
def train_command(data_dir, out, **options):
    """Train a classifier and write its RUN_DIR (weights, config, vocabulary, metrics,
    curves.png).

    Without --data it trains on the embedded task. Prints the final validation
    accuracy. Exit 2 for bad data, options or --out; an interrupted run writes
    nothing and leaves an earlier checkpoint at --out intact.
    """
    from rnn_export.config import TrainOptions
    from rnn_export.data import embedded_spec, folder_spec
    from rnn_export.training import train

    options = TrainOptions(**options)
    seed = options.seed
    data = embedded_spec(seed) if data_dir is None else folder_spec(data_dir, seed=seed)
    try:
        ckpt = train(options, out, data=data)
    except KeyboardInterrupt:
        click.echo(f"interrupted: nothing written; {out} is as it was", err=True)
        raise SystemExit(130) from None
    m = ckpt.metrics
    click.echo(f"wrote {ckpt.run_dir}")
    click.echo(f"  model         {ckpt.config.describe()}")
    click.echo(f"  data          {data['source']} ({m['num_train']} train, {m['num_val']} val)")
    click.echo(f"  val_accuracy  {m['val_accuracy']:.4f}")
    click.echo(f"  train_loss    {m['train_loss']:.4f}")
    click.echo(f"  seconds       {m['train_seconds']:.1f}")
    click.echo(f"  sha256        {ckpt.sha256}")
