"""`python -m pipeline.inspect`: schema, rows, history histogram and label balance."""
import io
import re

import pyarrow.parquet as pq
import pytest

from din_common.errors import InputError
from pipeline.inspect import describe, main
from pipeline.tasks.base import SAMPLE_PARQUET_OPTIONS, write_parquet_atomic
from pipeline.tfrecord_io import write_samples_tfrecord
from tests.helpers.samples import build, one_user_samples

DAY = 86400


@pytest.fixture()
def sequences_dir(tmp_path):
    for split, table in build(maxlen=2).items():
        (tmp_path / "sequences" / split).mkdir(parents=True)
        write_parquet_atomic(table, tmp_path / "sequences" / split / "part-00000.parquet", **SAMPLE_PARQUET_OPTIONS)
    return tmp_path / "sequences"


def test_sequence_directory_shows_histogram_and_label_balance(sequences_dir):
    out = io.StringIO()
    describe(sequences_dir, rows=2, out=out)
    text = out.getvalue()
    assert "3 file(s), 16 rows" in text
    # pyarrow 12 (the py3.7 stack) names the list field "item", later versions "element"
    assert re.search(r"hist_item: list<(item|element): int32>", text)
    # maxlen 2: histories of length 1 are the 3 first events, the rest have length 2.
    assert "       1: 6" in text and "       2: 10" in text
    for split, total in (("train", 4), ("val", 6), ("test", 6)):
        assert f"  {split}: {total} samples, {total // 2} positive (50.0%)" in text


def test_time_gaps_to_the_target_are_summarised_in_days(tmp_path):
    # Reviews on days 0, 1, 3, 10: most recent entries 1 (train), 2 (val), 7 (test) days before the target,
    # all entries 1 | 3 2 | 10 9 7 days; each twice (positive and negative).
    for split, table in one_user_samples([0, DAY, 3 * DAY, 10 * DAY], maxlen=5).items():
        (tmp_path / split).mkdir()
        write_parquet_atomic(table, tmp_path / split / "part-00000.parquet")
    out = io.StringIO()
    describe(tmp_path, out=out)
    assert ("history time gap to the target, days (p10/p50/p90):\n"
            "  most recent entry: 1.0 / 2.0 / 7.0\n"
            "  all entries: 1.1 / 5.0 / 9.9\n") in out.getvalue()


def test_tfrecord_shards_read_back_like_parquet(sequences_dir, tmp_path):
    table = pq.read_table(sequences_dir / "val" / "part-00000.parquet")
    write_samples_tfrecord(tmp_path / "part-00000.tfrecord", table, prebatch=4)
    out = io.StringIO()
    describe(tmp_path / "part-00000.tfrecord", out=out)
    assert "1 file(s), 6 rows" in out.getvalue()
    assert re.search(r"hist_gap: list<(item|element): int32>", out.getvalue())


def test_missing_path_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(InputError, match="no such file or directory"):
        describe(tmp_path / "nope")
    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("ERROR: ")


def test_first_rows_say_which_split_and_file_they_come_from(sequences_dir):
    out = io.StringIO()
    describe(sequences_dir, rows=2, out=out)
    assert f"first 2 rows (train split, from {sequences_dir / 'train' / 'part-00000.parquet'}):" in out.getvalue()
