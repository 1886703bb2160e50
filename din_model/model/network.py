"""The DIN model: embeddings, attention pooling, output MLP, logit; and its regulariser.

`build_model(params, spec, dtype_policy)` returns a `DeepInterestNetwork` whose call
maps a features dict (hist_item/hist_cate `[B, L]`, target_item/target_cate `[B]`
int32) to float32 logits `[B]` (sigmoid and loss stay in float32 under mixed precision).
An item is represented by `[item_emb, cate_emb]` when `use_category` is on, else by
`item_emb`; the tables are shared by history and target. `regularization_loss`
is the plain L2 of all weights (or of the embedding tables) or the paper's mini-batch aware L2.

History layouts (`history_layout`), the same function with different work and shapes:
- "dense": every one of the L padded positions goes through the attention MLP; static shapes.
- "compact": only the N real entries (`tf.where` of the mask); N varies per batch (CPU, GPU).
- "static_compact": the real entries gathered into a buffer of C slots, C fixed per batch
  size and chosen from the data (din_model/model/history_capacity.py), so shapes are static (XLA,
  the NPU) at close to the compact layout's work. A batch with more than C entries takes
  the dense layout instead (a `tf.cond`): no entry is ever dropped.

Order-aware inputs (`sequence_features`, model "din_seq"; plain DIN has none), all static-shape
and cheap (lookups of small tables):
- "recency": a learned embedding of each history entry's position from the end (0 = the most
  recent), added to the entry's representation inside the attention unit;
- "time_gap": a learned embedding of the time from the entry to the target (`hist_gap`
  seconds, bucketised by log2 of hours, `time_gap_buckets`), added the same way (the buckets
  need no learning of scale: 1 day and 2 days fall in different buckets, 1 and 1.2 years in one);
- "last_item": the most recent entry's representation (with its time gap, if on) and its
  element-wise product with the target's as direct inputs to the output MLP.
Positions count real entries (ids > 0) from the end, so they do not depend on where padding sits.
And inputs of the history's counts beside them:
- "share": the pooled interest divided by the number of real history entries, and log(1 + that
  number), as inputs to the output MLP. DIN's attention weights are not normalised, so the pooled
  interest is a weighted count of matching entries: two in a history of four and two in forty look
  the same. Divided by the length it is the share of the history that matches, what the bag
  estimators score (docs/accuracy.md).
- "category_match": exact counts of the history entries in the target's category, as inputs to the
  output MLP: their share of the history, the same share with the entry k places from the end
  weighted `decay ** k` for each of CATEGORY_MATCH_DECAYS (recent interests), and whether the most
  recent entry is in it, one input per time-gap bucket of that entry (how likely a user stays in a
  category falls with the time since). What the attention learns softly, given exactly: the
  statistics of the bag estimators and of the generator's own form (docs/accuracy.md).
"""
from __future__ import annotations

import tensorflow as tf

from din_common.errors import InputError
from din_common.feature_spec import FeatureSpec
from din_model.compat import keras
from din_model.model.layers import AttentionPooling, DenseStack, leaf_weights
from din_model.params import TrainParams, history_features, reads_categories, reads_gaps
from din_model.model.history_capacity import HistoryCapacity, measure_history_capacity
from din_model.model.recompute import only_when
from din_model.model.segments import dimension, gather_history, static_sum_rows, sum_rows

# Time-gap buckets: floor(log2(1 + hours)), the last one open-ended (2^15 - 1 hours, ~3.7 years, and more).
TIME_GAP_BUCKETS = 16
CATEGORY_MATCH_DECAYS = (0.8, 0.5)
CATEGORY_MATCH_INPUTS = 1 + len(CATEGORY_MATCH_DECAYS) + TIME_GAP_BUCKETS
# Bucket k starts at (2^k - 1) hours; whole seconds, so the bucketing is exact integer comparisons.
_BUCKET_STARTS_SECONDS = [(2 ** k - 1) * 3600 for k in range(1, TIME_GAP_BUCKETS)]


def time_gap_buckets(gap_seconds: tf.Tensor) -> tf.Tensor:
    """int32 bucket of each gap: 0 under an hour, 1 under 3 hours, 2 under 7, ..., 15 from 32767 hours."""
    starts = tf.constant(_BUCKET_STARTS_SECONDS, tf.int32)
    return tf.reduce_sum(tf.cast(gap_seconds[..., None] >= starts, tf.int32), axis=-1)


