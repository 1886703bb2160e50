"""Atomic output: a failed or disk-full write leaves neither a final file nor a temporary."""
import errno

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from din_common.atomic import atomic_path, remove_stale_temporaries, temporary_path
from din_common.errors import InputError


def test_success_renames_into_place(tmp_path):
    with atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("done")
    assert (tmp_path / "out.txt").read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_disk_full_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(InputError, match=r"no space left on the device while writing .*users\.parquet"):
        with atomic_path(tmp_path / "users.parquet") as tmp:
            tmp.write_bytes(b"partial")
            pq.write_table(pa.table({"a": [1]}), tmp)
    assert list(tmp_path.iterdir()) == []


def test_an_old_output_survives_a_failed_rewrite(tmp_path):
    final = tmp_path / "stats.json"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert final.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    mine = temporary_path(tmp_path / "live.parquet")  # this process is alive
    mine.write_text("in progress")
    dead = tmp_path / "gone.parquet.tmp-999999999-abcdef12"
    dead.write_text("left by a killed run")
    assert remove_stale_temporaries(tmp_path) == 1
    assert mine.exists() and not dead.exists()
