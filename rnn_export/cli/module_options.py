"""The --module options of `verify` and `import`: the user's own class as a reference."""

from __future__ import annotations

from pathlib import Path

import click


def module_options(command):
    """Add --module, --module-args, --weights and the calling convention to a command; it
    receives them as keyword arguments for module_spec."""
    options = [
        click.option(
            "--module",
            "module_source",
            metavar="FILE.py:CLASS",
            default=None,
            help="Your own nn.Module class: it is loaded with --weights and run in float64 "
            "beside the model on generated rows (and on --data), and the model is held to "
            "its float32 allowance against it. This imports FILE.py and runs your code.",
        ),
        click.option(
            "--module-args",
            metavar="JSON",
            default=None,
            help="The class's constructor arguments as a JSON object, e.g. "
            '\'{"input_size": 57, "hidden_size": 128, "output_size": 18}\' [default: none].',
        ),
        click.option(
            "--weights",
            "module_weights",
            type=click.Path(path_type=Path),
            default=None,
            help="With --module: your state_dict file (torch.save(model.state_dict(), path) "
            "or .safetensors), loaded into your class with its own tensor names.",
        ),
        click.option(
            "--module-call",
            type=click.Choice(["sequence", "step"]),
            default="sequence",
            show_default=True,
            help="How your module is called: sequence, forward(x) -> out over a whole "
            "sequence (the tutorial's CharRNN, nn.RNN-style); step, forward(x_t, h) -> "
            "(out, h) one step per call (the tutorial's classic RNN; h from its "
            "initHidden() when it has one).",
        ),
        click.option(
            "--module-batch-first/--module-time-first",
            default=False,
            show_default=True,
            help="Whether a sequence call takes (B, T, ...) or (T, B, ...).",
        ),
        click.option(
            "--module-output",
            type=click.Choice(["log-probs", "probs", "logits"]),
            default="log-probs",
            show_default=True,
            help="What your module returns.",
        ),
        click.option(
            "--module-input",
            type=click.Choice(["tokens", "onehot", "features"]),
            default=None,
            help="What your module takes per step: token ids, one-hot float vectors or "
            "float frames [default: the model's input kind].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def module_spec(
    module_source,
    module_args,
    module_weights,
    module_call,
    module_batch_first,
    module_output,
    module_input,
):
    """The ModuleSpec of the --module options, or None without --module."""
    if module_source is None:
        if module_args is not None or module_weights is not None:
            raise click.UsageError("--module-args and --weights go with --module FILE.py:CLASS")
        return None
    if module_weights is None:
        raise click.UsageError("--module needs --weights: your state_dict file")
    from rnn_export.parity.module import ModuleSpec, parse_kwargs

    return ModuleSpec(
        module_source,
        module_weights,
        parse_kwargs(module_args),
        call=module_call,
        batch_first=module_batch_first,
        output=module_output,
        encoding=module_input,
    )
