"""Row operations of the compact history layouts and the static buffer, on hand-made batches with empty samples."""
import numpy as np
import tensorflow as tf

from din_model.model.segments import gather_history, max_rows, repeat_rows, static_max_rows, static_sum_rows, sum_rows

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


def test_static_sum_and_max_give_the_same_rows_with_static_shapes():
    np.testing.assert_allclose(static_sum_rows(VALUES, ROWS, 5).numpy(), sum_rows(VALUES, ROWS, 5).numpy())
    np.testing.assert_allclose(static_max_rows(VALUES, ROWS, 5).numpy(), max_rows(VALUES, ROWS, 5).numpy())
    assert static_sum_rows(VALUES, ROWS, 5).shape == (5, 2)


def test_gather_history_fills_slots_in_row_major_order_and_marks_the_empty_ones():
    mask = tf.constant([[False, False, False], [True, True, False], [True, False, False], [True, True, True]])
    positions, rows = gather_history(mask, 8)  # 6 entries, 2 empty slots
    np.testing.assert_array_equal(positions.numpy(), [3, 4, 6, 9, 10, 11, 0, 0])
    np.testing.assert_array_equal(rows.numpy(), [1, 1, 2, 3, 3, 3, 4, 4])  # empty slots: sample 4 = B
    exact_positions, exact_rows = gather_history(mask, 6)
    np.testing.assert_array_equal(exact_positions.numpy(), [3, 4, 6, 9, 10, 11])
    np.testing.assert_array_equal(exact_rows.numpy(), ROWS.numpy())


def test_gather_history_under_xla_matches_the_eager_result():
    mask = tf.constant(np.random.default_rng(1).random((7, 5)) < 0.4)
    compiled = tf.function(lambda m: gather_history(m, 24), jit_compile=True)(mask)
    for ours, expected in zip(compiled, gather_history(mask, 24)):
        np.testing.assert_array_equal(ours.numpy(), expected.numpy())
    real = np.argwhere(mask.numpy())
    np.testing.assert_array_equal(compiled[0].numpy()[:len(real)], real[:, 0] * 5 + real[:, 1])
