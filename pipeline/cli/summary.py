"""The summary block at the end of every `luigi --module pipeline ...` command.

Which tasks ran, which were already up to date, which failed or could not start, and
where the results are with their headline metrics. Luigi's own execution summary is an
INFO log line, hidden at luigi.cfg's log level; this one always shows.

Built on Luigi's public hooks only:
- while the command schedules, `luigi.Task.event_handler` feeds a `RunRecord`: every task
  found below the root (DEPENDENCY_DISCOVERED), those already up to date (DEPENDENCY_PRESENT)
  and those that could not start (DEPENDENCY_MISSING: their complete() raised; BROKEN_TASK:
  their requires() raised). These events fire in the scheduling process, also with
  `--workers N`.
- the `luigi` command ends with `sys.exit(code)` and offers no "run finished" callback, so the
  block is printed by an `atexit` handler, registered only in the `luigi` command's process (an
  in-process `luigi.build` prints nothing). Luigi's forked task processes leave with `os._exit`
  and never print it. A lone task without dependencies run by a child worker (`--workers N`)
  sends no event to the command's process: its root is then read from the command line at exit.
- at exit each task that was to run answers from its own outputs: complete -> ran; not complete
  although everything it requires is -> failed; otherwise -> not run. The command-line settings
  (`--paths-data-dir ...`) are in force again while it asks: Luigi resolves them through the
  parser of the command, which is gone once the run is over.
With `local_scheduler = true` (luigi.cfg) no other process shares the scheduler, so a task is
never "run by another process" and the block has no line for it.
"""
from __future__ import annotations

import atexit
import collections
import importlib.util
import json
import logging
import sys
from pathlib import Path

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.task import flatten

from din_common.errors import InputError
from din_common.feature_spec import FILE_NAME as FEATURE_SPEC_FILE, FeatureSpec
from pipeline import config
from pipeline.cli.command import asks_for_help, is_luigi_command
from pipeline.cli.errors import LUIGI_LOGGER
from pipeline.console import count, split_counts
from pipeline.tasks.stage2 import RunTask

_SUMMARY_RULE = "=" * 72
RAN, UP_TO_DATE, FAILED, COULD_NOT_START, NOT_RUN = "ran", "already up to date", "failed", "could not start", "not run"
STATUS_ORDER = (RAN, UP_TO_DATE, FAILED, COULD_NOT_START, NOT_RUN)


def _complete(task) -> bool:
    """task.complete(), with a check that raises (a damaged input) counting as not complete."""
    try:
        return bool(task.complete())
    except Exception:
        return False


class RunRecord:
    """What the scheduling of one `luigi` command found, and the block printed when it exits."""

    def __init__(self):
        self.command: list[str] | None = None    # the command's arguments; None until its first event
        self.root = None
        self.scheduled: list = []                 # the root, then each task found below it, once
        self.up_to_date: set = set()
        self.could_not_start: set = set()

    # --- scheduling events (public luigi.Task.event_handler hooks) ----------
    HANDLERS = {luigi.Event.DEPENDENCY_DISCOVERED: "_discovered", luigi.Event.DEPENDENCY_PRESENT: "_present",
                luigi.Event.DEPENDENCY_MISSING: "_could_not_start", luigi.Event.BROKEN_TASK: "_could_not_start",
                luigi.Event.START: "_seen"}

    def listen(self) -> None:
        for event, name in self.HANDLERS.items():
            luigi.Task.event_handler(event)(getattr(self, name))

    def stop_listening(self) -> None:
        for event, name in self.HANDLERS.items():
            luigi.Task.remove_event_handler(event, getattr(self, name))

    def _seen(self, task) -> bool:
        """Note a task of the running `luigi` command; False outside one (an in-process luigi.build)."""
        parser = CmdlineParser.get_instance()
        if parser is None:
            return False
        if self.command is None:
            self.command = sys.argv[1:]
            self.root = parser.get_task_obj()
            self.scheduled.append(self.root)
        if task not in self.scheduled:
            self.scheduled.append(task)
        return True

    def _discovered(self, task, dependency) -> None:
        if self._seen(task):
            self._seen(dependency)

    def _present(self, task) -> None:
        if self._seen(task):
            self.up_to_date.add(task)

    def _could_not_start(self, task, error=None) -> None:
        if self._seen(task):
            self.could_not_start.add(task)

    # --- at exit -----------------------------------------------------------
    def statuses(self) -> dict[str, list]:
        """{status: tasks}: the scheduling events, and for the tasks that were to run their outputs now."""
        found = collections.defaultdict(list)
        for task in self.scheduled:
            if task in self.up_to_date:
                status = UP_TO_DATE
            elif task in self.could_not_start:
                status = COULD_NOT_START
            elif _complete(task):
                status = RAN
            elif all(_complete(needed) for needed in flatten(task.requires())):
                status = FAILED
            else:
                status = NOT_RUN
            found[status].append(task)
        return dict(found)

    def print_at_exit(self) -> None:
        if self.command is None:
            # No scheduling event reached this process: a lone task without dependencies that a
            # child worker ran (`--workers N`), or no run at all (--help, an unknown task).
            if not is_luigi_command() or asks_for_help(sys.argv[1:]):
                return
            self.command = sys.argv[1:]
        try:
            with CmdlineParser.global_instance(self.command, allow_override=True) as parser:
                if self.root is None:
                    self.root = parser.get_task_obj()
                    self.scheduled.append(self.root)
                lines = summary_block(self.root, self.statuses())
            print("\n".join(lines), flush=True)
        except (Exception, SystemExit):  # the summary must never turn a finished run into a crash
            logging.getLogger(LUIGI_LOGGER).debug("no run summary", exc_info=True)


