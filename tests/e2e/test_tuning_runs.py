"""TuneDIN through the real `luigi` command on tiny synthetic data: best.json names a run folder that exists
and a TrainDIN command that finds that same run up to date; a search killed (kill -9) inside a trial resumes,
the killed trial marked FAIL, until the asked number of trials is COMPLETE; without Optuna, one line naming
the extra."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from din_common.faults import KILL_AT_VARIABLE

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[2]
TINY = ["--raw-synthetic-users", "300", "--raw-synthetic-items", "400", "--raw-synthetic-categories", "12",
        "--preprocess-num-shards", "2", "--preprocess-maxlen", "5", "--preprocess-prebatch", "64",
        "--train-epochs", "1", "--train-attention-hidden", "8", "--train-mlp-hidden", "8", "--train-device", "cpu"]


def luigi_command(words, kill_at: str | None = None, env_changes=None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != KILL_AT_VARIABLE}
    if kill_at:
        env[KILL_AT_VARIABLE] = kill_at
    env.update(env_changes or {})
    return subprocess.run([sys.executable, "-m", "luigi", *words], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)


def tune(data_dir: Path, trials: int, kill_at: str | None = None) -> subprocess.CompletedProcess:
    return luigi_command(["--module", "pipeline", "TuneDIN", "--paths-data-dir", str(data_dir), *TINY,
                          "--tune-trials", str(trials)], kill_at)


def trial_states(data_dir: Path) -> list[str]:
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{data_dir / 'tune' / 'study.db'}")
    return [trial.state.name for trial in study.get_trials()]


@pytest.mark.slow
def test_a_search_writes_the_best_trial_and_its_command_reproduces_the_run(tmp_path):
    data_dir = tmp_path / "data"
    result = tune(data_dir, 2)
    assert result.returncode == 0, result.stdout + result.stderr
    best = json.loads((data_dir / "tune" / "best.json").read_text())
    assert (data_dir / "runs" / best["run_id"] / "saved_model").is_dir()
    assert best["trials"] == 2 and best["best_trial"] in (0, 1)
    assert [line for line in result.stdout.splitlines() if line.startswith("[TuneDIN] trial ")][1].startswith(
        "[TuneDIN] trial 1: val auc ")
    assert f"[TuneDIN] best of 2 trials: trial {best['best_trial']}" in result.stdout
    assert trial_states(data_dir) == ["COMPLETE", "COMPLETE"]

    command = shlex.split(best["command"])
    assert command[:4] == ["luigi", "--module", "pipeline", "TrainDIN"]
    rerun = luigi_command(command[1:])
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "already up to date: TrainDIN" in rerun.stdout
    assert f"run folder:         {data_dir / 'runs' / best['run_id']}" in rerun.stdout

    again = tune(data_dir, 2)
    assert again.returncode == 0 and "already up to date: TuneDIN" in again.stdout


@pytest.mark.slow
def test_a_search_killed_inside_a_trial_resumes_to_the_asked_complete_trials(tmp_path):
    data_dir = tmp_path / "data"
    killed = tune(data_dir, 3, kill_at="TuneDIN:trial 1 trained")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert trial_states(data_dir) == ["COMPLETE", "RUNNING"]
    assert not (data_dir / "tune" / "best.json").exists()

    resumed = tune(data_dir, 3)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 of 3 trials complete, 1 left running by a killed run marked failed" in resumed.stdout
    assert trial_states(data_dir) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    best = json.loads((data_dir / "tune" / "best.json").read_text())
    assert best["trials"] == 3 and best["best_trial"] != 1
    assert (data_dir / "runs" / best["run_id"]).is_dir()


def test_without_optuna_the_command_says_which_extra_to_install_and_writes_nothing(tmp_path):
    hide = tmp_path / "hide_optuna"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['optuna'] = None  # as if not installed\n")
    python_path = os.pathsep.join([str(REPO), str(hide), os.environ.get("PYTHONPATH", "")])
    data_dir = tmp_path / "data"
    result = luigi_command(["--module", "pipeline", "TuneDIN", "--paths-data-dir", str(data_dir)],
                           env_changes={"PYTHONPATH": python_path})
    assert result.returncode == 35, result.stdout + result.stderr
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ERROR:")]
    assert errors == ["ERROR: TuneDIN needs Optuna, the optional `tune` extra: pip install -e '.[tune]' "
                      "(its pinned version: constraints/)"]
    assert "Traceback" not in result.stdout + result.stderr
    assert not data_dir.exists()
