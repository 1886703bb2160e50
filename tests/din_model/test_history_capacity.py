"""The static layout's capacity rule: mean * B + 4 sqrt(B) * std slots, rounded up, at most B * maxlen,
with std widened by the spread of real batch totals."""
import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from din_common.errors import InputError
from din_model.model.history_capacity import HistoryCapacity, capacity_of_batches


def test_capacity_rule_for_an_int_and_a_tensor_batch():
    rule = HistoryCapacity(6.0, 5.0, 20)
    assert rule.for_batch(4096) == 24576 + 1280  # 6 * 4096 + 4 * 64 * 5, already a multiple of 8
    assert rule.for_batch(3) == 56  # 18 + 4 * sqrt(3) * 5 = 52.6, rounded up to a multiple of 8 (below 3 * 20)
    assert int(rule.for_batch(tf.constant(4096))) == rule.for_batch(4096)
    assert int(rule.for_batch(tf.constant(3))) == rule.for_batch(3)


def test_capacity_never_exceeds_every_position_and_rejects_impossible_statistics():
    assert HistoryCapacity(5.0, 0.0, 5).for_batch(10) == 50
    with pytest.raises(InputError, match="maxlen=5"):
        HistoryCapacity(6.0, 1.0, 5)
    with pytest.raises(InputError, match="no samples"):
        capacity_of_batches([], 5)


def test_the_spread_of_batch_totals_widens_the_capacity_when_batches_are_correlated():
    independent = [np.array([1, 5, 1, 5]), np.array([5, 1, 5, 1])]  # equal totals: the per-sample spread counts
    rule = capacity_of_batches(independent, 5)
    assert (rule.mean_entries, rule.std_entries) == (3.0, 2.0)
    correlated = [np.array([1, 1, 1, 1]), np.array([5, 5, 5, 5]), np.array([3, 3])]  # totals 4 and 20; 2 is partial
    rule = capacity_of_batches(correlated, 5)
    assert rule.mean_entries == pytest.approx(30 / 10)
    assert rule.std_entries == pytest.approx(8.0 / 2.0)  # std of the full batches' totals / sqrt(4)


def test_a_launcher_measures_once_and_its_processes_read_the_rule_back(tmp_path, monkeypatch):
    """The NPU ranks' launcher measures; each rank gets the same rule without reading the split again."""
    from din_model.data import reader
    from din_model.model import history_capacity
    from din_common.feature_spec import FeatureSpec
    from tests.helpers.din_fixtures import write_random_fixture

    spec = FeatureSpec.read(write_random_fixture(tmp_path, sizes=(("train", 300), ("val", 50), ("test", 50))))
    environment = history_capacity.capacity_environment(spec, 6, 64)
    measured = json.loads(environment[history_capacity.MEASURED_VARIABLE])
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(reader, "make_dataset", lambda *args, **kwargs: pytest.fail("measured again"))
    handed_down = history_capacity.measure_history_capacity(spec, 6, 64)
    assert (handed_down.mean_entries, handed_down.std_entries, handed_down.maxlen) == (
        measured["mean_entries"], measured["std_entries"], 6)
    for other in ((spec, 6, 128), (spec, 5, 64), (dataclasses.replace(spec, fingerprint="other shards"), 6, 64)):
        with pytest.raises(pytest.fail.Exception, match="measured again"):  # not this data: measured
            history_capacity.measure_history_capacity(*other)
