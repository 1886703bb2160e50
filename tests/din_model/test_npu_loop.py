"""Loop sinking on the NPU: `[npu] iterations_per_loop` train steps per graph call (din_model/train/steps.py make_step_loop)."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from din_model.train import steps as train_steps
from din_model.device.selection import configure_npu
from din_model.device.npu_options import NpuOptions
from din_model.params import TrainParams
from din_model.run.loop import TrainingDiverged, train
from tests.helpers.din_fixtures import nan_at_step, write_random_fixture
from tests.helpers.npu_standin import npu_standin  # noqa: F401  (fixture)

SMALL = dict(embed_dim=4, attention_hidden="8,4", mlp_hidden="8,4", batch_size=16, device="npu", epochs=1)


def test_a_sunk_loop_runs_exactly_count_steps_and_returns_their_losses_in_order():
    batches = tf.data.Dataset.range(100).map(lambda i: ({"x": tf.fill([2], tf.cast(i, tf.float32))},
                                                       tf.fill([2], tf.cast(i, tf.float32))))
    traced = []

    @tf.function
    def train_step(features, labels):
        traced.append(1)
        return tf.reduce_mean(labels)

    run = train_steps.make_step_loop(train_step, 4, sunk=True)
    iterator = iter(batches)
    got = [list(run(iterator, count)) for count in (4, 3, 4, 1)]  # the slots wrap around the 4 kept losses
    assert got == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10], [11]]
    assert len(traced) == 1  # one graph for every count
    with pytest.raises(ValueError, match="cannot run 5"):
        run(iterator, 5)


@pytest.mark.parametrize("iterations", ["0", "x", "-3"])
def test_iterations_per_loop_must_be_a_positive_number(iterations):
    from din_common.errors import InputError

    with pytest.raises(InputError, match=r"\[npu\] iterations_per_loop = .*: expected the number of train steps"):
        NpuOptions.from_strings({"iterations_per_loop": iterations})
    assert NpuOptions.from_strings({"iterations_per_loop": "100"}).iterations_per_loop == 100


def test_divergence_inside_a_sunk_call_is_reported_at_its_step(tmp_path, npu_standin, monkeypatch):
    spec_path = write_random_fixture(tmp_path / "data")  # 400 train samples: 25 steps of 16
    monkeypatch.setattr(train_steps, "make_train_step", nan_at_step(train_steps.make_train_step, 7))
    configure_npu(NpuOptions(iterations_per_loop=4))
    try:
        with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 1 step 7; "):
            train(spec_path, tmp_path / "run", TrainParams(**SMALL))
    finally:
        configure_npu(NpuOptions())
    assert [call["loop_size"] for call in npu_standin.named("set_npu_loop_size")] == [4, 4]  # stopped after 8
    assert np.all([shape is not None for call in npu_standin.named("graph_call") for shape in call["shapes"]])


def test_the_sunk_loop_is_one_while_that_every_op_feeds_as_the_adapter_requires(tmp_path, npu_standin):
    """tf_adapter_2.x/npu_device/core/npu_utils.cpp `IsGraphNeedLoop`: the graph's only While node consumes the
    iterator and a reverse walk from it reaches every op; otherwise the adapter does not sink the loop."""
    from din_model.device.selection import select_device
    from din_common.feature_spec import FeatureSpec
    from din_model.train.state import TrainingState
    from din_model.train.steps import make_train_step, step_signature

    spec_path = write_random_fixture(tmp_path / "data")
    params = TrainParams(**SMALL, dropout=0.2)
    spec, device = FeatureSpec.read(spec_path), select_device("npu")
    state = TrainingState(params, spec, device, tmp_path / "unused")
    signature = step_signature(spec, params, device)
    loop = train_steps.make_step_loop(make_train_step(state.model, state.optimizer, False, signature), 3, sunk=True)
    batch = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), signature)
    loop(iter(tf.data.Dataset.from_tensors(batch).repeat()), 2)
    graph = [graph for name, graph in npu_standin.graph_calls.values() if name == "loop"][0].graph
    operations = graph.get_operations()
    (loop_node,) = [op for op in operations if op.type in ("While", "StatelessWhile")]
    assert any("IteratorGetNext" in node.op for function in graph.as_graph_def().library.function
               for node in function.node_def)
    reached, pending = set(), [loop_node]
    while pending:
        op = pending.pop()
        if op.name not in reached:
            reached.add(op.name)
            pending += [tensor.op for tensor in op.inputs] + list(op.control_inputs)
    # Placeholders are the function's arguments: the iterator's deleter (its second component) feeds no graph
    assert sorted(op.name for op in operations if op.name not in reached and op.type != "Placeholder") == []
