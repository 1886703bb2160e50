"""Text that came from an untrusted file or process, made safe to print as one line.

Owns `printable` (everything but printable ASCII escaped, as `ascii()` does: terminal escapes
and bidi marks cannot reach the user's terminal) and `one_line` (that, on one bounded line).
Imports nothing heavy: the sandbox's reply reader uses it without pandas.
"""
from __future__ import annotations

import re

MAX_MESSAGE_CHARS = 1000
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """`text` with everything but printable ASCII escaped (terminal escapes, bidi marks), as ascii() does."""
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return _UNPRINTABLE.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` printable, its whitespace runs one space, at most `limit` characters."""
    text = printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."
