"""What every pipeline task builds on: the per-task lock, atomic parquet I/O and the task bases.

- `LockedTask`: `run()` is `build()` under a per-task lock of the data dir, then one console line;
  another task may take that lock to write this task's outputs for it (`locked()`).
- `ManifestTask`: complete only when its manifest carries the expected fingerprint; the manifest
  is deleted before and written after the data files, so a killed run never leaves one that
  vouches for half-replaced files.
Stage 1 (pipeline.tasks.stage1) and stage 2 (pipeline.tasks.stage2) subclass these.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Iterable

import luigi
import pyarrow as pa
import pyarrow.parquet as pq

from din_common.atomic import atomic_path, remove_file, remove_stale_temporaries, write_json_atomic
from din_common.errors import InputError
from pipeline import config
from pipeline.compat import PARQUET_READ_OPTIONS, PARQUET_WRITE_OPTIONS
from pipeline.console import progress_line, task_line
from pipeline.fingerprint import read_manifest_fingerprint


# Sample tables are large, written once and read once, so they are written for speed:
# plain pages, no compression; compressing them costs more stage-1 CPU than it saves
# (docs/performance.md, "Stage-1 parquet options").
SAMPLE_PARQUET_OPTIONS = {"compression": "none", "use_dictionary": False}


_CANNOT_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR)


@contextlib.contextmanager
def task_lock(data_dir: Path, task_id: str):
    """An exclusive lock per task and data dir; the OS releases it if the process dies.

    The holder deletes its lock file (and `.locks/` once empty) before releasing it, so
    nothing is left behind. A waiter may then hold the lock of a deleted file: it checks
    that the file it locked is still the one at the path, and otherwise tries again.
    """
    lock_dir = data_dir / ".locks"
    path = lock_dir / f"{task_id}.lock"
    while True:
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a")
        except (FileExistsError, FileNotFoundError):  # another process removed the empty lock dir meanwhile
            continue
        except OSError as error:
            if error.errno not in _CANNOT_WRITE:
                raise
            # The first write of every task: a data dir that cannot be written fails here, before any output.
            raise InputError(f"cannot write in the data directory {data_dir} ({error.strerror}: {error.filename}): "
                             "expected a directory this user may write ([paths] data_dir, --paths-data-dir)"
                             ) from None
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        path.unlink()
        with contextlib.suppress(OSError):  # not empty: another task holds or waits for its lock
            lock_dir.rmdir()
        handle.close()


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    with reading_parquet(path) as parquet:
        return parquet.read(columns=columns)


@contextlib.contextmanager
def reading_parquet(path: Path):
    """A stage-1 parquet file opened with its page checksums verified; damage is one InputError naming it."""
    try:
        # ParquetFile, not pq.read_table: the latter imports pyarrow.dataset, slow to start in every worker process.
        yield pq.ParquetFile(path, **PARQUET_READ_OPTIONS)
    except (OSError, pa.ArrowException) as error:
        if isinstance(error, FileNotFoundError):
            raise
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{path} is damaged ({detail}): expected the parquet file stage 1 wrote; delete it and rerun "
                         "the same command to rebuild it") from None


# Rows per parquet row group, stated rather than left to pyarrow, whose default differs between versions:
# a table streamed in pieces (write_parquet_stream_atomic) then gets the row groups of one whole write.
ROW_GROUP_ROWS = 1 << 20


@contextlib.contextmanager
def _parquet_writer_atomic(path: Path, schema: pa.Schema, options: dict):
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, **PARQUET_WRITE_OPTIONS, **(options or {"compression": "zstd"})) as writer:
            yield writer


def write_parquet_atomic(table: pa.Table, path: Path, **options) -> None:
    with _parquet_writer_atomic(path, table.schema, options) as writer:
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)


def write_parquet_stream_atomic(tables: Iterable[pa.Table], path: Path, schema: pa.Schema, **options) -> int:
    """Write the concatenation of `tables` as `write_parquet_atomic` writes it whole, byte for byte,
    holding at most one row group plus one piece; returns the row count."""
    pending, pending_rows, written = [], 0, 0
    with _parquet_writer_atomic(path, schema, options) as writer:
        for table in tables:
            pending.append(table)
            pending_rows += table.num_rows
            while pending_rows >= ROW_GROUP_ROWS:
                # Contiguous columns, as in one whole table, so page boundaries fall alike.
                rows = pa.concat_tables(pending).combine_chunks()
                writer.write_table(rows.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                pending = [rows.slice(ROW_GROUP_ROWS)]
                pending_rows = pending[0].num_rows
                written += min(rows.num_rows, ROW_GROUP_ROWS)
        if pending_rows or not written:
            writer.write_table(pa.concat_tables(pending or [schema.empty_table()]).combine_chunks(),
                               row_group_size=ROW_GROUP_ROWS)
            written += pending_rows
    return written


class LockedTask(luigi.Task):
    """`run()` is `build()` under a per-task lock of the data dir.

    Another pipeline process on the same data dir may be building this very task:
    take turns, and skip the work if it finished while we waited.
    """

    def run(self):
        with self.locked():
            if not self.complete():
                self.started = time.perf_counter()
                self.build()
                task_line(self.display_name(), self.wrote(), time.perf_counter() - self.started)
            else:
                self.found_complete()

    def locked(self):
        """This task's lock (`task_lock`): held by whoever writes its outputs."""
        return task_lock(Path(config.paths().data_dir), self.lock_name())

    def build(self) -> None:
        raise NotImplementedError

    def found_complete(self) -> None:
        """Called when run() finds the outputs already written (by another writer, while it waited)."""

    def lock_name(self) -> str:
        """Processes building the same task under the same lock name take turns."""
        return self.task_id

    def display_name(self) -> str:
        return self.get_task_family()

    def wrote(self) -> str:
        """What build() wrote, for the line the task prints when it is done."""
        raise NotImplementedError

    def report(self, message: str, percent: int) -> None:
        """Luigi's status message and progress percentage of this task."""
        # Luigi's worker installs these callbacks; they are None when run() is called directly.
        if self.set_status_message:
            self.set_status_message(message)
            self.set_progress_percentage(percent)


