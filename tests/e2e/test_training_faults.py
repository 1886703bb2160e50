"""Faults while training, through the real `luigi` command.

- A full disk, on a real small file system (a tmpfs in a user namespace, tests/helpers/small_disk.py),
  so TensorFlow's own writers fail with ENOSPC: the checkpoint, then the SavedModel, then curves.png.
  Each failure is one ERROR line naming the folder and the space needed, exit 30 (as stage 1's disk
  full), no temporary left; each rerun with more space resumes, and the last one finishes the run.
- A full disk while writing the TensorBoard events file, then metrics.json: one ERROR line each, exit 30,
  neither file half-written; the rerun with space finishes the run.
- Ctrl-C (SIGINT) after an epoch: one line naming the last checkpointed epoch, exit 130, no lock or
  temporary left, and the rerun resumes from that epoch.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from tests.e2e.test_cli_output import LUIGI, REPO, TASK_FAILED, TINY, luigi
from tests.helpers.small_disk import run_on_small_disk, small_disk_available

pytestmark = pytest.mark.slow  # each test runs several training commands

# A wide embedding makes the checkpoint (~1.3 MB) and SavedModel far larger than the small files around them.
WIDE_ONE_EPOCH = ("--train-epochs", "1", "--train-embed-dim", "256")
TEMPORARIES = re.compile(r"_temp|tempstate|\.tmp")
SIZE = r"[\d.]+ [kMG]B"


def command(data_dir, training=WIDE_ONE_EPOCH) -> list[str]:
    return [str(LUIGI), "--module", "pipeline", "TrainDIN", *TINY, "--train-device", "cpu", *training,
            "--paths-data-dir", str(data_dir)]


def one_error(step: dict) -> str:
    output = step["stdout"] + step["stderr"]
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output, output
    assert step["returncode"] == TASK_FAILED, output
    return errors[0]


NEEDS = rf"it needs about {SIZE} there, "


def assert_disk_full(step: dict, writing: str, rerun_note: str = "", needs: str = NEEDS) -> None:
    """The step's one line says what it was writing where (patterns), the space needed (when a writer knows it
    beforehand: not TensorBoard's) and free; exit 30."""
    line = one_error(step)
    assert re.fullmatch(rf"ERROR: no space left on the device while writing {writing}: {needs}{SIZE} free; "
                        rf"nothing was left half-written; free some space and rerun the same command{rerun_note}",
                        line), line


def layout(files: dict) -> set:
    """The paths of a run folder, its TensorBoard events file (named after its writer's time and pid) as `events`."""
    return {re.sub(r"events\.out\.tfevents\..*", "events", path) for path in files}


def total(files: dict, leave_out=lambda path: False) -> int:
    return sum(size for path, size in files.items() if not leave_out(path))


@pytest.fixture(scope="module")
def stage1_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("disk_full") / "data"
    assert luigi(data_dir, "Preprocess", *TINY).returncode == 0
    return data_dir