def group_tasks(tasks) -> str:
    """`BuildSequences (8 shards), Preprocess`: task families in run order, shards counted."""
    families = collections.Counter(task.get_task_family() for task in tasks)
    parts = []
    for family, number in families.items():
        parts.append(f"{family} ({count(number, 'shard')})" if number > 1 else family)
    return ", ".join(parts)


def status_lines(statuses: dict[str, list]) -> list[str]:
    return [f"{status + ':':<20}{group_tasks(sorted(statuses[status], key=_run_order))}"
            for status in STATUS_ORDER if statuses.get(status)]


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
             f"{'  TensorBoard:':<20}{tensorboard_hint(run_dir / 'tensorboard')}"]
    headline = headline_metrics(metrics)
    if headline:
        lines.append(f"{'metrics:':<20}{headline}")
    return lines


TENSORBOARD_INSTALL = "pip install -e '.[tensorboard]'"


def tensorboard_installed() -> bool:
    """Whether this interpreter has TensorBoard (found, not imported: importing it is slow). TensorFlow 2.21
    does not bring it; the `tensorboard` extra does (pyproject.toml), TensorFlow 2.6 on the Ascend stack does."""
    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_hint(logdir: Path) -> str:
    """The command that shows a run's TensorBoard scalars, or how to install TensorBoard first."""
    if tensorboard_installed():
        return f"tensorboard --logdir {logdir}"
    return f"not installed: {TENSORBOARD_INSTALL} adds it (then tensorboard --logdir {logdir})"


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
    seen, pending = [], [root]
    while pending:
        task = pending.pop()
        if task not in seen:
            seen.append(task)
            pending.extend(flatten(task.requires()))
    return seen


def summary_block(root_task, statuses: dict[str, list]) -> list[str]:
    """The lines of the final summary of one command."""
    lines = [_SUMMARY_RULE, f"Summary of {root_task}"]
    lines += status_lines(statuses)
    if root_task in statuses.get(UP_TO_DATE, ()):
        lines[-1] += " (and everything it needs)"
    if root_task in statuses.get(RAN, ()) or root_task in statuses.get(UP_TO_DATE, ()):
        # Luigi does not look below a task that is complete: find the results from the root.
        tasks = dependency_tree(root_task)
        if any(task.get_task_family() == "Preprocess" for task in tasks):
            lines += stage1_lines(Path(config.paths().data_dir))
        run_tasks = [task for task in tasks if isinstance(task, RunTask)]
        if run_tasks:
            lines += run_lines(run_tasks[0].run_dir())
    lines.append(_SUMMARY_RULE)
    return lines


RUN_RECORD = RunRecord()


def install_run_summary() -> None:
    """Record the scheduling of a `luigi` command, to print the summary block when it exits."""
    RUN_RECORD.listen()
    # Printed by the `luigi` command's own process only: in-process `luigi.build` callers are not the
    # command, and Luigi's forked task processes leave with os._exit, which skips atexit.
    if is_luigi_command():
        atexit.register(RUN_RECORD.print_at_exit)
