"""The `rnn-export` command line: thin wrappers, one library call per command.

Heavy imports (torch, onnx) happen inside commands so that --help is instant and
`inspect` and `stream` run where torch and onnx are not installed. One module per
command; this one holds the group and the one place where errors become exit codes:
    2    bad input: an rnn_export.errors.InputError, an error of the runtime
         (rnn_runtime: a bad model file, metadata, provider, stream or saved state),
         a ParityUsageError, or an OSError (a path that cannot be read or written);
         printed as one line "error: MESSAGE", never a traceback
    1    a parity failure (ParityError): its table on stderr
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import sys

import click

from rnn_export.cli.bench import bench_command
from rnn_export.cli.convert import convert_command
from rnn_export.cli.demo import demo_command
from rnn_export.cli.evaluate import evaluate_command
from rnn_export.cli.importing import import_command
from rnn_export.cli.inspect import inspect_command
from rnn_export.cli.predict import predict_command
from rnn_export.cli.quantize import quantize_command
from rnn_export.cli.score import score_command
from rnn_export.cli.stream import stream_command
from rnn_export.cli.train import train_command
from rnn_export.cli.triton import triton_command
from rnn_export.cli.verify import verify_command
from rnn_export.errors import InputError

# The runtime's and the parity suite's bad-input errors, by module and name: looked up
# only in modules already imported (an error of a module never imported cannot occur),
# so that mapping an error imports nothing.
_FOREIGN_INPUT_ERRORS = {
    "rnn_runtime": (
        "ModelFileError",
        "MetadataError",
        "ProviderError",
        "ThreadsError",
        "StreamError",
        "SnapshotError",
    ),
    "rnn_export.parity": ("ParityUsageError",),
}


def exit_code(error: BaseException) -> int | None:
    """The exit code for an error that a command let through; None: a bug (traceback)."""
    if isinstance(error, (InputError, OSError)):
        return 2
    for module_name, names in _FOREIGN_INPUT_ERRORS.items():
        module = sys.modules.get(module_name)
        types = tuple(getattr(module, name) for name in names if hasattr(module, name))
        if types and isinstance(error, types):
            return 2
    parity = sys.modules.get("rnn_export.parity")
    if parity is not None and isinstance(error, parity.ParityError):
        return 1
    return None


def error_line(error: BaseException) -> str:
    """The one line printed for an error: an OSError names its path (where it has one)."""
    if isinstance(error, OSError):
        from rnn_export.atomic import os_error_text

        return f"error: {os_error_text(error)}"
    return f"error: {error}"


class _Group(click.Group):
    """A click group whose commands' errors become exit codes here, and only here."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as e:
            code = exit_code(e)
            if code is None:
                raise
            report = getattr(e, "report", None) if code == 1 else None
            click.echo(error_line(e) if report is None else report.format_table(), err=True)
            ctx.exit(code)


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from rnn_export import __version__

    click.echo(f"rnn-export, version {__version__}")
    ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def main() -> None:
    """Train the notes' RNNs, export them to ONNX with explicit hidden state,
    verify parity with PyTorch, and stream them one step at a time."""


for _command in (
    train_command,
    import_command,
    convert_command,
    quantize_command,
    inspect_command,
    verify_command,
    stream_command,
    predict_command,
    score_command,
    evaluate_command,
    triton_command,
    bench_command,
    demo_command,
):
    main.add_command(_command)
