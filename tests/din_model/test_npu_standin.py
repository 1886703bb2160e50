"""The stand-in `npu_device` behaves like the real adapter's API and fails loudly off it."""
import inspect

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.npu_standin import NpuStandin, npu_standin  # noqa: F401  (fixture)


def test_options_are_fixed_and_checked_against_their_allowed_values(npu_standin):
    import npu_device

    options = npu_device.global_options()
    assert options is npu_device.global_options()  # one per process
    with pytest.raises(ValueError, match=r"NpuConfig has no option precison_mode, all options \['graph_run_mode'"):
        options.precison_mode = "force_fp16"
    with pytest.raises(ValueError, match=r"'fp8' not in optional list \['force_fp32'"):
        options.precision_mode = "fp8"
    with pytest.raises(ValueError, match="NpuDumpConfig has no option dump_dir"):
        options.dump_config.dump_dir = "/tmp"
    with pytest.raises(ValueError, match=r"'inputs' not in optional list \['input', 'output', 'all'\]"):
        options.dump_config.dump_mode = "inputs"
    options.precision_mode = "force_fp16"
    options.dump_config.enable_dump = True
    options.profiling_config.enable_profiling = False
    assert options.precision_mode.value == "force_fp16" and options.precision_mode.default is None
    flat = options.as_dict()
    assert (flat["precision_mode"], flat["enable_dump"], flat["enable_profiling"], flat["dump_mode"]) == \
        ("force_fp16", "1", "0", "output")
    assert "dump_path" not in flat  # unset options are not sent


def test_open_hands_the_options_over_and_freezes_them(npu_standin, monkeypatch):
    import npu_device

    monkeypatch.setenv("ASCEND_DEVICE_ID", "2")
    npu_device.global_options().precision_mode = "allow_mix_precision"
    handle = npu_device.open()
    assert handle.name() == "/job:localhost/replica:0/task:0/device:NPU:2"
    assert npu_device.open(2) is handle
    with pytest.raises(RuntimeError, match=r"device 3: this process already opened device\(s\) \[2\]"):
        npu_device.open(3)
    with pytest.raises(RuntimeError, match="option precision_mode set after npu_device.open"):
        npu_device.global_options().precision_mode = "force_fp16"
    with pytest.raises(RuntimeError, match="option enable_dump set after npu_device.open"):
        npu_device.global_options().dump_config.enable_dump = True
    assert handle.as_default() is handle
    assert npu_standin.call_names() == ["global_options", "open", "open", "global_options", "global_options",
                                        "as_default"]
    assert npu_standin.named("open")[0]["options"]["precision_mode"] == "allow_mix_precision"
    assert npu_standin.named("open")[1] == {"device_id": 2, "reused": True}
    with handle.scope():
        assert tf.constant(1.0).device.endswith("CPU:0")
    assert (handle.workers_num, handle.worker_id, handle.is_cluster_worker()) == (1, 0, False)


def test_missing_and_unmodelled_attributes_are_named(npu_standin):
    import npu_device

    with pytest.raises(AttributeError, match="module 'npu_device' has no attribute 'set_options': the real "):
        npu_device.set_options
    with pytest.raises(AttributeError, match="'npu_device.train.optimizer' has no attribute 'LossScaleOptimizer'"):
        npu_device.train.optimizer.LossScaleOptimizer
    with pytest.raises(AttributeError, match=r"does not model npu_device.npu_run_context \(the real adapter has it\)"):
        npu_device.npu_run_context
    with pytest.raises(AttributeError):
        npu_device.open(0).precision  # the handle has no such attribute either
    assert not hasattr(npu_device, "__path__")


