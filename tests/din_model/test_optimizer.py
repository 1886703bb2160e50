"""FusedAdam: Keras' Adam update (checked against the formula in numpy), plain and loss-scaled."""
import numpy as np
import pytest
import tensorflow as tf

from din_model import compat
from din_model.train.optimizer import FusedAdam

LEARNING_RATE, BETA_1, BETA_2, EPSILON = 0.1, 0.9, 0.999, 1e-7


def coefficients(step: int) -> np.ndarray:
    return np.cos(np.arange(6) * (step + 1)).reshape(2, 3).astype(np.float32)


def numpy_adam(weights: np.ndarray, steps: int) -> np.ndarray:
    """Keras' Adam: alpha = lr sqrt(1 - b2^t) / (1 - b1^t); w -= alpha m / (sqrt(v) + eps)."""
    m, v = np.zeros_like(weights), np.zeros_like(weights)
    for t in range(1, steps + 1):
        gradient = coefficients(t - 1)
        m = BETA_1 * m + (1 - BETA_1) * gradient
        v = BETA_2 * v + (1 - BETA_2) * gradient ** 2
        alpha = LEARNING_RATE * np.sqrt(1 - BETA_2 ** t) / (1 - BETA_1 ** t)
        weights = weights - alpha * m / (np.sqrt(v) + EPSILON)
    return weights


def trained_weights(loss_scaled: bool, steps: int):
    weights = tf.Variable(np.arange(-3, 3, dtype=np.float32).reshape(2, 3))
    optimizer = FusedAdam(learning_rate=LEARNING_RATE, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPSILON)
    if loss_scaled:
        optimizer = compat.LossScaleOptimizer(optimizer)
    compat.build_optimizer(optimizer, [weights])

    @tf.function
    def step(coefficient):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(weights * coefficient)  # gradient: the coefficients
            scaled = compat.scale_loss(optimizer, loss)
        compat.apply_gradients(optimizer, tape.gradient(scaled, [weights]), [weights])

    for t in range(steps):
        step(tf.constant(coefficients(t)))
    return weights.numpy(), optimizer


@pytest.mark.parametrize("loss_scaled", [False, True])
def test_fused_adam_follows_the_adam_update(loss_scaled):
    weights, optimizer = trained_weights(loss_scaled, steps=6)
    expected = numpy_adam(np.arange(-3, 3, dtype=np.float32).reshape(2, 3), steps=6)
    assert not np.allclose(weights, np.arange(-3, 3).reshape(2, 3))  # it did move
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
    variables = optimizer.variables() if callable(optimizer.variables) else optimizer.variables  # Keras 2: a method
    slots = [v for v in variables if tuple(v.shape) == (2, 3)]
    assert len(slots) == 2  # momentum and velocity, as checkpoints expect
