"""The compiled steps of training and scoring, and the loss they share.

- `loss`: the training loss (mean sigmoid cross-entropy plus the model's regulariser),
  written once for every way of training (one process, NPU ranks, a TF_CONFIG cluster).
- `make_train_step` / `make_predict_step`: the compiled steps; `step_signature` the
  batches they take; `make_step_loop` several train steps in one call.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from din_common.feature_spec import FeatureSpec
from din_model import compat
from din_model.device.selection import DeviceChoice
from din_model.params import TrainParams
from din_model.data.reader import batch_signature, effective_maxlen
from din_model.train.policies import fixed_batches


def loss(model, features, labels):
    """The mean sigmoid cross-entropy of the model's logits plus its regularisation loss (float32)."""
    logits = model(features, training=True)
    return (tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
            + model.regularization_loss(features))


def make_train_step(model, optimizer, jit_compile: bool, signature=None,
                    reduce_gradients: Optional[Callable[[list], list]] = None):
    """The compiled train step; `signature` (`batch_signature`) makes it trace once, not again
    for the last, smaller batch of an epoch (~1.3 s of the first epoch on the default data).
    `reduce_gradients` (NPU ranks: the adapter's all-reduce) combines the processes' gradients
    before the update."""
    variables = model.trainable_variables

    @compat.function(jit_compile=jit_compile, input_signature=signature)
    def train_step(features, labels):
        with tf.GradientTape() as tape:
            batch_loss = loss(model, features, labels)
            scaled_loss = compat.scale_loss(optimizer, batch_loss)
        # Keras' Adam densifies a sparse (embedding) gradient once per use, twice a step; doing it
        # here once saves a densification (docs/performance.md, "What the trainer does").
        gradients = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                     for g in tape.gradient(scaled_loss, variables)]
        if reduce_gradients is not None:
            gradients = reduce_gradients(gradients)
        compat.apply_gradients(optimizer, gradients, variables)
        return batch_loss

    return train_step


# Train steps one call of `make_step_loop`'s function runs. Returning to Python between steps
# (the call, its arguments, the loss read back) costs a measurable share of a short step
# (docs/static_path.md, "Several steps per call").
STEPS_PER_CALL = 16


def make_step_loop(train_step, steps: int = STEPS_PER_CALL, *, sunk: bool = False):
    """Several train steps in one graph call, on an iterator's batches; no Python between steps.

    `run(iterator) -> (losses [n], samples)`: up to `steps` steps, their losses and the rows they
    trained on; n < steps only at the end of the data (0 once it is exhausted).

    `sunk` (the NPU): `run(iterator, count) -> losses [count]` runs exactly `count` <= `steps` steps, in
    the form the Ascend adapter sinks into one graph-engine loop (`npu_device.set_npu_loop_size(count)`
    first): one while loop taking `next(iterator)`, which every other op of the function feeds
    (tf_adapter_2.x/npu_device/core/npu_utils.cpp `IsGraphNeedLoop`). The adapter then runs the loop
    body `count` times with the loop's own counter left at its start, so each step's loss goes to the
    slot a variable counter names in a variable of `steps` losses, which the host reads once per call.
    """
    def one_step(iterator_element):
        features, labels = iterator_element
        return tf.cast(train_step(features, labels), tf.float32), tf.shape(labels)[0]

    if sunk:
        return _SunkStepLoop(one_step, steps)

    @tf.function
    def run(iterator):
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        samples = tf.constant(0)
        for index in tf.range(steps):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            loss, rows = one_step(batch.get_value())
            losses = losses.write(index, loss)
            samples += rows
        return losses.stack(), samples

    return run


class _SunkStepLoop:
    """`make_step_loop(..., sunk=True)`: the loop function and its two variables."""

    def __init__(self, one_step, steps: int):
        self.steps = steps
        self.losses = tf.Variable(tf.zeros([steps]), trainable=False, name="loop_losses")
        self.steps_run = tf.Variable(0, trainable=False, name="loop_steps_run")
        self.host_steps_run = 0  # the variable's value, known without reading it back

        @tf.function
        def loop(iterator, count):
            # a counted while, not `for _ in tf.range(count)`: AutoGraph computes that loop's length in
            # ops the loop does not use, which would stop the adapter from sinking it
            done = tf.constant(0)
            while done < count:
                done += 1
                loss, _ = one_step(next(iterator))
                slot = tf.equal(tf.range(steps), self.steps_run % steps)
                self.losses.assign(tf.where(slot, loss, self.losses))
                self.steps_run.assign_add(1)

        self.loop = loop

    def __call__(self, iterator, count: int) -> np.ndarray:
        if not 1 <= count <= self.steps:
            raise ValueError(f"a sunk step loop of {self.steps} steps cannot run {count}")
        first_slot = self.host_steps_run % self.steps
        self.loop(iterator, tf.constant(count))
        self.host_steps_run += count
        return np.roll(self.losses.numpy(), -first_slot)[:count]  # the call's one read back to the host


def make_predict_step(model, signature=None):
    features_signature = None if signature is None else [signature[0]]

    @compat.function(input_signature=features_signature)
    def predict_step(features):
        return tf.sigmoid(model(features, training=False))

    return predict_step


def step_signature(spec: FeatureSpec, params: TrainParams, device: DeviceChoice):
    """The batches the steps get: any number of rows, or exactly batch_size (static shapes, padded eval)."""
    return batch_signature(effective_maxlen(spec, params.maxlen),
                           params.batch_size if fixed_batches(params, device) else None, params.history_features)
