"""CLI subcommands, one module per area. Each module defines

    def register(subparsers) -> None   # adds its subcommand(s); each parser sets `func=handler`

and a handler `handler(args) -> int` (exit code). harness.cli discovers the modules here, so adding
a command never edits a shared file; modules named `_*` hold what several commands share.

A command module imports torch, numpy, pyarrow, scipy and matplotlib inside its handler, never at
import or in `register`: `roo-bench --help` builds every parser (tests/test_cli.py checks it)."""
