"""Fingerprints: what made an output, as a short hex digest.

Stage-1 outputs live at fixed paths, so "the file exists" is not "the file is
current". Each stage stores the fingerprint of the inputs and parameters that
shaped it; a task is complete only when the stored fingerprint equals the one
computed from today's inputs and config. Fingerprints chain (raw -> remap ->
sequences -> tfrecords), so each can be computed before anything upstream runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

_CHUNK = 1 << 20
_file_digest_cache: dict[tuple[str, int, int], str] = {}
_prefetching: dict[str, threading.Thread] = {}  # absolute path -> the thread digesting it ahead of time


def file_digest(path: str | os.PathLike) -> str:
    """Content digest of a file, cached per (path, size, mtime) within the process."""
    ahead = _prefetching.pop(os.path.abspath(path), None)
    if ahead is not None:
        ahead.join()  # its result lands in the cache: the file is read once
    return _cached_digest(path)


def _cached_digest(path: str | os.PathLike) -> str:
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _file_digest_cache:
        digest = hashlib.blake2b(digest_size=16)
        # One buffer read into again and again: a new bytes object per chunk leaves the heap of a
        # prefetching thread holding megabytes, which every process the command forks then carries.
        buffer = memoryview(bytearray(_CHUNK))
        with open(path, "rb", buffering=0) as handle:
            for size in iter(lambda: handle.readinto(buffer), 0):
                digest.update(buffer[:size])
        _file_digest_cache[key] = digest.hexdigest()
    return _file_digest_cache[key]


def prefetch_digests(paths: list[str | os.PathLike]) -> None:
    """Start digesting the existing `paths` in a background thread, for `file_digest` to find cached.

    hashlib releases the GIL while it hashes, so this runs on another core while the caller goes on
    (the `luigi` command imports the tasks meanwhile: pipeline.cli.prefetch). A file that changes in
    between is simply digested again: the cache key holds its size and mtime.
    """
    existing = [os.path.abspath(path) for path in paths if os.path.isfile(path)]
    existing = [path for path in existing if path not in _prefetching]
    if not existing:
        return

    def digest_all() -> None:
        for path in existing:
            try:
                _cached_digest(path)
            except OSError:  # gone or unreadable: the caller's own file_digest reports it
                pass

    thread = threading.Thread(target=digest_all, name="prefetch_digests", daemon=True)
    for path in existing:
        _prefetching[path] = thread
    thread.start()


def combine(**parts) -> str:
    """Digest of named parts (strings, numbers, nested dicts/lists); key order does not matter."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def read_manifest_fingerprint(path: str | os.PathLike) -> str | None:
    """The `fingerprint` stored in a JSON manifest, or None if absent or unreadable."""
    try:
        return json.loads(Path(path).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
