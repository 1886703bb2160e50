"""The baseline of benchmarks/train.py: the reference TF2 DIN setup, trained with in-memory Keras fit.

This mirrors how the reference implementation trains (padded [B, 20] histories held
in numpy arrays, `model.fit`), with its configuration: embedding 8 on item ids only,
attention MLP 80-40 sigmoid over [q, k, q-k, q*k] with a masked softmax, output MLP
256-128-64 with PReLU and dropout 0.5, Adam 1e-3, batch 4096. It exists only to be
timed next to our streaming trainer on the same machine in the same run.

    python benchmarks/reference_din.py --data-dir DIR [--samples 400000]

prints one JSON line; `benchmarks/train.py` runs it so, in a process of its own, so that
neither measurement shares threads or caches with the other.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

REFERENCE_MAXLEN = 20
REFERENCE_BATCH = 4096


class ReferenceAttention(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = [keras.layers.Dense(80, activation="sigmoid"), keras.layers.Dense(40, activation="sigmoid")]
        self.score = keras.layers.Dense(1)

    def call(self, inputs):
        query, keys, mask = inputs
        queries = tf.broadcast_to(query[:, None, :], tf.shape(keys))
        hidden = tf.concat([queries, keys, queries - keys, queries * keys], axis=-1)
        for layer in self.hidden:
            hidden = layer(hidden)
        scores = tf.squeeze(self.score(hidden), -1)
        scores = tf.where(mask, scores, tf.fill(tf.shape(scores), -2.0 ** 32 + 1))
        weights = tf.nn.softmax(scores, axis=-1)
        return tf.einsum("bl,bld->bd", weights, keys)


def build_reference_model(n_items: int) -> keras.Model:
    hist = keras.Input((REFERENCE_MAXLEN,), dtype="int32", name="hist_item")
    target = keras.Input((), dtype="int32", name="target_item")
    embedding = keras.layers.Embedding(n_items + 1, 8)
    keys, query = embedding(hist), embedding(target)
    interest = ReferenceAttention()((query, keys, tf.greater(hist, 0)))
    hidden = keras.layers.Concatenate()([interest, query])
    for units in (256, 128, 64):
        hidden = keras.layers.Dense(units)(hidden)
        hidden = keras.layers.PReLU()(hidden)
        hidden = keras.layers.Dropout(0.5)(hidden)
    output = keras.layers.Dense(1, activation="sigmoid")(hidden)
    model = keras.Model({"hist_item": hist, "target_item": target}, output)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    return model


def in_memory_arrays(dataset, samples: int) -> tuple[dict, np.ndarray]:
    """`samples` training rows as padded numpy arrays (last 20 history entries), like the reference."""
    hist, target, labels, have = [], [], [], 0
    for features, label in dataset:
        hist.append(features["hist_item"].numpy()[:, :REFERENCE_MAXLEN])
        target.append(features["target_item"].numpy())
        labels.append(label.numpy())
        have += len(labels[-1])
        if have >= samples:
            break
    return ({"hist_item": np.concatenate(hist)[:samples], "target_item": np.concatenate(target)[:samples]},
            np.concatenate(labels)[:samples])


class _BatchClock(keras.callbacks.Callback):
    """When each training batch ended."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def reference_fit_samples_per_s(n_items: int, features: dict, labels: np.ndarray, warmup: int = 5) -> float:
    """Steady-state samples/s of `model.fit` over the in-memory arrays: one epoch, the full
    batches after `warmup`, timed from batch end to batch end.

    Not up to `fit` returning: Keras spends seconds after the last batch (~6 s here, then
    the rate came out ~19 k instead of ~29 k), and the last batch is a partial one.
    """
    full_batches = len(labels) // REFERENCE_BATCH
    if full_batches <= warmup:
        raise ValueError(f"need more than {warmup} full batches of {REFERENCE_BATCH} rows, got {len(labels)} rows")
    model = build_reference_model(n_items)
    clock = _BatchClock()
    model.fit(features, labels, batch_size=REFERENCE_BATCH, epochs=1, shuffle=True, verbose=0, callbacks=[clock])
    timed = clock.ends[warmup - 1:full_batches]
    return (len(timed) - 1) * REFERENCE_BATCH / (timed[-1] - timed[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--samples", type=int, default=400_000, help="training rows held in memory")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from din_model.reader import load_spec, make_dataset

    spec = load_spec(args.data_dir / "tfrecords" / "feature_spec.json")
    rows = make_dataset(spec, "train", REFERENCE_BATCH, shuffle=False, drop_remainder=True)
    features, labels = in_memory_arrays(rows, args.samples)
    print(json.dumps({"reference_keras_fit_samples_per_s": round(
        reference_fit_samples_per_s(int(spec["n_items"]), features, labels)),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default")}))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
