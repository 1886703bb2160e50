"""A `luigi --module pipeline ...` command with nothing to do never starts TensorFlow: the stage-2
tasks' completeness checks and the "up to date" summary use TensorFlow-free modules only. Checked
through the real command with a `tensorflow` package first on PYTHONPATH that fails on import. Its summary
names the TensorBoard command, or how to install TensorBoard where it is not."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from pipeline.cli import summary
from pipeline.tasks import stage2
from tests.e2e.test_cli_output import LUIGI, REPO, TASK_FAILED, TINY, luigi
from tests.helpers.luigi_config import luigi_settings

TRAIN = ["--train-epochs", "1", "--train-embed-dim", "4", "--train-device", "cpu"]
SETTINGS = {"raw": {"synthetic_users": "300", "synthetic_items": "400", "synthetic_categories": "12"},
            "preprocess": {"num_shards": "2", "maxlen": "5", "prebatch": "64"},
            "train": {"epochs": "1", "embed_dim": "4", "device": "cpu"}}
VAL = {"auc": 0.71, "gauc": 0.7, "logloss": 0.6}
REFUSAL = "tensorflow imported by a command with nothing to do"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """Stage 1 built by the command; the run folder as a finished TrainDIN and EvaluateDIN leave it (what
    the completeness checks read), without training: this test is about the commands that follow."""
    data_dir = tmp_path_factory.mktemp("noop") / "data"
    assert luigi(data_dir, "Preprocess", *TINY).returncode == 0
    with luigi_settings(paths={"data_dir": data_dir}, **SETTINGS):
        run_dir = stage2.TrainDIN().run_dir()
    run_dir.mkdir(parents=True)
    metrics = {"training_done": True, "epochs": [{"epoch": 1, "val": VAL}], "test": VAL}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "evaluation.json").write_text(json.dumps({"test": VAL}))
    return data_dir, run_dir


def luigi_without_tensorflow(tmp_path, data_dir, task, *args) -> subprocess.CompletedProcess:
    blocker = tmp_path / "blocker" / "tensorflow"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text(f"raise ImportError({REFUSAL!r})\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{REPO}"}
    command = [str(LUIGI), "--module", "pipeline", task, *TINY, *TRAIN, *args, "--paths-data-dir", str(data_dir)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("task", ["TrainDIN", "EvaluateDIN", "AllTasks"])
def test_a_command_with_nothing_to_do_never_imports_tensorflow(finished_run, tmp_path, task):
    data_dir, run_dir = finished_run
    result = luigi_without_tensorflow(tmp_path, data_dir, task)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"already up to date: {task} (and everything it needs)" in result.stdout
    assert f"run folder:         {run_dir}" in result.stdout
    # `tensorboard --logdir ...` where TensorBoard is installed, else how to install it (README, Quick start)
    (tensorboard_line,) = [line for line in summary.run_lines(run_dir) if line.startswith("  TensorBoard:")]
    assert tensorboard_line in result.stdout.splitlines()
    assert REFUSAL not in result.stdout + result.stderr


def test_the_blocker_stops_a_command_that_has_work_to_do(finished_run, tmp_path):
    data_dir, _ = finished_run
    result = luigi_without_tensorflow(tmp_path, data_dir, "TrainDIN", "--train-epochs", "2")
    assert result.returncode == TASK_FAILED, result.stdout + result.stderr
    assert REFUSAL in result.stdout + result.stderr
