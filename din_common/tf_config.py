"""`TF_CONFIG`, the environment variable that makes a process one worker of a training cluster.

The one parser of it, TF-free, for both stages: stage 2 starts its multi-worker strategy
from it (din_model/parallel/cluster.py), and the Luigi command gives each worker of a cluster its
own process lock (pipeline/cli/process_lock.py). Training runs on the "chief" and "worker" tasks
only (MultiWorkerMirroredStrategy); a mistake in the variable is one `InputError` line.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

from din_common.errors import InputError

VARIABLE = "TF_CONFIG"
WORKER_TASK_TYPES = ("chief", "worker")


def read(environ: Mapping[str, str] = os.environ) -> dict | None:
    """The parsed `TF_CONFIG`, or None when it is unset or empty; a malformed one is an InputError."""
    text = environ.get(VARIABLE, "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{VARIABLE} is not valid JSON ({error}); expected "
                         '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
                         ) from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster", {}), dict):
        raise InputError(f"{VARIABLE} must be a JSON object with a \"cluster\" object, got {text[:200]}")
    return config


def count_workers(config: dict | None) -> int:
    """Training processes the cluster names: its chief and worker tasks."""
    if not config:
        return 0
    cluster = config.get("cluster", {})
    return sum(len(cluster.get(task_type, [])) for task_type in WORKER_TASK_TYPES)


def task_of(config: dict) -> tuple[str, int]:
    """This process's (task type, index) in the cluster of `config`."""
    task = config.get("task")
    cluster = config["cluster"]
    if not isinstance(task, dict) or "type" not in task:
        raise InputError(f"{VARIABLE} names a cluster but no task; add "
                         '"task": {"type": "worker", "index": <this machine\'s position in the worker list>}')
    task_type, task_index = task["type"], task.get("index", 0)
    if task_type not in WORKER_TASK_TYPES:
        unsupported = sorted(set(cluster) - set(WORKER_TASK_TYPES))
        raise InputError(f"{VARIABLE} task type {task_type!r} is not supported: training runs on "
                         f"\"chief\" and \"worker\" tasks only (MultiWorkerMirroredStrategy)"
                         + (f"; the cluster also names {unsupported}" if unsupported else ""))
    if not isinstance(task_index, int) or not 0 <= task_index < len(cluster.get(task_type, [])):
        raise InputError(f"{VARIABLE} task index {task_index!r} is not a position in its "
                         f"cluster's {task_type!r} list {cluster.get(task_type, [])}")
    return task_type, task_index


def worker_name(environ: Mapping[str, str] = os.environ) -> str:
    """"worker-1" when TF_CONFIG makes this process one of several workers, else "" (also for a malformed
    TF_CONFIG: the training reports that one). Workers of one cluster run the same command on the same
    data dir, possibly on one host: the Luigi command tells their process locks apart by this name."""
    try:
        config = read(environ)
        if count_workers(config) <= 1:
            return ""
        task_type, task_index = task_of(config)
    except InputError:
        return ""
    return f"{task_type}-{task_index}"
