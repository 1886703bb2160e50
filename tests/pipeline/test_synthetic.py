"""Tests of the synthetic Amazon-shaped generator and its oracle (pipeline/raw/synthetic.py)."""
from __future__ import annotations

import json
import re

import luigi
import numpy as np
import pandas as pd
import pytest

from pipeline.raw import synthetic
from din_common.errors import InputError
from pipeline.settings import Settings
from pipeline.raw.synthetic import generate, rank_auc, write_raw
from pipeline.tasks.stage1 import PrepareRaw, Preprocess
from tests.helpers.luigi_config import luigi_settings
from tests.helpers.cli_capture import assert_one_clear_line, build_and_capture

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
        "reviewerID": ["AFIR1L9BGFEOXW", "AFIR1L9BGFEOXW", "ALEU367CRLY816"],
        "asin": ["B0001ZRFJV", "B0001ZRFJV", "B0001ZRFJV"],
        "unixReviewTime": [1203033600, 1255564800, 1236124800],
        "overall": [5.0, 3.0, 4.0],
        "reviewTime": ["02 15, 2008", "10 15, 2009", "03 4, 2009"],
    }
    assert small.meta.head(2).to_dict("list") == {
        "asin": ["B00ZPV7PDE", "B00PNWT9MY"],
        "title": ["Travel Headsets Model 6230", "Home Antennas Model 402"],
        "categories": [[["Electronics", "Television & Video", "Travel Headsets"]],
                       [["Electronics", "Office Electronics", "Home Antennas"]]],
    }
    assert int(small.reviews["unixReviewTime"].sum()) == 234325958400
    assert float(small.reviews["overall"].sum()) == 779.0
    assert (small.oracle["oracle_test_auc"], small.oracle["popularity_test_auc"],
            small.oracle["history_bag_test_auc"], small.oracle["recent_bag_test_auc"]) == (0.9, 0.80875, 0.82, 0.78125)


def test_oracle_beats_popularity(data):
    oracle = data.oracle
    for key in ("oracle_test_auc", "popularity_test_auc", "history_bag_test_auc", "recent_bag_test_auc"):
        assert 0.5 < oracle[key] < 1.0, key
    assert oracle["oracle_test_auc"] > oracle["popularity_test_auc"] + 0.05
    assert oracle["oracle_test_auc"] < 0.99
    assert oracle["n_reviews"] == len(data.reviews)
    assert oracle["n_users"] == N_USERS and oracle["seed"] == SEED
    assert oracle["knobs"]["stickiness"] == synthetic.KNOBS["stickiness"]
    assert oracle["generator_version"] == synthetic.GENERATOR_VERSION == 2


def test_oracle_beats_the_bag_which_beats_popularity():
    oracle = generate(3000, 1500, 60, 4).oracle
    assert oracle["oracle_test_auc"] > oracle["history_bag_test_auc"] + 0.01
    assert oracle["history_bag_test_auc"] > oracle["popularity_test_auc"] + 0.05
    assert oracle["recent_bag_test_auc"] > oracle["popularity_test_auc"] + 0.05


def test_interest_drift_makes_the_recent_history_say_more():
    # with a strong drift the last reviews know the current interests better than the whole bag;
    # without drift they know no more than the whole (longer) bag
    def recent_gain(drift):
        oracle = generate(3000, 1500, 60, 4, knobs={"interest_drift": drift}).oracle
        return oracle["recent_bag_test_auc"] - oracle["history_bag_test_auc"]
    assert recent_gain(0.6) > 0.01 > recent_gain(0.0) + 0.01


def plant(n_users=400, n_items=600, n_cats=20, seed=0, **changes):
    knobs = {**synthetic.KNOBS, **changes}
    return synthetic._plant(np.random.default_rng(seed), n_users, n_items, n_cats, 8.78, knobs)


def test_review_days_strictly_increase_within_the_window():
    planted = plant(n_users=3000)
    first = np.zeros(planted.review_user.size, dtype=bool)
    first[planted.offsets[:-1]] = True
    steps = np.diff(planted.review_day)[~first[1:]]
    assert steps.min() >= 1
    assert planted.review_day.min() >= synthetic._FIRST_DAY and planted.review_day.max() <= synthetic._LAST_DAY
    # bursts and breaks are both common: 1-3 day gaps and gaps of a week or more
    assert 0.4 < (steps <= 3).mean() < 0.6 and 0.4 < (steps >= 7).mean() < 0.6
    assert np.percentile(steps, 90) > 180


