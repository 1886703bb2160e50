"""DIN's order-aware inputs (model din_seq): recency and time-gap embeddings, the most recent item, RelaImpr."""
import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from din_common.errors import InputError
from din_model.compat import set_random_seed
from din_model.train.evaluation import plain_din_test_auc, relative_improvements
from din_model.train.export import export_saved_model
from din_model.model.history_capacity import HistoryCapacity
from din_common.metrics import rela_impr
from din_model.model.network import TIME_GAP_BUCKETS, build_model, category_match, time_gap_buckets
from din_model.params import TrainParams, run_id
from tests.helpers.din_fixtures import sizes_spec
from tests.helpers.scoring import load_scorer

SPEC = sizes_spec(n_items=40, n_cats=6, maxlen=5)
SMALL = dict(embed_dim=4, attention_hidden="8,4", mlp_hidden="8,4", batch_size=16)
HOUR = 3600
DAY = 24 * HOUR


def batch(seed=0, samples=6, maxlen=5):
    """Histories left-aligned (zeros after), gaps growing towards the oldest entry, as the reader gives them."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, maxlen + 1, samples)
    real = np.arange(maxlen)[None, :] < lengths[:, None]
    hist_item = np.where(real, rng.integers(1, 41, (samples, maxlen)), 0).astype(np.int32)
    hist_gap = np.where(real, (lengths[:, None] - np.arange(maxlen)[None, :]) * rng.integers(1, 90, (samples, 1)) * DAY,
                        0).astype(np.int32)
    target_item = rng.integers(1, 41, samples).astype(np.int32)
    return {"hist_item": hist_item, "hist_cate": np.where(real, hist_item % 6 + 1, 0).astype(np.int32),
            "hist_gap": hist_gap, "target_item": target_item, "target_cate": target_item % 6 + 1,
            "user_id": np.arange(samples, dtype=np.int32)}


def scores(model, features):
    return model({name: tf.constant(value) for name, value in features.items()}).numpy()


def model_with(features="", model="din_seq", seed=3, **changes):
    set_random_seed(seed)
    return build_model(TrainParams(**{**SMALL, **changes}, model=model, sequence_features=features), SPEC)


def permute_entries(features, order):
    """The same histories with their real entries reordered by `order` (a permutation of each row's entries)."""
    permuted = dict(features)
    for name in ("hist_item", "hist_cate", "hist_gap"):
        values = features[name].copy()
        for row in range(len(values)):
            real = int((features["hist_item"][row] > 0).sum())
            values[row, :real] = values[row, :real][order(real)]
        permuted[name] = values
    return permuted


def test_time_gap_buckets_are_log2_of_one_plus_hours_exactly_at_the_edges():
    gaps = tf.constant([0, HOUR - 1, HOUR, 3 * HOUR - 1, 3 * HOUR, 7 * HOUR, DAY, 2 * DAY, 365 * DAY,
                        32767 * HOUR - 1, 32767 * HOUR, 2 ** 31 - 1])
    assert time_gap_buckets(gaps).numpy().tolist() == [0, 0, 1, 1, 2, 3, 4, 5, 13, 14, 15, 15]
    assert TIME_GAP_BUCKETS == 16


@pytest.mark.parametrize("features", ["recency", "time_gap", "last_item", "share", "category_match",
                                      "recency,time_gap,last_item,share,category_match"])
def test_each_feature_adds_its_weights_and_keeps_one_logit_per_sample(features):
    model = model_with(features)
    logits = scores(model, batch())
    assert logits.shape == (6,) and np.all(np.isfinite(logits))
    names = set(model.named_weights())
    assert ("recency_embedding_embeddings" in names) == ("recency" in features)
    assert ("time_gap_embedding_embeddings" in names) == ("time_gap" in features)
    assert model.named_weights()["attention_hidden_dense0_kernel"].shape[0] == 4 * 8
    # interest and target (8 each); the most recent entry (8) and its category's product with the target's (4);
    # the interest over the history length (8) and log(1 + length) (1); three shares and the last entry's match
    # by its time-gap bucket (3 + 16)
    width = 16 + 12 * ("last_item" in features) + 9 * ("share" in features) + 19 * ("category_match" in features)
    assert model.named_weights()["mlp_dense0_kernel"].shape[0] == width


def test_plain_din_ignores_the_sequence_features_setting():
    params = TrainParams(**SMALL, model="din", sequence_features="recency,time_gap")
    assert params.active_sequence_features == ()
    assert "recency_embedding_embeddings" not in build_model(params, SPEC).named_weights()
    assert TrainParams(**SMALL, model="din_seq", sequence_features="none").active_sequence_features == ()


@pytest.mark.parametrize("changes, message", [
    (dict(model="dien"), "[train] model must be one of ('din', 'din_seq'), got 'dien'"),
    (dict(sequence_features="recency,position"), "[train] sequence_features must be comma-separated names out of "
                                                 "recency, time_gap, last_item, share"),
    (dict(sequence_features="recency,recency"), "each once"),
])
def test_bad_model_settings_name_the_setting(changes, message):
    with pytest.raises(InputError) as error:
        TrainParams(**changes)
    assert message in str(error.value)


@pytest.mark.parametrize("features", ["", "time_gap", "share"])
def test_reordering_the_history_changes_nothing_without_recency(features):
    model = model_with(features)
    original = batch()
    reversed_entries = permute_entries(original, lambda n: np.arange(n)[::-1])
    np.testing.assert_allclose(scores(model, reversed_entries), scores(model, original), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("features", ["recency", "last_item"])
def test_reordering_the_history_changes_the_score_with_order_features(features):
    model = model_with(features)
    original = batch()
    reversed_entries = permute_entries(original, lambda n: np.arange(n)[::-1])
    assert np.abs(scores(model, reversed_entries) - scores(model, original)).max() > 1e-4


def test_padded_positions_count_for_nothing_wherever_the_padding_is():
    """Recency counts real entries from the end: left padding, extra padding and the gaps and
    embedding rows of padded positions all leave the scores unchanged."""
    model = model_with("recency,time_gap,last_item,share")
    original = batch()
    before = scores(model, original)
    noisy_padding = dict(original, hist_gap=np.where(original["hist_item"] > 0, original["hist_gap"], 12345 * DAY))
    np.testing.assert_allclose(scores(model, noisy_padding), before, rtol=1e-5, atol=1e-6)
    left_padded = {name: (np.stack([np.roll(row, int((row == 0).sum())) for row in original[name]])
                          if name.startswith("hist_") else value) for name, value in original.items()}
    left_padded["hist_cate"] = np.where(left_padded["hist_item"] > 0, left_padded["hist_cate"], 0)
    assert left_padded["hist_item"][:, 0].min() == 0  # some rows really start with padding
    np.testing.assert_allclose(scores(model, left_padded), before, rtol=1e-5, atol=1e-6)
    for table in (model.item_embedding.embeddings, model.cate_embedding.embeddings):
        table.assign(tf.tensor_scatter_nd_update(table, [[0]], [tf.fill([table.shape[1]], 50.0)]))
    np.testing.assert_allclose(scores(model, original), before, rtol=1e-5, atol=1e-6)


def test_the_most_recent_entry_is_the_last_real_one_with_its_gap():
    model = model_with("time_gap,last_item")
    features = {"hist_item": tf.constant([[5, 9, 0], [7, 0, 0], [0, 0, 0]]),
                "hist_cate": tf.constant([[1, 2, 0], [3, 0, 0], [0, 0, 0]]),
                "hist_gap": tf.constant([[9 * DAY, 2 * DAY, 0], [HOUR, 0, 0], [0, 0, 0]])}
    mask = features["hist_item"] > 0
    target = model.embed(tf.constant([4, 4, 4]), tf.constant([2, 5, 2]))
    latest, product = [part.numpy() for part in model._most_recent_entry(model.history_ids(features, mask), mask,
                                                                          target)]
    expected = model.embed_history({"item": tf.constant([9, 7]), "cate": tf.constant([2, 3]),
                                    "gap": tf.constant([2 * DAY, HOUR])}).numpy()
    item_and_category = model.embed(tf.constant([9, 7]), tf.constant([2, 3])).numpy()
    gaps = model.time_gap_embedding.embeddings.numpy()[time_gap_buckets(tf.constant([2 * DAY, HOUR])).numpy()]
    np.testing.assert_allclose(expected, item_and_category + gaps, rtol=1e-6)
    np.testing.assert_allclose(latest[:2], expected, rtol=1e-6)
    categories = model.cate_embedding.embeddings.numpy()
    np.testing.assert_allclose(product[:2], categories[[2, 3]] * categories[[2, 5]], rtol=1e-6)
    np.testing.assert_array_equal(latest[2], 0.0)  # no history: zeros
    np.testing.assert_array_equal(product[2], 0.0)


def test_share_feeds_the_mlp_the_interest_over_the_history_length_and_log_one_plus_the_length():
    model = model_with("share")
    features = {"hist_item": tf.constant([[5, 9, 0, 0], [7, 0, 0, 0], [0, 0, 0, 0]]),
                "hist_cate": tf.constant([[1, 2, 0, 0], [3, 0, 0, 0], [0, 0, 0, 0]]),
                "target_item": tf.constant([4, 4, 4]), "target_cate": tf.constant([2, 5, 2])}
    mask = features["hist_item"] > 0
    target = model.embed(features["target_item"], features["target_cate"])
    interest, _ = model._pool_dense(model.history_ids(features, mask), target, mask, False)
    lengths = np.array([[2.0], [1.0], [0.0]], np.float32)
    expected_input = tf.concat([interest, target, interest / np.maximum(lengths, 1.0), np.log1p(lengths)], axis=-1)
    expected = tf.squeeze(model.logit_layer(model.mlp(expected_input, training=False)), axis=-1)
    np.testing.assert_allclose(model(features).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(expected_input.numpy()[2, 16:], 0.0)  # no history: a zero share and log(1)


def test_category_match_counts_the_history_entries_in_the_target_category_exactly():
    # padding on either side; categories 2 / 2 / 7 / 2 from the oldest, the target's is 2
    features = {"hist_cate": tf.constant([[0, 2, 2, 7, 2], [3, 2, 0, 0, 0], [0, 0, 0, 0, 0]]),
                "hist_gap": tf.constant([[0, 50, 40, 30, 2 * DAY], [9, 3 * HOUR, 0, 0, 0], [0, 0, 0, 0, 0]]),
                "target_cate": tf.constant([2, 2, 2])}
    mask = tf.constant([[False, True, True, True, True], [True, True, False, False, False], [False] * 5])
    share, decayed_08, decayed_05, last = (part.numpy() for part in category_match(features, mask, tf.float32))
    np.testing.assert_allclose(share[:, 0], [3 / 4, 1 / 2, 0.0], rtol=1e-6)
    # weights 0.8^k from the most recent (k = 0): 2 (k=0), 7 (k=1), 2 (k=2), 2 (k=3)
    np.testing.assert_allclose(decayed_08[:, 0], [(1 + 0.64 + 0.512) / (1 + 0.8 + 0.64 + 0.512), 1 / 1.8, 0.0],
                               rtol=1e-6)
    np.testing.assert_allclose(decayed_05[:, 0], [(1 + 0.25 + 0.125) / 1.875, 1 / 1.5, 0.0], rtol=1e-6)
    expected_last = np.zeros((3, TIME_GAP_BUCKETS), np.float32)
    expected_last[0, time_gap_buckets(tf.constant(2 * DAY)).numpy()] = 1.0   # the most recent entry matches
    expected_last[1, time_gap_buckets(tf.constant(3 * HOUR)).numpy()] = 1.0
    np.testing.assert_array_equal(last, expected_last)


def test_category_match_is_zero_when_the_most_recent_entry_is_elsewhere():
    features = {"hist_cate": tf.constant([[2, 4]]), "hist_gap": tf.constant([[5 * DAY, DAY]]),
                "target_cate": tf.constant([2])}
    parts = category_match(features, tf.constant([[True, True]]), tf.float32)
    np.testing.assert_array_equal(parts[-1].numpy(), 0.0)
    np.testing.assert_allclose(parts[0].numpy(), [[0.5]])


@pytest.mark.parametrize("capacity", [HistoryCapacity(1.0, 0.0, 5), HistoryCapacity(4.0, 2.0, 5)],
                         ids=["overflowing", "fitting"])
@pytest.mark.slow
def test_every_layout_gives_the_same_logits_and_gradients_with_every_feature(capacity):
    """Compact, dense and the static-capacity buffer (under XLA, both of its branches)."""
    features = {name: tf.constant(value) for name, value in batch(samples=8).items()}
    entries = int(tf.reduce_sum(tf.cast(features["hist_item"] > 0, tf.int32)))
    assert (capacity.for_batch(8) < entries) == (capacity.mean_entries == 1.0)
    results = {}
    for layout in ("compact", "dense", "static_compact"):
        set_random_seed(5)
        params = TrainParams(**SMALL, model="din_seq", sequence_features="recency,time_gap,last_item,share,category_match",
                             history_layout=layout)
        model = build_model(params, SPEC, history_capacity=capacity)
        tables = [model.recency_embedding.embeddings, model.time_gap_embedding.embeddings,
                  model.item_embedding.embeddings]

        def logits_and_gradients(features):
            with tf.GradientTape() as tape:
                logits = model(features, training=True)
                loss = tf.reduce_sum(logits * tf.range(8, dtype=tf.float32))
            return logits, [tf.convert_to_tensor(gradient) for gradient in tape.gradient(loss, tables)]

        run = tf.function(logits_and_gradients, jit_compile=True) if layout == "static_compact" else \
            logits_and_gradients
        results[layout] = run(features)
    for layout in ("dense", "static_compact"):
        np.testing.assert_allclose(results[layout][0].numpy(), results["compact"][0].numpy(), rtol=1e-5, atol=1e-6)
        for ours, expected in zip(results[layout][1], results["compact"][1]):
            np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)


def test_export_takes_hist_gap_only_when_the_model_reads_it(tmp_path):
    features = batch()
    for feature_set, expect_gap in (("recency,time_gap,last_item", True), ("recency,last_item", False)):
        model = model_with(feature_set)
        scorer = load_scorer(export_saved_model(model, 5, tmp_path / feature_set))
        inputs = {name for name in scorer.structured_input_signature[1]}
        assert ("hist_gap" in inputs) == expect_gap
        probability = scorer(**{name: tf.constant(features[name]) for name in inputs})["probability"].numpy()
        np.testing.assert_allclose(probability, tf.sigmoid(scores(model, features)).numpy(), rtol=1e-5, atol=1e-6)


def test_rela_impr_is_the_papers_relative_improvement():
    assert rela_impr(0.8, 0.7) == pytest.approx(0.5)
    assert rela_impr(0.6, 0.7) == pytest.approx(-0.5)
    assert rela_impr(0.7, 0.5) is None
    assert relative_improvements(0.9, 0.7, None) == {"vs_popularity": pytest.approx(1.0), "vs_din": None}


def test_plain_din_twin_is_the_same_settings_with_model_din_in_the_same_runs_folder(tmp_path):
    params = TrainParams(**SMALL, model="din_seq")
    spec = dataclasses.replace(SPEC, fingerprint="abc")
    twin = tmp_path / run_id(TrainParams(**SMALL, model="din"), "abc", None, spec.content_fingerprint())
    own = tmp_path / run_id(params, "abc", None, spec.content_fingerprint())
    assert plain_din_test_auc(own, params, spec) is None
    twin.mkdir()
    (twin / "metrics.json").write_text(json.dumps({"test": {"auc": 0.875}}))
    assert plain_din_test_auc(own, params, spec) == 0.875


@pytest.mark.parametrize("model, features, use_category, expected", [
    ("din", "recency,time_gap,last_item", True, ("hist_item", "hist_cate")),
    ("din_seq", "recency,last_item", True, ("hist_item", "hist_cate")),
    ("din_seq", "time_gap", True, ("hist_item", "hist_cate", "hist_gap")),
    ("din", "time_gap", False, ("hist_item",)),
    ("din_seq", "time_gap,last_item", False, ("hist_item", "hist_gap")),
    ("din_seq", "category_match", True, ("hist_item", "hist_cate", "hist_gap")),
    ("din_seq", "category_match", False, ("hist_item", "hist_cate", "hist_gap")),   # its counts, no embedding
    ("din", "category_match", False, ("hist_item",)),
])
def test_the_reader_decodes_only_the_history_a_model_reads(model, features, use_category, expected):
    params = TrainParams(**SMALL, model=model, sequence_features=features, use_category=use_category)
    assert params.history_features == expected
    model = build_model(params, SPEC)
    assert model.history_inputs == expected
    only_those = {name: tf.constant(value) for name, value in batch().items()
                  if name in expected or not name.startswith("hist_")}
    assert model(only_those, training=True).shape == (6,)  # reads nothing else