@pytest.mark.skipif(not small_disk_available(), reason="this kernel allows no unprivileged user namespace for a tmpfs")
def test_a_full_disk_while_training_is_one_error_line_and_a_rerun_with_space_resumes(stage1_data):
    runs = stage1_data / "runs"
    reference = run_on_small_disk(runs, [{"command": command(stage1_data), "budget": None}])[0]
    assert reference["returncode"] == 0, reference["stderr"]
    files = reference["files"]
    (run_id,) = {path.split("/")[0] for path in files}
    saved_model = total(files, lambda path: "/saved_model/" not in path)
    curves = files[f"{run_id}/curves.png"]
    before_export = total(files, lambda path: "/saved_model/" in path or path.endswith("curves.png")) + 16384

    run_dir = runs / run_id
    steps = run_on_small_disk(runs, [
        {"command": command(stage1_data), "budget": 256 * 1024},  # the small files fit, the checkpoint not
        {"command": command(stage1_data), "budget": before_export + saved_model // 2},
        {"command": command(stage1_data), "budget": total(files) - curves // 2},
        {"command": command(stage1_data), "budget": None},  # space freed
        {"command": ["cat", str(run_dir / "metrics.json")], "budget": None},
    ])
    checkpoint, export, plot, finished, metrics = steps

    assert_disk_full(checkpoint, rf"the checkpoint of epoch 1 in {run_dir}/checkpoints",
                     r" \(it starts the run again\)")
    assert not [path for path in checkpoint["files"] if "/checkpoints/" in path or TEMPORARIES.search(path)]

    assert_disk_full(export, rf"the SavedModel in {run_dir}")
    assert f"{run_id}/checkpoints/ckpt-1.index" in export["files"]
    assert not [path for path in export["files"] if "saved_model" in path or TEMPORARIES.search(path)]

    assert_disk_full(plot, rf"curves\.png in {run_dir}")
    assert f"{run_id}/saved_model/saved_model.pb" in plot["files"]
    assert not [path for path in plot["files"] if path.endswith("curves.png") or TEMPORARIES.search(path)]
    assert f"[train] resuming {run_dir} after epoch 1" in plot["stdout"]  # nothing retrained after the export

    assert finished["returncode"] == 0, finished["stderr"]
    assert f"[train] resuming {run_dir} after epoch 1" in finished["stdout"]
    assert layout(finished["files"]) == layout(files)  # one events file, rewritten by the last process
    assert not [path for path in finished["files"] if TEMPORARIES.search(path)]
    assert json.loads(metrics["stdout"])["training_done"] is True


# tmpfs counts whole pages: each small file of a run (params.json, the events file, metrics.json) takes one.
PAGE = os.sysconf("SC_PAGESIZE")


@pytest.mark.skipif(not small_disk_available(), reason="this kernel allows no unprivileged user namespace for a tmpfs")
def test_a_full_disk_while_writing_tensorboard_events_or_metrics_json_is_one_line_and_the_rerun_finishes(stage1_data):
    small = command(stage1_data, ("--train-epochs", "1", "--train-embed-dim", "4"))
    events, metrics, finished = run_on_small_disk(stage1_data / "runs", [
        {"command": small, "budget": PAGE},  # params.json fits, the events file not
        {"command": small, "budget": 2 * PAGE},  # params.json and the events file fit, metrics.json not
        {"command": small, "budget": None},  # space freed
    ])
    (run_id,) = {path.split("/")[0] for path in finished["files"]}
    run_dir = stage1_data / "runs" / run_id

    assert_disk_full(events, rf"TensorBoard events in {run_dir}/tensorboard", needs="")
    assert set(events["files"]) == {f"{run_id}/params.json"}

    assert_disk_full(metrics, rf"metrics\.json in {run_dir}")
    # The events file is whole (epoch 1's scalars); the rerun writes it again from metrics.json's epochs.
    assert layout(metrics["files"]) == {f"{run_id}/params.json", f"{run_id}/tensorboard/events"}

    assert finished["returncode"] == 0, finished["stderr"]
    assert {f"{run_id}/metrics.json", f"{run_id}/tensorboard/events", f"{run_id}/saved_model/saved_model.pb"} <= \
        layout(finished["files"])
    assert len([path for path in finished["files"] if "tfevents" in path]) == 1
    assert not [path for path in finished["files"] if TEMPORARIES.search(path)]


def last_checkpointed_epoch(run_dir) -> int:
    """The epoch of the checkpoint the manager's state file names (what a rerun restores)."""
    state = (run_dir / "checkpoints" / "checkpoint").read_text()
    return int(re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state, re.MULTILINE).group(1))


def test_ctrl_c_while_training_is_one_line_exit_130_and_the_rerun_resumes(stage1_data):
    train = command(stage1_data, ("--train-epochs", "8", "--train-embed-dim", "8"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # As from a terminal: a shell without job control starts background jobs with SIGINT ignored, and the
    # child would inherit that (Python then installs no KeyboardInterrupt handler): so it failed twice when
    # the tests themselves ran as such a background job.
    process = subprocess.Popen(train, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("[train] epoch 1/8"):
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=600)
    output = "".join(lines) + out + err
    assert process.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    run_dir = stage1_data / "runs" / re.search(r"^\[TrainDIN\] run (\w+): ", output, re.MULTILINE).group(1)
    epoch = last_checkpointed_epoch(run_dir)
    assert 1 <= epoch < 8
    assert err.strip().splitlines()[-1] == f"interrupted after epoch {epoch}; rerun the same command to resume"
    assert not (stage1_data / ".locks").exists()
    assert not [path for path in run_dir.rglob("*") if TEMPORARIES.search(path.name)]

    rerun = subprocess.run(train, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"[train] resuming {run_dir} after epoch {epoch}" in rerun.stdout
    assert [record["epoch"] for record in json.loads((run_dir / "metrics.json").read_text())["epochs"]] == \
        list(range(1, 9))
