"""The differences between the two supported TensorFlow stacks, in one place.

- Ascend stack: TensorFlow 2.6.5 with Keras 2.6 (`tf.keras`), the only TF 2 release the
  CANN adapter (`npu_device`) is built for (Python 3.7-3.9).
- Modern stack: TensorFlow >= 2.16 with Keras 3.

Every version switch of stage 2 lives here, so the model, the reader and the training
loop are written once: they take `keras` from here. It is the `keras` package on the
modern stack and `tf.keras` on TF 2.6, whose top-level `keras` package is not the public API.
"""
from __future__ import annotations

import os
import random

import numpy as np
import tensorflow as tf

KERAS_3 = tuple(int(part) for part in tf.__version__.split(".")[:2]) >= (2, 16)
if KERAS_3:
    import keras
else:
    from tensorflow import keras
# tf.function's "relax shapes instead of retracing" flag was renamed in TF 2.9.
_TF_FUNCTION_RELAX = ("reduce_retracing" if "reduce_retracing" in tf.function.__code__.co_varnames
                      else "experimental_relax_shapes")


def function(python_function=None, *, relax_shapes: bool = True, **kwargs):
    """`tf.function` with shape relaxation under the name this TensorFlow knows."""
    kwargs[_TF_FUNCTION_RELAX] = relax_shapes
    if python_function is None:
        return tf.function(**kwargs)
    return tf.function(python_function, **kwargs)


def set_random_seed(seed: int) -> None:
    """Python, numpy and TensorFlow seeds (`keras.utils.set_random_seed` is TF >= 2.7)."""
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def enable_op_determinism() -> None:
    """Deterministic TensorFlow kernels for the rest of this process (`[train] deterministic`).

    TF >= 2.8 has `tf.config.experimental.enable_op_determinism` (ops without a deterministic kernel then
    raise instead of varying). TF 2.6 reads the `TF_DETERMINISTIC_OPS` environment variable when a kernel
    that honours it first runs, so it is set here, before the training run builds or runs any op.
    """
    enable = getattr(tf.config.experimental, "enable_op_determinism", None)
    if enable is not None:
        enable()
    else:
        os.environ["TF_DETERMINISTIC_OPS"] = "1"


# --- tf.data ---------------------------------------------------------------------------

def rebatch(dataset: tf.data.Dataset, batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
    """Batches of `batch_size` rows cut from the dataset's batches, without unbatching rows.

    `Dataset.rebatch` is public from TF 2.12; TF 2.6 has the same dataset op behind the
    name tf.distribute uses.
    """
    if hasattr(tf.data.Dataset, "rebatch"):
        return dataset.rebatch(batch_size, drop_remainder=drop_remainder)
    from tensorflow.python.data.experimental.ops.distribute import _RebatchDataset

    return _RebatchDataset(dataset, batch_sizes=[batch_size], drop_remainder=drop_remainder)


def options_without_autotune() -> tf.data.Options:
    """tf.data options with the autotune model off (`Options.autotune` is TF >= 2.7)."""
    options = tf.data.Options()
    if hasattr(options, "autotune"):
        options.autotune.enabled = False
    else:
        options.experimental_optimization.autotune = False
    return options


# --- layers ----------------------------------------------------------------------------

def no_autocast() -> dict:
    """`add_weight` keywords that keep a weight's dtype under a mixed policy when read in `call`."""
    return {"autocast": False} if KERAS_3 else {"experimental_autocast": False}


def random_words(shape, seed: tf.Tensor) -> tf.Tensor:
    """Uniform uint32 words from a stateless Philox stream (TF 2.6 has no `alg` argument; Philox is its default)."""
    extra = {"alg": "philox"} if KERAS_3 else {}
    return tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32, **extra)


# --- optimizers ------------------------------------------------------------------------

# Dynamic loss scaling (mixed float16 on a GPU) wraps the optimizer in this class.
LossScaleOptimizer = keras.optimizers.LossScaleOptimizer if KERAS_3 else keras.mixed_precision.LossScaleOptimizer


def build_optimizer(optimizer, variables) -> None:
    """Create the optimizer's slots now, so a checkpoint restores into them before the first step."""
    if KERAS_3:
        optimizer.build(variables)
    else:
        optimizer._create_all_weights(variables)  # Keras 2's eager slot creation


def learning_rate_variable(optimizer):
    """The variable holding the learning rate of `optimizer` (or of the one a loss-scaling wrapper holds): the
    compiled step reads it, so assigning it between epochs retraces nothing, and the checkpoint saves it (Keras 3
    keeps it in `_learning_rate`, Keras 2 as the `learning_rate` hyperparameter, created with the slots)."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer._learning_rate if KERAS_3 else optimizer._get_hyper("learning_rate")


def _is_loss_scaled(optimizer) -> bool:
    return hasattr(optimizer, "get_scaled_loss")


def scale_loss(optimizer, loss: tf.Tensor) -> tf.Tensor:
    """The loss to differentiate: scaled when the optimizer does loss scaling."""
    if KERAS_3:
        return optimizer.scale_loss(loss)
    return optimizer.get_scaled_loss(loss) if _is_loss_scaled(optimizer) else loss


def apply_gradients(optimizer, gradients, variables) -> None:
    """One update from the gradients of `scale_loss`'s result (unscaled and checked for overflow there)."""
    if KERAS_3:
        optimizer.apply(gradients, variables)
        return
    if _is_loss_scaled(optimizer):
        gradients = optimizer.get_unscaled_gradients(gradients)
    optimizer.apply_gradients(zip(gradients, variables))