def test_heavy_users_are_squeezed_into_the_window():
    n_reviews = np.array([5, 1000])
    offsets = np.concatenate([[0], np.cumsum(n_reviews)])
    knobs = {**synthetic.KNOBS, "session_gap_share": 0.0}      # every gap a long break
    day, gap = synthetic._review_days(np.random.default_rng(1), n_reviews, offsets, knobs)
    assert (np.diff(day[5:]) >= 1).all() and (np.diff(day[:5]) >= 1).all()
    assert day.min() >= synthetic._FIRST_DAY and day.max() <= synthetic._LAST_DAY
    assert (gap[[0, 5]] == 0).all() and (np.diff(day)[5:] == gap[6:]).all()


def test_no_drift_keeps_the_interests_and_full_drift_moves_one_every_review():
    still = plant(interest_drift=0.0)
    assert not still.review_drift.any()
    np.testing.assert_array_equal(still.interest_cat, still.interest_cat_start)
    moving = plant(interest_drift=1.0)
    later = np.ones(moving.review_user.size, dtype=bool)
    later[moving.offsets[:-1]] = False
    np.testing.assert_array_equal(moving.review_drift, later)       # before every review but the first
    changed = (moving.interest_cat != moving.interest_cat_start).any(axis=1)
    assert changed.mean() > 0.9
    # a drift replaces a category, never adds or removes a slot
    np.testing.assert_array_equal(moving.interest_cat >= 0, moving.interest_cat_start >= 0)


def test_stickiness_decays_with_the_gap():
    planted = plant(n_users=4000, stickiness=0.6, stickiness_half_life_days=7.0, interest_drift=0.0)
    follows = np.ones(planted.review_user.size, dtype=bool)
    follows[planted.offsets[:-1]] = False
    gap = np.diff(planted.review_day)[follows[1:]]
    same = (planted.review_cat[1:] == planted.review_cat[:-1])[follows[1:]]
    after_session, after_break = same[gap <= 3].mean(), same[gap >= 60].mean()
    assert after_session > after_break + 0.2
    # a half-life of 0 means a constant stickiness: no difference beyond noise
    flat = plant(n_users=4000, stickiness=0.6, stickiness_half_life_days=0.0, interest_drift=0.0)
    np.testing.assert_allclose(flat.review_stickiness[follows], 0.6)
    gap = np.diff(flat.review_day)[follows[1:]]
    same = (flat.review_cat[1:] == flat.review_cat[:-1])[follows[1:]]
    assert abs(same[gap <= 3].mean() - same[gap >= 60].mean()) < 0.03


def test_gap_stickiness_formula():
    knobs = {"stickiness": 0.4, "stickiness_half_life_days": 10.0}
    np.testing.assert_allclose(synthetic._gap_stickiness(np.array([0, 10, 20]), knobs), [0.4, 0.2, 0.1])
    knobs["stickiness_half_life_days"] = 0.0
    np.testing.assert_allclose(synthetic._gap_stickiness(np.array([0, 10, 1000]), knobs), [0.4] * 3)


@pytest.mark.parametrize("drift, locality", [(0.0, 0.0), (0.5, 0.0), (0.2, 0.7), (0.2, 1.0)])
def test_true_next_probability_sums_to_one(drift, locality):
    knobs = {**synthetic.KNOBS, "interest_drift": drift, "item_locality": locality}
    n_items, n_cats = 150, 10
    planted = synthetic._plant(np.random.default_rng(0), 50, n_items, n_cats, 8.78, knobs)
    items = np.arange(n_items)
    for user in range(0, 50, 7):
        last = planted.offsets[user + 1] - 1
        history = planted.review_item[planted.offsets[user]:last]
        seen = np.isin(items, history)
        mass = np.bincount(planted.item_cat[np.unique(history)],
                           planted.item_prob[np.unique(history)], minlength=n_cats)
        prev_item = np.full(n_items, planted.review_item[last - 1])
        reviewed_near = planted.browsing.reviewed_neighbours(np.full(n_items, user), prev_item,
                                                             lambda u, i: np.isin(i, history))
        prob = synthetic._true_next_prob(planted, knobs, np.full(n_items, user),
                                         np.full(n_items, planted.review_cat[last - 1]),
                                         np.full(n_items, planted.review_stickiness[last]),
                                         items, mass[planted.item_cat], seen, prev_item, reviewed_near)
        assert prob.sum() == pytest.approx(1.0, abs=1e-9)