class ManifestTask(LockedTask):
    """A task whose output is current only when its manifest carries the expected fingerprint."""

    def manifest_path(self) -> Path:
        raise NotImplementedError

    def expected_fingerprint(self) -> str | None:
        raise NotImplementedError

    def data_files(self) -> list[Path]:
        return []

    def output(self):
        return luigi.LocalTarget(str(self.manifest_path()))

    def complete(self) -> bool:
        expected = self.expected_fingerprint()
        return (expected is not None
                and read_manifest_fingerprint(self.manifest_path()) == expected
                and all(path.is_file() for path in self.data_files()))

    def invalidate(self) -> None:
        """Before writing: drop the manifest and whatever temporaries a killed writer left."""
        remove_file(self.manifest_path())
        remove_stale_temporaries(self.output_dir())

    def output_dir(self) -> Path:
        """The directory holding everything this task writes."""
        return self.manifest_path().parent

    def write_manifest(self, **content) -> None:
        write_json_atomic(self.manifest_path(), {"fingerprint": self.expected_fingerprint(), **content})

    def read_manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path().read_text())
        except (OSError, ValueError):
            return {}

    # A task that has run this long is a long one: say what it does next.
    PROGRESS_AFTER_SECONDS = 2.0

    def report(self, message: str, percent: int) -> None:
        """As LockedTask.report, and a console line once the task has run for a while."""
        super().report(message, percent)
        started = getattr(self, "started", None)
        if started is not None and time.perf_counter() - started >= self.PROGRESS_AFTER_SECONDS:
            progress_line(self.display_name(), message)
