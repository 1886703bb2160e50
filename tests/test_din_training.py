"""Training loop: outputs of a run, learning, resume after a kill, divergence stop, evaluation."""
import json

import numpy as np
import pytest
import tensorflow as tf

from din_model import training
from din_model.params import TrainParams
from din_model.training import TrainingDiverged, evaluate, train, training_complete
from tests.din_fixtures import write_random_fixture

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
    assert set(result["epochs"][0]) == {"epoch", "train_loss", "train_samples_per_s", "val"}
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
    assert tf.train.load_variable(checkpoint, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == \
        3 * steps_per_epoch
    assert tf.train.load_variable(checkpoint, "epoch/.ATTRIBUTES/VARIABLE_VALUE") == 3


def test_more_epochs_in_the_same_run_dir_continue_the_epoch_counter(spec_path, tmp_path):
    train(spec_path, tmp_path / "run", TrainParams(**TINY, epochs=1))
    result = train(spec_path, tmp_path / "run", TrainParams(**TINY, epochs=2))
    assert [record["epoch"] for record in result["epochs"]] == [1, 2]
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-2")


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(spec_path, tmp_path, monkeypatch):
    train(spec_path, tmp_path / "run", TrainParams(**TINY, epochs=1))
    real_make_train_step = training.make_train_step

    def nan_on_second_step(*args, **kwargs):
        step = real_make_train_step(*args, **kwargs)
        calls = []

        def poisoned(features, labels):
            calls.append(1)
            loss = step(features, labels)
            return loss * float("nan") if len(calls) == 2 else loss

        return poisoned

    monkeypatch.setattr(training, "make_train_step", nan_on_second_step)
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
