"""The summary block at the end of every `luigi --module pipeline ...` command.

Which tasks ran, which were already up to date, which failed or could not start, and
where the results are with their headline metrics. Luigi's own execution summary is an
INFO log line, hidden at luigi.cfg's log level; this one always shows.
"""
from __future__ import annotations

import collections
import json
import logging
from pathlib import Path

from din_common.errors import InputError
from din_common.feature_spec import FILE_NAME as FEATURE_SPEC_FILE, FeatureSpec
from pipeline import config
from pipeline.console import count, split_counts
from pipeline.tasks.stage2 import RunTask

_SUMMARY_RULE = "=" * 72


def group_tasks(tasks) -> str:
    """`BuildSequences (8 shards), Preprocess`: task families in run order, shards counted."""
    families = collections.Counter(task.get_task_family() for task in tasks)
    parts = []
    for family, number in families.items():
        parts.append(f"{family} ({count(number, 'shard')})" if number > 1 else family)
    return ", ".join(parts)


# Luigi's status groups (luigi.execution_summary) under the words the summary uses.
STATUS_LINES = (
    ("ran", ("completed",)),
    ("already up to date", ("already_done",)),
    ("failed", ("failed",)),
    ("could not start", ("scheduling_error",)),
    ("not run", ("still_pending", "still_pending_ext", "upstream_failure", "upstream_missing_dependency",
                 "upstream_scheduling_error", "not_run")),
    ("run by another process", ("run_by_other_worker", "upstream_run_by_other_worker")),
)


def status_lines(task_sets: dict) -> list[str]:
    lines = []
    for label, statuses in STATUS_LINES:
        tasks = [task for status in statuses for task in sorted(task_sets.get(status, ()), key=_run_order)]
        if tasks:
            lines.append(f"{label + ':':<20}{group_tasks(tasks)}")
    return lines


_STAGE_ORDER = ("PrepareRaw", "RemapIds", "BuildSequences", "WriteTFRecords", "Preprocess", "TrainDIN", "EvaluateDIN")


def _run_order(task):
    family = task.get_task_family()
    rank = _STAGE_ORDER.index(family) if family in _STAGE_ORDER else len(_STAGE_ORDER)
    return rank, getattr(task, "shard", 0)


def stage1_lines(data_dir: Path) -> list[str]:
    """Where stage 1's outputs are, with the sample counts of feature_spec.json."""
    spec_path = data_dir / "tfrecords" / FEATURE_SPEC_FILE
    try:
        spec = FeatureSpec.from_json(spec_path.read_text(), spec_path)
    except (OSError, InputError):
        return []
    samples = split_counts({split: spec.samples(split) for split in spec.splits})
    return [f"{'stage 1:':<20}{data_dir / 'remap'}, {data_dir / 'sequences'}, {data_dir / 'tfrecords'}",
            f"{'samples:':<20}{samples} ({count(spec.num_shards or 0, 'shard')})"]


def run_lines(run_dir: Path) -> list[str]:
    """Where a training run's results are, and its headline metrics."""
    metrics_path = run_dir / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError):
        return []
    lines = [f"{'run folder:':<20}{run_dir}",
             f"{'  metrics:':<20}{metrics_path}",
             f"{'  curves:':<20}{run_dir / 'curves.png'}",
             f"{'  saved model:':<20}{run_dir / 'saved_model'}",
             f"{'  TensorBoard:':<20}tensorboard --logdir {run_dir / 'tensorboard'}"]
    headline = headline_metrics(metrics)
    if headline:
        lines.append(f"{'metrics:':<20}{headline}")
    return lines


def headline_metrics(metrics: dict) -> str:
    """Test metrics and baselines after EvaluateDIN, else the last epoch's validation metrics."""
    if "test" in metrics:
        test = metrics["test"]
        text = f"test AUC {test['auc']:.4f}, GAUC {test['gauc']:.4f}, logloss {test['logloss']:.4f}"
        if metrics.get("popularity_test_auc") is not None:
            text += f"; popularity AUC {metrics['popularity_test_auc']:.4f}"
        if metrics.get("gap_closed") is not None:
            text += f"; oracle AUC {metrics['oracle_test_auc']:.4f}, gap closed {metrics['gap_closed']:.1%}"
        vs_din = metrics.get("rela_impr", {}).get("vs_din")
        if vs_din is not None and metrics.get("params", {}).get("model", "din") != "din":
            text += f"; RelaImpr vs plain DIN {vs_din:+.1%}"
        return text
    epochs = [record for record in metrics.get("epochs", []) if "val" in record]
    if not epochs:
        return ""
    last = epochs[-1]
    return (f"val AUC {last['val']['auc']:.4f}, GAUC {last['val']['gauc']:.4f}, "
            f"logloss {last['val']['logloss']:.4f} after epoch {last['epoch']}")


def dependency_tree(root) -> list:
    """The root task and everything it requires, transitively (each task once)."""
    from luigi.task import flatten

    seen, pending = [], [root]
    while pending:
        task = pending.pop()
        if task not in seen:
            seen.append(task)
            pending.extend(flatten(task.requires()))
    return seen


def summary_block(root_task, task_sets: dict) -> list[str]:
    """The lines of the final summary of one command."""
    lines = [_SUMMARY_RULE, f"Summary of {root_task}"]
    lines += status_lines(task_sets)
    if root_task in task_sets.get("already_done", ()):
        lines[-1] += " (and everything it needs)"
    if root_task in task_sets.get("completed", ()) or root_task in task_sets.get("already_done", ()):
        # Luigi does not look below a task that is complete: find the results from the root.
        tasks = dependency_tree(root_task)
        if any(task.get_task_family() == "Preprocess" for task in tasks):
            lines += stage1_lines(Path(config.paths().data_dir))
        run_tasks = [task for task in tasks if isinstance(task, RunTask)]
        if run_tasks:
            lines += run_lines(run_tasks[0].run_dir())
    lines.append(_SUMMARY_RULE)
    return lines


def print_summary(worker) -> None:
    from luigi import execution_summary

    history = getattr(worker, "_add_task_history", None)
    if not history:
        return
    # Luigi's own grouping of the worker's tasks by status, the one its exit codes use.
    task_sets = execution_summary._summary_dict(worker)
    print("\n".join(summary_block(execution_summary._root_task(worker), task_sets)), flush=True)


def install_run_summary() -> None:
    """Print the summary block after the worker of a `luigi` command has run."""
    from luigi.worker import Worker

    if getattr(Worker.run, "prints_din_summary", False):
        return
    original_run = Worker.run

    def run(self):
        succeeded = original_run(self)
        try:
            print_summary(self)
        except Exception:  # the summary must never turn a finished run into a crash
            logging.getLogger("luigi-interface").debug("no run summary", exc_info=True)
        return succeeded

    run.prints_din_summary = True
    Worker.run = run
