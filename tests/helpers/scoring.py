"""Scoring with an exported model, as a server would load it."""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf


def load_scorer(path: str | Path, signature: str = "serving_default"):
    """The named signature of an exported model: call it with keyword int32 tensors.

    The loaded object rides along on the function so its variables stay alive.
    """
    loaded = tf.saved_model.load(str(path))
    function = loaded.signatures[signature]
    function.loaded_module = loaded
    return function
