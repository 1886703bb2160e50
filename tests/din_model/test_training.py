"""Training loop: outputs of a run, learning, resume after a kill, divergence stop, evaluation."""
import json

import numpy as np
import pytest
import tensorflow as tf

from din_common.errors import InputError
from din_model.run import loop as training
from din_model.parallel import placement
from din_model.train import evaluation, policies, steps as train_steps
from din_model.params import TrainParams
from din_model.run.loop import TrainingDiverged, evaluate, train, training_complete
from tests.helpers.checkpoints import optimizer_iterations
from tests.helpers.din_fixtures import nan_at_step, sizes_spec, write_random_fixture

TINY = dict(embed_dim=4, attention_hidden="8,4", mlp_hidden="8,4", batch_size=64, learning_rate=0.01, device="cpu")


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "raw").mkdir()
    (root / "raw" / "oracle.json").write_text(json.dumps({"oracle_test_auc": 0.9, "popularity_test_auc": 0.5}))
    return write_random_fixture(root, sizes=(("train", 3000), ("val", 600), ("test", 600)), n_items=60, n_cats=6)


def test_run_writes_its_files_learns_and_evaluates(spec_path, tmp_path):
    params = TrainParams(**TINY, epochs=3, activation="dice", l2=1e-4)
    progress = []
    result = train(spec_path, tmp_path / "run", params, progress_callback=lambda f, m: progress.append(f))
    assert result["device"] == "cpu" and result["precision"] == "fp32"
    assert [record["epoch"] for record in result["epochs"]] == [1, 2, 3]
    assert set(result["epochs"][0]) == {"epoch", "train_loss", "train_samples_per_s", "learning_rate", "val"}
    assert [record["learning_rate"] for record in result["epochs"]] == [params.learning_rate] * 3  # no decay by default
    assert set(result["epochs"][0]["val"]) == {"auc", "gauc", "logloss"}
    assert result["epochs"][-1]["val"]["auc"] > 0.75  # label = the target's category occurs in the history
    assert progress[-1] == pytest.approx(1.0)
    for name in ("params.json", "metrics.json", "curves.png", "saved_model/saved_model.pb", "checkpoints/checkpoint"):
        assert (tmp_path / "run" / name).exists(), name
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert training_complete(tmp_path / "run" / "metrics.json", params)
    assert not training_complete(tmp_path / "run" / "metrics.json", TrainParams(**TINY, epochs=4))

    evaluated = evaluate(spec_path, tmp_path / "run", params)
    assert set(evaluated["test"]) == {"auc", "gauc", "logloss"} and evaluated["test"]["auc"] > 0.75
    assert 0.0 <= evaluated["popularity_test_auc"] <= 1.0
    assert evaluated["oracle_test_auc"] == 0.9
    expected_gap = (evaluated["test"]["auc"] - evaluated["popularity_test_auc"]) / (0.9 - evaluated["popularity_test_auc"])
    assert evaluated["gap_closed"] == pytest.approx(expected_gap)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"] == evaluated["test"]


