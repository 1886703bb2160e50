"""Row operations of the compact history layouts: N entries grouped by the sample they belong to.

`rows[i]` is the sample of entry i, sorted ascending (as `tf.where` over a `[B, L]` mask
gives them). Two families of the same three operations (sum and max per sample, repeat
per entry), chosen by `row_operations(static)`:
- dynamic (the CPU's compact layout): sorted segment kernels, whose output has max(rows) + 1
  rows (padded to the sample count), and a gather whose gradient is a sorted segment sum
  instead of TensorFlow's unsorted scatter; together ~9 % faster training steps on CPU
  in A/B runs. Data-dependent shapes: not for XLA or the NPU.
- static (the static-capacity layout): unsorted segment kernels with the sample count as
  `num_segments`, so every shape is known when the graph is compiled.

`gather_history` builds the static layout: the real entries of a `[B, L]` mask in a buffer
of fixed capacity.
"""
from __future__ import annotations

import collections

import tensorflow as tf

RowOperations = collections.namedtuple("RowOperations", ["sum", "max", "repeat"])


def _pad_to_samples(per_segment: tf.Tensor, samples) -> tf.Tensor:
    # Sorted segment ops return max(rows) + 1 rows; trailing samples without entries are zeros.
    padding = [[0, samples - tf.shape(per_segment)[0]]] + [[0, 0]] * (len(per_segment.shape) - 1)
    return tf.pad(per_segment, padding)


def sum_rows(values: tf.Tensor, rows: tf.Tensor, samples) -> tf.Tensor:
    """[samples, ...]: the sum of each sample's entries (zeros for a sample with none)."""
    return _pad_to_samples(tf.math.segment_sum(values, rows), samples)


def max_rows(values: tf.Tensor, rows: tf.Tensor, samples) -> tf.Tensor:
    """[samples, ...]: the max of each sample's entries (0 for a sample with none)."""
    return _pad_to_samples(tf.math.segment_max(values, rows), samples)


@tf.custom_gradient
def repeat_rows(per_sample: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """[N, ...]: each entry's row of `per_sample`; its gradient sums the entries back per sample."""
    def gradient(upstream):
        return sum_rows(upstream, rows, tf.shape(per_sample)[0]), None

    return tf.gather(per_sample, rows), gradient


def static_sum_rows(values: tf.Tensor, rows: tf.Tensor, samples) -> tf.Tensor:
    """`sum_rows` with an output shape that does not depend on the rows' values."""
    return tf.math.unsorted_segment_sum(values, rows, samples)


def static_max_rows(values: tf.Tensor, rows: tf.Tensor, samples) -> tf.Tensor:
    """`max_rows` with a static output shape; a sample without entries gets 0."""
    maxima = tf.math.unsorted_segment_max(values, rows, samples)
    has_entries = tf.math.unsorted_segment_max(tf.ones_like(values), rows, samples) > 0
    return tf.where(has_entries, maxima, tf.zeros_like(maxima))


def static_repeat_rows(per_sample: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    return tf.gather(per_sample, rows)


def row_operations(static: bool) -> RowOperations:
    if static:
        return RowOperations(static_sum_rows, static_max_rows, static_repeat_rows)
    return RowOperations(sum_rows, max_rows, repeat_rows)


def dimension(tensor: tf.Tensor, axis: int):
    """The size of an axis: a Python int when the graph knows it, else a scalar tensor.

    The static layout's shapes must stay known at trace time: under XLA the gradient of a
    `tf.cond` stands in for the untaken branch's intermediates with tensors of their static
    shapes, and fails on an unknown one.
    """
    size = tensor.shape[axis]
    return int(size) if size is not None else tf.shape(tensor)[axis]


def gather_history(mask: tf.Tensor, capacity) -> tuple[tf.Tensor, tf.Tensor]:
    """The real entries of a `[B, L]` mask in a buffer of `capacity` slots, in row-major order.

    Returns (positions, rows), both `[capacity]` int32: slot c holds the c-th real entry,
    at flat position `positions[c]` of the `[B * L]` history and belonging to sample
    `rows[c]`. The slots after the last real entry are empty: position 0 and row B, one
    past the last sample, so a reduction over B + 1 samples collects them apart and `rows`
    stays sorted. The caller checks that the mask has at most `capacity` entries; any
    beyond it would land in no slot.
    """
    batch, length = dimension(mask, 0), dimension(mask, 1)
    real = tf.reshape(mask, [-1])
    slot = tf.cumsum(tf.cast(real, tf.int32)) - 1  # the slot of each real entry
    # Padding (and anything past the capacity) is sent to one extra slot, dropped below;
    # every other slot receives exactly one position, so the max is that position.
    target = tf.where(real & (slot < capacity), slot, capacity)
    flat_positions = tf.range(batch * length, dtype=tf.int32)
    positions = tf.math.unsorted_segment_max(flat_positions, target, capacity + 1)[:capacity]
    filled = tf.range(capacity, dtype=tf.int32) < tf.reduce_sum(tf.cast(real, tf.int32))
    rows = tf.where(filled, positions // length, batch)
    return tf.where(filled, positions, 0), rows
