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
    INPUT_KINDS,
)
from rnn_export.frames import FEATURE_DEFAULTS


@click.command("train")
@click.option(
    "--arch",
    required=True,
    type=click.Choice(ARCHS),
    help="cell: the notes' hand-built RNN; stacked: the notes' nn.RNN wrapper; gru, "
    "lstm: the same wrapper around nn.GRU or nn.LSTM (state h, and c for lstm).",
)
@click.option(
    "--input",
    "input_kind",
    type=click.Choice(INPUT_KINDS),
    default="tokens",
    show_default=True,
    help="What a step reads: tokens (characters through an embedding of size H), onehot "
    "(characters as one-hot vectors), features (float frames from --data's .npz or .ts "
    "file, normalized by the training split's per-feature mean and scale).",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="tokens, onehot: a folder with one UTF-8 .txt file per class (label = file name, "
    "one sample a line); features: a .npz or .ts train file (docs/formats.md). Default: "
    "an embedded task (texts: which marker letter A-D occurs most often; frames: in "
    "which order two events come).",
)
@click.option(
    "--test",
    "test_path",
    type=click.Path(path_type=Path),
    default=None,
    help="features: the held-out test file [default: NAME_TEST beside a NAME_TRAIN "
    "--data file, if there is one].",
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
    f"{DEFAULT_EPOCHS_BY_ARCH['gru']} for gru and lstm; "
    f"{FEATURE_DEFAULTS['epochs']} for --input features].",
)
@click.option(
    "--hidden-size",
    type=click.IntRange(min=1),
    default=None,
    help=f"H, the hidden state size [default: {DEFAULT_HIDDEN_SIZE}; "
    f"{FEATURE_DEFAULTS['hidden_size']} for --input features].",
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
    default=None,
    help=f"Samples per BPTT step [default: {DEFAULT_BATCH_SIZE}; "
    f"{FEATURE_DEFAULTS['batch_size']} for --input features].",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help=f"Adam learning rate, decayed to 0 by a cosine schedule [default: {DEFAULT_LR:g}; "
    f"{FEATURE_DEFAULTS['lr']:g} for --input features].",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds the weights, the batch order, the split and the embedded task.",
)
def train_command(data_dir, test_path, out, **options):
    """Train a classifier and write its RUN_DIR (weights, config, vocabulary, metrics,
    curves.png).

    Without --data it trains on an embedded task. Prints the final validation accuracy
    (and, for float frames, the test split's). Exit 2 for bad data, options or --out; an
    interrupted run writes nothing and leaves an earlier checkpoint at --out intact.
    """
    from rnn_export.data import embedded_spec, folder_spec
    from rnn_export.frames import frames_embedded_spec, frames_file_spec
    from rnn_export.training import train, train_options

    features = options["input_kind"] == "features"
    if test_path is not None and not features:
        raise click.UsageError("--test is for --input features (a .npz or .ts test file)")
    options = train_options(**{k: v for k, v in options.items() if v is not None})
    seed = options.seed
    if features:
        data = (
            frames_embedded_spec(seed)
            if data_dir is None
            else frames_file_spec(data_dir, test_path, seed=seed)
        )
    else:
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
    if "test_accuracy" in m:
        click.echo(f"  test_accuracy {m['test_accuracy']:.4f} ({m['num_test']} test)")
    click.echo(f"  train_loss    {m['train_loss']:.4f}")
    click.echo(f"  seconds       {m['train_seconds']:.1f}")
    click.echo(f"  sha256        {ckpt.sha256}")
