"""`roo-bench`: the command-line entry point.

Subcommands live in harness/commands/<area>.py (discovered, see that package's docstring).
User mistakes (workloads.errors.UserError) become one line on stderr and exit code 2.

Building the parser imports every command module but none of the heavy libraries (torch, numpy,
pyarrow, scipy, matplotlib): the handlers import those, so `roo-bench --help` starts at once."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import harness.commands as _commands
from workloads.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: one line, exit 2
        self.exit(2, f"roo-bench: error: {message} (see `{self.prog} --help`)\n")


def command_modules() -> tuple[list, list[str]]:
    """(imported command modules, problems). A module that fails to import is reported, not fatal:
    the other commands keep working (tests/test_cli.py asserts that there are no problems)."""
    modules, problems = [], []
    for mod in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):  # shared helpers of the commands, not a command
            continue
        try:
            modules.append(importlib.import_module(f"harness.commands.{mod.name}"))
        except Exception as e:  # noqa: BLE001 - any import failure of one command
            problems.append(f"command module harness.commands.{mod.name} failed to import: {e!r}")
    return modules, problems


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="roo-bench",
        description="Measure what Request-Only Optimization (ROO) saves: storage, FLOPs, bytes, "
        "communication, step time and energy, impression-level vs request-level.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules, problems = command_modules()
    for p in problems:
        print(f"roo-bench: warning: {p}", file=sys.stderr)
    for module in modules:
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"roo-bench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roo-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
