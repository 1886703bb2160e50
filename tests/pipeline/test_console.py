"""The summary block's pieces and the task lock that leaves nothing behind."""
import json
import sys
import time

import pytest

from pipeline.cli import summary
from pipeline.cli.summary import group_tasks, headline_metrics, run_lines
from pipeline.tasks.base import task_lock
from pipeline.tasks.stage1 import BuildSequences, Preprocess, RemapIds

EPOCHS = [{"epoch": e, "train_loss": 0.7 - 0.1 * e, "train_samples_per_s": 1000.0,
           "val": {"auc": 0.6 + 0.1 * e, "gauc": 0.6, "logloss": 0.6}} for e in (1, 2)]


def test_summary_names_every_result_and_the_headline_metrics(tmp_path, monkeypatch):
    metrics = {"epochs": EPOCHS, "test": {"auc": 0.91234, "gauc": 0.9, "logloss": 0.41},
               "popularity_test_auc": 0.74, "oracle_test_auc": 0.95, "gap_closed": 0.8123}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.setattr(summary, "tensorboard_installed", lambda: True)
    lines = run_lines(tmp_path)
    assert lines[0] == f"run folder:         {tmp_path}"
    assert f"  TensorBoard:      tensorboard --logdir {tmp_path / 'tensorboard'}" in lines
    assert f"  curves:           {tmp_path / 'curves.png'}" in lines
    assert lines[-1] == ("metrics:            test AUC 0.9123, GAUC 0.9000, logloss 0.4100; popularity AUC 0.7400; "
                         "oracle AUC 0.9500, gap closed 81.2%")
    assert run_lines(tmp_path / "absent") == []


def test_without_tensorboard_the_summary_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "metrics.json").write_text(json.dumps({"epochs": EPOCHS}))
    monkeypatch.setattr(summary, "tensorboard_installed", lambda: False)
    assert (f"  TensorBoard:      not installed: pip install -e '.[tensorboard]' adds it "
            f"(then tensorboard --logdir {tmp_path / 'tensorboard'})") in run_lines(tmp_path)


@pytest.mark.parametrize("blocked", [False, True])
def test_tensorboard_counts_as_installed_when_this_interpreter_finds_it(tmp_path, monkeypatch, blocked):
    """A `tensorboard` package first on the path is found (not imported); a path entry shadowing it with a
    non-package finds nothing."""
    package = tmp_path / "tensorboard"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('finding must not import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    if blocked:
        monkeypatch.setitem(sys.modules, "tensorboard", None)  # what `import tensorboard` cannot load
    assert summary.tensorboard_installed() is not blocked


def test_headline_before_evaluation_is_the_last_validation():
    assert headline_metrics({"epochs": EPOCHS}) == "val AUC 0.8000, GAUC 0.6000, logloss 0.6000 after epoch 2"
    assert headline_metrics({}) == ""


def test_shard_tasks_are_counted_in_the_summary():
    assert group_tasks([BuildSequences(shard=0), BuildSequences(shard=1), Preprocess()]) == \
        "BuildSequences (2 shards), Preprocess"


def test_task_lock_leaves_no_lock_files_and_keeps_the_dir_while_another_lock_is_held(tmp_path):
    with task_lock(tmp_path, "A"):
        with task_lock(tmp_path, "B"):
            assert sorted(p.name for p in (tmp_path / ".locks").iterdir()) == ["A.lock", "B.lock"]
        assert [p.name for p in (tmp_path / ".locks").iterdir()] == ["A.lock"]
    assert not (tmp_path / ".locks").exists()


def test_a_long_running_task_says_what_it_does_next(capsys):
    task = RemapIds()  # Luigi hands out one instance per parameters: other tests may have run it
    task.started = None
    task.report("loading raw pickles", 5)  # not started by the worker: no line
    task.started = time.perf_counter()
    task.report("remapping ids", 40)  # just started: no line
    task.started -= task.PROGRESS_AFTER_SECONDS
    task.report("writing remap tables", 70)
    assert capsys.readouterr().out == "[RemapIds] writing remap tables ...\n"