def test_neighbours_are_the_category_items_within_the_width_in_browsing_order():
    item_cat = np.array([0, 0, 0, 0, 0, 1, 2, 2])       # categories are blocks of ids
    item_at = np.array([3, 0, 4, 1, 2, 5, 7, 6])        # the browsing order, a permutation within each block
    position = np.argsort(item_at)
    browsing = synthetic._Browsing(item_cat, position, item_at, 2)
    first, count = browsing.window(np.array([3, 4, 2, 5, 7, 6]))
    np.testing.assert_array_equal(first, [0, 0, 2, 5, 6, 6])      # places
    np.testing.assert_array_equal(count, [2, 4, 2, 0, 1, 1])      # item 5 is alone in its category
    # uniform draws over the neighbours, the item's own place stepped over
    drawn = browsing.draw_neighbour(np.array([4, 4, 4, 4, 7, 6]), np.array([0.0, 0.3, 0.6, 0.99, 0.5, 0.5]))
    np.testing.assert_array_equal(drawn, [3, 0, 1, 2, 6, 7])
    np.testing.assert_array_equal(browsing.is_neighbour(np.array([0, 2, 3, 6, 4, 2]), np.array([4, 4, 4, 7, 4, 3])),
                                  [True, True, True, True, False, False])
    reviewed = browsing.reviewed_neighbours(np.zeros(3, np.int64), np.array([4, 5, 3]),
                                            lambda users, ids: np.isin(ids, [1, 2, 4, 5]))
    np.testing.assert_array_equal(reviewed, [2, 0, 1])      # 4: items 1 and 2; 5: none; 3: item 4


def test_browsing_order_is_a_permutation_within_each_category():
    planted = plant(item_locality=0.5)
    browsing = planted.browsing
    np.testing.assert_array_equal(planted.item_cat[browsing.item_at], planted.item_cat)
    np.testing.assert_array_equal(browsing.item_at[browsing.position], np.arange(planted.item_cat.size))
    assert (browsing.item_at != np.arange(planted.item_cat.size)).any()


def test_item_locality_draws_the_next_item_near_the_last_one():
    def near_share(locality):
        planted = plant(n_users=2000, item_locality=locality)
        follows = np.ones(planted.review_user.size, dtype=bool)
        follows[planted.offsets[:-1]] = False
        previous, item = planted.review_item[:-1], planted.review_item[1:]
        same = follows[1:] & (planted.review_cat[1:] == planted.review_cat[:-1])
        has_neighbours = planted.browsing.window(previous)[1] > 0
        pairs = same & has_neighbours
        return planted.browsing.is_neighbour(item[pairs], previous[pairs]).mean()
    assert near_share(1.0) == 1.0
    assert 0.5 < near_share(0.5) < 0.8


def test_item_locality_off_draws_no_random_number_and_the_oracle_gains_from_it():
    # off: the data of generator version 2 (no draw added); on: the oracle knows more than before
    np.testing.assert_array_equal(plant(item_locality=0.0).review_item, plant().review_item)
    off = generate(3000, 1500, 60, 4).oracle
    on = generate(3000, 1500, 60, 4, knobs={"item_locality": 0.8}).oracle
    assert on["oracle_test_auc"] > off["oracle_test_auc"] + 0.003
    # the neighbours are not the popular items: what the bag does not see widens the gap to the oracle
    gap_off = off["oracle_test_auc"] - off["history_bag_test_auc"]
    assert on["oracle_test_auc"] - on["history_bag_test_auc"] > gap_off + 0.01


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


