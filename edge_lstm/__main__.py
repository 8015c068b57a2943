"""`python -m edge_lstm ...` is the `edge-lstm` command."""

from edge_lstm.cli import main

main()