class DeepInterestNetwork(keras.Model):
    def __init__(self, *, n_items: int, n_cats: int, embed_dim: int, use_category: bool,
                 attention_units: tuple[int, ...], attention_activation: str, attention_softmax: bool,
                 mlp_units: tuple[int, ...], activation: str, dropout: float, sum_pooled_history: bool,
                 l2: float, mini_batch_aware_l2: bool, history_layout: str = "compact",
                 history_capacity: HistoryCapacity | None = None, mlp_input_batch_norm: bool = False,
                 dropout_last_only: bool = False, l2_weights: str = "all", sequence_features: tuple[str, ...] = (),
                 maxlen: int = 1, dtype_policy: str = "float32", on_npu: bool = False):
        super().__init__(dtype=dtype_policy)
        self.sequence_features = tuple(sequence_features)
        self.maxlen = maxlen
        self.use_category = use_category
        self.sum_pooled_history = sum_pooled_history
        self.l2 = l2
        self.mini_batch_aware_l2 = mini_batch_aware_l2
        self.l2_weights = l2_weights
        if history_layout == "static_compact" and history_capacity is None:
            raise ValueError("the static_compact history layout needs a history_capacity")
        self.history_layout = history_layout
        self.history_capacity = history_capacity
        self.item_embedding = keras.layers.Embedding(n_items + 1, embed_dim, dtype=dtype_policy, name="item_embedding")
        self.cate_embedding = (keras.layers.Embedding(n_cats + 1, embed_dim, dtype=dtype_policy, name="cate_embedding")
                               if use_category else None)
        width = embed_dim * (2 if use_category else 1)
        self.recency_embedding = (keras.layers.Embedding(maxlen, width, dtype=dtype_policy, name="recency_embedding")
                                  if "recency" in self.sequence_features else None)
        self.time_gap_embedding = (keras.layers.Embedding(TIME_GAP_BUCKETS, width, dtype=dtype_policy,
                                                          name="time_gap_embedding")
                                   if "time_gap" in self.sequence_features else None)
        self.attention = AttentionPooling(attention_units, attention_activation, attention_softmax,
                                          dtype=dtype_policy, name="attention")
        self.mlp_input_norm = (keras.layers.BatchNormalization(dtype=dtype_policy, name="mlp_input_norm")
                               if mlp_input_batch_norm else None)
        self.mlp = DenseStack(mlp_units, activation, dropout, dropout_last_only, on_npu, dtype=dtype_policy, name="mlp")
        self.logit_layer = keras.layers.Dense(1, dtype="float32", name="logit")

    def embed(self, items, cates):
        """Item representation: [item_emb, cate_emb] or item_emb; shape ids.shape + [width]."""
        item_vectors = self.item_embedding(items)
        if not self.use_category:
            return item_vectors
        return tf.concat([item_vectors, self.cate_embedding(cates)], axis=-1)

    @property
    def history_inputs(self) -> tuple[str, ...]:
        """The `[B, L]` history features the model reads."""
        return history_features(reads_categories(self.use_category, self.sequence_features),
                                reads_gaps(self.sequence_features))

    def embed_history(self, ids: dict):
        """Representation of history entries from their ids (`history_ids`, any shape): the item
        representation plus the recency and time-gap embeddings that are on."""
        vectors = self.embed(ids["item"], ids.get("cate"))
        if self.recency_embedding is not None:
            vectors += self.recency_embedding(ids["recency"])
        if self.time_gap_embedding is not None:
            vectors += self.time_gap_embedding(time_gap_buckets(ids["gap"]))
        return vectors

    def history_ids(self, features, mask) -> dict:
        """`[B, L]` int32 ids of every history entry: item, cate, and the recency position and
        time gap (seconds) when those features are on (what each layout gathers before embedding)."""
        # int32 whatever the caller passed: Keras 3 hands a model's first (tracing) call float inputs
        ids = {"item": tf.cast(features["hist_item"], tf.int32)}
        if self.use_category:
            ids["cate"] = tf.cast(features["hist_cate"], tf.int32)
        if self.recency_embedding is not None:
            ids["recency"] = tf.minimum(_entries_after(mask), self.maxlen - 1)
        if self.time_gap_embedding is not None:
            # seconds; bucketised after the layout's gather, on the real entries only
            ids["gap"] = tf.cast(features["hist_gap"], tf.int32)
        return ids

    def call(self, features, training=False):
        target = self.embed(features["target_item"], features["target_cate"])
        mask = features["hist_item"] > 0
        ids = self.history_ids(features, mask)
        pool = {"dense": self._pool_dense, "compact": self._pool_compact,
                "static_compact": self._pool_static_compact}[self.history_layout]
        interest, history_sum = pool(ids, target, mask, training)
        parts = [interest, target, history_sum] if self.sum_pooled_history else [interest, target]
        if "last_item" in self.sequence_features:
            parts += self._most_recent_entry(ids, mask, target)
        if "share" in self.sequence_features:
            length = tf.reduce_sum(tf.cast(mask, interest.dtype), axis=1, keepdims=True)
            parts += [interest / tf.maximum(length, 1.0), tf.math.log1p(length)]
        if "category_match" in self.sequence_features:
            parts += category_match(features, mask, interest.dtype)
        mlp_input = tf.concat(parts, axis=-1)
        if self.mlp_input_norm is not None:
            mlp_input = self.mlp_input_norm(mlp_input, training=training)
        hidden = self.mlp(mlp_input, training=training)
        return tf.squeeze(self.logit_layer(tf.cast(hidden, tf.float32)), axis=-1)

    def _most_recent_entry(self, ids, mask, target):
        """[latest, product]: the representation of each sample's most recent history entry, and the
        product of its category embedding with the target's (item embeddings without categories);
        zeros for a sample without history. The product makes "the target is in the last review's
        category" one linear feature; over item embeddings too it let the MLP memorise item pairs
        (val AUC fell after epoch 5, docs/accuracy.md)."""
        latest = tf.cast(mask & tf.equal(_entries_after(mask), 0), tf.int32)
        picked = {name: tf.reduce_sum(values * latest, axis=1) for name, values in ids.items()}
        has_history = tf.cast(tf.reduce_any(mask, axis=1), target.dtype)[:, None]
        plain = self.embed(picked["item"], picked.get("cate"))
        if self.use_category:  # the category half of [item_emb, cate_emb]
            plain, target = plain[:, -self.cate_embedding.output_dim:], target[:, -self.cate_embedding.output_dim:]
        product = plain * target
        return [self.embed_history(picked) * has_history, product * has_history]

    def _pool_dense(self, ids, target, mask, training):
        """Attention over the padded [B, L] history (static shapes)."""
        history = self.embed_history(ids)
        interest = self.attention((target, history, mask), training=training)
        return interest, tf.reduce_sum(history * tf.cast(mask, history.dtype)[:, :, None], axis=1)

    def _pool_compact(self, ids, target, mask, training):
        """Attention over the real history entries only (ids > 0), gathered into [N]."""
        positions = tf.where(mask)  # row-major, so rows come out sorted (din_model/model/segments.py)
        rows = tf.cast(positions[:, 0], tf.int32)
        history = self.embed_history({name: tf.gather_nd(values, positions) for name, values in ids.items()})
        interest = self.attention((target, history, rows), training=training)
        return interest, sum_rows(history, rows, tf.shape(target)[0])

    def _pool_static_compact(self, ids, target, mask, training):
        """Attention over the real entries in a buffer of fixed capacity; the dense layout for a
        batch with more entries than slots."""
        capacity = self.history_capacity.for_batch(dimension(mask, 0))  # an int for a static batch (NPU, XLA)
        fits = tf.reduce_sum(tf.cast(mask, tf.int32)) <= capacity
        names = sorted(ids)

        def dense_fallback(target, mask, *id_values):
            return self._pool_dense(dict(zip(names, id_values)), target, mask, training)

        # Both run; the buffer's result is kept when the batch fits, the fallback's (computed, and
        # recomputed for the gradient, only then) when it does not. Not a tf.cond between the two:
        # XLA would write zeros for the fallback's [B, L, units] intermediates every step.
        in_buffer = self._pool_buffer(ids, target, mask, capacity, training, fits)
        fallback = only_when(tf.logical_not(fits), dense_fallback, lambda: (tf.zeros_like(target),) * 2,
                             target, mask, *(ids[name] for name in names))
        return tuple(tf.where(fits, buffered, dense) for buffered, dense in zip(in_buffer, fallback))

    def _pool_buffer(self, ids, target, mask, capacity, training, fits):
        """The buffer layout; `fits` false (entries beyond the capacity were left out): a result
        to discard, which leaves Dice's moving statistics alone."""
        positions, rows = gather_history(mask, capacity)
        samples = dimension(mask, 0)
        filled = (rows < samples) & fits
        history = self.embed_history({name: tf.gather(tf.reshape(values, [-1]), positions)
                                      for name, values in ids.items()})
        # The empty slots' sample: one more query row, whose results are sliced off.
        queries = tf.concat([target, tf.zeros_like(target[:1])], axis=0)
        interest = self.attention((queries, history, rows, filled), training=training)[:samples]
        return interest, static_sum_rows(history, rows, samples + 1)[:samples]

    def named_weights(self) -> dict:
        """Every weight by a name that is the same on Keras 2 and Keras 3.

        Training checkpoints store them under `weights/<name>` besides the Keras object
        graph (whose paths differ between the Keras versions), so a model trained on the
        Ascend stack (TF 2.6) restores and scores on the modern stack (`restore_weights`).
        """
        named = leaf_weights("item_embedding", self.item_embedding)
        if self.use_category:
            named.update(leaf_weights("cate_embedding", self.cate_embedding))
        for name in ("recency_embedding", "time_gap_embedding", "mlp_input_norm"):
            if getattr(self, name) is not None:
                named.update(leaf_weights(name, getattr(self, name)))
        return {**named, **self.attention.named_weights("attention"), **self.mlp.named_weights("mlp"),
                **leaf_weights("logit", self.logit_layer)}

    def regularization_loss(self, features):
        """0, plain L2 on every trainable weight or on the embedding tables (`l2_weights`),
        or the mini-batch aware L2 on embeddings."""
        if self.l2 <= 0:
            return tf.constant(0.0)
        tables = [(self.item_embedding, "hist_item", "target_item")]
        if self.use_category:
            tables.append((self.cate_embedding, "hist_cate", "target_cate"))
        if not self.mini_batch_aware_l2:
            weights = self.trainable_weights if self.l2_weights == "all" else [layer.embeddings for layer, _, _ in tables]
            return self.l2 * tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, tf.float32))) for w in weights])
        return self.l2 * tf.add_n([_mini_batch_l2(layer.embeddings, features[h], features[t]) for layer, h, t in tables])


