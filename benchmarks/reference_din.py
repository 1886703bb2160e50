"""The baseline of our speed claims: the reference TF2 DIN setup, trained as the reference trains it.

The reference is Recommender-System-with-TF2.0's DIN (DIN/model.py, DIN/train.py). Its
model function, rebuilt here on tf.keras 2 (Keras 2.x: `tf-keras` with
TF_USE_LEGACY_KERAS=1 on TensorFlow >= 2.16, plain `tf.keras` on TF 2.6):
- an item-id embedding of width 8 (`random_uniform`) with `embeddings_regularizer=l2(1e-4)`;
- attention: Dense 80 -> Dense 40 (sigmoid) -> Dense 1 over [q, k, q - k, q * k] for each
  of the last 20 history entries, padded positions set to -2^32 + 1, softmax, weighted sum;
- BatchNormalization of [interest, target], Dense 256-128-64 each with a PReLU activation,
  ONE Dropout(0.5) after the last of them, Dense 1, sigmoid;
- `compile(loss=binary_crossentropy, optimizer=Adam(1e-3), metrics=[AUC()])`, `fit` on
  in-memory numpy arrays, batch 4096, shuffled.
Differences kept on purpose: our reader left-aligns a history (padding after it; the
reference's pad_sequences pads before), which the masked softmax does not see, and
the reference's two all-zero dummy inputs (no dense or other sparse features) are left out.

    python benchmarks/reference_din.py --data-dir DIR [--steps 100] [--warmup 15]

prints one JSON line: samples/s in 5 windows of steps/5 batches after `--warmup` batches,
timed batch end to batch end, the same windows and statistic as benchmarks/train.py.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Before TensorFlow loads: on TF >= 2.16 `tf.keras` is then tf-keras (Keras 2), as the reference ran.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import din_model  # noqa: E402,F401  (the same TensorFlow environment as our trainer: cpu_kernels)
from benchmarks.machine import describe  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras = tf.keras
REFERENCE_MAXLEN = 20
REFERENCE_BATCH = 4096
WINDOWS = 5
PADDED_SCORE = -2.0 ** 32 + 1


def keras_version() -> str:
    """The version of the Keras behind `tf.keras` (TF >= 2.16 loads tf-keras lazily, without `__version__`)."""
    if hasattr(keras, "__version__"):
        return keras.__version__
    try:
        import tf_keras
    except ImportError:
        return "3 (tf-keras is not installed)"
    return tf_keras.__version__


def require_keras_2() -> None:
    if keras.layers.Dense.__module__.startswith("keras.src") or not keras_version().startswith("2."):
        raise SystemExit(f"benchmarks/reference_din.py needs Keras 2 as tf.keras, got Keras {keras_version()}: "
                         "install the `bench` extra (pip install 'tf-keras==<your TensorFlow major.minor>.*'); "
                         "TF_USE_LEGACY_KERAS=1 is set by this script")


class ReferenceAttention(keras.layers.Layer):
    """The reference's attention unit: an MLP score per history entry, masked softmax, weighted sum."""

    def __init__(self, units=(80, 40), activation="sigmoid", **kwargs):
        super().__init__(**kwargs)
        self.hidden = [keras.layers.Dense(size, activation=activation) for size in units]
        self.score = keras.layers.Dense(1)

    def call(self, inputs):
        query, keys, mask = inputs
        queries = tf.reshape(tf.tile(query, [1, keys.shape[1]]), [-1, keys.shape[1], keys.shape[2]])
        hidden = tf.concat([queries, keys, queries - keys, queries * keys], axis=-1)
        for layer in self.hidden:
            hidden = layer(hidden)
        scores = tf.squeeze(self.score(hidden), axis=-1)
        scores = tf.where(tf.equal(mask, 0), tf.ones_like(scores) * PADDED_SCORE, scores)
        weights = tf.expand_dims(tf.nn.softmax(scores), axis=1)
        return tf.squeeze(tf.matmul(weights, keys), axis=1)


