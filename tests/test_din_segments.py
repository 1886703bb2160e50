"""Row operations of the compact history layout, on a hand-made batch with empty samples."""
import numpy as np
import tensorflow as tf

from din_model.segments import max_rows, repeat_rows, sum_rows

# 5 samples: 0 and 4 have no entries, 1 has two, 2 has one, 3 has three.
ROWS = tf.constant([1, 1, 2, 3, 3, 3])
VALUES = tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, 10.0], [-1.0, 0.0]])


def test_sum_and_max_per_sample_with_empty_samples_first_and_last():
    np.testing.assert_allclose(sum_rows(VALUES, ROWS, 5).numpy(),
                               [[0, 0], [4, 6], [5, 6], [15, 18], [0, 0]])
    np.testing.assert_allclose(max_rows(VALUES, ROWS, 5).numpy(),
                               [[0, 0], [3, 4], [5, 6], [9, 10], [0, 0]])


def test_a_batch_without_any_entry_gives_zeros():
    empty = tf.zeros([0, 2])
    np.testing.assert_allclose(sum_rows(empty, tf.zeros([0], tf.int32), 3).numpy(), np.zeros([3, 2]))


def test_repeat_rows_is_a_gather_with_the_gather_gradient():
    per_sample = tf.constant(np.arange(10, dtype=np.float32).reshape(5, 2))
    upstream = tf.constant(np.random.default_rng(0).normal(size=(6, 2)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(per_sample)
        ours = repeat_rows(per_sample, ROWS)
        gathered = tf.gather(per_sample, ROWS)
        ours_loss, gathered_loss = tf.reduce_sum(ours * upstream), tf.reduce_sum(gathered * upstream)
    np.testing.assert_array_equal(ours.numpy(), gathered.numpy())
    np.testing.assert_allclose(tape.gradient(ours_loss, per_sample).numpy(),
                               tf.convert_to_tensor(tape.gradient(gathered_loss, per_sample)).numpy(), rtol=1e-6)
