"""`python -m edge_lstm ...` is the `edge-lstm` command."""

if __name__ == "__main__":
    from edge_lstm.cli import main

    main()
