"""Test helper: read the optimizer's step counter from a training checkpoint, on either Keras."""
import tensorflow as tf

# The checkpoint key of the optimizer's step counter: Keras 3 names it `_iterations`, Keras 2 `iter`.
ITERATIONS_KEYS = ("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE", "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE")


def optimizer_iterations(checkpoint: str) -> int:
    names = {name for name, _ in tf.train.list_variables(checkpoint)}
    key = next(key for key in ITERATIONS_KEYS if key in names)
    return int(tf.train.load_variable(checkpoint, key))
