"""Tests of the synthetic Amazon-shaped generator and its oracle (pipeline/synthetic.py)."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from pipeline import synthetic
from din_common.errors import InputError
from pipeline.synthetic import generate, rank_auc, write_raw

N_USERS, N_ITEMS, N_CATS, SEED = 300, 400, 30, 11


@pytest.fixture(scope="module")
def data():
    return generate(N_USERS, N_ITEMS, N_CATS, SEED)


def test_reviews_schema(data):
    reviews = data.reviews
    assert list(reviews.columns) == ["reviewerID", "asin", "unixReviewTime", "overall", "reviewTime"]
    assert reviews["unixReviewTime"].dtype == np.int64
    assert reviews["overall"].dtype == np.float64
    for column in ("reviewerID", "asin", "reviewTime"):
        assert pd.api.types.is_string_dtype(reviews[column].dtype), column
        assert reviews[column].notna().all()
    assert reviews["reviewerID"].str.fullmatch(r"A[0-9A-Z]{13}").all()
    assert reviews["asin"].str.fullmatch(r"B00[0-9A-Z]{7}").all()
    assert reviews["overall"].between(1, 5).all()
    assert set(reviews["overall"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    times = pd.to_datetime(reviews["unixReviewTime"], unit="s")
    assert times.min() >= pd.Timestamp("2000-01-01") and times.max() <= pd.Timestamp("2014-07-23")
    # reviewTime says the same day as unixReviewTime, Amazon style ('09 7, 2012')
    expected = [f"{t.month:02d} {t.day}, {t.year}" for t in times.iloc[:200]]
    assert reviews["reviewTime"].iloc[:200].tolist() == expected
    assert reviews["reviewerID"].nunique() == N_USERS


def test_meta_schema(data):
    meta = data.meta
    assert list(meta.columns) == ["asin", "title", "categories"]
    assert len(meta) == N_ITEMS and meta["asin"].is_unique
    assert meta["asin"].str.fullmatch(r"B00[0-9A-Z]{7}").all()
    assert pd.api.types.is_string_dtype(meta["title"].dtype)
    for categories in meta["categories"].iloc[:50]:
        assert isinstance(categories, list) and isinstance(categories[-1], list)
        assert categories[0][0] == "Electronics"
        assert all(isinstance(name, str) for name in categories[-1])


def test_leaf_categories_unique_and_all_used(data):
    leaves = data.meta["categories"].map(lambda c: c[-1][-1])
    assert leaves.nunique() == N_CATS              # every category has >= 1 item
    # a leaf name belongs to one category path (unique per category)
    paths = data.meta["categories"].map(lambda c: tuple(c[-1]))
    assert paths.nunique() == N_CATS


def test_large_category_counts_keep_names_unique():
    names = synthetic._leaf_names(np.random.default_rng(0), 2500)
    assert len(set(names)) == 2500


def test_every_review_has_meta(data):
    assert set(data.reviews["asin"]) <= set(data.meta["asin"])


def test_reviews_per_user_and_increasing_time(data):
    reviews = data.reviews
    per_user = reviews.groupby("reviewerID").size()
    assert per_user.min() >= 5
    assert 7.0 < per_user.mean() < 11.0
    ordered = reviews.sort_values(["reviewerID", "unixReviewTime"], kind="stable")
    same_user = ordered["reviewerID"].to_numpy()[1:] == ordered["reviewerID"].to_numpy()[:-1]
    steps = np.diff(ordered["unixReviewTime"].to_numpy())
    assert (steps[same_user] > 0).all()           # strictly increasing: no ties within a user


def test_asin_order_is_not_popularity(data):
    counts = data.reviews["asin"].value_counts()
    ranks_by_name = np.asarray(counts.index, dtype=object).argsort().argsort()  # asins are unique
    correlation = np.corrcoef(ranks_by_name, counts.to_numpy(dtype=np.int64))[0, 1]  # Int64 on pandas 1.x
    assert abs(correlation) < 0.3


def test_deterministic():
    first = generate(120, 200, 12, 5)
    second = generate(120, 200, 12, 5)
    pd.testing.assert_frame_equal(first.reviews, second.reviews)
    pd.testing.assert_frame_equal(first.meta, second.meta)
    assert first.oracle == second.oracle
    other = generate(120, 200, 12, 6)
    assert not first.reviews.equals(other.reviews)
    assert first.oracle != other.oracle


def test_same_seed_gives_the_same_values_on_every_stack():
    # Written out on the modern stack (numpy 2.4, pandas 3.1) and checked as-is on the
    # Ascend stack (numpy 1.19, pandas 1.3/1.4): the generator's draws and the oracle
    # must not depend on the library versions.
    small = generate(20, 40, 4, 3)
    assert len(small.reviews) == 197 and len(small.meta) == 40
    assert small.reviews.head(3).to_dict("list") == {
        "reviewerID": ["ABAOYGY4UEH0U5", "AQV4A1M0P3IJ26", "A8IKRM2XBM7KGZ"],
        "asin": ["B0018S01B5", "B0018S01B5", "B0018S01B5"],
        "unixReviewTime": [1366243200, 1096243200, 1320019200],
        "overall": [5.0, 5.0, 3.0],
        "reviewTime": ["04 18, 2013", "09 27, 2004", "10 31, 2011"],
    }
    assert small.meta.head(2).to_dict("list") == {
        "asin": ["B00NUIP28W", "B00B2TNVPF"],
        "title": ["Dual Batteries Model 9650", "HD Headsets Model 6757"],
        "categories": [[["Electronics", "Video Games", "Dual Batteries"]], [["Electronics", "Headphones", "HD Headsets"]]],
    }
    assert int(small.reviews["unixReviewTime"].sum()) == 233730576000
    assert float(small.reviews["overall"].sum()) == 809.0
    assert (small.oracle["oracle_test_auc"], small.oracle["popularity_test_auc"],
            small.oracle["history_bag_test_auc"]) == (0.8825, 0.74125, 0.85875)


def test_oracle_beats_popularity(data):
    oracle = data.oracle
    for key in ("oracle_test_auc", "popularity_test_auc", "history_bag_test_auc"):
        assert 0.5 < oracle[key] < 1.0, key
    assert oracle["oracle_test_auc"] > oracle["popularity_test_auc"] + 0.05
    assert oracle["oracle_test_auc"] < 0.99
    assert oracle["n_reviews"] == len(data.reviews)
    assert oracle["n_users"] == N_USERS and oracle["seed"] == SEED
    assert oracle["knobs"]["stickiness"] == synthetic.KNOBS["stickiness"]


def test_true_next_probability_sums_to_one():
    knobs = dict(synthetic.KNOBS)
    n_items, n_cats = 150, 10
    planted = synthetic._plant(np.random.default_rng(0), 50, n_items, n_cats, 8.78, knobs)
    items = np.arange(n_items)
    for user in range(0, 50, 7):
        rows = slice(planted.offsets[user], planted.offsets[user + 1] - 1)   # history
        history = planted.review_item[rows]
        prev_cat = planted.review_cat[planted.offsets[user + 1] - 2]
        seen = np.isin(items, history)
        mass = np.bincount(planted.item_cat[np.unique(history)],
                           planted.item_prob[np.unique(history)], minlength=n_cats)
        prob = synthetic._true_next_prob(planted, knobs, np.full(n_items, user), np.full(n_items, prev_cat),
                                         items, mass[planted.item_cat], seen)
        assert prob.sum() == pytest.approx(1.0, abs=1e-9)


def test_rank_auc_counts_ties_half():
    assert rank_auc(np.array([3.0, 2.0]), np.array([1.0, 0.0])) == 1.0
    assert rank_auc(np.array([0.0]), np.array([1.0])) == 0.0
    assert rank_auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    assert rank_auc(np.array([2.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(0.875)
    assert rank_auc(np.array([np.inf, 1.0]), np.array([2.0])) == 0.5


def test_write_raw_is_atomic_and_complete(tmp_path):
    raw_dir = tmp_path / "raw"
    oracle = write_raw(raw_dir, 80, 120, 8, 3)
    names = sorted(path.name for path in raw_dir.iterdir())
    assert names == ["meta.pkl", "oracle.json", "reviews.pkl"]
    assert not [path for path in tmp_path.rglob("*") if ".tmp-" in path.name]
    on_disk = json.loads((raw_dir / "oracle.json").read_text())
    for key in ("oracle_test_auc", "popularity_test_auc", "history_bag_test_auc", "n_users", "n_items",
                "n_categories", "n_reviews", "seed", "generator_version", "knobs"):
        assert key in on_disk, key
    assert on_disk["oracle_test_auc"] == pytest.approx(oracle["oracle_test_auc"])
    reviews = pd.read_pickle(raw_dir / "reviews.pkl")
    meta = pd.read_pickle(raw_dir / "meta.pkl")
    assert len(reviews) == on_disk["n_reviews"] and len(meta) == 120
    # protocol 4, which Python 3.7 reads (3.8+ would default to 5)
    assert [(raw_dir / name).read_bytes()[:2] for name in ("reviews.pkl", "meta.pkl")] == [b"\x80\x04"] * 2


@pytest.mark.parametrize("args, setting", [
    ((0, 100, 10, 1), "synthetic_users"),
    ((10, 0, 1, 1), "synthetic_items"),
    ((10, 5, 1, 1), "synthetic_items"),          # needs > 5 items: users keep unreviewed ones
    ((10, 100, 0, 1), "synthetic_categories"),
    ((10, 50, 60, 1), "synthetic_items"),         # fewer items than categories
    ((10, 100, 10, -1), "synthetic_seed"),
    ((10.5, 100, 10, 1), "synthetic_users"),
    (("10", 100, 10, 1), "synthetic_users"),
])
def test_invalid_arguments(args, setting):
    with pytest.raises(InputError, match=re.escape(f"[raw] {setting}")):
        generate(*args)


def test_invalid_mean_reviews():
    with pytest.raises(InputError, match="mean_reviews_per_user"):
        generate(10, 100, 10, 1, mean_reviews_per_user=3)


def test_tiny_item_catalogue_still_leaves_unreviewed_items():
    small = generate(40, 6, 2, 0)
    per_user = small.reviews.groupby("reviewerID")["asin"].nunique()
    assert per_user.max() <= 5
    assert small.reviews.groupby("reviewerID").size().min() >= 5