def test_submodules_import_as_in_the_real_package(npu_standin):
    from npu_device.configs.dump_config import NpuDumpConfig
    from npu_device.configs.option_base import DeprecatedValue, NpuBaseConfig
    from npu_device.distribute import all_reduce, broadcast, shard_and_rebatch_dataset  # noqa: F401
    from npu_device.train.optimizer import NpuLossScaleOptimizer
    import npu_device

    assert npu_device.train.optimizer.NpuLossScaleOptimizer is NpuLossScaleOptimizer
    assert isinstance(npu_device.global_options().dump_config, NpuDumpConfig)
    assert isinstance(npu_device.global_options(), NpuBaseConfig)
    assert isinstance(npu_device.global_options().op_debug_level, DeprecatedValue)
    assert npu_device.distribute.hccl.all_reduce is not None


def keras_major():
    return int(tf.keras.__version__.split(".")[0]) if hasattr(tf.keras, "__version__") else 3


def one_step(optimizer, variable, gradient):
    optimizer.apply_gradients([(tf.constant(gradient), variable)])
    return bool(optimizer.last_step_finite.numpy())


def test_loss_scale_optimizer_subclasses_this_stacks_keras_with_the_real_signature(npu_standin):
    import npu_device

    optimizer_class = npu_device.train.optimizer.NpuLossScaleOptimizer
    if keras_major() >= 3:
        import keras

        assert issubclass(optimizer_class, keras.optimizers.LossScaleOptimizer)
    else:
        assert issubclass(optimizer_class, tf.keras.mixed_precision.LossScaleOptimizer)
    assert list(inspect.signature(optimizer_class.__init__).parameters) == \
        ["self", "inner_optimizer", "dynamic", "initial_scale", "dynamic_growth_steps"]
    variable = tf.Variable([1.0, 2.0])
    optimizer = optimizer_class(tf.keras.optimizers.SGD(0.5), initial_scale=8.0)
    assert one_step(optimizer, variable, [1.0, 1.0]) is True
    applied = variable.numpy()
    assert one_step(optimizer, variable, [np.inf, 1.0]) is False
    np.testing.assert_array_equal(variable.numpy(), applied)  # an overflowing step is skipped
    assert npu_standin.named("NpuLossScaleOptimizer") == [
        {"inner_optimizer": "SGD", "dynamic": True, "initial_scale": 8.0, "dynamic_growth_steps": None}]


def test_a_fixed_loss_scale_exists_on_tf_keras_2_6_only(npu_standin):
    import npu_device

    optimizer_class = npu_device.train.optimizer.NpuLossScaleOptimizer
    if keras_major() >= 3:
        with pytest.raises(NotImplementedError, match="supports only dynamic=True"):
            optimizer_class(tf.keras.optimizers.SGD(0.5), dynamic=False, initial_scale=8.0)
    else:
        optimizer = optimizer_class(tf.keras.optimizers.SGD(0.5), dynamic=False, initial_scale=8.0)
        assert float(optimizer.loss_scale) == 8.0


def rank_standin(monkeypatch, rank, size, rank_table):
    monkeypatch.setenv("RANK_SIZE", str(size))
    monkeypatch.setenv("RANK_ID", str(rank))
    monkeypatch.setenv("RANK_TABLE_FILE", str(rank_table))
    standin = NpuStandin().undo_with(monkeypatch)
    standin.open(0).as_default()
    return standin


def test_ranks_shard_the_data_disjointly_and_collectives_are_recorded(monkeypatch, tmp_path):
    rank_table = tmp_path / "rank_table.json"
    shards = []
    for rank in range(4):
        standin = rank_standin(monkeypatch, rank, 4, rank_table)
        dataset, batch = standin.shard_and_rebatch_dataset(tf.data.Dataset.range(20), 16)
        shards.append(sorted(int(x) for x in dataset))
        assert batch == 4
        assert standin.named("open")[0]["options"]["_distribute.rank_id"] == str(rank)
        grads = [tf.constant(1.0), tf.constant(2.0)]
        assert standin.all_reduce(grads, "mean") is grads
        assert standin.named("all_reduce") == [{"reduction": "mean", "values": 2, "group": "hccl_world_group",
                                                "cluster": True}]
        assert [float(value) for value in standin.all_reduce(grads, "sum")] == [4.0, 8.0]  # 4 ranks alike
    assert sorted(sum(shards, [])) == list(range(20)) and all(len(shard) == 5 for shard in shards)
    with pytest.raises(ValueError, match="Batch size must be divisible by num npus: 4"):
        standin.shard_and_rebatch_dataset(tf.data.Dataset.range(20), 10)
    with pytest.raises(ValueError, match="all_reduce reduction must be one of"):
        standin.all_reduce([tf.constant(1.0)], "average")


