"""How well the static layout's capacity fits real batches; prints one JSON line.

    python benchmarks/capacity.py --data-dir DIR [--maxlen 20] [--batch-size 4096] [--epochs 5]

Measures the capacity rule as `build_model` does (din_model/model/history_capacity.py), then
counts the real history entries of every shuffled training batch of `--epochs` epochs
(as training reads them): how many batches go over the capacity (they take the dense
layout), the capacity's slots per real entry, and the dense layout's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--maxlen", type=int, default=None, help="history entries kept (default: the shards')")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    import tensorflow as tf

    from din_model.model.history_capacity import measure_history_capacity
    from din_common.feature_spec import FeatureSpec
    from din_model.data.reader import effective_maxlen, make_dataset

    spec = FeatureSpec.read(args.data_dir / "tfrecords" / "feature_spec.json")
    maxlen = effective_maxlen(spec, args.maxlen)
    rule = measure_history_capacity(spec, maxlen, args.batch_size)
    capacity = rule.for_batch(args.batch_size)
    count = tf.function(lambda history: tf.reduce_sum(tf.cast(history > 0, tf.int32)))
    totals = np.array([int(count(features["hist_item"])) for epoch in range(args.epochs)
                       for features, _ in make_dataset(spec, "train", args.batch_size, shuffle=True, seed=epoch + 1,
                                                       drop_remainder=True, maxlen=maxlen)])
    print(json.dumps({"maxlen": maxlen, "batch_size": args.batch_size, **rule.describe(), "capacity": capacity,
                      "batches": len(totals), "entries_per_batch_mean": round(float(totals.mean())),
                      "entries_per_batch_max": int(totals.max()), "batches_over_capacity": int((totals > capacity).sum()),
                      "capacity_slots_per_entry": round(capacity / float(totals.mean()), 3),
                      "dense_slots_per_entry": round(args.batch_size * maxlen / float(totals.mean()), 2)}))


if __name__ == "__main__":
    main()
