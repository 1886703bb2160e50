"""What sequence models beyond DIN would cost per train step: DIEN and BST prototypes against our DIN.

    python benchmarks/sequence_models_cost.py --data-dir DIR [--rounds 2] [--steps 10] [--recent 10] [--xla on]

The issue's budget for a new `[train] model` is at most 2x DIN's step time. Before building one into
din_model (with its NPU checks, tests and layouts), this measures the price of its core on the same
batches, in one process, alternating the models each round:
- `din`: the product's own train step for plain DIN with the default settings otherwise
  (benchmarks/train.py's `default` preset: the same step, layout and XLA choice training uses);
- `dien`: DIEN's interest extractor (a GRU over the history) with its auxiliary loss (each state scores
  the next real entry against a random item, logistic loss), then the interest evolution (an AUGRU: the
  GRU whose update gate is scaled by the entry's attention score for the target), its last state with
  the target into an MLP of the default's size;
- `bst`: a BST block (Transformer layer: 2-head self-attention over the history and the target with
  learned positions, residuals, layer norms and a 4x feed-forward), the target's output and the masked
  mean of the history's into the same MLP.
`dien_recent` and `bst_recent` run on only the `--recent` most recent entries of each history.
Every prototype masks padded positions (a GRU state is carried over them; attention never attends to
them), uses the product's embedding width (item and category, `embed_dim` each), Adam, the same batch
size, static shapes, and XLA when the product's step uses it. The prototypes are for pricing, not
training: none is a `[train] model`. Prints one JSON line: ms per step per model (median of rounds),
the ratio to DIN's, and the machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from benchmarks.train import fresh_train_step, preset_setup  # noqa: E402  (imports din_model: TF's environment)
from din_model.compat import keras  # noqa: E402
from din_model.data.reader import make_dataset  # noqa: E402
from din_model.train.policies import resolve_xla  # noqa: E402
import tensorflow as tf  # noqa: E402


def recent_entries(features, keep: int):
    """The `keep` most recent entries of right-padded [B, L] histories, oldest first, and their mask."""
    items, cates = features["hist_item"], features["hist_cate"]
    length = tf.reduce_sum(tf.cast(items > 0, tf.int32), axis=1, keepdims=True)
    positions = length - keep + tf.range(keep)[None, :]
    valid = positions >= 0
    positions = tf.maximum(positions, 0)
    take = lambda values: tf.where(valid, tf.gather(values, positions, batch_dims=1), 0)  # noqa: E731
    return take(items), take(cates), valid


class SequencePrototype:
    """Embeddings, the sequence core (`dien` or `bst`), the output MLP and the loss; `train_step` compiled."""

    def __init__(self, kind: str, n_items: int, n_cats: int, embed_dim: int, maxlen: int, mlp_units, recent: int,
                 jit_compile: bool, learning_rate: float):
        self.kind, self.recent, self.n_items = kind, recent, n_items
        width = 2 * embed_dim
        self.item_embedding = keras.layers.Embedding(n_items + 1, embed_dim)
        self.cate_embedding = keras.layers.Embedding(n_cats + 1, embed_dim)
        if kind == "dien":
            self.extractor = keras.layers.Dense(3 * width), keras.layers.Dense(3 * width, use_bias=False)
            self.evolution = keras.layers.Dense(3 * width), keras.layers.Dense(3 * width, use_bias=False)
            self.attention = keras.Sequential([keras.layers.Dense(36, activation="sigmoid"), keras.layers.Dense(1)])
        else:
            self.positions = keras.layers.Embedding(maxlen + 1, width)
            self.self_attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=width // 2)
            self.norms = keras.layers.LayerNormalization(), keras.layers.LayerNormalization()
            self.feed_forward = keras.Sequential([keras.layers.Dense(4 * width, activation="relu"),
                                                  keras.layers.Dense(width)])
        self.mlp = keras.Sequential([keras.layers.Dense(units, activation="relu") for units in mlp_units]
                                    + [keras.layers.Dense(1)])
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.train_step = tf.function(self._train_step, jit_compile=jit_compile)

    def embed(self, items, cates):
        return tf.concat([self.item_embedding(items), self.cate_embedding(cates)], axis=-1)

    def history(self, features):
        if self.recent:
            return recent_entries(features, self.recent)
        return features["hist_item"], features["hist_cate"], features["hist_item"] > 0

    def _gru(self, layers, inputs, state, gate_scale=None):
        """One GRU step; with gate_scale (AUGRU) the update gate is scaled by the attention score."""
        from_input, from_state = layers
        x_z, x_r, x_h = tf.split(from_input(inputs), 3, axis=-1)
        s_z, s_r, s_h = tf.split(from_state(state), 3, axis=-1)
        update, reset = tf.sigmoid(x_z + s_z), tf.sigmoid(x_r + s_r)
        if gate_scale is not None:
            update = update * gate_scale
        candidate = tf.tanh(x_h + reset * s_h)
        return update * candidate + (1 - update) * state

    def _dien(self, history, mask, target):
        steps = history.shape[1]
        state = tf.zeros_like(history[:, 0])
        states = []
        for t in range(steps):  # unrolled: static shapes, as the NPU needs
            state = tf.where(mask[:, t:t + 1], self._gru(self.extractor, history[:, t], state), state)
            states.append(state)
        states = tf.stack(states, axis=1)
        # auxiliary loss: state t scores entry t + 1 against a random item
        following = history[:, 1:]
        negatives = self.embed(tf.random.uniform(tf.shape(mask[:, 1:]), 1, self.n_items + 1, tf.int32),
                               tf.random.uniform(tf.shape(mask[:, 1:]), 1, 2, tf.int32))
        pairs = tf.cast(mask[:, 1:] & mask[:, :-1], tf.float32)
        positive = tf.reduce_sum(states[:, :-1] * following, -1)
        negative = tf.reduce_sum(states[:, :-1] * negatives, -1)
        auxiliary = tf.reduce_sum((tf.nn.softplus(-positive) + tf.nn.softplus(negative)) * pairs) / tf.maximum(
            tf.reduce_sum(pairs), 1.0)
        query = tf.broadcast_to(target[:, None], tf.shape(states))
        scores = tf.squeeze(self.attention(tf.concat([states, query, states * query], -1)), -1)
        scores = tf.where(mask, scores, -1e9)
        weights = tf.nn.softmax(scores, axis=1)
        state = tf.zeros_like(target)
        for t in range(steps):
            evolved = self._gru(self.evolution, states[:, t], state, weights[:, t:t + 1])
            state = tf.where(mask[:, t:t + 1], evolved, state)
        return tf.concat([state, target, state * target], -1), auxiliary

    def _bst(self, history, mask, target):
        sequence = tf.concat([history, target[:, None]], axis=1)
        steps = sequence.shape[1]
        sequence += self.positions(tf.range(steps))[None]
        real = tf.concat([mask, tf.ones_like(mask[:, :1])], axis=1)
        attention_mask = real[:, None, :] & real[:, :, None]
        attended = self.norms[0](sequence + self.self_attention(sequence, sequence, attention_mask=attention_mask))
        encoded = self.norms[1](attended + self.feed_forward(attended))
        weights = tf.cast(mask, encoded.dtype)[:, :, None]
        mean = tf.reduce_sum(encoded[:, :-1] * weights, 1) / tf.maximum(tf.reduce_sum(weights, 1), 1.0)
        return tf.concat([encoded[:, -1], mean, target], -1), 0.0

    def _train_step(self, features, labels):
        with tf.GradientTape() as tape:
            items, cates, mask = self.history(features)
            history = self.embed(items, cates)
            target = self.embed(features["target_item"], features["target_cate"])
            core = self._dien if self.kind == "dien" else self._bst
            mlp_input, auxiliary = core(history, mask, target)
            logits = tf.squeeze(self.mlp(mlp_input), -1)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits)) + auxiliary
        weights = self.trainable_weights()
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    def trainable_weights(self):
        layers = [self.item_embedding, self.cate_embedding, self.mlp]
        if self.kind == "dien":
            layers += [*self.extractor, *self.evolution, self.attention]
        else:
            layers += [self.positions, self.self_attention, *self.norms, self.feed_forward]
        return [weight for layer in layers for weight in layer.trainable_weights]


def time_steps(step, batches, steps: int) -> float:
    """Milliseconds per step over `steps` steps (after the batches' first pass warmed the step up)."""
    for features, labels in batches:
        float(step(features, labels))
    started = time.perf_counter()
    for index in range(steps):
        features, labels = batches[index % len(batches)]
        loss = step(features, labels)
    float(loss)
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model per round")
    parser.add_argument("--recent", type=int, default=10, help="history entries of the *_recent variants")
    parser.add_argument("--xla", choices=("auto", "on", "off"), default="auto",
                        help="[train] xla for every model (auto: what training picks for this data and CPU)")
    args = parser.parse_args()

    params, spec, device = preset_setup(args.data_dir, "default", xla=args.xla)
    params = resolve_xla(params, device, spec)
    device.static_shapes = device.static_shapes or params.jit_compile
    dataset = make_dataset(spec, "train", params.batch_size, shuffle=True, seed=1, repeat=True, drop_remainder=True,
                           maxlen=params.maxlen, history_fields=params.history_features)
    batches = [batch for _, batch in zip(range(4), dataset)]
    maxlen = params.maxlen or spec.maxlen
    with device.scope():
        steps = {"din": fresh_train_step(params, spec, device)}
        for kind in ("dien", "bst"):
            for name, recent in ((kind, 0), (f"{kind}_recent", args.recent)):
                steps[name] = SequencePrototype(kind, spec.n_items, spec.n_cats, params.embed_dim, maxlen,
                                                params.mlp_units, recent, params.jit_compile,
                                                params.learning_rate).train_step
        timings = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                timings[name].append(time_steps(step, batches, args.steps))
    ms = {name: round(statistics.median(values), 1) for name, values in timings.items()}
    print(json.dumps({"ms_per_step": ms, "every_round_ms": {name: [round(v, 1) for v in values]
                                                            for name, values in timings.items()},
                      "over_din": {name: round(value / ms["din"], 2) for name, value in ms.items()},
                      "batch_size": params.batch_size, "embed_dim": params.embed_dim, "maxlen": maxlen,
                      "recent": args.recent, "din_model": params.model,
                      "din_sequence_features": list(params.active_sequence_features),
                      "jit_compile": params.jit_compile, "machine": describe()}))


if __name__ == "__main__":
    main()
