"""FusedAdam: the same updates and slots as Keras' Adam."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from din_model.optimizer import FusedAdam


def updated_weights(optimizer_class, loss_scaled: bool):
    weights = keras.Variable(np.arange(-3, 3, dtype=np.float32).reshape(2, 3))
    optimizer = optimizer_class(learning_rate=0.1)
    if loss_scaled:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build([weights])

    @tf.function
    def step(gradient):
        optimizer.apply([gradient], [weights])

    for t in range(6):
        step(tf.constant(np.cos(np.arange(6) * (t + 1)).reshape(2, 3), tf.float32))
    slots = [v.numpy() for v in optimizer.variables if v.shape == weights.shape]
    return weights.numpy(), slots


@pytest.mark.parametrize("loss_scaled", [False, True])
def test_fused_adam_matches_keras_adam(loss_scaled):
    fused, fused_slots = updated_weights(FusedAdam, loss_scaled)
    plain, plain_slots = updated_weights(keras.optimizers.Adam, loss_scaled)
    assert not np.allclose(fused, np.arange(-3, 3).reshape(2, 3))  # it did move
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)
    assert len(fused_slots) == len(plain_slots) == 2  # momentum and velocity, as checkpoints expect
    for mine, theirs in zip(fused_slots, plain_slots):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-7)
