"""The `rnn-export` command line: thin wrappers, one library call per command.

Heavy imports (torch, onnx) happen inside commands so that --help is instant and
`inspect` and `stream` run where torch and onnx are not installed.
"""

from __future__ import annotations

import click

from rnn_export import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnn-export")
def main() -> None:
    """Train the notes' RNNs, export them to ONNX with explicit hidden state,
    verify parity with PyTorch, and stream them one step at a time."""


if __name__ == "__main__":
    main()
