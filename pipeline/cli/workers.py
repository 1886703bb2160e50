"""How many Luigi workers the `luigi` command uses by default: one per usable core for stage 1.

Luigi runs one task at a time unless told `--workers N`; stage 1's shard tasks are
independent, so a command whose task is a stage-1 task runs them on every core the process
may use. Set through Luigi's public configuration (`[core] workers`), and only where neither
luigi.cfg nor LUIGI_CONFIG_PATH's files name it: `--workers N` and a `[core] workers` line
still win. Commands that reach stage 2 (AllTasks, TrainDIN, EvaluateDIN) keep one worker:
with more, Luigi runs every task in a process of its own, and TrainDIN and EvaluateDIN must
share the command's process, which opens the NPU once. Only the `luigi` command's own process
gets the default: an in-process `luigi.build` (tests, scripts) keeps Luigi's one worker.
"""
from __future__ import annotations

import os

import luigi


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def command_task(argv: list[str], task_names: list[str]) -> str | None:
    """The task a `luigi` command line names (its first argument that is one of `task_names`)."""
    return next((argument for argument in argv if argument in task_names), None)


def default_workers_to_cores(is_luigi_command: bool, argv: list[str], task_names: list[str],
                             parallel_task_names: list[str]) -> None:
    """Unless configured, set `[core] workers` to the usable cores in a `luigi` command of a parallel task."""
    settings = luigi.configuration.get_config()
    if (is_luigi_command and not settings.has_option("core", "workers")
            and command_task(argv, task_names) in parallel_task_names):
        settings.set("core", "workers", str(usable_cores()))
