"""The fixed number of history slots per batch of the static-capacity layout, chosen from the data.

The static layout (din_model/model/network.py) gathers a batch's real history entries into a
buffer whose size must be known when the step is compiled (XLA, the NPU). A batch of B
samples holds the sum of B kept history lengths. Were the samples independent, that sum
would be close to normal with mean B * mean and standard deviation sqrt(B) * std of the
per-sample lengths; but the reader shuffles records of ~1,000 consecutive samples (one
user's samples sit together, with growing histories), so batch totals spread wider: on the
default data 10 of 448 batches went over a capacity computed from the per-sample spread.
So the spread is measured on real training batches: `std` is the larger of the per-sample
standard deviation and (standard deviation of batch totals) / sqrt(B), and
`mean * B + Z * sqrt(B) * std` slots (Z = 4) cover nearly every batch at a few percent over
the real work. A batch above the capacity is not cut: the model takes the dense layout
for it (same function, static shapes).

`measure_history_capacity` reads (up to `max_samples` of) the train split in shuffled
batches of the training batch size, as training does. A process that starts several others
on the same data (the NPU ranks' launcher) measures once and passes the rule on in
`capacity_environment`; `measure_history_capacity` in those processes then reads it back
instead of measuring again (only for the same shards, maxlen and batch size).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import tensorflow as tf

from din_common.errors import InputError
from din_common.feature_spec import FeatureSpec

STANDARD_DEVIATIONS = 4.0
MEASURED_VARIABLE = "DIN_HISTORY_CAPACITY"  # a launcher's measured rule, for the processes it starts
SLOT_MULTIPLE = 8  # capacities rounded up to a multiple of this (vector-friendly sizes)


class HistoryCapacity:
    """Slots for a batch of B samples: B * mean + Z * sqrt(B) * std entries, rounded up, at most B * maxlen."""

    def __init__(self, mean_entries: float, std_entries: float, maxlen: int,
                 standard_deviations: float = STANDARD_DEVIATIONS):
        if not 0.0 <= mean_entries <= maxlen or std_entries < 0.0:
            raise InputError(f"history capacity: mean entries per sample must be in [0, maxlen={maxlen}] and the "
                             f"standard deviation >= 0, got mean {mean_entries}, std {std_entries}")
        self.mean_entries = float(mean_entries)
        self.std_entries = float(std_entries)
        self.maxlen = int(maxlen)
        self.standard_deviations = float(standard_deviations)

    def for_batch(self, batch):
        """The capacity for `batch` samples: an int for an int batch, else an int32 scalar tensor."""
        if isinstance(batch, int):
            slots = batch * self.mean_entries + self.standard_deviations * math.sqrt(batch) * self.std_entries
            rounded = int(math.ceil(slots / SLOT_MULTIPLE)) * SLOT_MULTIPLE
            return max(SLOT_MULTIPLE, min(rounded, batch * self.maxlen))
        samples = tf.cast(batch, tf.float32)
        slots = samples * self.mean_entries + self.standard_deviations * tf.sqrt(samples) * self.std_entries
        rounded = tf.cast(tf.math.ceil(slots / SLOT_MULTIPLE), tf.int32) * SLOT_MULTIPLE
        return tf.maximum(SLOT_MULTIPLE, tf.minimum(rounded, batch * self.maxlen))

    def describe(self) -> dict:
        return {"mean_entries": round(self.mean_entries, 3), "std_entries": round(self.std_entries, 3),
                "maxlen": self.maxlen, "standard_deviations": self.standard_deviations}


def capacity_of_batches(batches: list, maxlen: int) -> HistoryCapacity:
    """The capacity rule for the per-sample kept history lengths of real batches (a list of
    1-D arrays; the batch size is the first one's, and only batches of that size give totals)."""
    if not batches or batches[0].size == 0:
        raise InputError("history capacity: the train split holds no samples to measure history lengths on")
    batch_size = batches[0].size
    lengths = np.concatenate(batches)
    totals = [batch.sum() for batch in batches if batch.size == batch_size]
    spread_of_totals = float(np.std(totals)) / math.sqrt(batch_size)
    return HistoryCapacity(float(lengths.mean()), max(float(lengths.std()), spread_of_totals), maxlen)


def _measured_for(spec: FeatureSpec, maxlen: int, batch_size: int) -> dict:
    return {"fingerprint": spec.fingerprint, "maxlen": int(maxlen), "batch_size": int(batch_size)}


def capacity_environment(spec: FeatureSpec, maxlen: int, batch_size: int) -> dict:
    """{MEASURED_VARIABLE: the rule measured here} for the environment of processes training on this data."""
    rule = measure_history_capacity(spec, maxlen, batch_size)
    return {MEASURED_VARIABLE: json.dumps({**_measured_for(spec, maxlen, batch_size),
                                           "mean_entries": rule.mean_entries, "std_entries": rule.std_entries})}


def _handed_down(spec: FeatureSpec, maxlen: int, batch_size: int, environ=os.environ):
    """The rule a launcher measured for exactly this data and batch size, else None."""
    try:
        measured = json.loads(environ.get(MEASURED_VARIABLE) or "{}")
        if measured and all(measured.get(name) == value for name, value in _measured_for(spec, maxlen,
                                                                                         batch_size).items()):
            return HistoryCapacity(float(measured["mean_entries"]), float(measured["std_entries"]), maxlen)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass  # not a rule this code wrote: measure instead
    return None


def measure_history_capacity(spec: FeatureSpec, maxlen: int, batch_size: int, max_samples: int = 262_144) -> HistoryCapacity:
    """The capacity rule measured on shuffled train batches of `batch_size`, at most `max_samples` samples
    (or the one the launcher of this process measured on the same data)."""
    from din_model.data.reader import batches_with_rows, make_dataset

    handed_down = _handed_down(spec, maxlen, batch_size)
    if handed_down is not None:
        return handed_down

    # padded to one static shape (the NPU compiles one graph per shape); the padding is not counted
    # ordered: the same data always gives the same capacity, so the same graph (reproducible runs)
    dataset = batches_with_rows(make_dataset(spec, "train", batch_size, shuffle=True, seed=0, maxlen=maxlen,
                                             history_fields=("hist_item",), ordered=True), batch_size)
    count_entries = tf.function(lambda history: tf.reduce_sum(tf.cast(history > 0, tf.int32), axis=1))
    batches = [count_entries(features["hist_item"]).numpy()[:rows]
               for features, _, rows in dataset.take(max(1, max_samples // batch_size))]
    return capacity_of_batches(batches, maxlen)
