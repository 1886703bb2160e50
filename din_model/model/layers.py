"""Keras layers of DIN: Dice, PReLU, a dense stack, and the DIN attention pooling.

- `Dice` (paper eq. 9): p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps)),
  f(s) = p(s) * s + (1 - p(s)) * alpha * s; batch statistics while training, moving
  averages at inference (like batch normalisation, without scale and shift).
- `PReLU`: max(s, 0) + alpha * min(s, 0), one alpha per unit.
- `Dropout`: inverted dropout drawing one random byte per value (rate in 1/256 steps); on the NPU
  `tf.nn.dropout`, which the Ascend adapter replaces with its DropOutGenMask / DropOutDoMask ops.
- `DenseStack`: Dense -> activation -> dropout, per hidden size.
- `AttentionPooling`: the DIN activation unit, an MLP over [q, k, q - k, q * k] giving one
  score per history position; padded positions (id 0) get weight 0 (or -inf before a
  softmax); the output is the score-weighted sum of the history embeddings. Dice in the
  unit takes its batch statistics over the real history entries only, in every layout.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from din_model.compat import keras, no_autocast, random_words
from din_model.model.recompute import recomputing
from din_model.model.segments import dimension, row_operations

MASKED_SCORE = -1e9


def _per_unit_shape(input_shape) -> tuple[int]:
    return (int(input_shape[-1]),)


def leaf_weights(prefix: str, layer) -> dict:
    """A layer's own weights as {prefix_shortname: variable}, the same names on Keras 2 and 3.

    Keras 2 names a variable by its full scope ("din/mlp/dense_3/kernel:0"), Keras 3 by its
    short name ("kernel"); the last path component is the same on both.
    """
    return {f"{prefix}_{variable.name.split('/')[-1].split(':')[0]}": variable for variable in layer.weights}


class PReLU(keras.layers.Layer):
    """Parametric ReLU with one slope per unit (shared over batch and sequence axes)."""

    def __init__(self, alpha_init: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.alpha_init = alpha_init

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=_per_unit_shape(input_shape),
                                     initializer=keras.initializers.Constant(self.alpha_init))
        super().build(input_shape)  # marks it built: Keras 2 would build again on the first call

    def call(self, inputs):
        alpha = tf.cast(self.alpha, inputs.dtype)
        # One slope per value (1 or alpha) and one product: fewer element-wise passes,
        # forward and backward, than relu(x) - alpha * relu(-x) (measured in docs/performance.md,
        # "What the trainer does").
        return inputs * tf.where(inputs > 0, tf.ones_like(alpha), alpha)


class Dice(keras.layers.Layer):
    """Data-adaptive activation of the DIN paper; statistics over every axis but the last."""

    def __init__(self, epsilon: float = 1e-8, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.momentum = momentum

    def build(self, input_shape):
        shape = _per_unit_shape(input_shape)
        self.alpha = self.add_weight(name="alpha", shape=shape, initializer="zeros")
        # autocast=False: under a mixed policy the statistics stay float32 when read in call,
        # like the batch statistics they are blended with (as in Keras' BatchNormalization).
        self.moving_mean = self.add_weight(name="moving_mean", shape=shape, initializer="zeros", trainable=False,
                                           **no_autocast())
        self.moving_variance = self.add_weight(name="moving_variance", shape=shape, initializer="ones",
                                               trainable=False, **no_autocast())
        super().build(input_shape)

    def call(self, inputs, training=False, valid=None):
        """`valid` (bool, the shape of `inputs` without the last axis): which values the batch
        statistics count; slots that hold no history entry do not."""
        values = tf.cast(inputs, tf.float32)
        if training:
            axes = list(range(len(values.shape) - 1))
            if valid is None:
                mean, variance = tf.nn.moments(values, axes=axes)
                counted = True
            else:
                mean, variance = _masked_moments(values, tf.cast(valid, tf.float32)[..., None], axes)
                counted = tf.reduce_any(valid)  # statistics of nothing (e.g. a discarded buffer) are not learnt
            if not recomputing():  # once per batch, not again when a backward pass recomputes the layer
                self._update_moving_statistics(mean, variance, counted)
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            variance = tf.convert_to_tensor(self.moving_variance)
        probability = tf.sigmoid((values - mean) * tf.math.rsqrt(variance + self.epsilon))
        probability = tf.cast(probability, inputs.dtype)
        alpha = tf.cast(self.alpha, inputs.dtype)
        return probability * inputs + (1.0 - probability) * alpha * inputs

    def _update_moving_statistics(self, mean, variance, counted=True):
        keep = tf.where(counted, self.momentum, 1.0)
        self.moving_mean.assign(keep * self.moving_mean + (1.0 - keep) * mean)
        self.moving_variance.assign(keep * self.moving_variance + (1.0 - keep) * variance)


def _masked_moments(values, weights, axes):
    """Mean and variance over `axes` of the values whose weight is 1 (none: 0 and 0)."""
    count = tf.maximum(tf.reduce_sum(weights, axis=axes), 1.0)
    mean = tf.reduce_sum(values * weights, axis=axes) / count
    return mean, tf.reduce_sum(tf.square(values - mean) * weights, axis=axes) / count


def make_activation(name: str, dtype=None) -> keras.layers.Layer:
    if name == "dice":
        return Dice(dtype=dtype)
    if name == "prelu":
        return PReLU(dtype=dtype)
    if name == "sigmoid":
        return keras.layers.Activation("sigmoid", dtype=dtype)
    raise ValueError(f"unknown activation {name!r}")


class Dropout(keras.layers.Layer):
    """Inverted dropout whose keep decisions come from one random byte per value.

    Four decisions per 32-bit random word make the random numbers a quarter of what
    Keras' Dropout draws (one float each), and it compiles well under XLA, where Keras' Dropout
    does not (figures: docs/performance.md, "Training speed").
    The rate is therefore rounded to a multiple of 1/256 (0.5 stays exact; 0.1 becomes
    26/256 = 0.1016); kept values are scaled by 1 / (kept fraction) so the expected output
    equals the input. The stateless seed is (layer seed, call counter), the counter a
    non-trainable weight (checkpointed, the same on both Keras versions): a new mask every call.

    `on_npu`: `tf.nn.dropout` at the exact rate instead. The graph engine does not take the stateless
    random ops (`tf.random.stateless_uniform` is "not supported" in Huawei's TF2.6_api_support_list.xlsx),
    and the adapter's `as_default()` replaces `tf.nn.dropout` by its own NPU dropout (din_model/device/npu_ops.py).
    The seed weight still exists, so checkpoints have the same weights on every device.
    """

    def __init__(self, rate: float, seed: int | None = None, on_npu: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.on_npu = on_npu
        self.dropped_of_256 = int(round(rate * 256))
        self.seed = int(np.random.randint(2 ** 31 - 1)) if seed is None else int(seed)

    def build(self, input_shape):
        self.seed_state = self.add_weight(name="seed_state", shape=(2,), dtype="int64", trainable=False,
                                          initializer=keras.initializers.Constant([self.seed, 0]))
        super().build(input_shape)

    def call(self, inputs, training=False):
        if not training or self.dropped_of_256 == 0:
            return inputs
        if self.on_npu:  # looked up at call time: the adapter's replacement, once it has opened the NPU
            return tf.nn.dropout(inputs, rate=self.rate)
        seed = tf.convert_to_tensor(self.seed_state)
        self.seed_state.assign_add(tf.constant([0, 1], tf.int64))
        values = tf.size(inputs)
        words = random_words([(values + 3) // 4], seed)
        random_bytes = tf.reshape(tf.bitcast(words, tf.uint8)[:values], tf.shape(inputs))
        scale = tf.cast(256.0 / (256 - self.dropped_of_256), inputs.dtype)
        # A mask of 0 or scale times the inputs: the backward pass is one product (no select).
        return inputs * tf.where(random_bytes >= self.dropped_of_256, scale, tf.zeros_like(scale))


class DenseStack(keras.layers.Layer):
    """Dense -> activation -> dropout for each hidden size (`dropout_last_only`: after the last one only)."""

    def __init__(self, units: tuple[int, ...], activation: str, dropout: float = 0.0, dropout_last_only: bool = False,
                 on_npu: bool = False, **kwargs):
        super().__init__(**kwargs)
        dtype = kwargs.get("dtype")
        self.dense_layers = [keras.layers.Dense(size, dtype=dtype) for size in units]
        self.activations = [make_activation(activation, dtype) for _ in units]
        with_dropout = [dropout > 0 and (index == len(units) - 1 or not dropout_last_only) for index in range(len(units))]
        self.dropouts = [Dropout(dropout, on_npu=on_npu, dtype=dtype) if wanted else None for wanted in with_dropout]

    def build(self, input_shape):
        width = int(input_shape[-1])
        for dense, activation in zip(self.dense_layers, self.activations):
            dense.build((None, width))
            activation.build((None, dense.units))
            width = dense.units
        super().build(input_shape)

    def call(self, inputs, training=False):
        return self.from_first_projection(self.dense_layers[0](inputs), training=training)

    def named_weights(self, prefix: str) -> dict:
        """Every weight of the stack by a name independent of the Keras version (see `leaf_weights`)."""
        named = {}
        for index, layers in enumerate(zip(self.dense_layers, self.activations, self.dropouts)):
            for kind, layer in zip(("dense", "activation", "dropout"), layers):
                if layer is not None:
                    named.update(leaf_weights(f"{prefix}_{kind}{index}", layer))
        return named

    def from_first_projection(self, projected, training=False, valid=None):
        """The stack's output given the first layer's x W + b, however that was computed;
        `valid`: which rows Dice's batch statistics count (default all)."""
        outputs = projected
        for index, (dense, activation, dropout) in enumerate(zip(self.dense_layers, self.activations, self.dropouts)):
            if index > 0:
                outputs = dense(outputs)
            if isinstance(activation, Dice):
                outputs = activation(outputs, training=training, valid=valid)
            else:
                outputs = activation(outputs)
            if dropout is not None:
                outputs = dropout(outputs, training=training)
        return outputs


class AttentionPooling(keras.layers.Layer):
    """DIN activation unit + weighted sum of the history embeddings.

    The unit is an MLP over [q, k, q - k, q * k] for the query (target) q and each
    history key k, ending in one linear score per key (its first layer is computed
    from W's row blocks, see `_first_projection`).

    Three layouts of the history (din_model/model/network.py), told apart by the inputs (one layer
    serves all, as the static-capacity layout falls back to the dense one for a batch over
    its capacity); each returns the pooled interest [S, d] for queries [S, d]:
    - "dense": inputs (query [B, d], keys [B, L, d], mask [B, L] bool); padded positions
      are scored too, then masked (weight 0, or -inf before the softmax). Static shapes.
    - "compact": inputs (query [B, d], keys [N, d], rows [N] int32), the N real history
      entries and the sample each belongs to (sorted, see din_model/model/segments.py); only
      real entries are scored (a few times less work with short histories). Dynamic shapes.
    - "static_compact": inputs (query [S, d], keys [C, d], rows [C] int32, filled [C] bool),
      a fixed-capacity buffer of the real entries; empty slots belong to a sample of their
      own (the caller's extra last query) and are left out of Dice's statistics. Static shapes.
    """

    def __init__(self, units: tuple[int, ...], activation: str = "sigmoid", softmax: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not units:
            raise ValueError("the attention MLP needs at least one hidden layer")
        dtype = kwargs.get("dtype")
        self.softmax = softmax
        self.hidden = DenseStack(units, activation, dtype=dtype)
        self.score_layer = keras.layers.Dense(1, dtype=dtype)

    def call(self, inputs, training=False):
        query, keys, mask_or_rows = inputs[:3]
        if len(keys.shape) == 3:  # dense: the mask tells Dice which positions are real
            rows, valid = None, mask_or_rows
        else:  # compact (every entry real) or static_compact (its filled slots)
            rows, valid = row_operations(static=len(inputs) == 4), (inputs[3] if len(inputs) == 4 else None)
        samples = dimension(query, 0)
        projected = self._first_projection(query, keys, mask_or_rows, rows)
        hidden = self.hidden.from_first_projection(projected, training=training, valid=valid)
        scores = tf.cast(tf.squeeze(self.score_layer(hidden), -1), tf.float32)
        if rows is not None:
            weights = tf.cast(self._segment_weights(scores, mask_or_rows, samples, rows), keys.dtype)
            return rows.sum(weights[:, None] * keys, mask_or_rows, samples)
        weights = tf.cast(self._masked_weights(scores, mask_or_rows), keys.dtype)
        # [B, 1, L] x [B, L, d]: a batched MatMul (tf.einsum is "not supported" on the NPU, see din_model/device/npu_ops.py)
        return tf.squeeze(tf.matmul(weights[:, None, :], keys), axis=1)

    def build(self, input_shape):
        # The first layer's kernel is read directly (see _first_projection), so the
        # sublayers are built here rather than on their first call.
        self.hidden.build((None, 4 * int(input_shape[1][-1])))
        self.score_layer.build((None, self.hidden.dense_layers[-1].units))
        super().build(input_shape)

    def named_weights(self, prefix: str) -> dict:
        return {**self.hidden.named_weights(f"{prefix}_hidden"), **leaf_weights(f"{prefix}_score", self.score_layer)}

    def _first_projection(self, query, keys, mask_or_rows, rows=None):
        """x W + b of the unit's first layer for x = [q, k, q - k, q * k], without building x.

        With W split into its row blocks, x W = q (W_q + W_d) + k (W_k - W_d) + (q * k) W_p:
        the query term is computed once per sample rather than once per history entry,
        and the 4d-wide x is never materialised (measured in docs/performance.md, "Training speed").
        """
        first = self.hidden.dense_layers[0]
        w_query, w_key, w_difference, w_product = tf.split(tf.cast(first.kernel, keys.dtype), 4, axis=0)
        per_sample = tf.matmul(query, w_query + w_difference) + tf.cast(first.bias, keys.dtype)
        if rows is not None:  # row operations: a compact layout
            queries, per_query = rows.repeat(query, mask_or_rows), rows.repeat(per_sample, mask_or_rows)
        else:
            queries, per_query = query[:, None, :], per_sample[:, None, :]
        key_terms = tf.concat([keys, queries * keys], axis=-1)
        return per_query + tf.tensordot(key_terms, tf.concat([w_key - w_difference, w_product], axis=0), axes=1)

    def _masked_weights(self, scores, mask):
        mask_values = tf.cast(mask, tf.float32)
        if not self.softmax:
            return scores * mask_values
        masked = tf.where(mask, scores, tf.fill(tf.shape(scores), MASKED_SCORE))
        return tf.nn.softmax(masked, axis=-1) * mask_values

    def _segment_weights(self, scores, sample_of_entry, samples, rows):
        if not self.softmax:
            return scores
        shifted = scores - rows.repeat(rows.max(scores, sample_of_entry, samples), sample_of_entry)
        exponents = tf.exp(shifted)
        return exponents / rows.repeat(rows.sum(exponents, sample_of_entry, samples), sample_of_entry)
