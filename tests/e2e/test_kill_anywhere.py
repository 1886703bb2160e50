"""SIGKILL the pipeline at many points; a rerun must finish with outputs identical to an uninterrupted run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from din_common.faults import KILL_AT_VARIABLE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY = ["--raw-synthetic-users", "300", "--raw-synthetic-items", "400", "--raw-synthetic-categories", "12",
        "--preprocess-num-shards", "2", "--preprocess-maxlen", "5", "--preprocess-prebatch", "64"]

STAGE1_KILL_POINTS = [
    "atomic:reviews.pkl",          # PrepareRaw: a raw pickle written, not renamed
    "atomic:manifest.json",        # PrepareRaw: pickles in place, manifest not
    "atomic:users.parquet",        # RemapIds: some tables replaced
    "atomic:stats.json",           # RemapIds: tables done, manifest not
    "atomic:part-00001.parquet",   # BuildSequences(1)
    "atomic:part-00000.tfrecord",  # WriteTFRecords(0)'s records, written by BuildSequences(0)
    "atomic:feature_spec.json",    # Preprocess
]


def run_pipeline(data_dir: Path, task: str = "Preprocess", kill_at: str | None = None, extra=()) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop(KILL_AT_VARIABLE, None)
    if kill_at:
        env[KILL_AT_VARIABLE] = kill_at
    command = [sys.executable, "-m", "luigi", "--module", "pipeline", task, "--paths-data-dir", str(data_dir),
               *TINY, *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def stage1_bytes(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.rglob("*"))
            if p.is_file() and p.parts[len(data_dir.parts)] in ("raw", "remap", "sequences", "tfrecords")}


def leftovers(data_dir: Path) -> list[str]:
    return [str(p) for p in data_dir.rglob("*") if ".tmp-" in p.name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("reference") / "data"
    result = run_pipeline(data_dir)
    assert result.returncode == 0, result.stderr
    return stage1_bytes(data_dir)


@pytest.mark.parametrize("kill_at", STAGE1_KILL_POINTS)
def test_stage1_killed_anywhere_reruns_to_identical_outputs(tmp_path, reference, kill_at):
    data_dir = tmp_path / "data"
    killed = run_pipeline(data_dir, kill_at=kill_at)
    assert killed.returncode != 0, f"the kill point {kill_at} was never reached"
    finished = run_pipeline(data_dir)
    assert finished.returncode == 0, finished.stderr
    assert stage1_bytes(data_dir) == reference
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("lock", ["default-lock", "no-lock"])
def test_two_runs_at_once_on_one_data_dir_end_with_the_same_outputs(tmp_path, reference, lock):
    """Luigi's process lock turns the second identical command away (exit 10, already running);
    without the lock both run, and atomic writes keep the outputs whole."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_VARIABLE}
    command = [sys.executable, "-m", "luigi", "--module", "pipeline", "Preprocess", "--paths-data-dir",
               str(data_dir), *TINY, *(["--no-lock"] if lock == "no-lock" else [])]
    runs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    codes = []
    for run in runs:
        _, stderr = run.communicate(timeout=600)
        codes.append(run.returncode)
        assert run.returncode in (0, 10), stderr
    assert 0 in codes and (lock == "default-lock" or codes == [0, 0])
    assert stage1_bytes(data_dir) == reference
    assert leftovers(data_dir) == []


def test_parallel_workers_give_the_same_outputs(tmp_path, reference):
    data_dir = tmp_path / "data"
    result = run_pipeline(data_dir, extra=["--workers", "2"])
    assert result.returncode == 0, result.stderr
    assert stage1_bytes(data_dir) == reference


TINY_TRAINING = ["--train-epochs", "3", "--train-batch-size", "256", "--train-embed-dim", "8",
                 "--train-mlp-hidden", "16", "--train-attention-hidden", "8"]


@pytest.mark.parametrize("kill_at, resumed_after", [("train:epoch2:step2", 1), ("train:epoch2:metrics-written", 1),
                                                   ("train:epoch2:checkpointed", 2), ("train:epoch1:best-kept", 1)])
def test_training_killed_resumes_from_its_last_checkpoint(tmp_path, reference, kill_at, resumed_after):
    data_dir = tmp_path / "data"
    killed = run_pipeline(data_dir, task="AllTasks", kill_at=kill_at, extra=TINY_TRAINING)
    assert killed.returncode != 0, f"the kill point {kill_at} was never reached"
    finished = run_pipeline(data_dir, task="AllTasks", extra=TINY_TRAINING)
    assert finished.returncode == 0, finished.stderr
    assert "resuming" in finished.stdout and f"after epoch {resumed_after}" in finished.stdout
    assert "epoch 1/3" not in finished.stdout, "the epoch counter restarted"
    assert stage1_bytes(data_dir) == reference
    (run_dir,) = (data_dir / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3] and metrics["training_done"]
    assert "auc" in metrics["test"]
    assert leftovers(data_dir) == []


def test_two_alltasks_at_once_share_one_run(tmp_path, reference):
    """Without Luigi's process lock both AllTasks run; the per-task lock makes the second
    wait for the first's training and then find it complete."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_VARIABLE}
    command = [sys.executable, "-m", "luigi", "--module", "pipeline", "AllTasks", "--paths-data-dir", str(data_dir),
               *TINY, *TINY_TRAINING, "--no-lock"]
    runs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    assert sum(out.count("[train] epoch 3/3") for out, _ in outputs) == 1, "the run was trained twice"
    assert stage1_bytes(data_dir) == reference
    (run_dir,) = (data_dir / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3] and "auc" in metrics["test"]
    assert leftovers(data_dir) == []