@pytest.mark.parametrize("knob, value, setting", [
    ("stickiness", 1.5, "synthetic_stickiness"),
    ("stickiness", "abc", "synthetic_stickiness"),
    ("stickiness_half_life_days", -1, "synthetic_stickiness_half_life_days"),
    ("stickiness_half_life_days", float("nan"), "synthetic_stickiness_half_life_days"),
    ("interest_drift", -0.1, "synthetic_interest_drift"),
    ("interest_drift", True, "synthetic_interest_drift"),
    ("item_locality", 1.5, "synthetic_item_locality"),
])
def test_invalid_order_knobs(knob, value, setting):
    with pytest.raises(InputError, match=re.escape(f"[raw] {setting} must be")):
        generate(10, 100, 10, 1, knobs={knob: value})


def test_infinite_half_life_is_recorded_as_constant():
    oracle = generate(30, 100, 10, 1, knobs={"stickiness_half_life_days": "inf"}).oracle
    assert oracle["knobs"]["stickiness_half_life_days"] == 0.0
    json.dumps(oracle, allow_nan=False)


def test_invalid_mean_reviews():
    with pytest.raises(InputError, match="mean_reviews_per_user"):
        generate(10, 100, 10, 1, mean_reviews_per_user=3)


def test_tiny_item_catalogue_still_leaves_unreviewed_items():
    small = generate(40, 6, 2, 0)
    per_user = small.reviews.groupby("reviewerID")["asin"].nunique()
    assert per_user.max() <= 5
    assert small.reviews.groupby("reviewerID").size().min() >= 5


ORDER_SETTINGS = {"synthetic_stickiness": "0.3", "synthetic_stickiness_half_life_days": "5",
                  "synthetic_interest_drift": "0.05"}


def raw_fingerprint(**raw):
    with luigi_settings(raw={"source": "synthetic", **raw}):
        return Settings.current().raw_fingerprint()


def test_each_order_setting_changes_the_raw_fingerprint():
    base = raw_fingerprint(**ORDER_SETTINGS)
    assert raw_fingerprint(**ORDER_SETTINGS) == base
    for setting in ORDER_SETTINGS:
        changed = dict(ORDER_SETTINGS, **{setting: "0.11"})
        assert raw_fingerprint(**changed) != base, setting
    assert raw_fingerprint(**dict(ORDER_SETTINGS, synthetic_item_locality="0.5")) != base
    # item locality off is the data from before the setting existed: the fingerprint of then
    assert raw_fingerprint(**dict(ORDER_SETTINGS, synthetic_item_locality="0")) == base
    assert "item_locality" not in synthetic.fingerprint_knobs(synthetic.check_order_knobs(
        {"stickiness": 0.5, "stickiness_half_life_days": 14, "interest_drift": 0.2, "item_locality": "0"}))
    # "inf" and "0" both mean a constant stickiness: the same data, the same fingerprint
    assert (raw_fingerprint(**dict(ORDER_SETTINGS, synthetic_stickiness_half_life_days="inf"))
            == raw_fingerprint(**dict(ORDER_SETTINGS, synthetic_stickiness_half_life_days="0")))


@pytest.mark.parametrize("setting, value", [
    ("synthetic_stickiness", "high"),
    ("synthetic_stickiness", "1.2"),
    ("synthetic_stickiness_half_life_days", "-3"),
    ("synthetic_interest_drift", "2"),
])
def test_a_bad_order_setting_in_raw_is_one_clear_line(tmp_path, setting, value):
    ok, lines = build_and_capture(Preprocess(), paths={"data_dir": tmp_path / "data"},
                                  raw={"source": "synthetic", setting: value})
    assert not ok
    assert_one_clear_line(lines, re.escape(f"[raw] {setting} must be ") + ".*" + re.escape(f"got '{value}'"))
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.pkl"))


def test_prepare_raw_writes_the_configured_knobs(tmp_path):
    with luigi_settings(paths={"data_dir": tmp_path / "data"},
                        raw={"source": "synthetic", "synthetic_users": "40", "synthetic_items": "80",
                             "synthetic_categories": "5", **ORDER_SETTINGS}):
        assert luigi.build([PrepareRaw()], local_scheduler=True, log_level="WARNING")
    knobs = json.loads((tmp_path / "data" / "raw" / "oracle.json").read_text())["knobs"]
    assert (knobs["stickiness"], knobs["stickiness_half_life_days"], knobs["interest_drift"]) == (0.3, 5.0, 0.05)