def test_a_cluster_needs_the_rank_table_and_rank_id(monkeypatch):
    monkeypatch.setenv("RANK_SIZE", "2")
    monkeypatch.delenv("RANK_TABLE_FILE", raising=False)
    with pytest.raises(RuntimeError, match="RANK_TABLE_FILE"):
        NpuStandin().open(0)


def test_one_worker_passes_data_through(npu_standin):
    import npu_device

    dataset = tf.data.Dataset.range(6)
    assert npu_device.distribute.shard_and_rebatch_dataset(dataset, 3) == (dataset, 3)
    npu_device.distribute.broadcast([tf.Variable(1.0)], root_rank=0)
    assert npu_standin.named("broadcast") == [{"root_rank": 0, "values": 1, "group": "hccl_world_group",
                                               "cluster": False}]


def test_the_old_recording_alias_summarises_the_calls(monkeypatch):
    from tests.helpers.din_fixtures import RecordingNpuDevice

    module = RecordingNpuDevice(monkeypatch)
    module.global_options().precision_mode = "allow_mix_precision"
    module.open().as_default()
    assert module.calls[:3] == ["global_options", ("open", "allow_mix_precision"), "as_default"]


def test_as_default_replaces_tf_function_as_the_adapter_does_and_the_test_end_undoes_it(monkeypatch):
    """tests/helpers/npu_standin_default.py: XLA off, nested functions inlined, tf.device a no-op, tf.nn.dropout replaced."""
    originals = (tf.function, tf.nn.dropout, tf.py_function, type(tf.function(lambda: None)).__call__)
    with monkeypatch.context() as scoped:
        standin = NpuStandin().install(scoped)
        import npu_device

        npu_device.open().as_default()
        assert tf.function is not originals[0] and tf.nn.dropout is not originals[1]

        @tf.function(jit_compile=True)
        def inner(x):
            with tf.device("/GPU:7"):  # no GPU here: only a no-op device scope lets this run
                return x * 2.0

        @tf.function
        def outer(x):
            return inner(x) + 1.0

        assert float(outer(tf.constant(1.0))) == 3.0
        assert standin.named("skip_xla") == [{"function": "inner", "flag": "jit_compile"}]
        assert standin.named("inline") == [{"function": "inner", "under": "outer"}]
        graph = standin.graph_calls[next(iter(standin.graph_calls))][1].graph
        assert not [op.type for op in graph.get_operations() if "PartitionedCall" in op.type]  # inlined
        assert standin.named("graph_call") == [{"function": "outer", "shapes": [()]}]

        dropped = tf.function(lambda x: tf.nn.dropout(x, rate=0.5))(tf.ones([1000]))
        assert standin.named("dropout") == [{"rate": 0.5}]
        assert set(np.unique(dropped.numpy())) <= {0.0, 2.0} and 350 < np.count_nonzero(dropped.numpy()) < 650
        eager = tf.nn.dropout(tf.ones([10]), rate=0.5)  # eager: the original, as the adapter's wrapper does
        assert len(standin.named("dropout")) == 1 and eager.shape == (10,)
    assert (tf.function, tf.nn.dropout, tf.py_function, type(tf.function(lambda: None)).__call__) == originals


def test_as_default_without_a_way_to_undo_it_is_refused():
    with pytest.raises(RuntimeError, match="install\\(monkeypatch\\)"):
        NpuStandin().open(0).as_default()
