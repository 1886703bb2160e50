"""The tf.data reader: every sample once, padding, rebatching, maxlen, sharding, damaged shards."""
import dataclasses
import json

import numpy as np
import pytest

from tests.helpers.din_fixtures import autotune_enabled, random_samples, write_fixture
from din_model.data.reader import FEATURE_NAMES, batch_signature, iterate_checked, make_dataset, split_files
from din_common.errors import InputError
from din_common.feature_spec import FeatureSpec

N_SAMPLES = 203  # not a multiple of prebatch or batch size


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader")
    samples = random_samples(N_SAMPLES, maxlen=6, n_items=500, n_cats=7, n_users=30, mean_history=3.0, seed=5)
    samples["target_item"] = np.arange(1, N_SAMPLES + 1, dtype=np.int32)  # a key per sample
    splits = {"train": samples, "val": random_samples(10, maxlen=6, seed=1), "test": random_samples(10, maxlen=6)}
    spec_path = write_fixture(root, splits, maxlen=6, prebatch=8, num_shards=3, n_items=500, n_cats=7, n_users=30)
    return spec_path, samples


def collect(dataset):
    batches = list(dataset)
    features = {name: np.concatenate([f[name].numpy() for f, _ in batches]) for name in batches[0][0]}
    labels = np.concatenate([label.numpy() for _, label in batches])
    return batches, features, labels


HISTORIES = ("hist_item", "hist_cate", "hist_gap")


def expected_row(samples, key, maxlen):
    """The padded histories (one row per name in HISTORIES) and per-sample values of sample `key`."""
    index = key - 1
    padded = np.zeros((len(HISTORIES), maxlen), np.int32)
    for row, name in enumerate(HISTORIES):
        kept = samples[name][index][-maxlen:]
        padded[row, :len(kept)] = kept
    return padded, samples["label"][index], samples["user_id"][index], samples["target_cate"][index]


@pytest.mark.parametrize("batch_size, maxlen", [(16, None), (5, None), (64, 3), (1000, 1)])
def test_every_sample_once_with_padding_and_truncation(fixture, batch_size, maxlen):
    spec_path, samples = fixture
    batches, features, labels = collect(make_dataset(spec_path, "train", batch_size, maxlen=maxlen))
    length = maxlen or 6
    assert sorted(features["target_item"].tolist()) == list(range(1, N_SAMPLES + 1))
    assert all(int(label.shape[0]) == batch_size for _, label in batches[:-1])
    assert sorted(features) == sorted(FEATURE_NAMES)
    for name in HISTORIES:
        assert features[name].shape == (N_SAMPLES, length) and features[name].dtype == np.int32
    assert labels.dtype == np.float32
    for row, key in enumerate(features["target_item"]):
        padded, label, user, cate = expected_row(samples, key, length)
        for index, name in enumerate(HISTORIES):
            np.testing.assert_array_equal(features[name][row], padded[index])
        assert (labels[row], features["user_id"][row], features["target_cate"][row]) == (label, user, cate)


def test_hist_gap_is_aligned_with_hist_item_and_zero_on_padding(fixture):
    spec_path, samples = fixture
    _, features, _ = collect(make_dataset(spec_path, "train", 32, maxlen=2))
    # Samples found by their key: their last two entries, most recent last, then padding.
    for key in (1, 2, 3):
        row = features["target_item"].tolist().index(key)
        padding = [0] * (2 - len(samples["hist_item"][key - 1][-2:]))
        for name in ("hist_item", "hist_gap"):
            assert features[name][row].tolist() == samples[name][key - 1][-2:].tolist() + padding
    present = features["hist_item"] > 0
    assert (features["hist_gap"][~present] == 0).all()
    # The fixture's gaps grow towards the oldest entry, so the kept (most recent) ones are the smallest.
    full = [g for g in samples["hist_gap"] if len(g) > 2]
    assert full and all(g[0] > g[-1] > 0 for g in full)


def test_only_the_history_fields_asked_for_are_decoded(fixture):
    spec_path, _ = fixture
    full = collect(make_dataset(spec_path, "test", 32, maxlen=4))[1]
    dataset = make_dataset(spec_path, "test", 32, maxlen=4, history_fields=("hist_item", "hist_cate"))
    assert dataset.element_spec == batch_signature(4, None, ("hist_item", "hist_cate"))
    _, features, _ = collect(dataset)
    assert "hist_gap" not in features and "hist_gap" not in batch_signature(4, None, ("hist_item", "hist_cate"))[0]
    for name in ("hist_item", "hist_cate", "target_item", "user_id"):
        np.testing.assert_array_equal(features[name], full[name])


