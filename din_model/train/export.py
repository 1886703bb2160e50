"""SavedModel export of a trained DIN with named serving signatures.

The exported module has signatures `serving_default` and `score` (the same function):
inputs hist_item, hist_cate (and hist_gap, seconds to the target, for a model with the time-gap
feature) `[None, maxlen]` and target_item, target_cate `[None]` (int32; 0 = padding in the
histories), output `{"probability": float32 [None]}`.
The serving function checks its inputs with graph assertions (no Python per call): every history
has exactly `maxlen` columns, item and category ids lie in `[0, vocabulary)` (a negative id
would otherwise be read from the end of the table, a too large one fail naming no input), and all
inputs have one batch size. A bad input fails with an InvalidArgumentError naming it.
The directory appears atomically: saved to a temporary sibling, then renamed; a full disk removes the
temporary and is one error line naming the folder and the weights' size (the graph adds a little).
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from din_common.atomic import temporary_path
from din_common.disk_full import reported_disk_full

SIGNATURE_NAMES = ("serving_default", "score")


class ScoringModule(tf.Module):
    """Holds the model and its scoring function, the object that gets saved."""

    def __init__(self, model, maxlen: int):
        super().__init__()
        self.model = model
        self.input_names = model.history_inputs + ("target_item", "target_cate")
        specs = [tf.TensorSpec([None, maxlen] if name.startswith("hist_") else [None], tf.int32, name=name)
                 for name in self.input_names]
        self.score = tf.function(self._score, input_signature=specs)

        self.maxlen = maxlen
        embeddings = {"item": model.item_embedding, "cate": model.cate_embedding}
        # Ids index these tables; without categories target_cate is read by nothing and only checked >= 0.
        self.vocabulary = {name: embeddings[name.split("_")[1]].input_dim for name in self.input_names
                           if name != "hist_gap" and embeddings[name.split("_")[1]] is not None}

    def _score(self, *inputs):
        features = dict(zip(self.input_names, inputs))
        with tf.control_dependencies(self._input_checks(features)):
            features = {name: tf.identity(value) for name, value in features.items()}
        logits = self.model(features, training=False)
        return {"probability": tf.sigmoid(tf.cast(logits, tf.float32))}

    def _input_checks(self, features) -> list:
        """Assertions on the request: each names its input and says what was expected."""
        batch = tf.shape(features["target_item"])[0]
        checks = []
        for name, value in features.items():
            checks.append(tf.debugging.assert_equal(
                tf.shape(value)[0], batch, message=f"{name}: expected as many rows as target_item"))
            if name.startswith("hist_"):
                checks.append(tf.debugging.assert_equal(
                    tf.shape(value)[1], self.maxlen,
                    message=f"{name}: expected exactly {self.maxlen} columns (the maxlen of the model; pad with 0)"))
            if name == "hist_gap":
                continue
            checks.append(tf.debugging.assert_non_negative(
                value, message=f"{name}: ids must be >= 0 (0 = padding)"))
            if name in self.vocabulary:
                checks.append(tf.debugging.assert_less(
                    value, self.vocabulary[name],
                    message=f"{name}: ids must be < {self.vocabulary[name]} (the vocabulary of the model: 1..."
                            f"{self.vocabulary[name] - 1}, 0 = padding)"))
        return checks


def export_saved_model(model, maxlen: int, path: str | Path) -> Path:
    """Save `model` as a SavedModel at `path` (replacing what is there); return the path."""
    path = Path(path)
    module = ScoringModule(model, maxlen)
    signatures = {name: module.score for name in SIGNATURE_NAMES}
    tmp = temporary_path(path)
    weights = sum(int(np.prod(weight.shape)) * tf.as_dtype(weight.dtype).size for weight in model.weights)
    try:
        with _without_absl_warnings(), reported_disk_full("the SavedModel", path.parent, weights):
            tf.saved_model.save(module, str(tmp), signatures=signatures)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


@contextlib.contextmanager
def _without_absl_warnings():
    """TF 2.6's SavedModel writer logs an absl WARNING about "untraced functions" of the Keras
    layers: they are not needed (the signatures above are traced) and the line reads like a failure."""
    from absl import logging as absl_logging

    previous = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(previous)
