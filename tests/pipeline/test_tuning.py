"""TuneDIN's pure parts (pipeline/tasks/tuning.py): the search space as TrainParams, the best trial, the
command that reproduces it, the stale-trial cleanup on an in-memory study. The real search through the
`luigi` command, and its resume after a kill -9: tests/e2e/test_tuning_runs.py."""
from __future__ import annotations

import dataclasses
import shlex
from types import SimpleNamespace

import pytest

from din_common.errors import InputError
from din_model.params import TrainParams
from pipeline.tasks import tuning

optuna = pytest.importorskip("optuna")
TrialState = optuna.trial.TrialState

DRAWN = {"learning_rate": 0.00123, "embed_dim": 16, "dropout": 0.25, "l2": 3e-05, "batch_size": 1024,
         "lr_decay_factor": 0.5, "model": "din_seq"}


def test_a_trial_s_values_replace_exactly_the_searched_settings():
    base = TrainParams(epochs=3, seed=7, device="cpu")
    params = tuning.suggest_params(optuna.trial.FixedTrial(DRAWN), base)
    assert {name: getattr(params, name) for name in tuning.SEARCHED} == DRAWN
    assert dataclasses.replace(params, **{name: getattr(base, name) for name in tuning.SEARCHED}) == base


def test_every_value_of_the_search_space_is_a_valid_setting():
    base = TrainParams()
    for name, kind, values in tuning.SEARCH_SPACE:
        for value in values:
            tuning.suggest_params(optuna.trial.FixedTrial({**DRAWN, name: value}), base)  # validates


def _numbered(number, value, state=TrialState.COMPLETE):
    """What best_trial reads of an Optuna FrozenTrial."""
    return SimpleNamespace(number=number, value=value, state=state)


def test_the_best_trial_is_the_highest_complete_value_and_the_earliest_on_a_tie():
    trials = [_numbered(0, 0.81), _numbered(1, None, TrialState.FAIL), _numbered(2, 0.87), _numbered(3, 0.87),
              _numbered(4, None, TrialState.RUNNING), _numbered(5, 0.80)]
    assert tuning.best_trial(trials).number == 2
    assert tuning.best_trial([_numbered(0, None, TrialState.FAIL)]) is None


def test_the_reproduce_command_keeps_the_given_flags_and_sets_the_tuned_ones_exactly():
    given = {("paths", "data_dir"): "/data dir", ("train", "epochs"): "1", ("train", "learning_rate"): "0.5",
             ("tune", "trials"): "3"}
    command = tuning.reproduce_command(given, DRAWN)
    assert command == ("luigi --module pipeline TrainDIN --paths-data-dir '/data dir' --train-epochs 1 "
                       "--train-learning-rate 0.00123 --train-embed-dim 16 --train-dropout 0.25 --train-l2 3e-05 "
                       "--train-batch-size 1024 --train-lr-decay-factor 0.5 --train-model din_seq")
    words = shlex.split(command)
    assert float(words[words.index("--train-learning-rate") + 1]) == DRAWN["learning_rate"]


def test_a_float_flag_reads_back_to_the_same_number():
    value = 0.00012345678901234567
    command = tuning.reproduce_command({}, {**DRAWN, "learning_rate": value})
    words = command.split()
    assert float(words[words.index("--train-learning-rate") + 1]) == value


def test_the_study_follows_the_fixed_settings_the_shards_and_the_seed_not_the_searched_ones():
    base = TrainParams()
    name = tuning.study_name(base, "fp", 0)
    assert tuning.study_name(dataclasses.replace(base, learning_rate=0.5, model="din_seq"), "fp", 0) == name
    assert tuning.study_name(dataclasses.replace(base, epochs=2), "fp", 0) != name
    assert tuning.study_name(base, "other", 0) != name
    assert tuning.study_name(base, "fp", 1) != name


def test_trials_left_running_are_marked_failed_and_the_others_kept():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.7, params={}, distributions={}))
    study.ask()  # a trial left RUNNING, as by a killed process
    assert tuning.fail_stale_trials(optuna, storage, "s") == 1
    assert [trial.state for trial in study.get_trials()] == [TrialState.COMPLETE, TrialState.FAIL]
    assert tuning.complete_count(optuna, study) == 1


def test_missing_optuna_is_one_line_naming_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("No module named 'optuna'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    with pytest.raises(InputError) as refused:
        tuning.import_optuna()
    assert refused.value.message == tuning.MISSING_OPTUNA
    assert "'.[tune]'" in refused.value.message


def test_scheduling_names_the_extra_when_optuna_is_not_installed(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "optuna"
                        else real_find_spec(name, *args))
    with pytest.raises(InputError) as refused:
        tuning.require_optuna()
    assert refused.value.message == tuning.MISSING_OPTUNA
