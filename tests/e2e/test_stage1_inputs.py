"""Stage 1 through the real `luigi` command on raw inputs a user (or someone else) may send: timestamps at
the ends of int64 are ordered and gapped exactly; blank ids, hostile JSON lines, a gzip bomb and an endless
line are one ERROR line each, with exit 30 and nothing half-written."""
from __future__ import annotations

import gzip
import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.compat import PARQUET_PAGE_CHECKSUMS
from tests.e2e.test_cli_output import TASK_FAILED, TINY, assert_one_error, luigi

LOW, HIGH = -2**63, 2**63 - 1
INT32_MAX = 2**31 - 1
# User A's three reviews out of time order, at both ends of int64; C gives the run train samples, D more items.
REVIEWS = pd.DataFrame({
    "reviewerID": ["A", "B", "A", "C", "B", "A", "C", "C", "C", "D", "D"],
    "asin": ["I1", "I2", "I2", "I1", "I3", "I3", "I2", "I3", "I4", "I5", "I6"],
    "unixReviewTime": np.array([HIGH, 20, LOW, 1, 10, 3, 2, 3, 4, 1, 2], dtype=np.int64),
})
ITEMS = [f"I{i}" for i in range(1, 9)]
META = pd.DataFrame({"asin": ITEMS, "categories": pd.Series([[["Shop", f"C{i % 3}"]] for i in range(8)],
                                                            dtype=object)})
SLOW = pytest.mark.slow  # more variants of the quick cases: CI runs them with the slow tests
ARGS = ("--preprocess-num-shards", "1", "--preprocess-maxlen", "5", "--preprocess-prebatch", "8")


def write_pickles(raw, reviews=REVIEWS, meta=META):
    raw.mkdir(parents=True)
    reviews.to_pickle(raw / "reviews.pkl")
    meta.to_pickle(raw / "meta.pkl")


def review_lines(reviews=REVIEWS):
    return [json.dumps({"reviewerID": r, "asin": a, "unixReviewTime": int(t)}) for r, a, t in zip(*reviews.values.T)]


META_LINES = [repr({"asin": a, "categories": c}) for a, c in zip(META["asin"], META["categories"])]


def write_json(raw, reviews_text, meta_text="\n".join(META_LINES) + "\n", gz=False):
    raw.mkdir(parents=True, exist_ok=True)
    suffix = ".json.gz" if gz else ".json"
    for name, text in (("reviews", reviews_text), ("meta", meta_text)):
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        (raw / f"{name}_Test{suffix}").write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("source", ["pickle", pytest.param("amazon-json", marks=SLOW)])
def test_times_at_the_ends_of_int64_are_ordered_and_their_gaps_exact(tmp_path, source):
    data_dir = tmp_path / "data"
    if source == "pickle":
        write_pickles(data_dir / "raw")
    else:
        write_json(data_dir / "raw", "\n".join(review_lines()) + "\n")
    result = luigi(data_dir, "Preprocess", "--raw-source", source, *ARGS)
    assert result.returncode == 0, result.stdout + result.stderr
    reviews = pq.read_table(data_dir / "remap" / "reviews.parquet").to_pydict()
    assert reviews["user_id"] == [1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4]
    assert reviews["ts"][:3] == [LOW, 3, HIGH]  # user A, in time order
    samples = {split: pq.read_table(data_dir / "sequences" / split / "part-00000.parquet").to_pylist()
               for split in ("val", "test")}
    user_a = {split: {(tuple(r["hist_item"]), tuple(r["hist_gap"])) for r in rows if r["user_id"] == 1}
              for split, rows in samples.items()}
    # A reviewed I2 at LOW, I3 at 3, I1 at HIGH: 3 - LOW and HIGH - LOW exceed int32 (and int64); HIGH - 3 too.
    assert user_a == {"val": {((2,), (INT32_MAX,))}, "test": {((2, 3), (INT32_MAX, INT32_MAX))}}


def blank_ids(column, value, row):
    reviews = REVIEWS.copy()
    reviews.loc[row, column] = value
    return reviews


@pytest.mark.parametrize("source, column, value", [
    ("pickle", "reviewerID", ""), ("amazon-json", "asin", ""),
    pytest.param("pickle", "asin", " \t", marks=SLOW), pytest.param("amazon-json", "reviewerID", "\u3000", marks=SLOW),
])
def test_a_blank_id_is_one_error_line_naming_the_file_and_row(tmp_path, source, column, value):
    data_dir = tmp_path / "data"
    reviews = blank_ids(column, value, 4)
    if source == "pickle":
        write_pickles(data_dir / "raw", reviews)
        where = rf"{data_dir / 'raw' / 'reviews.pkl'} column {column} row 4 is "
    else:
        write_json(data_dir / "raw", "\n\n".join(review_lines(reviews)) + "\n")  # blank lines between: line 9
        where = rf"{data_dir / 'raw' / 'reviews_Test.json'} line 9 has {column} = "
    line = assert_one_error(luigi(data_dir, "Preprocess", "--raw-source", source, *ARGS),
                            r"expected a non-blank id \(not empty, not only whitespace\)$", TASK_FAILED)
    assert line.startswith(f"ERROR: {where}"), line
    assert_nothing_written(data_dir)


