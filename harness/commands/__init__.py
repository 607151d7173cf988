"""CLI subcommands, one module per area. Each module defines

    def register(subparsers) -> None   # adds its subcommand(s); each parser sets `func=handler`

and a handler `handler(args) -> int` (exit code). harness.cli discovers the modules here, so adding
a command never edits a shared file."""
