"""One exception type for every user-facing mistake in a spec, a file or a command line.

The CLI turns these into one line on stderr and exit code 2 (no traceback, nothing written)."""


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class SpecError(UserError, ValueError):
    """An invalid workload or model specification value."""