def assert_nothing_written(data_dir):
    """No stage-1 table, no converted pickle (a user's own pickles stay), no lock left."""
    for stage in ("remap", "sequences", "tfrecords"):
        assert not (data_dir / stage).exists() or not any((data_dir / stage).rglob("*.*")), stage
    if (data_dir / "raw" / "reviews_Test.json").exists() or (data_dir / "raw" / "reviews_Test.json.gz").exists():
        assert not list((data_dir / "raw").glob("*.pkl"))
    assert not (data_dir / ".locks").exists()


def with_line(line, at=2):
    lines = review_lines()
    return "\n".join(lines[:at] + [line] + lines[at:]) + "\n"


@pytest.mark.parametrize("make_reviews, pattern", [
    (lambda: with_line("[" * 100_000), r"reviews_Test\.json line 3 nests lists or objects deeper than the JSON "
                                       r"reader can follow: expected one JSON object per line"),
    pytest.param(lambda: with_line('{"reviewerID": "A", "asin": "I1", "unixReviewTime": ' + "9" * 5000 + "}"),
                 r"reviews_Test\.json line 3 holds a value the JSON reader refuses \(Exceeds the limit \(4300.*\): "
                 r"expected", marks=SLOW),
    pytest.param(lambda: with_line('{"reviewerID": "A\\ud800", "asin": "I1", "unixReviewTime": 5}'),
                 r"reviews_Test\.json line 3 has reviewerID = 'A\\ud800' with a lone surrogate at character 1: "
                 r"expected valid Unicode text", marks=SLOW),
    pytest.param(lambda: with_line('{"reviewerID": "A", "asin": "I1", "unixReviewTime": 5, '
                                   '"reviewText": "\\ud83d\\ude00"}'),
                 None, marks=SLOW),  # a surrogate pair is one character; fields that are not kept are not checked
], ids=["nested-brackets", "5000-digits", "lone-surrogate", "surrogate-pair"])
def test_hostile_json_lines_are_one_error_line_naming_file_and_line(tmp_path, make_reviews, pattern):
    data_dir = tmp_path / "data"
    write_json(data_dir / "raw", make_reviews())
    result = luigi(data_dir, "Preprocess", "--raw-source", "amazon-json", *ARGS)
    if pattern is None:
        assert result.returncode == 0, result.stdout + result.stderr
        return
    assert_one_error(result, pattern, TASK_FAILED)
    assert_nothing_written(data_dir)


@pytest.mark.parametrize("line, pattern", [
    ("[" * 100_000, r"line 2 nests lists or objects deeper than the JSON reader can follow: expected"),
    ("{'asin': 'I9', 'categories': [['Shop', 'C1']], 'rank': " + "7" * 5000 + "}",
     r"line 2 is neither JSON nor a Python literal \(Exceeds the limit \(4300"),
    ("{'asin': 'I9', 'categories': [['Shop', 'C\\ud800']]}", r"line 2 has category = 'C\\ud800' with a lone "
                                                            r"surrogate at character 1"),
], ids=["nested-brackets", "5000-digits", "lone-surrogate"])
@SLOW
def test_hostile_meta_lines_are_one_error_line(tmp_path, line, pattern):
    data_dir = tmp_path / "data"
    write_json(data_dir / "raw", "\n".join(review_lines()) + "\n", "\n".join([META_LINES[0], line] + META_LINES[1:]))
    line = assert_one_error(luigi(data_dir, "Preprocess", "--raw-source", "amazon-json", *ARGS), pattern, TASK_FAILED)
    assert line.startswith(f"ERROR: {data_dir / 'raw' / 'meta_Test.json'} line 2 ")
    assert_nothing_written(data_dir)


def test_a_gzip_bomb_of_blank_lines_stops_at_the_ratio_cap_in_seconds(tmp_path):
    data_dir = tmp_path / "data"
    # 16 MiB of newlines pack into ~16 KiB (a ratio near 1000); a cap of 50 stops them after ~1 MiB.
    bomb = "\n".join(review_lines()) + "\n" + "\n" * (16 * 2**20)
    write_json(data_dir / "raw", bomb, gz=True)
    size = (data_dir / "raw" / "reviews_Test.json.gz").stat().st_size
    started = time.monotonic()
    result = luigi(data_dir, "Preprocess", "--raw-source", "amazon-json", "--raw-json-max-gzip-ratio", "50", *ARGS)
    assert time.monotonic() - started < 60
    line = assert_one_error(result, rf"reviews_Test\.json\.gz unpacks to more than {50 * size:,} bytes, 50 times its "
                                    r"compressed size \(at line \d+; \[raw\] json_max_gzip_ratio\): expected", TASK_FAILED)
    assert int(line.split("at line ")[1].split(";")[0]) > len(REVIEWS)
    assert_nothing_written(data_dir)


