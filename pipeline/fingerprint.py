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
from pathlib import Path

_CHUNK = 1 << 22
_file_digest_cache: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """Content digest of a file, cached per (path, size, mtime) within the process."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _file_digest_cache:
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
        _file_digest_cache[key] = digest.hexdigest()
    return _file_digest_cache[key]


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
