"""The one exception type for user mistakes (bad input files, bad config).

Stage-1 and stage-2 code raise `InputError` with a message that names the file,
the column or row, and what was expected. The Luigi tasks and CLIs print that
message alone (no traceback soup) and exit non-zero; any other exception is a
bug and keeps its traceback.
"""


class InputError(Exception):
    """A problem with what the user gave us: a file, a column, a row or a parameter."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
