"""The baseline of our stage-1 speed claims: the reference DIN preprocessing, as the reference runs it.

Rebuilt from the steps of the original DIN scripts and of the TF2 reference's data
preparation, in their per-row pandas/Python style, on the same raw pickles stage 1 reads:
- convert: keep `reviewerID, asin, unixReviewTime`; keep the meta rows of reviewed asins,
  category = `categories[-1][-1]` (a Python lambda per row);
- remap: each of asin, category and reviewerID mapped through a dict of its sorted distinct
  values (`Series.map` with a lambda), meta sorted by asin, reviews sorted by
  (reviewerID, unixReviewTime), the category list of the items;
- dataset: per user (`groupby`), the positives in time order and one negative per positive
  drawn with `random.randint` until it is not one of the user's items; every review after
  the first is a positive and a negative sample whose history is a copy of the earlier
  [item, category] pairs; the last review goes to test, the one before to validation, the
  rest to train; each split shuffled, made a DataFrame, and turned into the in-memory model
  inputs: histories padded to `--maxlen` (the last ones kept, zeros before them, as
  `pad_sequences` does, row by row), targets and labels as numpy arrays.
The padding is a numpy loop equal to Keras' `pad_sequences`, so TensorFlow's import (seconds)
is not counted against the reference.

    python benchmarks/reference_preprocess.py --data-dir DIR [--maxlen 20]

Reads DIR/raw/reviews.pkl and DIR/raw/meta.pkl (benchmarks/preprocess.py makes them) with
`pd.read_pickle` and prints one JSON line: seconds per step, total_s, samples per split,
peak RSS, and the machine (benchmarks/machine.py).
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402


def convert(reviews: pd.DataFrame, meta: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    reviews = reviews[["reviewerID", "asin", "unixReviewTime"]].copy()
    meta = meta[meta["asin"].isin(reviews["asin"].unique())][["asin", "categories"]].copy()
    meta["categories"] = meta["categories"].map(lambda categories: categories[-1][-1])
    return reviews, meta


def build_map(frame: pd.DataFrame, column: str) -> dict:
    keys = sorted(frame[column].unique().tolist())
    mapping = dict(zip(keys, range(len(keys))))
    frame[column] = frame[column].map(lambda key: mapping[key])
    return mapping


def remap(reviews: pd.DataFrame, meta: pd.DataFrame) -> tuple[pd.DataFrame, list, int]:
    asin_map = build_map(meta, "asin")
    build_map(meta, "categories")
    build_map(reviews, "reviewerID")
    meta = meta.sort_values("asin").reset_index(drop=True)
    reviews["asin"] = reviews["asin"].map(lambda asin: asin_map[asin])
    reviews = reviews.sort_values(["reviewerID", "unixReviewTime"]).reset_index(drop=True)
    cate_list = np.array([meta["categories"][i] for i in range(len(asin_map))], dtype=np.int32)
    return reviews, cate_list, len(asin_map)


def build_samples(reviews: pd.DataFrame, cate_list, item_count: int) -> dict[str, list]:
    splits = {"train": [], "val": [], "test": []}
    for _, user_reviews in reviews.groupby("reviewerID"):
        pos_list = user_reviews["asin"].tolist()

        def gen_neg():
            neg = pos_list[0]
            while neg in pos_list:
                neg = random.randint(0, item_count - 1)
            return neg

        neg_list = [gen_neg() for _ in range(len(pos_list))]
        hist = []
        for i in range(1, len(pos_list)):
            hist.append([pos_list[i - 1], cate_list[pos_list[i - 1]]])
            hist_i = hist.copy()
            split = "test" if i == len(pos_list) - 1 else "val" if i == len(pos_list) - 2 else "train"
            splits[split].append([hist_i, [pos_list[i], cate_list[pos_list[i]]], 1])
            splits[split].append([hist_i, [neg_list[i], cate_list[neg_list[i]]], 0])
    return splits


def pad_sequences(sequences, maxlen: int) -> np.ndarray:
    """Keras' pad_sequences(padding='pre', truncating='pre') of [item, category] histories, row by row."""
    padded = np.zeros((len(sequences), maxlen, 2), dtype=np.int32)
    for row, sequence in enumerate(sequences):
        kept = np.asarray(sequence[-maxlen:], dtype=np.int32)
        if len(kept):
            padded[row, -len(kept):] = kept
    return padded


def model_inputs(samples: list, maxlen: int) -> tuple[list, np.ndarray]:
    random.shuffle(samples)
    frame = pd.DataFrame(samples, columns=["hist", "target_item", "label"])
    inputs = [np.array([0.0] * len(frame)), np.array([0] * len(frame)),
              pad_sequences(frame["hist"], maxlen), np.array(frame["target_item"].tolist())]
    return inputs, frame["label"].values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/din-bench-preprocess"))
    parser.add_argument("--maxlen", type=int, default=20, help="history length of the padded inputs")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    random.seed(args.seed)
    timings = {}
    start = step = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal step
        now = time.perf_counter()
        timings[name] = round(now - step, 3)
        step = now

    reviews = pd.read_pickle(args.data_dir / "raw" / "reviews.pkl")
    meta = pd.read_pickle(args.data_dir / "raw" / "meta.pkl")
    lap("read_s")
    reviews, meta = convert(reviews, meta)
    lap("convert_s")
    reviews, cate_list, item_count = remap(reviews, meta)
    lap("remap_s")
    splits = build_samples(reviews, cate_list, item_count)
    lap("samples_s")
    arrays = {name: model_inputs(samples, args.maxlen) for name, samples in splits.items()}
    lap("arrays_s")
    print(json.dumps({
        "benchmark": "reference_preprocess", "maxlen": args.maxlen, **timings,
        "total_s": round(time.perf_counter() - start, 3),
        "samples": {name: len(labels) for name, (_, labels) in arrays.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": sys.version.split()[0], "machine": describe(),
    }))


if __name__ == "__main__":
    main()