def category_match(features, mask, dtype) -> list:
    """[share, decayed share for each of CATEGORY_MATCH_DECAYS ([B, 1] each), last entry's match by its
    time-gap bucket ([B, TIME_GAP_BUCKETS])] of the history entries in the target's category; 0 without history."""
    real = tf.cast(mask, dtype)
    match = real * tf.cast(tf.equal(tf.cast(features["hist_cate"], tf.int32),
                                    tf.cast(features["target_cate"], tf.int32)[:, None]), dtype)
    after = _entries_after(mask)
    parts = []
    for decay in (1.0,) + CATEGORY_MATCH_DECAYS:
        weight = real if decay == 1.0 else real * _powers(decay, after, dtype)
        total = tf.reduce_sum(weight, axis=1, keepdims=True)
        parts.append(tf.reduce_sum(weight * match, axis=1, keepdims=True) / tf.maximum(total, tf.ones_like(total)))
    latest = mask & tf.equal(after, 0)
    last_match = tf.reduce_sum(match * tf.cast(latest, dtype), axis=1, keepdims=True)
    last_gap = tf.reduce_sum(tf.cast(features["hist_gap"], tf.int32) * tf.cast(latest, tf.int32), axis=1)
    # one input per bucket as a comparison, not tf.one_hot: the NPU's graph engine takes no OneHot (npu_ops.py)
    bucket = tf.equal(time_gap_buckets(last_gap)[:, None], tf.constant(list(range(TIME_GAP_BUCKETS)), tf.int32))
    return parts + [tf.cast(bucket, dtype) * last_match]


