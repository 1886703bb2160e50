"""A full disk (or an exhausted quota) as one `ERROR:` line, whoever's write failed.

Python's writes fail with `OSError(ENOSPC)`; TensorFlow's own writers (checkpoints, SavedModels,
TensorBoard events) with an `OpError` (`ResourceExhaustedError` on Linux) whose message carries the
C library's text for the errno. `reported_disk_full` turns either into an `InputError` that names
what was being written, the directory, the space it needs there and the space that is free, after
its `cleanup` has removed whatever the failed write left, so nothing half-written remains.
numpy-free and TensorFlow-free (din_common's rule): TensorFlow's errors are recognised by their text.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, Optional

from din_common.errors import InputError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = tuple(os.strerror(number) for number in DISK_FULL_ERRNOS)


def is_disk_full(error: BaseException) -> bool:
    """`error` says the device or the quota is full: an OSError with that errno, or a TensorFlow OpError
    (it has an `error_code`) whose message holds the errno's text."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    return hasattr(error, "error_code") and any(text in str(error) for text in _DISK_FULL_TEXTS)


def readable_size(size: int) -> str:
    """`1.3 MB`, `512 kB`, `2.0 GB` (decimal units, as `df -H` prints them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{max(1, round(size / 1e3))} kB"


def free_space(directory: str | os.PathLike) -> Optional[int]:
    """Bytes free for this user on the file system holding `directory` (or its nearest existing parent)."""
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def disk_full_error(writing: str, directory: str | os.PathLike, needed: Optional[int] = None,
                    rerun: str = "rerun the same command") -> InputError:
    """The one line: what was being written where, the space it needs (when known), the space free."""
    free = free_space(directory)
    space = []
    if needed is not None:
        space.append(f"it needs about {readable_size(needed)} there")
    if free is not None:
        space.append(f"{readable_size(free)} free")
    return InputError(f"no space left on the device while writing {writing} in {directory}"
                      f"{': ' + ', '.join(space) if space else ''}; nothing was left half-written; "
                      f"free some space and {rerun}")


@contextlib.contextmanager
def reported_disk_full(writing: str, directory: str | os.PathLike, needed: Optional[int] = None,
                       cleanup: Optional[Callable[[], None]] = None,
                       rerun: str = "rerun the same command") -> Iterator[None]:
    """Run the block; a full disk inside it runs `cleanup`, then raises `disk_full_error` (no traceback)."""
    try:
        yield
    except Exception as error:
        if not is_disk_full(error):
            raise
        if cleanup is not None:
            cleanup()
        raise disk_full_error(writing, directory, needed, rerun) from None
