"""`open_pickle`: opening an untrusted pickle file, or one InputError naming it.

Its own module, importing nothing heavy, so that the sandbox's parent (pipeline.untrusted.sandbox)
opens the files it passes to the child without importing the unpickler, which imports pandas:
the parent starts the child first and imports pandas while the child starts (docs/performance.md,
"Stage 1"). The unpickler opens a path it is given with it too.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from din_common.errors import InputError


def open_pickle(path: Path, name: str, expected: str) -> tuple[BinaryIO, int]:
    """Open a pickle file for reading: (handle, size), or one InputError naming it."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{name} does not exist: expected {expected}") from None
    except IsADirectoryError:
        raise InputError(f"{name} is a directory: expected a file holding {expected}") from None
    except OSError as error:
        raise InputError(f"cannot read {name} ({error.strerror}): expected {expected}") from None
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        handle.close()
        raise InputError(f"{name} is empty: expected {expected}")
    return handle, size