def _powers(base: float, exponents, dtype):
    """base ** exponents: a lookup of the L powers when the history's length is static, else a power per entry."""
    positions = exponents.shape[1]
    if positions is None:
        return tf.pow(tf.constant(base, dtype), tf.cast(exponents, dtype))
    return tf.gather(tf.constant([base ** k for k in range(positions)], dtype), exponents)


def _entries_after(mask):
    """[B, L]: the real entries after each position, 0 for the most recent, wherever the padding is."""
    return tf.cumsum(tf.cast(mask, tf.int32), axis=1, exclusive=True, reverse=True)


def _mini_batch_l2(table, history_ids, target_ids):
    """sum over ids j present in the batch of ||w_j||^2 / n_j, n_j = j's count in the batch.

    Counting into a [rows] vector (one scatter-add) keeps every shape static and costs
    O(batch ids + table rows); the table is touched in full anyway by the dense Adam update.
    """
    ids = tf.concat([tf.reshape(history_ids, [-1]), tf.reshape(target_ids, [-1])], axis=0)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(ids, tf.float32), ids, tf.shape(table)[0])
    present = tf.logical_and(counts > 0, tf.range(tf.shape(table)[0]) > 0)
    squares = tf.reduce_sum(tf.square(tf.cast(table, tf.float32)), axis=-1)
    return tf.reduce_sum(tf.where(present, squares / tf.maximum(counts, 1.0), 0.0))