def test_spec_of_shards_without_hist_gap_is_refused(fixture, tmp_path):
    spec = json.loads(fixture[0].read_text())
    for version in (1, None):
        old = {key: value for key, value in spec.items() if key != "format_version"}
        if version is not None:
            old["format_version"] = version
        path = tmp_path / "feature_spec.json"
        path.write_text(json.dumps(old))
        found = "format_version 1" if version else "no format_version"
        with pytest.raises(InputError, match=f"feature_spec.json has {found}, expected 2 or later: its shards "
                                             r"predate hist_gap .*rerun `luigi --module pipeline Preprocess`"):
            FeatureSpec.read(path)
        with pytest.raises(InputError, match="predate hist_gap"):
            make_dataset(path, "train", 8)


def test_drop_remainder_gives_static_full_batches(fixture):
    spec_path, _ = fixture
    dataset = make_dataset(spec_path, "train", 16, drop_remainder=True, shuffle=True, seed=3)
    assert dataset.element_spec[1].shape.as_list() == [16]
    assert dataset.element_spec[0]["hist_item"].shape.as_list() == [16, 6]
    batches, features, _ = collect(dataset)
    assert len(batches) == N_SAMPLES // 16
    assert len(set(features["target_item"].tolist())) == len(features["target_item"])


@pytest.mark.parametrize("drop_remainder, batch_dimension", [(False, None), (True, 16)])
def test_batches_match_the_step_signature_and_run_without_the_autotune_model(fixture, drop_remainder,
                                                                             batch_dimension):
    spec_path, _ = fixture
    dataset = make_dataset(spec_path, "train", 16, maxlen=4, drop_remainder=drop_remainder)
    assert dataset.element_spec == batch_signature(4, batch_dimension)
    # its model thread made ends of iteration wait (see reader._options_without_autotune)
    assert not autotune_enabled(dataset.options())


def test_shuffle_changes_order_but_not_content(fixture):
    spec_path, _ = fixture
    _, plain, _ = collect(make_dataset(spec_path, "train", 32))
    _, shuffled, _ = collect(make_dataset(spec_path, "train", 32, shuffle=True, seed=9))
    assert sorted(shuffled["target_item"].tolist()) == sorted(plain["target_item"].tolist())
    assert shuffled["target_item"].tolist() != plain["target_item"].tolist()


def test_file_shards_partition_the_split(fixture):
    spec_path, _ = fixture
    keys = []
    for index in range(2):
        _, features, _ = collect(make_dataset(spec_path, "train", 32, file_shard=(index, 2)))
        keys += features["target_item"].tolist()
    assert sorted(keys) == list(range(1, N_SAMPLES + 1))


def test_spec_files_and_bad_maxlen(fixture):
    spec_path, _ = fixture
    spec = FeatureSpec.read(spec_path)
    assert split_files(spec, "val")[0].endswith("val/part-00000.tfrecord")
    with pytest.raises(InputError, match="maxlen"):
        make_dataset(spec, "train", 8, maxlen=7)


def test_missing_spec_and_missing_shard(tmp_path, fixture):
    with pytest.raises(InputError, match="feature spec not found"):
        make_dataset(tmp_path / "feature_spec.json", "train", 8)
    spec = FeatureSpec.read(fixture[0])
    train = spec.splits["train"]
    listing_a_missing_shard = dataclasses.replace(spec, splits={**spec.splits, "train": dataclasses.replace(
        train, files=train.files + ("train/part-00099.tfrecord",))})
    with pytest.raises(InputError, match="part-00099"):
        make_dataset(listing_a_missing_shard, "train", 8)


def test_truncated_shard_is_named(tmp_path):
    samples = random_samples(64, maxlen=6, seed=2)
    spec_path = write_fixture(tmp_path, {"train": samples}, maxlen=6, prebatch=8, num_shards=2)
    damaged = spec_path.parent / "train" / "part-00001.tfrecord"
    damaged.write_bytes(damaged.read_bytes()[:-30])
    spec = FeatureSpec.read(spec_path)
    with pytest.raises(InputError, match="part-00001.tfrecord: corrupt or truncated"):
        for _ in iterate_checked(make_dataset(spec, "train", 8), split_files(spec, "train")):
            pass
