"""Test helpers: tiny TFRecord shards and feature_spec.json in a temporary directory.

Written with `tf.train.Example` directly from data/README.md, independently of the
stage-1 writer, so the reader is checked against the documented layout itself.
`random_samples` draws Amazon-like samples (geometric history lengths) whose label is
learnable by attention: positive iff the target's category occurs in the history; their
`hist_gap` grows from the most recent entry back (days to months between reviews).
`RecordingNpuDevice` is the old name of the Ascend adapter stand-in (now `tests.helpers.npu_standin`).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from din_common.feature_spec import FeatureSpec, SplitInfo
from tests.helpers.npu_standin import NpuStandin


def category_of(items: np.ndarray, n_cats: int) -> np.ndarray:
    return (items % n_cats + 1).astype(np.int32)


MEAN_REVIEW_INTERVAL_S = 30 * 86400


def gaps_before_target(intervals: np.ndarray) -> np.ndarray:
    """hist_gap of one history whose consecutive reviews (and the target) are `intervals` seconds apart."""
    return np.cumsum(intervals[::-1])[::-1].astype(np.int32)


def random_samples(n: int, *, maxlen: int = 10, n_items: int = 50, n_cats: int = 5, n_users: int = 20,
                   mean_history: float = 4.0, seed: int = 0) -> dict:
    """A dict of columns: user_id, target_item, target_cate, label [n] and hist_item/hist_cate/hist_gap (lists)."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(1.0 / mean_history, size=n), maxlen).astype(np.int32)
    flat_items = rng.integers(1, n_items + 1, size=int(lengths.sum()), dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    hist_item = [flat_items[offsets[i]:offsets[i + 1]] for i in range(n)]
    target_item = rng.integers(1, n_items + 1, size=n, dtype=np.int32)
    target_cate = category_of(target_item, n_cats)
    rows = np.repeat(np.arange(n), lengths)
    seen = np.zeros(n, dtype=bool)
    np.logical_or.at(seen, rows, category_of(flat_items, n_cats) == target_cate[rows])
    user_id = rng.integers(1, n_users + 1, size=n, dtype=np.int32)
    # Drawn last, so the other columns are what they were before hist_gap existed.
    intervals = rng.exponential(MEAN_REVIEW_INTERVAL_S, size=int(lengths.sum())).astype(np.int64) + 1
    return {
        "user_id": user_id,
        "hist_item": hist_item,
        "hist_cate": [category_of(items, n_cats) for items in hist_item],
        "hist_gap": [gaps_before_target(intervals[offsets[i]:offsets[i + 1]]) for i in range(n)],
        "target_item": target_item,
        "target_cate": target_cate,
        "label": seen.astype(np.int32),
    }


def take_rows(samples: dict, rows: np.ndarray) -> dict:
    return {name: ([values[i] for i in rows] if isinstance(values, list) else values[rows])
            for name, values in samples.items()}


def _bytes_feature(values: np.ndarray) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[np.asarray(values, "<i4").tobytes()]))


def prebatch_example(samples: dict) -> bytes:
    """One serialized Example holding all of `samples` (one pre-batch)."""
    lengths = np.array([len(h) for h in samples["hist_item"]], dtype=np.int32)
    feature = {"size": tf.train.Feature(int64_list=tf.train.Int64List(value=[len(lengths)])),
               "hist_len": _bytes_feature(lengths)}
    for name in ("hist_item", "hist_cate", "hist_gap"):
        flat = np.concatenate(samples[name]) if len(lengths) else np.zeros(0, np.int32)
        feature[name] = _bytes_feature(flat)
    for name in ("target_item", "target_cate", "user_id", "label"):
        feature[name] = _bytes_feature(samples[name])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path: Path, samples: dict, prebatch: int) -> int:
    n = len(samples["label"])
    records = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for start in range(0, n, prebatch):
            writer.write(prebatch_example(take_rows(samples, np.arange(start, min(n, start + prebatch)))))
            records += 1
    return records


