"""`rnn-export train`: BPTT on a dataset, ending in a RUN_DIR."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("train")
@click.option(
    "--arch",
    required=True,
    type=click.Choice(["cell", "stacked"]),
    help="cell: the notes' hand-built RNN; stacked: the notes' nn.RNN wrapper.",
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
    "--epochs", type=click.IntRange(min=1), default=None, help="Passes over the data [default: 8]."
)
@click.option(
    "--hidden-size",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="H, the hidden state size.",
)
@click.option(
    "--num-layers",
    type=click.IntRange(min=1),
    default=None,
    help="L, stacked RNN layers [default: 2 for stacked; cell has exactly 1].",
)
@click.option(
    "--nonlinearity",
    type=click.Choice(["tanh", "relu", "identity"]),
    default="tanh",
    show_default=True,
    help="identity (cell only) is the notes' linear recurrence.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Samples per BPTT step [default: 64].",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Adam learning rate, decayed to 0 by a cosine schedule [default: 0.003].",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds the weights, the batch order, the split and the embedded task.",
)
def train_command(
    arch, data_dir, out, epochs, hidden_size, num_layers, nonlinearity, batch_size, lr, seed
):
    """Train a classifier and write its RUN_DIR (weights, config, vocabulary, metrics,
    curves.png).

    Without --data it trains on the embedded task. Prints the final validation
    accuracy. Exit 2 for bad data, options or --out; an interrupted run writes
    nothing and leaves an earlier checkpoint at --out intact.
    """
    from rnn_export import training
    from rnn_export.checkpoint import CheckpointError
    from rnn_export.config import ConfigError
    from rnn_export.data import DataError, embedded_spec, folder_spec

    data = embedded_spec(seed) if data_dir is None else folder_spec(data_dir, seed=seed)
    options = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
    try:
        ckpt = training.train(
            arch,
            out,
            data=data,
            hidden_size=hidden_size,
            num_layers=num_layers,
            nonlinearity=nonlinearity,
            seed=seed,
            **{k: v for k, v in options.items() if v is not None},
        )
    except (DataError, ConfigError, CheckpointError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        click.echo(f"error: {e.filename}: {e.strerror}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo(f"interrupted: nothing written; {out} is as it was", err=True)
        sys.exit(130)
    m = ckpt.metrics
    click.echo(f"wrote {ckpt.run_dir}")
    click.echo(f"  model         {_model_line(ckpt.config)}")
    click.echo(f"  data          {data['source']} ({m['num_train']} train, {m['num_val']} val)")
    click.echo(f"  val_accuracy  {m['val_accuracy']:.4f}")
    click.echo(f"  train_loss    {m['train_loss']:.4f}")
    click.echo(f"  seconds       {m['train_seconds']:.1f}")
    click.echo(f"  sha256        {ckpt.sha256}")


def _model_line(config) -> str:
    return (
        f"{config.arch}, L={config.num_layers}, H={config.hidden_size}, "
        f"{config.nonlinearity}, V={config.vocab_size}, C={config.num_classes}"
    )
