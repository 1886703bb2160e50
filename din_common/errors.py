"""The exception types printed as one line instead of a traceback.

`ReportedError` is the base: its message names what went wrong and what to do, and the
Luigi tasks and CLIs print that message alone (no traceback soup) and exit non-zero.
Two kinds derive from it:
- `InputError`: a user mistake (bad input file, column, row, config or parameter); the
  message names the file/setting/row and what was expected.
- `RunFailed`: the run itself stopped for a reason that is not the user's input (the
  loss diverged, an NPU rank crashed); the message says what was kept and what to try.
Any other exception is a bug and keeps its traceback.
`Interrupted` is Ctrl-C (SIGINT) during a run: a `KeyboardInterrupt` whose message says what was kept
and how to go on; the `luigi` command prints it alone and exits 130 (pipeline/cli/errors.py).
"""


class _OneLine:
    """An exception whose message is the whole report: what went wrong and what to do."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ReportedError(_OneLine, Exception):
    """A failure reported as its one-line message, never as a traceback."""


class InputError(ReportedError):
    """A problem with what the user gave us: a file, a column, a row or a parameter."""


class RunFailed(ReportedError):
    """A run that stopped on its own (diverged loss, a crashed NPU rank), not because of the user's input."""


class Interrupted(_OneLine, KeyboardInterrupt):
    """Ctrl-C during a run, reported as its one line ("interrupted after epoch 2; rerun ...") and exit 130."""