def test_steps_trace_once_although_the_last_batches_are_smaller(spec_path, tmp_path, monkeypatch):
    steps = []

    def recording(make_step):
        def make(*args, **kwargs):
            steps.append(make_step(*args, **kwargs))
            return steps[-1]
        return make

    monkeypatch.setattr(train_steps, "make_train_step", recording(train_steps.make_train_step))
    monkeypatch.setattr(train_steps, "make_predict_step", recording(train_steps.make_predict_step))
    params = TrainParams(**TINY, epochs=2)  # 3000 train, 600 val samples: last batches of 56 and 24 rows
    train(spec_path, tmp_path / "run", params)
    evaluate(spec_path, tmp_path / "run", params)
    assert len(steps) == 3  # train, predict (val), predict (test)
    assert [step.experimental_get_tracing_count() for step in steps] == [1, 1, 1]


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(spec_path, tmp_path, monkeypatch, capsys):
    params = TrainParams(**TINY, epochs=3)
    real_run_epoch = training.run_epoch

    def killed_in_epoch_two(*args, **kwargs):
        if args[5] == 2:
            raise KeyboardInterrupt
        return real_run_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "run_epoch", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(spec_path, tmp_path / "run", params)
    assert not training_complete(tmp_path / "run" / "metrics.json", params)
    monkeypatch.setattr(training, "run_epoch", real_run_epoch)
    epochs_run = []
    monkeypatch.setattr(training, "run_epoch",
                        lambda *args, **kwargs: (epochs_run.append(args[5]), real_run_epoch(*args, **kwargs))[1])
    result = train(spec_path, tmp_path / "run", params)
    assert epochs_run == [2, 3]
    assert "resuming" in capsys.readouterr().out
    assert [record["epoch"] for record in result["epochs"]] == [1, 2, 3]
    checkpoint = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    steps_per_epoch = int(np.ceil(3000 / 64))
    assert optimizer_iterations(checkpoint) == 3 * steps_per_epoch
    assert tf.train.load_variable(checkpoint, "epoch/.ATTRIBUTES/VARIABLE_VALUE") == 3


@pytest.mark.slow
def test_more_epochs_in_the_same_run_dir_continue_the_epoch_counter(spec_path, tmp_path):
    train(spec_path, tmp_path / "run", TrainParams(**TINY, epochs=1))
    result = train(spec_path, tmp_path / "run", TrainParams(**TINY, epochs=2))
    assert [record["epoch"] for record in result["epochs"]] == [1, 2]
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-2")


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(spec_path, tmp_path, monkeypatch):
    train(spec_path, tmp_path / "run", TrainParams(**TINY, epochs=1))
    monkeypatch.setattr(train_steps, "make_train_step", nan_at_step(train_steps.make_train_step, 2))
    with pytest.raises(TrainingDiverged, match=r"training diverged: loss is nan at epoch 2 step 2; "
                                               r"last good checkpoint kept at .*ckpt-1; try a lower \[train\] learning_rate"):
        train(spec_path, tmp_path / "run", TrainParams(**TINY, epochs=2))
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-1")


def test_huge_learning_rate_diverges(spec_path, tmp_path):
    with pytest.raises(TrainingDiverged, match="training diverged"):
        train(spec_path, tmp_path / "run", TrainParams(**{**TINY, "learning_rate": 1e30}, epochs=2))


def test_other_parameters_in_an_existing_run_dir_are_refused(spec_path, tmp_path):
    train(spec_path, tmp_path / "run", TrainParams(**TINY, epochs=1))
    from din_common.errors import InputError

    with pytest.raises(InputError, match="embed_dim"):
        train(spec_path, tmp_path / "run", TrainParams(**{**TINY, "embed_dim": 8}, epochs=1))