@pytest.mark.parametrize("gz", [False, pytest.param(True, marks=SLOW)])
def test_an_endless_line_is_refused_at_the_line_cap_without_reading_it_whole(tmp_path, gz):
    data_dir = tmp_path / "data"
    endless = "\n".join(review_lines()[:3]) + "\n" + '{"reviewerID": "' + "x" * (4 * 2**20)
    write_json(data_dir / "raw", endless, gz=gz)
    result = luigi(data_dir, "Preprocess", "--raw-source", "amazon-json", "--raw-json-max-line-bytes", "65536",
                   "--raw-json-max-gzip-ratio", "100000", *ARGS)  # one letter repeated packs ~1000 times
    assert_one_error(result, r"reviews_Test\.json(\.gz)? line 4 is longer than 65,536 bytes "
                             r"\(\[raw\] json_max_line_bytes\): expected one review or item per line", TASK_FAILED)
    assert_nothing_written(data_dir)


def flip_a_bit(path, where=0.3):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.skipif(not PARQUET_PAGE_CHECKSUMS, reason="pyarrow < 13 writes no page checksums (docs/design.md)")
@pytest.mark.parametrize("damaged, rebuild", [
    ("remap/reviews.parquet", ("sequences/_shards/part-00000.json", "tfrecords/_shards/part-00000.json")),
    ("sequences/train/part-00000.parquet", ("tfrecords/_shards/part-00000.json",)),
], ids=["remap", "sequences"])
def test_a_bit_flip_in_a_stage1_parquet_is_one_line_naming_the_file(tmp_path, damaged, rebuild):
    data_dir = tmp_path / "data"
    first = luigi(data_dir, "Preprocess", *TINY)
    assert first.returncode == 0, first.stderr
    flip_a_bit(data_dir / damaged)
    for manifest in rebuild:  # the next stage reads the damaged file again
        (data_dir / manifest).unlink()
    line = assert_one_error(luigi(data_dir, "Preprocess", *TINY), r" is damaged \(.*\): expected the parquet file "
                                                                  r"stage 1 wrote; delete it and rerun", TASK_FAILED)
    assert line.startswith(f"ERROR: {data_dir / damaged} is damaged ("), line
    assert not (data_dir / rebuild[-1]).exists()


def set_value(table, column, row, value):
    """`table` with `column` at `row` set to `value` (the first history entry of a list column)."""
    values = table.column(column).to_pylist()
    values[row] = [value] + values[row][1:] if isinstance(values[row], list) else value
    return table.set_column(table.schema.get_field_index(column), table.schema.field(column),
                            pa.array(values, type=table.schema.field(column).type))


@pytest.mark.parametrize("column, value, expected", [
    ("target_item", lambda stats: stats["n_items"] + 1,
     lambda stats, where: f"holds {stats['n_items'] + 1}: expected values from 1 to {stats['n_items']} (n_items in {where})"),
    pytest.param("hist_cate", lambda stats: -1,
                 lambda stats, where: f"holds -1: expected values from 1 to {stats['n_cats']} (n_cats in {where})",
                 marks=SLOW),
    pytest.param("hist_gap", lambda stats: -5, lambda stats, where: "holds -5: expected values >= 0", marks=SLOW),
], ids=["item-beyond-vocabulary", "negative-category", "negative-gap"])
def test_ids_outside_the_vocabulary_are_one_line_naming_file_column_and_row(tmp_path, column, value, expected):
    data_dir = tmp_path / "data"
    assert luigi(data_dir, "Preprocess", *TINY).returncode == 0
    stats_path = data_dir / "remap" / "stats.json"
    stats = json.loads(stats_path.read_text())
    sequences = data_dir / "sequences" / "train" / "part-00000.parquet"
    pq.write_table(set_value(pq.read_table(sequences), column, 3, value(stats)), sequences)
    (data_dir / "tfrecords" / "_shards" / "part-00000.json").unlink()  # WriteTFRecords reads the edited file again
    line = assert_one_error(luigi(data_dir, "Preprocess", *TINY), "", TASK_FAILED)
    assert line == (f"ERROR: {sequences} column {column} row 3 {expected(stats, stats_path)}; delete the file and "
                    "rerun the same command to rebuild it")
    assert not (data_dir / "tfrecords" / "_shards" / "part-00000.json").exists()
    assert not list((data_dir / "tfrecords").rglob("*.tmp*"))
