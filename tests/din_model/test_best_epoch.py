"""Early stopping and the best epoch: the exported and evaluated model is the best validation epoch's, a spent
patience stops the loop, a resumed run remembers the best epoch, and every placement follows the writer's choice.
Learning-rate decay on a plateau: its schedule, and a resumed run continuing it from the checkpoint.

The validation AUCs are scripted (tests/helpers/scripted_validation.py), so the best epoch is known exactly.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from din_common.errors import InputError
from din_common import metrics as metric_functions
from din_model.data.reader import make_dataset
from din_model.device.npu_options import NpuOptions
from din_model.device.selection import select_device
from din_model.parallel import npu_ranks
from din_model.params import TrainParams, run_id
from din_model.run import loop as training
from din_model.train import evaluation, steps
from din_model import compat
from din_model.train.best_epoch import BestEpoch, early_stopping_fields, plateau_learning_rate
from din_model.train.portable_weights import restore_weights
from din_model.train.state import TrainingState
from tests.helpers.din_fixtures import write_random_fixture
from tests.helpers.npu_standin import npu_standin  # noqa: F401  (fixture)
from tests.helpers.rank_tables import device, table_1_0
from tests.helpers.scoring import load_scorer
from tests.helpers.multiworker import PRINT_RETURNED, free_ports, tf_config, worker_ended_well
from tests.helpers.scripted_validation import SCRIPTED_RUN, scripted_split_metrics

REPO = Path(__file__).resolve().parents[2]
TINY = dict(embed_dim=4, attention_hidden="8,4", mlp_hidden="8,4", batch_size=64, learning_rate=0.01, device="cpu")
PEAK_AT_2 = [0.6, 0.8, 0.7, 0.75, 0.78, 0.79]


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    return write_random_fixture(tmp_path_factory.mktemp("data"), sizes=(("train", 640), ("val", 200), ("test", 200)),
                                n_items=60, n_cats=6, num_shards=2)


def records(*aucs):
    return [{"epoch": epoch, "val": {"auc": auc}} for epoch, auc in enumerate(aucs, start=1)]


def test_the_best_epoch_is_the_first_strict_gain_and_the_patience_counts_from_it():
    best = BestEpoch.from_records(records(0.6, 0.8, 0.8, 0.7, float("nan")))
    assert (best.epoch, best.auc) == (2, 0.8)
    assert [best.patience_spent(epoch, 2) for epoch in (2, 3, 4)] == [False, False, True]
    assert not best.patience_spent(9, 0) and not BestEpoch().patience_spent(3, 1)
    assert early_stopping_fields(records(0.6, 0.8, 0.7, 0.7), TrainParams(epochs=6, patience=2)) == {
        "best_epoch": 2, "exported_epoch": 2, "stopped_early": True, "epochs_run": 4}
    assert early_stopping_fields(records(0.6, 0.8, 0.7, 0.7), TrainParams(epochs=4, patience=2))["stopped_early"] is False
    assert early_stopping_fields(records(0.6, 0.8, 0.7), TrainParams(restore_best=False))["exported_epoch"] == 3


def test_patience_and_restore_best_are_checked_and_part_of_the_run_id():
    with pytest.raises(InputError, match=r"\[train\] patience must be an integer >= 0 .*got -1"):
        TrainParams(patience=-1)
    ids = {run_id(params, "shards") for params in (TrainParams(), TrainParams(patience=2), TrainParams(restore_best=False))}
    assert len(ids) == 3


def test_the_learning_rate_decays_after_each_plateau_of_lr_decay_patience_epochs():
    aucs = (0.6, 0.8, 0.7, 0.75, 0.79, 0.81, 0.7, 0.7)
    rates = [plateau_learning_rate(records(*aucs[:done]), TrainParams(learning_rate=0.01, lr_decay_factor=0.5,
                                                                      lr_decay_patience=2))
             for done in range(len(aucs) + 1)]
    # no gain in epochs 3-4: halved; none in 5 (0.79 < 0.8) and the count restarted at the decay; gain in 6; 7-8 decay
    assert rates == [0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005, 0.0025]
    assert plateau_learning_rate(records(*aucs), TrainParams(learning_rate=0.01, lr_decay_patience=1)) == 0.01
    assert plateau_learning_rate(records(0.6, 0.5, 0.4), TrainParams(learning_rate=0.01, lr_decay_factor=0.5)) == 0.0025


def test_lr_decay_settings_are_checked_and_part_of_the_run_id():
    with pytest.raises(InputError, match=r"\[train\] lr_decay_factor must be a number in \(0, 1\] .*got 1.5"):
        TrainParams(lr_decay_factor=1.5)
    with pytest.raises(InputError, match=r"\[train\] lr_decay_patience must be a positive integer, got 0"):
        TrainParams(lr_decay_patience=0)
    ids = {run_id(params, "shards") for params in (TrainParams(), TrainParams(lr_decay_factor=0.5),
                                                    TrainParams(lr_decay_factor=0.5, lr_decay_patience=2))}
    assert len(ids) == 3
    # off, the decay settings leave the id as it was before they existed
    assert run_id(TrainParams(lr_decay_patience=3), "shards") == run_id(TrainParams(), "shards")


def test_a_resumed_run_trains_on_at_the_decayed_rate_its_checkpoint_holds(spec_path, tmp_path, monkeypatch):
    params = TrainParams(**TINY, epochs=4, lr_decay_factor=0.5, lr_decay_patience=1)

    def kill_point(name):
        if name == "train:epoch3:checkpointed":
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "split_metrics", scripted_split_metrics(PEAK_AT_2))
    monkeypatch.setattr(training, "kill_point", kill_point)
    with pytest.raises(KeyboardInterrupt):
        training.train(spec_path, tmp_path / "run", params)
    from din_model.data.reader import feature_spec_at

    killed = TrainingState(params, feature_spec_at(spec_path), select_device("cpu"), tmp_path / "run" / "checkpoints")
    assert killed.restore_latest() == 3
    assert compat.learning_rate_variable(killed.optimizer).numpy() == pytest.approx(0.005)
    monkeypatch.undo()
    # the resumed run's validation gains: the decay it continues comes from the checkpoint, not from this script
    monkeypatch.setattr(training, "split_metrics", scripted_split_metrics([0.9]))
    result = training.train(spec_path, tmp_path / "run", params)
    assert [record["learning_rate"] for record in result["epochs"]] == [0.01, 0.01, 0.01, 0.005]


def test_the_decay_line_is_printed_only_for_a_real_decay_before_another_epoch(spec_path, tmp_path, monkeypatch,
                                                                                capsys):
    # 0.0012345678 is not exact in a float32 variable's 7 digits: read back, it is no decay from the setting
    monkeypatch.setattr(training, "split_metrics", scripted_split_metrics([0.6, 0.5]))
    training.train(spec_path, tmp_path / "steady", TrainParams(**{**TINY, "learning_rate": 0.0012345678}, epochs=2))
    assert "[train] learning rate" not in capsys.readouterr().out
    # a decay after the last epoch trains nothing at the new rate: no line either; one after epoch 2 of 3 does
    monkeypatch.setattr(training, "split_metrics", scripted_split_metrics([0.8, 0.7, 0.6]))
    training.train(spec_path, tmp_path / "decayed", TrainParams(**TINY, epochs=3, lr_decay_factor=0.5,
                                                                  lr_decay_patience=1))
    decay_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train] learning rate")]
    assert decay_lines == ["[train] learning rate 0.005 from epoch 3: [train] lr_decay_patience = 1 epoch(s) "
                           "without a validation AUC gain"]


def val_features(spec, params):
    features, _ = next(iter(make_dataset(spec, "val", 200, shuffle=False, maxlen=params.maxlen,
                                         history_fields=params.history_features)))
    return features


def probabilities_of_checkpoint(spec_path, params, checkpoint: Path, features) -> np.ndarray:
    from din_model.data.reader import feature_spec_at

    spec = feature_spec_at(spec_path)
    state = TrainingState(params, spec, select_device(params.device), checkpoint.parent)
    restore_weights(state.model, str(checkpoint), state.checkpoint)
    inputs = {name: features[name] for name in state.model.history_inputs + ("target_item", "target_cate")}
    return tf.sigmoid(tf.cast(state.model(inputs, training=False), tf.float32)).numpy()


def assert_exports_epoch(spec_path, run_dir: Path, params, epoch: int, other_epoch: int) -> None:
    """The SavedModel scores val exactly as checkpoint `epoch` does (and not as `other_epoch`)."""
    from din_model.data.reader import feature_spec_at

    features = val_features(feature_spec_at(spec_path), params)
    scorer = load_scorer(run_dir / "saved_model")
    exported = scorer(**{name: features[name] for name in scorer.structured_input_signature[1]})["probability"].numpy()
    checkpoints = run_dir / "checkpoints"
    np.testing.assert_allclose(exported, probabilities_of_checkpoint(spec_path, params, checkpoints / f"ckpt-{epoch}",
                                                                     features), rtol=1e-6, atol=1e-7)
    other = probabilities_of_checkpoint(spec_path, params, checkpoints / f"ckpt-{other_epoch}", features)
    assert np.abs(exported - other).max() > 1e-4


def test_a_run_peaking_at_epoch_2_of_4_exports_and_evaluates_epoch_2(spec_path, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "split_metrics", scripted_split_metrics(PEAK_AT_2))
    params = TrainParams(**TINY, epochs=4)
    result = training.train(spec_path, tmp_path / "run", params)
    assert (result["best_epoch"], result["exported_epoch"], result["stopped_early"], result["epochs_run"]) == (2, 2, False, 4)
    assert result["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "best" / "ckpt-2")
    assert_exports_epoch(spec_path, tmp_path / "run", params, 2, 4)

    evaluated = training.evaluate(spec_path, tmp_path / "run", params)
    from din_model.data.reader import feature_spec_at

    spec, cpu = feature_spec_at(spec_path), select_device("cpu")
    state = TrainingState(params, spec, cpu, tmp_path / "run" / "checkpoints")
    restore_weights(state.model, str(tmp_path / "run" / "checkpoints" / "ckpt-2"), state.checkpoint)
    test = evaluation.predict_split(steps.make_predict_step(state.model, steps.step_signature(spec, params, cpu)),
                                    spec, "test", params, cpu)
    assert evaluated["test"]["auc"] == pytest.approx(metric_functions.auc(test["label"], test["probability"]), abs=1e-9)


@pytest.mark.slow  # four training epochs and an export: the README's quick run keeps one such test
def test_restore_best_off_exports_the_last_epoch(spec_path, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "split_metrics", scripted_split_metrics(PEAK_AT_2))
    params = TrainParams(**TINY, epochs=3, restore_best=False)
    result = training.train(spec_path, tmp_path / "run", params)
    assert (result["best_epoch"], result["exported_epoch"]) == (2, 3)
    assert result["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "ckpt-3")
    assert not (tmp_path / "run" / "checkpoints" / "best").exists()
    assert_exports_epoch(spec_path, tmp_path / "run", params, 3, 2)


def recording_epochs(monkeypatch) -> list:
    trained, real_run_epoch = [], training.run_epoch

    def run_epoch(*args, **kwargs):
        trained.append(args[5])
        return real_run_epoch(*args, **kwargs)
    monkeypatch.setattr(training, "run_epoch", run_epoch)
    return trained


@pytest.mark.slow  # four training epochs and an export: the README's quick run keeps one such test
def test_a_spent_patience_stops_the_loop_and_a_rerun_trains_no_more(spec_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training, "split_metrics", scripted_split_metrics(PEAK_AT_2))
    trained = recording_epochs(monkeypatch)
    params = TrainParams(**TINY, epochs=6, patience=2)
    result = training.train(spec_path, tmp_path / "run", params)
    assert trained == [1, 2, 3, 4]
    assert (result["best_epoch"], result["stopped_early"], result["epochs_run"]) == (2, True, 4)
    assert "[train] stopping early after epoch 4: [train] patience = 2 epoch(s) without a validation AUC gain" \
        in capsys.readouterr().out
    assert training.training_complete(tmp_path / "run" / "metrics.json", params)
    assert training.train(spec_path, tmp_path / "run", params)["best_epoch"] == 2 and trained == [1, 2, 3, 4]


@pytest.mark.parametrize("killed_at, aucs_after", [
    pytest.param("train:epoch3:checkpointed", [0.75], marks=pytest.mark.slow),
    # latest checkpoint of the new best epoch written, its best copy not yet: the resume keeps it
    pytest.param("train:epoch2:checkpointed", [0.7, 0.75], marks=pytest.mark.slow),
])
def test_a_killed_and_resumed_run_remembers_its_best_epoch(spec_path, tmp_path, monkeypatch, killed_at, aucs_after):
    params = TrainParams(**TINY, epochs=4)

    def kill_point(name):
        if name == killed_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "split_metrics", scripted_split_metrics(PEAK_AT_2))
    monkeypatch.setattr(training, "kill_point", kill_point)
    with pytest.raises(KeyboardInterrupt):
        training.train(spec_path, tmp_path / "run", params)
    monkeypatch.undo()
    monkeypatch.setattr(training, "split_metrics", scripted_split_metrics(aucs_after))
    trained = recording_epochs(monkeypatch)
    result = training.train(spec_path, tmp_path / "run", params)
    assert trained == list(range(5 - len(aucs_after), 5))
    assert (result["best_epoch"], result["epochs_run"]) == (2, 4)
    assert result["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "best" / "ckpt-2")
    assert_exports_epoch(spec_path, tmp_path / "run", params, 2, 4)


@pytest.mark.slow
def test_on_the_npu_stand_in_the_same_epoch_is_chosen(tmp_path, npu_standin, monkeypatch):  # noqa: F811
    spec_path = write_random_fixture(tmp_path / "data")
    monkeypatch.setattr(training, "split_metrics", scripted_split_metrics(PEAK_AT_2))
    result = training.train(spec_path, tmp_path / "run", TrainParams(**{**TINY, "batch_size": 40, "device": "npu"},
                                                                      epochs=4, patience=1))
    assert (result["device"], result["best_epoch"], result["stopped_early"], result["epochs_run"]) == ("npu", 2, True, 3)
    assert result["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "best" / "ckpt-2")


def test_npu_ranks_share_rank_zeros_decision_through_the_sync_directory(tmp_path):
    import threading
    import types

    adapter = types.SimpleNamespace(distribute=types.SimpleNamespace(
        all_reduce=lambda *args, **kwargs: pytest.fail("a collective while rank 0 validates")))
    rank0, rank1 = (npu_ranks.NpuRankPlacement(adapter, rank, 2, str(tmp_path)) for rank in (0, 1))
    shared = []
    waiting = threading.Thread(target=lambda: shared.append(rank1.share_from_writer([0.0, 0.0], "epoch3")))
    waiting.start()
    assert rank0.share_from_writer([1.0, 0.0], "epoch3") == [1.0, 0.0]
    waiting.join(timeout=5)
    assert shared == [[1.0, 0.0]]


def scripted_process_env(aucs) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests" / "npu_site")]),
            "SCRIPTED_VAL_AUCS": json.dumps(aucs), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.slow
def test_two_npu_ranks_stop_together_at_the_epoch_rank_zero_chose(tmp_path, monkeypatch):
    spec_path = write_random_fixture(tmp_path / "data", sizes=(("train", 640), ("val", 120), ("test", 120)))
    table = tmp_path / "rank_table.json"
    table.write_text(json.dumps(table_1_0(device(0, 0), device(1, 1))))
    for name, value in scripted_process_env(PEAK_AT_2).items():
        monkeypatch.setenv(name, value)
    real_popen = subprocess.Popen

    def scripted_rank(command, **kwargs):
        assert command[1:3] == ["-m", "din_model.run.npu_rank"]
        entry = SCRIPTED_RUN + "import sys\nfrom din_model.run.npu_rank import main\nsys.exit(main(sys.argv[1:]))\n"
        return real_popen([sys.executable, "-c", entry, *command[3:]], cwd=REPO, **kwargs)

    monkeypatch.setattr(npu_ranks.subprocess, "Popen", scripted_rank)
    monkeypatch.setattr(npu_ranks.importlib.util, "find_spec", lambda name: object())  # the ranks import the stand-in
    params = TrainParams(**{**TINY, "batch_size": 32, "device": "npu"}, epochs=5, patience=2)
    result = npu_ranks.launch_ranks(NpuOptions(devices=2, rank_table_file=str(table)), spec_path, tmp_path / "run",
                                    params, poll_seconds=0.1)
    assert (result["workers"], result["best_epoch"], result["stopped_early"], result["epochs_run"]) == (2, 2, True, 4)
    assert result["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "best" / "ckpt-2")


@pytest.mark.slow
def test_two_cluster_workers_stop_together_at_the_epoch_the_chief_chose(tmp_path):
    spec_path = write_random_fixture(tmp_path / "data", sizes=(("train", 640), ("val", 120), ("test", 120)))
    params = json.dumps({**TINY, "epochs": 5, "patience": 2})
    entry = SCRIPTED_RUN + ("import sys\nfrom din_model.params import TrainParams\n"
                            "loop.train(sys.argv[1], sys.argv[2], TrainParams(**json.loads(sys.argv[3])))\n" + PRINT_RETURNED)
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = [subprocess.Popen([sys.executable, "-c", entry, str(spec_path), str(tmp_path / f"run-{index}"), params],
                                  cwd=REPO, env={**scripted_process_env(PEAK_AT_2), "TF_CONFIG": tf_config(addresses, index)},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for index in range(2)]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert worker_ended_well(process, output), \
            "\n".join(line for line in output.splitlines() if "WARNING" not in line)[-3000:]
        assert "[train] stopping early after epoch 4" in output
    metrics = json.loads((tmp_path / "run-0" / "metrics.json").read_text())
    assert (metrics["workers"], metrics["best_epoch"], metrics["stopped_early"], metrics["epochs_run"]) == (2, 2, True, 4)
    assert metrics["checkpoint"] == str(tmp_path / "run-0" / "checkpoints" / "best" / "ckpt-2")
