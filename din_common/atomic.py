"""Atomic file output: write to a temporary sibling, then rename into place.

A killed or failed writer leaves at most a `*.tmp-*` file, never a half-written
file at the final path, so Luigi never takes a partial output as complete.
Temporary names start with the final name, which keeps them in the same
directory (rename is atomic only within one file system).
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Iterator

from din_common.disk_full import reported_disk_full
from din_common.faults import kill_point

TMP_MARK = ".tmp-"


def temporary_path(final_path: str | os.PathLike) -> Path:
    final_path = Path(final_path)
    return final_path.with_name(f"{final_path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync and rename it to `final_path`.

    A full disk is one `InputError` naming the file and, when the caller knows it, its `size`."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final_path)
    try:
        with reported_disk_full(final_path.name, final_path.parent, size):
            yield tmp
            kill_point(f"atomic:{final_path.name}")
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final_path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_file(path: str | os.PathLike) -> None:
    """Delete `path` if it exists (what `Path.unlink(missing_ok=True)` does from Python 3.8 on)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_bytes_atomic(final_path: str | os.PathLike, content: bytes) -> None:
    with atomic_path(final_path, len(content)) as tmp:
        tmp.write_bytes(content)


def write_json_atomic(final_path: str | os.PathLike, payload: dict) -> None:
    write_bytes_atomic(final_path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def _writer_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Delete `*.tmp-<pid>-*` files whose writer process is gone; return how many.

    Files of a live writer (another pipeline run on the same data dir) are kept,
    so that run can still rename them into place.
    """
    removed = 0
    directory = Path(directory)
    if not directory.exists():
        return 0
    for path in directory.rglob(f"*{TMP_MARK}*"):
        pid_text = path.name.rsplit(TMP_MARK, 1)[1].split("-", 1)[0]
        if path.is_file() and pid_text.isdigit() and not _writer_is_alive(int(pid_text)):
            remove_file(path)
            removed += 1
    return removed
