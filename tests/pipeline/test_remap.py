"""Remap: ID order, stable sort, dropped unknown asins, counts."""
import pytest

from din_common.errors import InputError
from pipeline.remap import remap_ids
from tests.helpers import stage1_fixtures as fx


@pytest.fixture(scope="module")
def result():
    return remap_ids(fx.REVIEWS, fx.META)


def test_items_follow_sorted_asin_and_exclude_items_without_reviews(result):
    items = result.items.to_pylist()
    assert [(r["asin"], r["item_id"], r["cate_id"]) for r in items] == [
        (asin, item_id, cate_id) for asin, (item_id, cate_id) in sorted(fx.ITEMS.items())]


def test_categories_and_users_follow_sorted_names(result):
    assert result.categories.column("category").to_pylist() == fx.CATEGORIES
    assert result.categories.column("cate_id").to_pylist() == [1, 2, 3]
    assert result.users.column("reviewerID").to_pylist() == fx.USERS
    assert result.users.column("n_reviews").to_pylist() == [3, 3, 1, 5]


def test_reviews_sorted_by_user_then_time_stably(result):
    reviews = result.reviews
    assert list(zip(reviews.column("user_id").to_pylist(), reviews.column("item_id").to_pylist())) == fx.REMAPPED_REVIEWS
    item_cate = {item_id: cate_id for item_id, cate_id in fx.ITEMS.values()}
    assert reviews.column("cate_id").to_pylist() == [item_cate[i] for _, i in fx.REMAPPED_REVIEWS]
    assert reviews.column("ts").to_pylist() == fx.REMAPPED_TS


def test_unknown_asins_are_dropped_and_counted(result):
    assert result.stats["reviews_in"] == 13
    assert result.stats["reviews_dropped_unknown_asin"] == 1
    assert result.stats["unknown_asins"] == 1
    assert result.stats["meta_items_without_reviews"] == 1
    assert (result.stats["n_items"], result.stats["n_cats"], result.stats["n_users"]) == (5, 3, 4)


def test_every_asin_missing_from_meta_is_one_clear_error():
    meta = fx.META.assign(asin=["x1", "x2", "x3", "x4", "x5", "x6"])
    with pytest.raises(InputError, match="none of the 13 reviews has an asin that appears in meta"):
        remap_ids(fx.REVIEWS, meta)


def test_no_user_with_two_reviews_is_one_clear_error():
    reviews = fx.REVIEWS.drop_duplicates("reviewerID")
    with pytest.raises(InputError, match="no user has 2 or more reviews"):
        remap_ids(reviews, fx.META)


def test_duplicate_user_item_time_rows_are_kept_and_counted():
    reviews = fx.REVIEWS.copy()
    reviews.loc[len(reviews)] = ["u_d", "i5", 4]  # same user, item and time as an existing row
    result = remap_ids(reviews, fx.META)
    assert result.stats["duplicate_user_item_time_rows"] == 1
    assert result.reviews.num_rows == len(fx.REMAPPED_REVIEWS) + 1


@pytest.mark.parametrize("times", [[2**63 - 1, -2**63, 5, -2**63 + 1], [-2**63, -2**63 + 10, -2**63 + 3]])
def test_reviews_sort_by_time_at_the_ends_of_int64(times):
    import numpy as np
    import pandas as pd

    from pipeline.remap import _user_time_order

    ts = np.array(times, dtype=np.int64)
    order = _user_time_order(np.ones(len(ts), dtype=np.int32), ts)
    assert ts[order].tolist() == sorted(times)
    reviews = pd.DataFrame({"reviewerID": ["A"] * len(ts), "asin": ["B"] * len(ts), "unixReviewTime": ts})
    meta = pd.DataFrame({"asin": ["B"], "category": ["C"]})
    assert remap_ids(reviews, meta).reviews.column("ts").to_pylist() == sorted(times)


def test_a_remap_past_its_time_limit_is_one_error(monkeypatch):
    import time

    from pipeline import remap

    assert remap.remap_ids_within(30, fx.REVIEWS, fx.META).stats["n_users"] == 4
    monkeypatch.setattr(remap, "remap_ids", lambda *args, **kwargs: time.sleep(3))
    start = time.monotonic()
    with pytest.raises(InputError, match=r"reviews\.pkl: remapping its 13 reviews took longer than 0 s"):
        remap.remap_ids_within(0.2, fx.REVIEWS, fx.META)
    assert time.monotonic() - start < 2


def test_user_time_order_keeps_input_order_among_equal_user_and_time():
    import numpy as np

    from pipeline.remap import _user_time_order

    rng = np.random.default_rng(5)
    user_id = rng.integers(1, 30, 5_000).astype(np.int32)
    ts = rng.integers(0, 20, 5_000).astype(np.int64)  # many rows share a user and a time
    assert _user_time_order(user_id, ts).tolist() == np.lexsort((ts, user_id)).tolist()
