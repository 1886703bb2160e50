"""Measure the synthetic generator: speed, size and the planted-signal AUCs.

Prints one JSON line: generation seconds, n_reviews, the oracle / item-popularity /
bag-of-history test AUCs and the share of the popularity->oracle gap that the
bag-of-history estimator closes. Defaults: full Amazon Electronics scale.

    python benchmarks/synthetic_signal.py
    python benchmarks/synthetic_signal.py --users 20000 --items 6500 --categories 300
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.synthetic import generate  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=192403)
    parser.add_argument("--items", type=int, default=63001)
    parser.add_argument("--categories", type=int, default=801)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    data = generate(args.users, args.items, args.categories, args.seed)
    seconds = time.perf_counter() - start
    oracle = data.oracle
    gap = oracle["oracle_test_auc"] - oracle["popularity_test_auc"]
    closure = (oracle["history_bag_test_auc"] - oracle["popularity_test_auc"]) / gap if gap > 0 else None
    per_user = data.reviews.groupby("reviewerID").size()
    print(json.dumps({
        "users": args.users, "items": args.items, "categories": args.categories, "seed": args.seed,
        "generate_seconds": round(seconds, 2),
        "n_reviews": oracle["n_reviews"],
        "reviews_per_user_mean": round(float(per_user.mean()), 3),
        "reviews_per_user_max": int(per_user.max()),
        "oracle_test_auc": round(oracle["oracle_test_auc"], 4),
        "oracle_prob_only_test_auc": round(oracle["oracle_prob_only_test_auc"], 4),
        "popularity_test_auc": round(oracle["popularity_test_auc"], 4),
        "history_bag_test_auc": round(oracle["history_bag_test_auc"], 4),
        "oracle_minus_popularity": round(gap, 4),
        "history_bag_gap_closure": None if closure is None else round(closure, 3),
        "test_positive_in_history_rate": round(oracle["test_positive_in_history_rate"], 4),
    }))


if __name__ == "__main__":
    main()
