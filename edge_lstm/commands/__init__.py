"""The `edge-lstm` subcommands, one module each."""