def write_fixture(root: str | Path, splits: dict[str, dict], *, maxlen: int = 10, prebatch: int = 8,
                  num_shards: int = 2, n_items: int = 50, n_cats: int = 5, n_users: int = 20,
                  fingerprint: str = "fixture") -> Path:
    """Write `<root>/tfrecords/{split}/part-*.tfrecord` + feature_spec.json; return the spec path.

    Samples go to shard `user_id % num_shards` as in stage 1.
    """
    tfrecords = Path(root) / "tfrecords"
    spec_splits = {}
    for split, samples in splits.items():
        (tfrecords / split).mkdir(parents=True, exist_ok=True)
        files, records = [], 0
        for shard in range(num_shards):
            rows = np.flatnonzero(samples["user_id"] % num_shards == shard)
            name = f"{split}/part-{shard:05d}.tfrecord"
            records += write_shard(tfrecords / name, take_rows(samples, rows), prebatch)
            files.append(name)
        spec_splits[split] = {"samples": len(samples["label"]), "records": records, "files": files}
    spec = {"format_version": 2, "maxlen": maxlen, "prebatch": prebatch, "num_shards": num_shards,
            "n_items": n_items, "n_cats": n_cats, "n_users": n_users, "splits": spec_splits,
            "fingerprint": fingerprint}
    spec_path = tfrecords / "feature_spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    return spec_path


def sizes_spec(*, maxlen: int = 5, n_items: int = 40, n_cats: int = 6, train_samples: int = 0) -> FeatureSpec:
    """A FeatureSpec of sizes only, no shard: what a model is built for, and the train split's sample count."""
    spec = FeatureSpec.without_shards(maxlen=maxlen, n_items=n_items, n_cats=n_cats)
    return dataclasses.replace(spec, splits={"train": SplitInfo(samples=train_samples, files=())})


def autotune_enabled(options: tf.data.Options) -> bool:
    """Whether these tf.data options leave the autotune model on (None means TensorFlow's default: on)."""
    enabled = options.autotune.enabled if hasattr(options, "autotune") else options.experimental_optimization.autotune
    return enabled is not False


def write_random_fixture(root: str | Path, *, sizes=(("train", 400), ("val", 120), ("test", 120)),
                         maxlen: int = 10, prebatch: int = 8, num_shards: int = 2, n_items: int = 50,
                         n_cats: int = 5, n_users: int = 20, mean_history: float = 4.0, seed: int = 0) -> Path:
    splits = {split: random_samples(n, maxlen=maxlen, n_items=n_items, n_cats=n_cats, n_users=n_users,
                                    mean_history=mean_history, seed=seed + i)
              for i, (split, n) in enumerate(sizes)}
    return write_fixture(root, splits, maxlen=maxlen, prebatch=prebatch, num_shards=num_shards,
                         n_items=n_items, n_cats=n_cats, n_users=n_users)


class _LegacyCallSummary(Sequence):
    """The stand-in's calls in the old RecordingNpuDevice form: names, and ("open", precision_mode)."""

    def __init__(self, standin: NpuStandin):
        self._standin = standin

    def _summary(self) -> list:
        return [(name, details["options"].get("precision_mode") if "options" in details else "reused")
                if name == "open" else name for name, details in self._standin.calls]

    def __getitem__(self, index):
        return self._summary()[index]

    def __len__(self) -> int:
        return len(self._standin.calls)


def nan_at_step(make_train_step, step: int):
    """A `make_train_step` whose train steps return a nan loss at the `step`-th step (1-based), counted in the
    graph: several steps may run in one call (din_model/train/steps.py make_step_loop)."""
    def make(*args, **kwargs):
        train_step, steps = make_train_step(*args, **kwargs), tf.Variable(0)

        def poisoned(features, labels):
            steps.assign_add(1)
            loss = train_step(features, labels)
            return tf.where(steps == step, loss * float("nan"), loss)

        return poisoned

    return make


def RecordingNpuDevice(monkeypatch):
    """Deprecated alias, kept for tests not yet moved to `tests.helpers.npu_standin`: the `npu_device` module of a fresh
    stand-in, with `.calls` summarised as ["global_options", ("open", precision_mode), "as_default", ...].

    Installing only this top module in sys.modules serves `import npu_device` and attribute access
    (`npu_device.train.optimizer.NpuLossScaleOptimizer`); `from npu_device.x import y` needs the
    `npu_standin` fixture, which installs every submodule. `monkeypatch` undoes what its `as_default()`
    replaces in TensorFlow when the test ends.
    """
    standin = NpuStandin().undo_with(monkeypatch)
    standin.module.__dict__["calls"] = _LegacyCallSummary(standin)
    return standin.module
