"""The graphs the NPU runs, as the Ascend graph engine would get them: only listed op types, static shapes.

Every graph is traced under the stand-in adapter after `as_default()` (tests/helpers/npu_standin_default.py: XLA
off, nested functions inlined, tf.device a no-op, the adapter's dropout), as on a real host.
"""
from __future__ import annotations

import pytest
import tensorflow as tf

from din_model.device.selection import configure_npu, select_device
from din_model.train.export import ScoringModule
from din_model.device.graph_ops import graph_op_types
from din_model.device.npu_ops import NOT_SUPPORTED, NPU_OP_TYPES, SERVING_CHECK_OPS, unsupported_ops
from din_model.device.npu_options import NpuOptions
from din_model.params import SEQUENCE_FEATURES, TrainParams
from din_common.feature_spec import FeatureSpec
from din_model.train.state import TrainingState
from din_model.train.steps import make_predict_step, make_step_loop, make_train_step, step_signature
from din_model.run.loop import train
from tests.helpers.din_fixtures import write_random_fixture
from tests.helpers.npu_standin import npu_standin  # noqa: F401  (fixture)

SMALL = dict(embed_dim=4, attention_hidden="8,4", mlp_hidden="8,4", batch_size=16, device="npu")
ALL_SEQUENCE_FEATURES = ",".join(SEQUENCE_FEATURES)
# (model, sequence features, history layout, dropout): the defaults, then dropout with both models and every
# layout the NPU can use (auto = static_compact, whose dense fallback is in the same graph; dense)
NPU_CASES = [("din", "time_gap", "auto", 0.0), ("din", "time_gap", "auto", 0.3), ("din", "time_gap", "dense", 0.3),
             ("din_seq", ALL_SEQUENCE_FEATURES, "auto", 0.3), ("din_seq", ALL_SEQUENCE_FEATURES, "dense", 0.3)]


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    return write_random_fixture(tmp_path_factory.mktemp("npu_graph"))


def test_the_op_check_names_what_is_not_supported_and_why():
    reasons = unsupported_ops(["MatMul", "Einsum", "StatelessRandomUniformV2", "MadeUpOp", "IteratorGetNext"])
    assert sorted(reasons) == ["Einsum", "MadeUpOp", "StatelessRandomUniformV2"]
    assert "tf.einsum" in reasons["Einsum"] and "row 3221" in reasons["Einsum"]
    assert "tf.random.stateless_uniform" in reasons["StatelessRandomUniformV2"]
    assert "not derived" in reasons["MadeUpOp"]


def test_the_cpu_graph_of_dropout_holds_ops_the_npu_does_not_take(spec_path):
    """The check can fail: the CPU's byte dropout uses the stateless random ops."""
    spec = FeatureSpec.read(spec_path)
    device = select_device("cpu")
    params = TrainParams(**{**SMALL, "device": "cpu"}, dropout=0.25)
    state = TrainingState(params, spec, device, spec_path.parent / "unused")
    step = make_train_step(state.model, state.optimizer, False, step_signature(spec, params, device))
    assert set(unsupported_ops(graph_op_types(step.get_concrete_function()))) & set(NOT_SUPPORTED)


def _npu_graphs(spec_path, params: TrainParams, standin) -> dict:
    """{what: concrete function} of every graph the NPU runs for these params."""
    spec = FeatureSpec.read(spec_path)
    device = select_device("npu", params.precision)
    state = TrainingState(params, spec, device, spec_path.parent / "unused")  # measures the capacity (a graph)
    measured = {f"capacity measurement {name}": graph for name, graph in standin.graph_calls.values()}
    assert len(measured) == (params.history_layout == "auto")
    signature = step_signature(spec, params, device)
    train_step = make_train_step(state.model, state.optimizer, False, signature)
    batch = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), signature)
    # traced by a call, as on the NPU: a tf.function called inside another one is then inlined by the adapter
    make_step_loop(train_step, 4, sunk=True)(iter(tf.data.Dataset.from_tensors(batch).repeat()), 2)
    make_predict_step(state.model, signature)(batch[0])
    traced = {name: graph for name, graph in standin.graph_calls.values()}
    return {**measured, "train step": train_step.get_concrete_function(), "step loop": traced["loop"],
            "predict step (evaluation)": traced["predict_step"],
            "export signature": ScoringModule(state.model, spec.maxlen).score.get_concrete_function()}


@pytest.mark.parametrize("model, sequence_features, layout, dropout", NPU_CASES)
def test_every_npu_graph_holds_only_ops_the_graph_engine_takes(spec_path, npu_standin, model, sequence_features,
                                                                 layout, dropout):
    params = TrainParams(**SMALL, model=model, sequence_features=sequence_features, history_layout=layout,
                         dropout=dropout, activation="dice")
    for what, graph in _npu_graphs(spec_path, params, npu_standin).items():
        op_types = set(graph_op_types(graph))
        if what == "export signature":  # its input checks run where the SavedModel is served
            op_types -= set(SERVING_CHECK_OPS)
        assert unsupported_ops(op_types) == {}, what
    assert bool(npu_standin.named("dropout")) == (dropout > 0)  # the adapter's dropout, not the CPU's


@pytest.mark.slow
def test_a_run_on_the_npu_calls_only_listed_ops_on_static_shapes(spec_path, tmp_path, npu_standin):
    """Train (sunk loop, validation), then evaluate (test split, popularity): every graph run under the
    adapter, the capacity measurement's included, takes static shapes and only listed ops."""
    from din_model.train.evaluation import evaluate

    configure_npu(NpuOptions(iterations_per_loop=3))
    params = TrainParams(**SMALL, dropout=0.2, epochs=1)
    try:
        train(spec_path, tmp_path / "run", params)
        evaluate(spec_path, tmp_path / "run", params)
    finally:
        configure_npu(NpuOptions())
    calls = npu_standin.named("graph_call")
    assert {call["function"] for call in calls} >= {"loop", "predict_step", "<lambda>"}  # <lambda>: capacity
    dynamic = [call for call in calls if any(shape is None or None in shape for shape in call["shapes"])]
    assert dynamic == []
    for name, graph in npu_standin.graph_calls.values():
        assert unsupported_ops(graph_op_types(graph)) == {}, name
    assert [call["loop_size"] for call in npu_standin.named("set_npu_loop_size")] == [3] * 8 + [1]  # 25 steps


def test_the_compact_layout_is_refused_on_the_npu(spec_path, npu_standin):
    from din_common.errors import InputError

    with pytest.raises(InputError, match=r"\[train\] history_layout = compact .* use auto \(static_compact\) or dense"):
        _npu_graphs(spec_path, TrainParams(**SMALL, history_layout="compact"), npu_standin)


def test_the_list_has_no_op_it_also_calls_unsupported():
    assert not set(NOT_SUPPORTED) & NPU_OP_TYPES
