"""DIN layers and model: Dice, masking, dense vs compact vs static-capacity history, L2, overfitting, export."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from din_model.compat import set_random_seed
from din_model.train.export import SIGNATURE_NAMES, export_saved_model
from din_model.model.layers import AttentionPooling, Dice, Dropout, PReLU
from din_model.model.history_capacity import HistoryCapacity
from din_model.model.network import build_model
from din_model.data.reader import make_dataset
from din_model.model.segments import row_operations
from din_model.params import TrainParams
from din_model.train.steps import make_train_step
from tests.helpers.din_fixtures import sizes_spec
from tests.helpers.scoring import load_scorer

SPEC = sizes_spec(n_items=40, n_cats=6, maxlen=5)
SMALL = dict(embed_dim=4, attention_hidden="8,4", mlp_hidden="8,4", batch_size=16)


def features_batch(seed=0, batch=6, maxlen=5):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, maxlen + 1, batch)
    hist_item = rng.integers(1, 41, (batch, maxlen)).astype(np.int32)
    hist_item[np.arange(maxlen)[None, :] >= lengths[:, None]] = 0
    hist_cate = np.where(hist_item > 0, hist_item % 6 + 1, 0).astype(np.int32)
    target_item = rng.integers(1, 41, batch).astype(np.int32)
    return {"hist_item": tf.constant(hist_item), "hist_cate": tf.constant(hist_cate),
            "target_item": tf.constant(target_item), "target_cate": tf.constant(target_item % 6 + 1),
            "user_id": tf.constant(np.arange(batch, dtype=np.int32))}


def test_dice_uses_batch_statistics_in_training_and_moving_averages_at_inference():
    dice = Dice(momentum=0.0)
    values = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, (64, 7, 5)), tf.float32)
    trained = dice(values, training=True)
    assert trained.shape == values.shape
    np.testing.assert_allclose(dice.moving_mean.numpy(), tf.reduce_mean(values, [0, 1]).numpy(), rtol=1e-5)
    # alpha = 0 at start: output = p(s) * s with p from the batch statistics
    mean, variance = tf.nn.moments(values, [0, 1])
    expected = tf.sigmoid((values - mean) / tf.sqrt(variance + 1e-8)) * values
    np.testing.assert_allclose(trained.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    single = values[:1]
    inferred = dice(single, training=False)  # uses the moving averages, not the one-sample statistics
    np.testing.assert_allclose(inferred.numpy(), expected[:1].numpy(), rtol=1e-5, atol=1e-6)


def test_prelu_slopes_negative_part_with_a_slope_per_unit():
    layer = PReLU(alpha_init=0.25)
    inputs = tf.constant([[-4.0, 2.0, 0.0], [3.0, -2.0, -1.0]])
    layer.build(inputs.shape)
    layer.alpha.assign([0.25, 1.5, -0.5])  # a learnt slope can leave [0, 1]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs)
        total = tf.reduce_sum(outputs * tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    np.testing.assert_allclose(outputs.numpy(), [[-1.0, 2.0, 0.0], [3.0, -3.0, 0.5]])
    alpha_gradient, input_gradient = tape.gradient(total, [layer.alpha, inputs])
    np.testing.assert_allclose(alpha_gradient.numpy(), [-4.0 * 1, -2.0 * 5, -1.0 * 6])  # sum of x * upstream, x <= 0
    np.testing.assert_allclose(input_gradient.numpy(), [[0.25, 2.0, -1.5], [4.0, 7.5, -3.0]])


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("activation", ["dice", "prelu"])
def test_padding_changes_nothing(softmax, activation):
    """Padded positions (id 0) do not count: neither the padding row's embedding nor extra padding columns."""
    params = TrainParams(**SMALL, attention_softmax=softmax, activation=activation, attention_activation=activation,
                         sum_pooled_history=True)
    model = build_model(params, SPEC)
    features = features_batch()
    before = model(features).numpy()
    for table in (model.item_embedding.embeddings, model.cate_embedding.embeddings):
        table.assign(tf.tensor_scatter_nd_update(table, [[0]], [tf.fill([table.shape[1]], 50.0)]))
    np.testing.assert_allclose(model(features).numpy(), before, rtol=1e-5, atol=1e-6)
    wider = dict(features, hist_item=tf.pad(features["hist_item"], [[0, 0], [0, 3]]),
                 hist_cate=tf.pad(features["hist_cate"], [[0, 0], [0, 3]]))
    np.testing.assert_allclose(model(wider).numpy(), before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rate, dropped_of_256", [(0.5, 128), (0.1, 26)])
def test_dropout_drops_its_rounded_rate_and_rescales_the_rest(rate, dropped_of_256):

    set_random_seed(3)
    layer = Dropout(rate)
    inputs = tf.ones([500, 203])  # 101,500 values: not a multiple of 4 bytes per word
    outputs = layer(inputs, training=True).numpy()
    kept = outputs != 0
    np.testing.assert_allclose(outputs[kept], 256 / (256 - dropped_of_256), rtol=1e-6)
    assert abs(1 - kept.mean() - dropped_of_256 / 256) < 0.005
    assert abs(outputs.mean() - 1) < 0.01  # unbiased
    again = layer(inputs, training=True).numpy() != 0
    dropped = dropped_of_256 / 256
    assert abs(np.mean(again != kept) - 2 * dropped * (1 - dropped)) < 0.01  # an independent mask every call
    np.testing.assert_array_equal(layer(inputs, training=False).numpy(), inputs.numpy())
    assert Dropout(rate, dtype="mixed_float16")(tf.ones([4, 6]), training=True).dtype == tf.float16


@pytest.mark.parametrize("layout", ["compact", "static_compact", "dense"])
def test_attention_first_layer_is_the_dense_layer_over_q_k_difference_product(layout):
    rng = np.random.default_rng(11)
    query = tf.constant(rng.normal(size=(3, 4)), tf.float32)
    layer = AttentionPooling((5, 2))
    if layout != "dense":
        rows = tf.constant([0, 0, 1, 2, 2, 2])
        keys = tf.constant(rng.normal(size=(6, 4)), tf.float32)
        queries, mask_or_rows = tf.gather(query, rows), rows
        inputs = (query, keys, rows, tf.ones([6], tf.bool))[:4 if layout == "static_compact" else 3]
    else:
        keys = tf.constant(rng.normal(size=(3, 2, 4)), tf.float32)
        queries, mask_or_rows = tf.broadcast_to(query[:, None, :], keys.shape), tf.ones([3, 2], tf.bool)
        inputs = (query, keys, mask_or_rows)
    layer(inputs)
    first = layer.hidden.dense_layers[0]
    first.bias.assign(rng.normal(size=5).astype(np.float32))
    expected = first(tf.concat([queries, keys, queries - keys, queries * keys], axis=-1))
    rows = None if layout == "dense" else row_operations(static=layout == "static_compact")
    np.testing.assert_allclose(layer._first_projection(query, keys, mask_or_rows, rows).numpy(), expected.numpy(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("softmax", [False, True])
def test_dense_and_compact_history_layouts_agree(softmax):
    params = TrainParams(**SMALL, attention_softmax=softmax, activation="dice", sum_pooled_history=True)
    compact = build_model(params, SPEC)
    dense = build_model(dataclasses.replace(params, history_layout="dense"), SPEC, static_shapes=True)
    dense.set_weights(compact.get_weights())
    features = features_batch(seed=3)
    np.testing.assert_allclose(dense(features).numpy(), compact(features).numpy(), rtol=1e-5, atol=1e-6)


def test_static_shapes_or_xla_pick_the_static_capacity_layout_measured_on_the_train_split(tmp_path):
    from din_common.feature_spec import FeatureSpec
    from tests.helpers.din_fixtures import write_random_fixture

    write_random_fixture(tmp_path, sizes=(("train", 300), ("val", 20), ("test", 20)), maxlen=6, prebatch=64,
                         num_shards=2, n_items=40, n_cats=6, n_users=50, mean_history=3.0)
    spec = FeatureSpec.read(tmp_path / "tfrecords" / "feature_spec.json")
    params = TrainParams(**SMALL, maxlen=4)
    assert build_model(params, spec).history_layout == "compact"
    assert build_model(dataclasses.replace(params, jit_compile=True), spec).history_layout == "static_compact"
    model = build_model(params, spec, static_shapes=True)
    assert model.history_layout == "static_compact"
    lengths = np.concatenate([np.sum(features["hist_item"].numpy() > 0, axis=1)
                              for features, _ in make_dataset(spec, "train", 64, maxlen=4)])
    assert model.history_capacity.mean_entries == pytest.approx(lengths.mean(), rel=1e-6)
    assert model.history_capacity.std_entries >= lengths.std() * (1 - 1e-6)
    assert model.history_capacity.maxlen == 4


def logits_and_gradients(model, features, training):
    """Logits and the gradients of a fixed weighted sum of them, for every trainable weight (dense)."""
    with tf.GradientTape() as tape:
        logits = model(features, training=training)
        total = tf.reduce_sum(logits * tf.range(1.0, 1.0 + tf.cast(tf.shape(logits)[0], tf.float32)))
    return logits, [tf.convert_to_tensor(g) for g in tape.gradient(total, model.trainable_variables)]


# Capacity rules for a batch of 6 samples: 8 slots (fewer than the test batch's entries) and 40 (more).
TOO_SMALL, LARGE_ENOUGH = HistoryCapacity(1.0, 0.0, 5), HistoryCapacity(3.0, 2.0, 5)


@pytest.mark.parametrize("capacity", [TOO_SMALL, LARGE_ENOUGH], ids=["overflowing", "fitting"])
@pytest.mark.parametrize("jit", [False, True], ids=["plain", "xla"])
@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.slow
def test_static_capacity_layout_gives_the_logits_and_gradients_of_the_others(capacity, jit, softmax):
    """Dice in the attention and the MLP (batch statistics over the real entries), training mode."""
    params = TrainParams(**SMALL, attention_softmax=softmax, activation="dice", attention_activation="dice",
                         sum_pooled_history=True)
    features = features_batch(seed=3)
    entries = int(tf.reduce_sum(tf.cast(features["hist_item"] > 0, tf.int32)))
    assert (capacity.for_batch(6) < entries) == (capacity is TOO_SMALL)  # both branches are exercised
    results, statistics = {}, {}
    for layout in ("compact", "dense", "static_compact"):
        model = build_model(dataclasses.replace(params, history_layout=layout), SPEC, history_capacity=capacity)
        if layout == "compact":
            weights = model.get_weights()
        model.set_weights(weights)
        run = tf.function(logits_and_gradients, jit_compile=True) if jit and layout != "compact" else \
            logits_and_gradients
        results[layout] = run(model, features, True)
        # Dice's moving statistics after the one training-mode call: updated once, with this batch's
        # statistics (the static layout's discarded buffer must not count when the batch overflows)
        statistics[layout] = {name: weight.numpy() for name, weight in model.named_weights().items()
                              if "moving" in name}
    for layout in ("dense", "static_compact"):
        np.testing.assert_allclose(results[layout][0].numpy(), results["compact"][0].numpy(), rtol=1e-5, atol=1e-6)
        for ours, expected in zip(results[layout][1], results["compact"][1]):
            np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)
        assert statistics[layout].keys() == statistics["compact"].keys() and statistics[layout]
        for name, value in statistics[layout].items():
            np.testing.assert_allclose(value, statistics["compact"][name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_mini_batch_aware_l2_counts_each_present_row_once_over_its_frequency():
    params = TrainParams(**SMALL, l2=0.5, use_category=False)
    model = build_model(params, SPEC)
    features = features_batch(seed=4)
    table = model.item_embedding.embeddings.numpy()
    ids = np.concatenate([features["hist_item"].numpy().ravel(), features["target_item"].numpy()])
    unique, counts = np.unique(ids[ids > 0], return_counts=True)
    expected = 0.5 * sum((table[j] ** 2).sum() / c for j, c in zip(unique, counts))
    assert float(model.regularization_loss(features)) == pytest.approx(expected, rel=1e-5)
    plain = build_model(TrainParams(**SMALL, l2=0.5, mini_batch_aware_l2=False), SPEC)
    expected_plain = 0.5 * sum(float(np.sum(w.numpy() ** 2)) for w in plain.trainable_weights)
    assert float(plain.regularization_loss(features)) == pytest.approx(expected_plain, rel=1e-5)
    tables_only = build_model(TrainParams(**SMALL, l2=0.5, mini_batch_aware_l2=False, l2_weights="embeddings"), SPEC)
    expected_tables = 0.5 * sum(float(np.sum(layer.embeddings.numpy() ** 2))
                                for layer in (tables_only.item_embedding, tables_only.cate_embedding))
    assert float(tables_only.regularization_loss(features)) == pytest.approx(expected_tables, rel=1e-5)


def test_mini_batch_aware_l2_of_a_hand_made_batch():
    """Row 1 is used 3 times, row 3 twice; padding id 0 and the unused rows 2 and 4 add nothing."""
    params = TrainParams(**SMALL, l2=1.0, use_category=False)
    model = build_model(params, sizes_spec(n_items=4, n_cats=1, maxlen=3))
    model.item_embedding.embeddings.assign(np.array([[9, 9, 9, 9], [1, 1, 1, 1], [2, 0, 0, 0], [0, 3, 0, 0],
                                                     [5, 5, 5, 5]], np.float32))
    features = {"hist_item": tf.constant([[1, 3, 0], [1, 0, 0]]), "target_item": tf.constant([3, 1]),
                "hist_cate": tf.zeros([2, 3], tf.int32), "target_cate": tf.zeros([2], tf.int32)}
    assert float(model.regularization_loss(features)) == pytest.approx(4 / 3 + 9 / 2)


@pytest.mark.slow
def test_xla_train_step_matches_the_plain_one():
    """jit_compile needs static shapes all the way, the mini-batch aware L2 included."""
    from din_model.compat import keras

    params = TrainParams(**SMALL, l2=0.01, activation="dice", jit_compile=True)
    losses = {}
    for jit in (False, True):
        set_random_seed(5)
        model = build_model(params, SPEC, static_shapes=True, history_capacity=LARGE_ENOUGH)
        step = make_train_step(model, keras.optimizers.Adam(0.01), jit_compile=jit)
        features = features_batch(seed=8, batch=16)
        labels = tf.constant(np.random.default_rng(8).integers(0, 2, 16).astype(np.float32))
        losses[jit] = [float(step(features, labels)) for _ in range(3)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)


def test_model_overfits_a_tiny_set():
    from din_model.compat import keras

    set_random_seed(1)
    params = TrainParams(embed_dim=8, attention_hidden="16,8", mlp_hidden="32,16", learning_rate=0.02,
                         activation="prelu", batch_size=64)
    model = build_model(params, SPEC)
    optimizer = keras.optimizers.Adam(params.learning_rate)
    step = make_train_step(model, optimizer, jit_compile=False)
    features = features_batch(seed=7, batch=64)
    labels = tf.constant(np.random.default_rng(7).integers(0, 2, 64).astype(np.float32))
    for _ in range(300):
        loss = float(step(features, labels))
    from din_common.metrics import auc

    assert loss < 0.05
    assert auc(labels.numpy(), tf.sigmoid(model(features)).numpy()) == 1.0


def test_export_reload_gives_the_same_predictions(tmp_path):
    params = TrainParams(**SMALL, activation="dice")
    model = build_model(params, SPEC)
    features = features_batch(seed=2)
    expected = tf.sigmoid(model(features, training=False)).numpy()
    path = export_saved_model(model, 5, tmp_path / "saved_model")
    inputs = {name: features[name] for name in ("hist_item", "hist_cate", "target_item", "target_cate")}
    for name in SIGNATURE_NAMES:
        scorer = load_scorer(path, name)
        np.testing.assert_allclose(scorer(**inputs)["probability"].numpy(), expected, rtol=1e-6)
    assert tf.saved_model.load(str(path)).signatures["serving_default"].structured_input_signature[1][
        "hist_item"].shape.as_list() == [None, 5]


@pytest.mark.parametrize("activation, dropout, use_category, reference_options",
                         [("dice", 0.5, True, False), ("prelu", 0.0, False, False), ("prelu", 0.5, False, True)])
def test_named_weights_name_every_weight_once_by_its_role(activation, dropout, use_category, reference_options):
    params = TrainParams(embed_dim=4, attention_hidden="8,4", mlp_hidden="6,5", activation=activation, dropout=dropout,
                         use_category=use_category, mlp_input_batch_norm=reference_options,
                         dropout_last_only=reference_options)
    model = build_model(params, sizes_spec(n_items=50, n_cats=5, maxlen=6))
    named = model.named_weights()
    assert sorted(id(variable) for variable in named.values()) == sorted(id(variable) for variable in model.weights)
    assert tuple(named["item_embedding_embeddings"].shape) == (51, 4)
    assert tuple(named["attention_hidden_dense0_kernel"].shape) == (4 * (8 if use_category else 4), 8)
    assert tuple(named["mlp_dense0_kernel"].shape) == (2 * (8 if use_category else 4), 6)
    assert ("mlp_activation0_moving_mean" in named) == (activation == "dice")
    assert ("mlp_dropout0_seed_state" in named) == (dropout > 0 and not reference_options)
    assert ("mlp_dropout1_seed_state" in named) == (dropout > 0)
    assert ("mlp_input_norm_moving_variance" in named) == reference_options
    assert ("cate_embedding_embeddings" in named) == use_category


def test_export_logs_no_warning_a_user_would_take_for_a_failure(tmp_path, caplog):
    """TF 2.6's SavedModel writer warns about "untraced functions" of Keras layers; export keeps that quiet."""
    import logging

    model = build_model(TrainParams(embed_dim=4, attention_hidden="8", mlp_hidden="8", activation="dice"),
                        sizes_spec(n_items=20, n_cats=4, maxlen=5))
    with caplog.at_level(logging.WARNING):
        export_saved_model(model, 5, tmp_path / "saved_model")
    assert [record.getMessage()[:120] for record in caplog.records if record.levelno >= logging.WARNING] == []
