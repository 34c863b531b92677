"""The `patchcore-edge` command: one entry point that wires the packages' subcommands."""
