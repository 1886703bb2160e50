"""Samples of the reference protocol on hand-made users, negatives, determinism, sharding."""
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from din_common.errors import InputError
from pipeline.sequences import draw_negatives
from tests.helpers import stage1_fixtures as fx
from tests.helpers.samples import build, one_user_samples


def rows_of(table):
    return [(r["user_id"], tuple(r["hist_item"]), tuple(r["hist_cate"]), r["target_item"], r["target_cate"], r["label"])
            for r in table.to_pylist()]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_positives_are_exactly_the_reference_protocol(split):
    positives = {(u, h, t) for u, h, _, t, _, label in rows_of(build()[split]) if label == 1}
    assert positives == fx.POSITIVES_MAXLEN_2[split]


def test_sample_counts_per_user_follow_the_protocol():
    tables = build()
    # n=3 users: 0 train, 2 val, 2 test; n=5 user: 4 train, 2 val, 2 test; n=1 user: nothing.
    assert {split: t.num_rows for split, t in tables.items()} == {"train": 4, "val": 6, "test": 6}


def samples_with_gaps(table):
    """(user_id, history, target_item, label) -> hist_gap of each row."""
    return {(r["user_id"], tuple(r["hist_item"]), r["target_item"], r["label"]): tuple(r["hist_gap"])
            for r in table.to_pylist()}


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_gaps_of_the_remapped_fixture_are_seconds_to_the_target_review(split):
    samples = samples_with_gaps(build()[split])
    positives = {(u, h, t): gaps for (u, h, t, label), gaps in samples.items() if label == 1}
    assert positives == {key: fx.GAPS_MAXLEN_2[key] for key in fx.POSITIVES_MAXLEN_2[split]}


@pytest.mark.parametrize("maxlen, expected", [
    (10, {"train": [(1,), (150,)], "val": [(1, 2), (900, 750)], "test": [(1, 2, 3), (4900, 4750, 4000)]}),
    (2, {"train": [(1,), (150,)], "val": [(1, 2), (900, 750)], "test": [(2, 3), (4750, 4000)]}),
    (1, {"train": [(1,), (150,)], "val": [(2,), (750,)], "test": [(3,), (4000,)]}),
])
def test_gap_is_seconds_from_each_history_review_to_the_event_and_negatives_share_it(maxlen, expected):
    tables = one_user_samples([100, 250, 1000, 5000], maxlen)
    for split, (history, gaps) in expected.items():
        rows = tables[split].to_pylist()
        assert [r["label"] for r in sorted(rows, key=lambda r: -r["label"])] == [1, 0]
        for row in rows:  # the positive and its negative
            assert (tuple(row["hist_item"]), tuple(row["hist_gap"])) == (history, gaps)
        assert {r["target_item"] for r in rows if r["label"] == 1} == {history[-1] + 1}


def test_gaps_of_equal_times_are_zero_and_negative_or_huge_ones_are_clipped_to_int32():
    tables = one_user_samples([7, 7, 5, 2**40], maxlen=3)
    assert [tuple(r["hist_gap"]) for r in tables["train"].to_pylist()] == [(0,)] * 2
    # A table whose times go back (not sorted) must not give negative gaps, nor huge ones wrap around.
    assert [tuple(r["hist_gap"]) for r in tables["val"].to_pylist()] == [(0, 0)] * 2
    assert [tuple(r["hist_gap"]) for r in tables["test"].to_pylist()] == [(2**31 - 1,) * 3] * 2
    assert tables["test"].schema.field("hist_gap").type.value_type == pa.int32()


def test_gaps_between_the_ends_of_int64_are_exact_not_wrapped():
    low, high = -2**63, 2**63 - 1
    tables = one_user_samples([low, low + 7, 3, high], maxlen=3)
    assert [tuple(r["hist_gap"]) for r in tables["train"].to_pylist()] == [(7,)] * 2
    # 3 - INT64_MIN and INT64_MAX - INT64_MIN overflow int64 (wrapping to negatives): the true gaps clip to int32.
    assert [tuple(r["hist_gap"]) for r in tables["val"].to_pylist()] == [(2**31 - 1, 2**31 - 1)] * 2
    assert [tuple(r["hist_gap"]) for r in tables["test"].to_pylist()] == [(2**31 - 1,) * 3] * 2


def test_categories_follow_items():
    item_cate = {item_id: cate_id for item_id, cate_id in fx.ITEMS.values()}
    for table in build().values():
        for _, hist, hist_cate, target, target_cate, _ in rows_of(table):
            assert hist_cate == tuple(item_cate[i] for i in hist)
            assert target_cate == item_cate[target]


def test_each_positive_has_a_negative_with_the_same_history_never_reviewed():
    for table in build().values():
        rows = rows_of(table)
        positives = sorted((u, h) for u, h, _, _, _, label in rows if label == 1)
        negatives = sorted((u, h) for u, h, _, _, _, label in rows if label == 0)
        assert positives == negatives
        for user, _, _, target, _, label in rows:
            if label == 0:
                assert target not in fx.REVIEWED[user] and 1 <= target <= 5


def test_history_keeps_the_last_maxlen_most_recent_last():
    test = {(u, h) for u, h, _, _, _, label in rows_of(build(maxlen=10)["test"]) if label == 1}
    assert (4, (4, 5, 4, 5)) in test


def test_same_inputs_and_seed_give_identical_bytes():
    def parquet_bytes(tables):
        out = []
        for table in tables.values():
            sink = io.BytesIO()
            pq.write_table(table, sink)
            out.append(sink.getvalue())
        return out
    assert parquet_bytes(build(seed=5)) == parquet_bytes(build(seed=5))
    assert rows_of(build(seed=5)["train"]) != rows_of(build(seed=6)["train"]) or \
        rows_of(build(seed=5)["test"]) != rows_of(build(seed=6)["test"])


def test_samples_do_not_depend_on_the_number_of_shards():
    def rows_with_gaps(table):
        return [row + (tuple(r["hist_gap"]),) for row, r in zip(rows_of(table), table.to_pylist())]
    whole = {split: sorted(rows_with_gaps(t)) for split, t in build(num_shards=1).items()}
    parts = {split: [] for split in whole}
    for shard in range(3):
        for split, table in build(num_shards=3, shard=shard).items():
            parts[split].extend(rows_with_gaps(table))
    assert {split: sorted(rows) for split, rows in parts.items()} == whole


def test_negatives_avoid_a_dense_reviewed_set():
    # The user reviewed 9 of 10 items: the only valid negative is item 7.
    reviewed = np.sort(np.array([1 * 11 + i for i in range(1, 11) if i != 7], dtype=np.int64))
    users = np.ones(50, dtype=np.int32)
    negatives = draw_negatives(users, np.arange(50), reviewed, n_items=10, seed=1)
    assert set(negatives.tolist()) == {7}


def test_user_who_reviewed_every_item_is_a_clear_error():
    reviewed = np.array([1 * 4 + i for i in range(1, 4)], dtype=np.int64)
    with pytest.raises(InputError, match="user_id 1 has reviewed .* every one of the 3 items"):
        draw_negatives(np.ones(2, dtype=np.int32), np.arange(2), reviewed, n_items=3, seed=1)