class ReferenceDIN(keras.Model):
    """The reference DIN with item ids only (its train.py leaves the category out)."""

    def __init__(self, n_items: int, embed_dim: int = 8, mlp_units=(256, 128, 64), dropout: float = 0.5,
                 embed_l2: float = 1e-4):
        super().__init__()
        self.item_embedding = keras.layers.Embedding(n_items + 1, embed_dim, embeddings_initializer="random_uniform",
                                                     embeddings_regularizer=keras.regularizers.l2(embed_l2))
        self.attention = ReferenceAttention()
        self.norm = keras.layers.BatchNormalization(trainable=True)
        self.hidden = [keras.layers.Dense(size, activation=keras.layers.PReLU()) for size in mlp_units]
        self.dropout = keras.layers.Dropout(dropout)
        self.final = keras.layers.Dense(1)

    def call(self, inputs):
        history, target = inputs["hist_item"], inputs["target_item"][:, 0]  # fed [N, 1], as the reference does
        mask = tf.cast(tf.not_equal(history, 0), tf.float32)
        keys, query = self.item_embedding(history), self.item_embedding(target)
        outputs = self.norm(tf.concat([self.attention([query, keys, mask]), query], axis=-1))
        for layer in self.hidden:
            outputs = layer(outputs)
        return tf.nn.sigmoid(self.final(self.dropout(outputs)))


def build_reference_model(n_items: int) -> keras.Model:
    model = ReferenceDIN(n_items)
    model.compile(loss=keras.losses.binary_crossentropy, optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  metrics=[keras.metrics.AUC()])
    return model


def in_memory_arrays(dataset, samples: int) -> tuple[dict, np.ndarray]:
    """`samples` training rows as numpy arrays (the dataset keeps the last 20 history entries)."""
    hist, target, labels, have = [], [], [], 0
    for features, label in dataset:
        hist.append(features["hist_item"].numpy())
        target.append(features["target_item"].numpy())
        labels.append(label.numpy())
        have += len(labels[-1])
        if have >= samples:
            break
    if have < samples:
        raise SystemExit(f"the train split holds {have} rows; the timed batches need {samples}")
    return ({"hist_item": np.concatenate(hist)[:samples], "target_item": np.concatenate(target)[:samples, None]},
            np.concatenate(labels)[:samples])


class _BatchClock(keras.callbacks.Callback):
    """When each training batch ended."""

    def __init__(self):
        super().__init__()
        self.ends: list = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def window_rates_from_batch_ends(ends: list, warmup: int, per_window: int, batch_size: int,
                                 windows: int = WINDOWS) -> list:
    """Samples/s of `windows` consecutive windows of `per_window` batches after `warmup` batches.

    Timed from batch end to batch end, not to `fit` returning: Keras spends seconds after the
    last batch (~6 s here), which no window of ours has either.
    """
    start = warmup - 1
    return [per_window * batch_size / (ends[start + (i + 1) * per_window] - ends[start + i * per_window])
            for i in range(windows)]


def reference_fit_rates(n_items: int, features: dict, labels: np.ndarray, warmup: int, per_window: int) -> list:
    model = build_reference_model(n_items)
    clock = _BatchClock()
    model.fit(features, labels, batch_size=REFERENCE_BATCH, epochs=1, shuffle=True, verbose=0, callbacks=[clock])
    return window_rates_from_batch_ends(clock.ends, warmup, per_window, REFERENCE_BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=100, help="timed batches (5 windows of steps/5)")
    parser.add_argument("--warmup", type=int, default=15)
    args = parser.parse_args()
    require_keras_2()
    from din_common.feature_spec import FeatureSpec
    from din_model.data.reader import make_dataset

    if args.warmup < 1:
        raise SystemExit("--warmup must be at least 1 (the first window starts at the end of a batch)")
    per_window = max(1, args.steps // WINDOWS)
    spec = FeatureSpec.read(args.data_dir / "tfrecords" / "feature_spec.json")
    rows = make_dataset(spec, "train", REFERENCE_BATCH, shuffle=False, drop_remainder=True, maxlen=REFERENCE_MAXLEN)
    features, labels = in_memory_arrays(rows, (args.warmup + WINDOWS * per_window) * REFERENCE_BATCH)
    rates = reference_fit_rates(spec.n_items, features, labels, args.warmup, per_window)
    print(json.dumps({"reference_keras_fit_samples_per_s": round(statistics.median(rates)),
                      "window_samples_per_s": [round(rate) for rate in rates], "keras": keras_version(),
                      "tensorflow": tf.__version__, "warmup": args.warmup, "steps": WINDOWS * per_window,
                      "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default"),
                      "machine": describe()}))


if __name__ == "__main__":
    main()
