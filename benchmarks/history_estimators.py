"""How much of the oracle's signal the features stage 1 writes can carry: counting rules on the test samples.

    python benchmarks/history_estimators.py --data-dir DIR [--decay 1.0,0.8,0.6] [--smoothing 1.0]

DIR is a stage-1 data dir of synthetic data (`raw/oracle.json` holds the generator's knobs and the
oracle's AUC). Every estimator scores the very samples `EvaluateDIN` scores (`sequences/test`, the
positive and the negative of each test user) from what a model sees: the history's items, categories
and time gaps, the target's item and category; item popularity is counted on the train split's
positives. No estimator knows a user's latent interests; the oracle does. Printed as one JSON line:
the test AUC of each estimator and the share of the popularity-to-oracle gap it closes, on
`EvaluateDIN`'s scale (its popularity AUC, the oracle's AUC from oracle.json).

- `popularity`: the target's count as a train positive (EvaluateDIN's `popularity_test_auc`);
- `bag`: the smoothed share of the target's category in the history times the target's smoothed
  popularity within its category (oracle.json's bag, here on stage 1's samples);
- `recent_bag`: the same over the last 5 history entries;
- `order_aware/decay=λ`: the generator's own form with everything observable plugged in:
  within-category popularity × (s·[target category = last entry's] + (1 − s)·(e·p_c + (1 − e)·share_λ(c))),
  s = stickiness · 0.5^(gap of the last entry / half-life) from the knobs, e the exploration rate,
  p_c the category's share of train positives, share_λ the smoothed share of c in the history with
  the entry k steps from the end weighted λ^k (the drift makes old entries stale), smoothed by
  `--smoothing` pseudo-entries of p_c.
  It is the planted model with the latent interests estimated from the history: a yardstick for
  what a model of these features can reach, not a proof of a bound.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from din_common.metrics import auc  # noqa: E402
from pipeline.raw.synthetic import KNOBS, RECENT_BAG_LENGTH  # noqa: E402

DAY_SECONDS = 86400


def read_split(data_dir: Path, split: str):
    return pq.ParquetDataset(sorted((data_dir / "sequences" / split).glob("*.parquet"))).read()


class Histories:
    """The test samples' histories flattened: one row per entry, with its sample and position from the end."""

    def __init__(self, table):
        self.samples = table.num_rows
        lengths = pc.list_value_length(table["hist_cate"]).to_numpy(zero_copy_only=False).astype(np.int64)
        self.lengths = lengths
        self.sample = np.repeat(np.arange(self.samples), lengths)
        self.cate = pc.list_flatten(table["hist_cate"]).to_numpy().astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.from_end = (starts + lengths)[self.sample] - 1 - np.arange(self.sample.size)
        gaps = pc.list_flatten(table["hist_gap"]).to_numpy().astype(np.int64)
        has = lengths > 0
        self.last_cate = np.zeros(self.samples, np.int64)
        self.last_gap_days = np.full(self.samples, np.inf)
        self.last_cate[has] = self.cate[(starts + lengths - 1)[has]]
        self.last_gap_days[has] = gaps[(starts + lengths - 1)[has]] / DAY_SECONDS

    def weighted_share(self, target_cate, weights, category_mix, smoothing):
        """Share of each sample's target category among its history entries weighted by `weights`, smoothed by
        `smoothing` pseudo-entries of the overall category mix."""
        matching = np.bincount(self.sample, weights * (self.cate == target_cate[self.sample]), minlength=self.samples)
        total = np.bincount(self.sample, weights, minlength=self.samples)
        return (matching + smoothing * category_mix[target_cate]) / (total + smoothing)


def estimators(data_dir: Path, decays: list[float], smoothing: float) -> dict:
    train = read_split(data_dir, "train")
    test = read_split(data_dir, "test")
    knobs = {**KNOBS, **json.loads((data_dir / "raw" / "oracle.json").read_text()).get("knobs", {})}
    labels = test["label"].to_numpy()
    target_item = test["target_item"].to_numpy().astype(np.int64)
    target_cate = test["target_cate"].to_numpy().astype(np.int64)

    positives = train.filter(pc.equal(train["label"], 1))
    items = int(max(pc.max(train["target_item"]).as_py(), target_item.max())) + 1
    cates = int(max(pc.max(train["target_cate"]).as_py(), target_cate.max())) + 1
    item_count = np.bincount(positives["target_item"].to_numpy(), minlength=items).astype(np.float64)
    item_cate = np.zeros(items, np.int64)
    for split in (train, test):  # every item's category, from the samples' targets
        item_cate[split["target_item"].to_numpy()] = split["target_cate"].to_numpy()
    cate_count = np.bincount(item_cate, item_count, minlength=cates)
    cate_items = np.bincount(item_cate[1:], minlength=cates)  # id 0 is padding
    within = (item_count + 1.0) / (cate_count[item_cate] + np.maximum(cate_items[item_cate], 1))
    category_mix = (cate_count + 1.0) / (cate_count.sum() + cates)

    history = Histories(test)

    def bag(weights):  # oracle.json's bag estimator, its share smoothed by one pseudo-entry
        return history.weighted_share(target_cate, weights, category_mix, 1.0) * within[target_item]

    scores = {"popularity": item_count[target_item], "bag": bag(np.ones(history.sample.size)),
              "recent_bag": bag((history.from_end < RECENT_BAG_LENGTH).astype(np.float64))}
    half_life = knobs["stickiness_half_life_days"]
    stickiness = knobs["stickiness"] * (0.5 ** (history.last_gap_days / half_life) if half_life else 1.0)
    stickiness = np.where(history.lengths > 0, stickiness, 0.0)
    exploration = knobs["exploration"]
    for decay in decays:
        share = history.weighted_share(target_cate, decay ** history.from_end.astype(np.float64), category_mix,
                                       smoothing)
        category_term = (stickiness * (target_cate == history.last_cate)
                         + (1 - stickiness) * (exploration * category_mix[target_cate] + (1 - exploration) * share))
        scores[f"order_aware/decay={decay:g}"] = within[target_item] * category_term
    return {name: auc(labels, values) for name, values in scores.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--decay", default="1.0,0.8,0.6")
    parser.add_argument("--smoothing", type=float, default=1.0,
                        help="pseudo-entries of the category mix in the order-aware share (the bags use 1)")
    args = parser.parse_args(argv)
    aucs = estimators(args.data_dir, [float(value) for value in args.decay.split(",")], args.smoothing)
    oracle = json.loads((args.data_dir / "raw" / "oracle.json").read_text())["oracle_test_auc"]
    gap = oracle - aucs["popularity"]
    print(json.dumps({"data_dir": str(args.data_dir), "smoothing": args.smoothing, "oracle_test_auc": round(oracle, 4),
                      **{name: {"test_auc": round(value, 4), "gap_closed": round((value - aucs["popularity"]) / gap, 3)}
                         for name, value in aucs.items()}}))


if __name__ == "__main__":
    main()
