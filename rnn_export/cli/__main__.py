"""`python -m rnn_export.cli`: the same as the `rnn-export` command."""

from rnn_export.cli import main

main()
