"""Model weights in checkpoints under names that are the same on Keras 2 and Keras 3.

Owns the `weights/` node of a training checkpoint: every weight of the model under its
`DeepInterestNetwork.named_weights()` name. The Keras object graph stored beside it
(`model/...`, used to resume training) has other paths on each Keras version, so a run
trained on the Ascend stack (TF 2.6, Keras 2) restores and scores on the modern stack
(Keras 3) through this node only. Checkpoints written before the node existed restore
through the whole training state, on the stack that wrote them (`restore_weights`'s fallback).
`assign_weights` sets a live model's weights from the node without creating a variable (the
training loop's way back to the best epoch, where creating one is a collective of a multi-worker strategy).
"""
from __future__ import annotations

import tensorflow as tf

from din_common.errors import InputError

NODE = "weights"


class WeightsByName(tf.Module):
    """A trackable holding each variable as an attribute named by its portable name."""

    def __init__(self, named: dict):
        super().__init__(name="weights_by_name")
        for name, variable in named.items():
            setattr(self, name, variable)


def has_portable_weights(checkpoint_path: str) -> bool:
    return any(name.startswith(NODE + "/") for name, _ in tf.train.list_variables(checkpoint_path))


def restore_weights(model, checkpoint_path: str, whole_state: tf.train.Checkpoint) -> None:
    """Load the model's weights from a training checkpoint written on either stack.

    `whole_state` (the training state's own checkpoint object) restores checkpoints
    without the `weights/` node: Keras 3 reaches some model weights only through the
    optimizer's references, so the model's object graph alone would miss them.
    """
    if not has_portable_weights(checkpoint_path):
        whole_state.restore(checkpoint_path).expect_partial()
        return
    stored = {name[len(NODE) + 1:].split("/")[0] for name, _ in tf.train.list_variables(checkpoint_path)
              if name.startswith(NODE + "/")}
    named = model.named_weights()
    missing = sorted(set(named) - stored)
    if missing:
        raise InputError(f"{checkpoint_path}: the checkpoint has no weights {missing[:5]} of this model; was it "
                         "trained with other [train] settings (embed_dim, hidden sizes, activation, dropout)?")
    tf.train.Checkpoint(**{NODE: WeightsByName(named)}).restore(checkpoint_path).expect_partial()


def assign_weights(model, checkpoint_path: str) -> None:
    """Set the model's weights to the checkpoint's `weights/` node by assignment only."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    for name, variable in model.named_weights().items():
        variable.assign(reader.get_tensor(f"{NODE}/{name}/.ATTRIBUTES/VARIABLE_VALUE"))
