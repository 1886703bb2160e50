"""The integrity record of the raw pickles the pipeline wrote itself, and its check.

For a generated source (synthetic data, converted Amazon JSON or remap.pkl) the
pipeline writes raw/reviews.pkl and raw/meta.pkl and records each file's size and
content digest in raw/manifest.json. Before the pickles count as current (and so
before anything reads them), they are checked against that record: a damaged or
hand-edited pickle stops the run with one error saying how to regenerate it,
instead of feeding the next stages, or passing silently because they are up to date.
Digests are cached per (path, size, mtime) within a process (pipeline.fingerprint).
"""
from __future__ import annotations

from pathlib import Path

from din_common.errors import InputError
from pipeline.fingerprint import file_digest


def file_records(files: dict[str, Path]) -> dict[str, dict]:
    """What to store in the manifest: each file's name, size in bytes and content digest."""
    return {name: {"file": path.name, "bytes": path.stat().st_size, "digest": file_digest(path)}
            for name, path in files.items()}


def check_files(files: dict[str, Path], records: dict | None, manifest: Path) -> None:
    """Raise an InputError naming the first file whose size or content differs from its record.

    `records` is None for manifests written before the pipeline recorded files: nothing to check.
    """
    if records is None:
        return
    for name, path in files.items():
        expected = records.get(name)
        if expected is None:
            continue
        size = path.stat().st_size
        if size != expected["bytes"]:
            difference = f"it has {size:,} bytes, but the pipeline wrote {expected['bytes']:,}"
        elif file_digest(path) != expected["digest"]:
            difference = "its content differs from what the pipeline wrote (same size)"
        else:
            continue
        regenerate = " ".join(str(p) for p in (manifest, *files.values()))
        raise InputError(f"{path} does not match {manifest}: {difference}; it was changed or damaged after it was "
                         f"written. To regenerate the raw data: rm {regenerate} and rerun the same command")
