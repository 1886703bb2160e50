"""The `luigi` command's default worker count (pipeline.cli.workers)."""
from __future__ import annotations

import os

import luigi
import pytest

from pipeline.cli import workers


def _forget_workers(settings) -> None:
    if settings.has_option("core", "workers"):
        settings.remove_option("core", "workers")


@pytest.fixture
def config_without_workers():
    settings = luigi.configuration.get_config()
    saved = settings.get("core", "workers", None)
    _forget_workers(settings)
    yield settings
    _forget_workers(settings)
    if saved is not None:
        settings.set("core", "workers", saved)


TASKS = ["AllTasks", "Preprocess", "TrainDIN"]
STAGE1 = ["Preprocess"]
PREPROCESS = ["--module", "pipeline", "Preprocess", "--raw-source", "pickle"]


def test_a_stage1_command_runs_one_worker_per_usable_core(config_without_workers, monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: 3)
    workers.default_workers_to_cores(True, PREPROCESS, TASKS, STAGE1)
    assert config_without_workers.get("core", "workers") == "3"
    assert luigi.interface.core().workers == 3


@pytest.mark.parametrize("task", ["AllTasks", "TrainDIN"])
def test_commands_reaching_stage2_keep_one_process(config_without_workers, monkeypatch, task):
    monkeypatch.setattr(workers, "usable_cores", lambda: 3)
    workers.default_workers_to_cores(True, ["--module", "pipeline", task, "--raw-source", "Preprocess"], TASKS, STAGE1)
    assert not config_without_workers.has_option("core", "workers")


def test_a_configured_worker_count_wins(config_without_workers, monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: 3)
    config_without_workers.set("core", "workers", "1")
    workers.default_workers_to_cores(True, PREPROCESS, TASKS, STAGE1)
    assert config_without_workers.get("core", "workers") == "1"


def test_in_process_builds_keep_luigis_single_worker(config_without_workers):
    workers.default_workers_to_cores(False, PREPROCESS, TASKS, STAGE1)
    assert not config_without_workers.has_option("core", "workers")
    assert luigi.interface.core().workers == 1


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="the OS has no CPU affinity")
def test_usable_cores_follow_the_cpu_affinity():
    assert workers.usable_cores() == len(os.sched_getaffinity(0))