def resolve_history_layout(params: TrainParams, static_shapes: bool) -> str:
    """The history layout `params.history_layout` means on a device with or without static shapes."""
    if params.history_layout == "compact" and static_shapes:
        raise InputError("[train] history_layout = compact gathers a number of history entries that varies per "
                         "batch, but this device (the NPU) compiles one graph per shape: use auto (static_compact) "
                         "or dense")
    if params.history_layout != "auto":
        return params.history_layout
    return "static_compact" if static_shapes or params.jit_compile else "compact"


def build_model(params: TrainParams, spec: FeatureSpec, dtype_policy: str = "float32", static_shapes: bool = False,
                history_capacity: HistoryCapacity | None = None, on_npu: bool = False) -> DeepInterestNetwork:
    """The DIN for these params and this feature spec, built (variables exist) for `maxlen`.

    The history layout follows `resolve_history_layout`: with static shapes (NPU) or
    `params.jit_compile` (XLA) the static-capacity layout, whose capacity is measured on the
    spec's train split unless `history_capacity` is given; otherwise the compact layout. `on_npu`: only
    ops the Ascend graph engine takes (the adapter's dropout, din_model/model/layers.py `Dropout`).
    """
    maxlen = params.maxlen or spec.maxlen
    layout = resolve_history_layout(params, static_shapes)
    if layout == "static_compact" and history_capacity is None:
        history_capacity = measure_history_capacity(spec, maxlen, params.batch_size)
    model = DeepInterestNetwork(
        n_items=spec.n_items, n_cats=spec.n_cats, embed_dim=params.embed_dim,
        use_category=params.use_category, attention_units=params.attention_units,
        attention_activation=params.attention_activation, attention_softmax=params.attention_softmax,
        mlp_units=params.mlp_units, activation=params.activation, dropout=params.dropout,
        sum_pooled_history=params.sum_pooled_history, l2=params.l2,
        mini_batch_aware_l2=params.mini_batch_aware_l2, mlp_input_batch_norm=params.mlp_input_batch_norm,
        dropout_last_only=params.dropout_last_only, l2_weights=params.l2_weights,
        sequence_features=params.active_sequence_features, maxlen=maxlen,
        history_layout=layout, history_capacity=history_capacity, dtype_policy=dtype_policy, on_npu=on_npu)
    model(dummy_features(maxlen), training=False)
    return model


def dummy_features(maxlen: int, batch: int = 2) -> dict[str, tf.Tensor]:
    ones = tf.ones([batch], tf.int32)
    history = tf.ones([batch, maxlen], tf.int32)
    return {"hist_item": history, "hist_cate": history, "hist_gap": history,
            "target_item": ones, "target_cate": ones, "user_id": ones}