@pytest.mark.parametrize("activation", ["dice", "prelu"])
@pytest.mark.slow
def test_gpu_mixed_precision_path_trains_resumes_and_exports_on_cpu(spec_path, tmp_path, monkeypatch, activation):
    """The GPU code path (mixed_float16 policy + loss scaling) with its kernels placed on the CPU.

    No GPU is needed to catch dtype mistakes of that path: float16 layers, float32 logits
    and loss, the loss-scale optimizer in the checkpoint, export and reload.
    """
    from din_model.compat import LossScaleOptimizer, keras
    from din_model.device.selection import DeviceChoice
    from tests.helpers.scoring import load_scorer

    gpu_like = DeviceChoice(name="gpu", precision="mixed", dtype_policy="mixed_float16", static_shapes=False,
                            loss_scaling=True, tf_device="/CPU:0")
    monkeypatch.setattr(training, "select_device", lambda *args, **kwargs: gpu_like)
    monkeypatch.setattr(evaluation, "select_device", lambda *args, **kwargs: gpu_like)
    states = []

    class RecordedState(training.TrainingState):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            states.append(self)

    monkeypatch.setattr(training, "TrainingState", RecordedState)
    params = TrainParams(**{**TINY, "device": "gpu"}, precision="mixed", epochs=2, activation=activation)
    try:
        train(spec_path, tmp_path / "run", params)
        result = train(spec_path, tmp_path / "run", TrainParams(**{**TINY, "device": "gpu"}, precision="mixed",
                                                                  epochs=3, activation=activation))
        evaluated = evaluate(spec_path, tmp_path / "run", params)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert (result["device"], result["precision"]) == ("gpu", "mixed")
    model = states[-1].model
    assert model.mlp.dense_layers[0].compute_dtype == "float16"
    assert model.item_embedding.embeddings.dtype == "float32"  # variables stay float32
    assert isinstance(states[-1].optimizer, LossScaleOptimizer)
    assert [record["epoch"] for record in result["epochs"]] == [1, 2, 3]
    assert result["epochs"][-1]["val"]["auc"] > 0.75 and evaluated["test"]["auc"] > 0.75
    scorer = load_scorer(tmp_path / "run" / "saved_model", "serving_default")
    maxlen = scorer.structured_input_signature[1]["hist_item"].shape[1]  # the serving checks want exactly maxlen
    ones = tf.ones([3, maxlen], tf.int32)
    probability = scorer(hist_item=ones, hist_cate=ones, target_item=ones[:, 0], target_cate=ones[:, 0])["probability"]
    assert probability.dtype == tf.float32 and np.all((probability.numpy() > 0) & (probability.numpy() < 1))


