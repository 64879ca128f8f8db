"""`rnn-export import`: a state_dict trained elsewhere (the notes' classes, the PyTorch
tutorial's, a model over float frames) to a RUN_DIR."""

from __future__ import annotations

from pathlib import Path

import click

from rnn_export.cli.module_options import module_options, module_spec
from rnn_export.config import ALL_NONLINEARITIES, ARCHS, INPUT_KINDS


def _mapping(ctx, param, values) -> dict[str, str]:
    mapping = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old or not new:
            raise click.BadParameter(f"expected OLD=NEW (two tensor names); got {value!r}")
        mapping[old] = new
    return mapping


@click.command("import")
@click.argument("weights", metavar="WEIGHTS", type=click.Path(path_type=Path))
@click.option(
    "--arch",
    required=True,
    type=click.Choice(ARCHS),
    help="cell: the notes' RNN (embed, i2h on [x, h], h2o) or the tutorial's classic cell "
    "(i2h on x, h2h on h, h2o); stacked: nn.RNN (the notes' my_RNN, the tutorial's CharRNN; "
    "any module name, head fc or h2o); gru, lstm: the same around nn.GRU or nn.LSTM (3H or "
    "4H gate rows).",
)
@click.option(
    "--input",
    "input_kind",
    type=click.Choice(INPUT_KINDS),
    default=None,
    help="What a step reads: tokens (an embedding in the file, any size E), onehot (no "
    "embedding: one-hot vectors of the vocabulary, the tutorial's letters) or features "
    "(no embedding: F float values) [default: tokens when the file has an embedding, else "
    "onehot with --vocab, features without].",
)
@click.option(
    "--vocab",
    "vocab_path",
    default=None,
    type=click.Path(path_type=Path),
    help='VOCAB.json: {"tokens": [...], "unk_id": N}, or a plain list (token id = index, '
    "no unknown token: characters outside it are an error when streaming). Required for "
    "tokens and onehot; none for features.",
)
@click.option(
    "--unknown",
    default=None,
    metavar="CHAR",
    help="The vocabulary's symbol that characters outside it map to, for a plain-list "
    "vocabulary: the tutorial's '_' (letterToIndex), or its last letter for the older "
    "tutorial's index -1 [default: as the vocabulary says; a plain list has none].",
)
@click.option(
    "--strip-accents",
    is_flag=True,
    help="Text contract: take accents off before looking characters up (Unicode NFD, "
    "combining marks removed: the tutorial's unicodeToAscii), in every runtime.",
)
@click.option(
    "--lowercase",
    is_flag=True,
    help="Text contract: lower-case text before looking characters up, in every runtime.",
)
@click.option(
    "--normalization",
    default=None,
    type=click.Path(path_type=Path),
    help='features: the per-feature normalization the model was trained with, {"mean": '
    '[F numbers], "scale": [F numbers]} (.json) or arrays mean, scale (.npz): stored in '
    "the file, so device code feeds raw frames [default: none].",
)
@click.option(
    "--labels",
    "labels_path",
    required=True,
    type=click.Path(path_type=Path),
    help="LABELS.json: a list of class names (class id = index), or a .txt, one per line.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="RUN_DIR to write; an earlier run there is replaced only when the new one is whole.",
)
@click.option(
    "--nonlinearity",
    type=click.Choice(ALL_NONLINEARITIES),
    default=None,
    help="The recurrence's activation [default: identity for cell, tanh for the others; "
    "gru and lstm take tanh only]. "
    "identity is exactly the notes' cell (hidden = i2h(combined), no nonlinearity); tanh "
    "is nn.RNN's default (the notes' my_RNN); relu for nn.RNN(nonlinearity='relu').",
)
@click.option(
    "--prefix",
    default=None,
    help="Strip this prefix from every tensor name [default: 'module.' (DataParallel) "
    "and 'model.' (a wrapper) where every name has them].",
)
@click.option(
    "--map",
    "mapping",
    multiple=True,
    callback=_mapping,
    metavar="OLD=NEW",
    help="Rename a tensor (or every name starting with OLD, when OLD ends with '.'); "
    "repeatable. E.g. --map emb.=embedding.",
)
@module_options
def import_command(
    weights,
    arch,
    input_kind,
    vocab_path,
    unknown,
    strip_accents,
    lowercase,
    normalization,
    labels_path,
    out,
    nonlinearity,
    prefix,
    mapping,
    **module,
):
    """Write a RUN_DIR for a model trained elsewhere, from its saved state_dict.

    WEIGHTS is a file of torch.save(model.state_dict(), path), read only with
    torch.load(weights_only=True) (a file that needs more, such as a pickled module,
    is refused naming the blocked global), or a .safetensors file. The stages are
    recognized from the names and shapes (docs/commands.md lists the forms): V, E or F,
    H, L and C come from the tensor shapes (H from the recurrent weight); V must match
    the vocabulary and C the labels. The RUN_DIR records the source file and its
    sha256; convert, verify (with --data for real texts), bench, predict and evaluate
    accept it. Exit 2 for any mismatch, naming the tensor and the shapes. With --module
    (your class and its --weights; this runs your code), the written RUN_DIR is checked
    against your module on generated rows: exit 1 when it does not compute what your
    module computes (a tensor mapped wrongly, the wrong --nonlinearity).
    """
    from rnn_export.importing import import_weights

    spec = module_spec(**module)

    ckpt = import_weights(
        weights,
        arch,
        vocab_path,
        labels_path,
        out,
        nonlinearity=nonlinearity,
        prefix=prefix,
        mapping=mapping,
        input_kind=input_kind,
        normalization=normalization,
        unknown=unknown,
        text=("strip_marks" if strip_accents else "keep", lowercase),
    )
    info = ckpt.imported
    click.echo(f"wrote {ckpt.run_dir}")
    click.echo(f"  model    {ckpt.config.describe()}")
    if ckpt.vocab is not None:
        from rnn_runtime.text import describe

        vocab = ckpt.vocab
        unk = "none" if vocab.unk_id is None else f"id {vocab.unk_id}"
        click.echo(f"  vocab    {len(vocab)} tokens, unknown token {unk}")
        click.echo(f"  text     {describe(vocab.text_contract)}")
    for note in info.get("recognized", []):
        click.echo(f"  form     {note}")
    click.echo(f"  source   {info['source']} ({info['format']}, sha256 {info['sha256']})")
    if info["prefix"] or info["renamed"]:
        renamed = ", ".join(f"{old} -> {new}" for new, old in info["renamed"].items())
        click.echo(f"  names    prefix {info['prefix']!r} stripped; renamed: {renamed or 'none'}")
    click.echo(f"  sha256   {ckpt.sha256}")
    if spec is not None:
        _check_against_module(ckpt, spec)


def _check_against_module(ckpt, spec) -> None:
    """Print how far the RUN_DIR is from the user's module; exit 1 past the allowance."""
    import sys

    from rnn_export.parity.module import GENERATED_ROWS, check_run_dir

    check = check_run_dir(ckpt, spec)
    verdict = "PASS" if check.passed else "FAIL"
    margin = f"{check.ratio:.3g}x" if check.ratio > 1 else f"{check.ratio:.3g} of"
    click.echo(
        f"  module   {verdict}: on {GENERATED_ROWS} generated rows the RUN_DIR's log_probs "
        f"differ from {spec.source}'s by {check.error:.2e}, {margin} the float32 allowance "
        f"{check.allowance:.2e}"
    )
    if not check.passed:
        click.echo(
            "error: the RUN_DIR does not compute what your module computes: check the "
            "tensor names (--map), their orientation, --nonlinearity and, for frames, "
            "--normalization",
            err=True,
        )
        sys.exit(1)
