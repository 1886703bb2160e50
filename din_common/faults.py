"""Fault injection for the kill-anywhere tests.

`kill_point(name)` does nothing unless the environment variable
DIN_PIPELINE_KILL_AT equals `name`; then the process SIGKILLs itself on the
spot, exactly like a user's `kill -9` or an OOM kill at that line. Names are
`atomic:<file name>` (temporary file written, not yet renamed) and
`<Task>:<step>` points inside the tasks.
"""
from __future__ import annotations

import os
import signal

KILL_AT_VARIABLE = "DIN_PIPELINE_KILL_AT"


def kill_point(name: str) -> None:
    if os.environ.get(KILL_AT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
