"""Measure the synthetic generator: speed, size and the planted-signal AUCs.

Prints one JSON line: generation seconds, n_reviews, the oracle / item-popularity /
bag-of-history / recent-bag (last RECENT_BAG_LENGTH history reviews) test AUCs and
the share of the popularity->oracle gap each estimator closes (with `--posterior-particles`,
also the history posterior's: the best use of the history, `pipeline/raw/synthetic_posterior.py`,
once per particle count, so its convergence shows), plus how often
consecutive reviews share a category after a same-session gap (<= 3 days) and after
a longer one. The order knobs default to the generator's; pass them to tune.
Defaults: full Amazon Electronics scale.

    python benchmarks/synthetic_signal.py
    python benchmarks/synthetic_signal.py --users 20000 --items 6500 --categories 300
    python benchmarks/synthetic_signal.py --users 11400 --items 4000 --categories 150 \\
        --stickiness 0.15 --half-life 0 --drift 0
    python benchmarks/synthetic_signal.py --users 20000 --items 6500 --categories 300 --posterior-particles 300,1000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.raw.synthetic import KNOBS, generate  # noqa: E402

SESSION_DAYS = 3


def gap_closure(oracle: dict, key: str):
    gap = oracle["oracle_test_auc"] - oracle["popularity_test_auc"]
    return round((oracle[key] - oracle["popularity_test_auc"]) / gap, 3) if gap > 0 else None


def same_category_shares(data) -> dict:
    """Share of consecutive reviews (same user) in the same leaf category, by the gap between them."""
    leaf = data.meta.set_index("asin")["categories"].map(lambda c: c[-1][-1])
    reviews = data.reviews.sort_values(["reviewerID", "unixReviewTime"], kind="stable")
    user = reviews["reviewerID"].to_numpy()
    cat = leaf.reindex(reviews["asin"]).to_numpy()
    days = reviews["unixReviewTime"].to_numpy() // 86400
    follows = user[1:] == user[:-1]
    same = (cat[1:] == cat[:-1])[follows]
    gap = np.diff(days)[follows]
    short = gap <= SESSION_DAYS
    return {"same_category_after_session_gap": round(float(same[short].mean()), 4),
            "same_category_after_break": round(float(same[~short].mean()), 4),
            "session_gap_share": round(float(short.mean()), 4),
            "median_gap_days": float(np.median(gap))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=192403)
    parser.add_argument("--items", type=int, default=63001)
    parser.add_argument("--categories", type=int, default=801)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stickiness", type=float, default=KNOBS["stickiness"])
    parser.add_argument("--half-life", type=float, default=KNOBS["stickiness_half_life_days"],
                        help="stickiness half-life in days (0: constant)")
    parser.add_argument("--drift", type=float, default=KNOBS["interest_drift"])
    parser.add_argument("--item-locality", type=float, default=KNOBS["item_locality"],
                        help="P(the next item is a neighbour of the last one, when the category stays)")
    parser.add_argument("--posterior-particles", default="",
                        help="comma-separated particle counts for the history posterior's AUC (none: skipped)")
    args = parser.parse_args(argv)
    particles = tuple(int(count) for count in args.posterior_particles.split(",") if count)
    knobs = {"stickiness": args.stickiness, "stickiness_half_life_days": args.half_life,
             "interest_drift": args.drift, "item_locality": args.item_locality}

    start = time.perf_counter()
    data = generate(args.users, args.items, args.categories, args.seed, knobs=knobs, posterior_particles=particles)
    seconds = time.perf_counter() - start
    oracle = data.oracle
    per_user = data.reviews.groupby("reviewerID").size()
    print(json.dumps({
        "users": args.users, "items": args.items, "categories": args.categories, "seed": args.seed,
        **knobs,
        "generate_seconds": round(seconds, 2),
        "n_reviews": oracle["n_reviews"],
        "reviews_per_user_mean": round(float(per_user.mean()), 3),
        "reviews_per_user_max": int(per_user.max()),
        **{key: round(oracle[key], 4) for key in ("oracle_test_auc", "oracle_prob_only_test_auc",
                                                  "popularity_test_auc", "history_bag_test_auc",
                                                  "recent_bag_test_auc")},
        "oracle_minus_popularity": round(oracle["oracle_test_auc"] - oracle["popularity_test_auc"], 4),
        "history_bag_gap_closure": gap_closure(oracle, "history_bag_test_auc"),
        "recent_bag_gap_closure": gap_closure(oracle, "recent_bag_test_auc"),
        **({"posterior_test_auc": {count: round(value, 4) for count, value in oracle["posterior_test_auc"].items()},
            "posterior_gap_closure": {count: gap_closure({**oracle, "posterior": value}, "posterior")
                                      for count, value in oracle["posterior_test_auc"].items()}}
           if particles else {}),
        "test_positive_in_history_rate": round(oracle["test_positive_in_history_rate"], 4),
        **same_category_shares(data),
    }))


if __name__ == "__main__":
    main()
