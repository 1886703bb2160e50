"""`[train] deterministic = true` through the real `luigi` command: two runs of the same settings on the same
shards give byte-identical metrics (every epoch's train loss and validation AUC / GAUC / logloss, and the
test metrics), and so does a run killed in its second epoch and resumed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from din_common.faults import KILL_AT_VARIABLE
from tests.e2e.test_cli_output import REPO, TINY, luigi

pytestmark = pytest.mark.slow  # four training commands

RUN = ["EvaluateDIN", *TINY, "--train-epochs", "2", "--train-batch-size", "256", "--train-embed-dim", "8",
       "--train-device", "cpu", "--train-deterministic", "true"]


@pytest.fixture(scope="module")
def stage1_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("reproducible") / "data"
    assert luigi(data_dir, "Preprocess", *TINY).returncode == 0
    return data_dir


def fresh_copy(stage1_data, tmp_path, name):
    copy = tmp_path / name
    subprocess.run(["cp", "-a", str(stage1_data), str(copy)], check=True)
    return copy


def run_metrics(data_dir, kill_at: str | None = None) -> dict:
    """The figures of the run's metrics.json that depend on the numbers trained (not speeds or paths)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if kill_at:
        killed = subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", *RUN, "--paths-data-dir",
                                 str(data_dir)], cwd=REPO, env={**env, KILL_AT_VARIABLE: kill_at},
                                capture_output=True, text=True, timeout=600)
        assert killed.returncode != 0, f"the kill point {kill_at} was never reached"
    finished = luigi(data_dir, *RUN)
    assert finished.returncode == 0, finished.stderr
    if kill_at:
        assert "resuming" in finished.stdout and "after epoch 1" in finished.stdout
    (run_dir,) = (data_dir / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["params"]["deterministic"] is True
    return {"epochs": [{"epoch": record["epoch"], "train_loss": record["train_loss"], "val": record["val"]}
                       for record in metrics["epochs"]],
            "test": metrics["test"], "best_epoch": metrics["best_epoch"]}


def test_deterministic_runs_give_identical_metrics_also_when_killed_and_resumed(stage1_data, tmp_path):
    first = run_metrics(fresh_copy(stage1_data, tmp_path, "first"))
    second = run_metrics(fresh_copy(stage1_data, tmp_path, "second"))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert [record["epoch"] for record in first["epochs"]] == [1, 2]
    resumed = run_metrics(fresh_copy(stage1_data, tmp_path, "resumed"), kill_at="train:epoch2:step2")
    assert json.dumps(resumed, sort_keys=True) == json.dumps(first, sort_keys=True)
