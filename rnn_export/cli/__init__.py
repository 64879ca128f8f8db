"""The `rnn-export` command line: thin wrappers, one library call per command.

Heavy imports (torch, onnx) happen inside commands so that --help is instant and
`inspect` and `stream` run where torch and onnx are not installed. One module per
command; this one holds the group.
"""

from __future__ import annotations

import click

from rnn_export import __version__
from rnn_export.cli.bench import bench_command
from rnn_export.cli.convert import convert_command
from rnn_export.cli.demo import demo_command
from rnn_export.cli.inspect import inspect_command
from rnn_export.cli.stream import stream_command
from rnn_export.cli.train import train_command
from rnn_export.cli.verify import verify_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnn-export")
def main() -> None:
    """Train the notes' RNNs, export them to ONNX with explicit hidden state,
    verify parity with PyTorch, and stream them one step at a time."""


for _command in (
    train_command,
    convert_command,
    inspect_command,
    verify_command,
    stream_command,
    bench_command,
    demo_command,
):
    main.add_command(_command)