@pytest.mark.slow
def test_npu_path_trains_on_static_batches_and_scores_every_sample(spec_path, tmp_path, monkeypatch):
    """The Ascend path end to end, with a recording stand-in for `npu_device` (kernels run on the CPU)."""
    import sys

    from tests.helpers.din_fixtures import RecordingNpuDevice

    npu = RecordingNpuDevice(monkeypatch)
    monkeypatch.setitem(sys.modules, "npu_device", npu)
    batch_shapes, scored_rows, steps = [], [], tf.Variable(0)
    real_make_train_step, real_predict_split = train_steps.make_train_step, training.predict_split

    def recording_train_step(*args, **kwargs):
        step = real_make_train_step(*args, **kwargs)

        def recorded(features, labels):
            batch_shapes.append(tuple(features["hist_item"].shape))  # when traced: the graph's one batch shape
            steps.assign_add(1)  # in the graph: every step of the NPU's loop
            return step(features, labels)

        return recorded

    def recording_predict_split(*args, **kwargs):
        columns = real_predict_split(*args, **kwargs)
        scored_rows.append(len(columns["label"]))
        return columns

    monkeypatch.setattr(train_steps, "make_train_step", recording_train_step)
    monkeypatch.setattr(training, "predict_split", recording_predict_split)
    monkeypatch.setattr(evaluation, "predict_split", recording_predict_split)
    params = TrainParams(**{**TINY, "device": "npu"}, epochs=3)
    result = train(spec_path, tmp_path / "run", params)
    evaluated = evaluate(spec_path, tmp_path / "run", params)
    assert npu.calls[:3] == ["global_options", ("open", "allow_mix_precision"), "as_default"]
    assert (result["device"], result["precision"]) == ("npu", "mixed")
    assert len(set(batch_shapes)) == 1 and batch_shapes[0][0] == TINY["batch_size"]  # drop_remainder, one shape
    assert int(steps.numpy()) == 3 * (3000 // TINY["batch_size"])
    assert scored_rows == [600, 600, 600, 600]  # val after each epoch, then test: padded last batch, no extra rows
    assert evaluated["test"]["auc"] > 0.75


def test_step_loop_runs_up_to_its_steps_per_call_and_stops_at_the_end_of_the_data():
    sizes = [2, 2, 2, 2, 2, 2, 1]  # 7 batches, the last one short
    labels = [tf.fill([size], float(index)) for index, size in enumerate(sizes)]
    dataset = tf.data.Dataset.from_generator(lambda: ((({"x": tf.zeros_like(batch)}, batch) for batch in labels)),
                                             output_signature=({"x": tf.TensorSpec([None])}, tf.TensorSpec([None])))
    steps_seen = tf.Variable(0)

    def fake_step(features, labels):
        steps_seen.assign_add(1)
        return tf.reduce_sum(labels) + tf.reduce_sum(features["x"])

    run, iterator = train_steps.make_step_loop(fake_step, steps=3), iter(dataset)
    calls = [run(iterator) for _ in range(4)]
    assert [list(losses.numpy()) for losses, _ in calls] == [[0, 2, 4], [6, 8, 10], [6], []]
    assert [int(samples) for _, samples in calls] == [6, 6, 1, 0]
    assert int(steps_seen) == 7


@pytest.mark.slow
def test_several_steps_per_call_train_the_model_one_step_per_call_trains(spec_path, tmp_path, monkeypatch):
    # The same batches in the same order for both runs (shuffling reads shards in parallel, in any order)
    real_make_dataset = placement.make_dataset
    monkeypatch.setattr(placement, "make_dataset", lambda *args, **kwargs: real_make_dataset(
        *args, **{**kwargs, "shuffle": False}))
    params = TrainParams(**TINY, epochs=2)
    looped = train(spec_path, tmp_path / "looped", params)
    monkeypatch.setattr(train_steps, "STEPS_PER_CALL", 1)
    stepwise = train(spec_path, tmp_path / "stepwise", params)
    for ours, theirs in zip(looped["epochs"], stepwise["epochs"]):
        assert ours["train_loss"] == theirs["train_loss"] and ours["val"] == theirs["val"]


@pytest.mark.parametrize("xla, device, train_samples, epochs, expected", [
    ("on", "cpu", 10, 1, True), ("off", "cpu", 10 ** 7, 8, False), ("on", "gpu", 10, 1, True),
    ("auto", "cpu", 64 * 512, 1, True), ("auto", "cpu", 64 * 256, 2, True), ("auto", "cpu", 64 * 512 - 1, 1, False),
    ("auto", "gpu", 10 ** 7, 8, False), ("auto", "npu", 10 ** 7, 8, False), ("auto", "cluster", 10 ** 7, 8, False)])
@pytest.mark.parametrize("xla_on_this_cpu", [True, False])
def test_xla_setting_resolves_by_device_cpu_and_run_length(monkeypatch, xla, device, train_samples, epochs, expected,
                                                           xla_on_this_cpu):
    from din_model.device import cpu_kernels
    from din_model.device.selection import DeviceChoice

    monkeypatch.setattr(cpu_kernels, "XLA_ON_CPU", xla_on_this_cpu)  # cpu_kernels.choose_xla's verdict

    cluster = device == "cluster"  # a CPU worker of several
    choice = DeviceChoice(name="cpu" if cluster else device, precision="fp32", dtype_policy="float32",
                          static_shapes=device == "npu", loss_scaling=False)
    resolved = policies.resolve_xla(TrainParams(**TINY, xla=xla, epochs=epochs), choice,
                                     sizes_spec(train_samples=train_samples),
                                     one_process=not cluster)
    assert resolved.jit_compile is (expected and (xla == "on" or xla_on_this_cpu))


def test_xla_on_the_npu_is_refused():
    from din_model.device.selection import DeviceChoice

    npu = DeviceChoice(name="npu", precision="mixed", dtype_policy="float32", static_shapes=True, loss_scaling=True)
    with pytest.raises(InputError, match=r"\[train\] xla = on: the NPU compiles its graphs itself"):
        policies.resolve_xla(TrainParams(**TINY, xla="on"), npu, sizes_spec(train_samples=10))


@pytest.mark.slow
def test_an_xla_run_trains_full_batches_and_says_so(spec_path, tmp_path, capsys):
    result = train(spec_path, tmp_path / "run", TrainParams(**TINY, epochs=1, xla="on"))
    assert json.loads((tmp_path / "run" / "params.json").read_text())["params"]["jit_compile"] is True
    assert optimizer_iterations(tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))) == 3000 // 64
    assert result["epochs"][0]["val"]["auc"] > 0.6
    assert "(cpu, fp32, xla)" in capsys.readouterr().out
