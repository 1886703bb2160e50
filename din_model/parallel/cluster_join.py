"""Joining a TF_CONFIG cluster: wait for the other workers with a timeout; stop promptly on SIGTERM.

MultiWorkerMirroredStrategy's constructor waits for every worker without end, and
TensorFlow catches SIGTERM from then on (its preemption notifier), so a worker whose
peer never starts would wait until SIGKILL. Here:

- `wait_for_workers`: before the strategy exists, every worker announces itself in a
  directory all workers share (`<data_dir>/runs/.cluster/<cluster digest>/`, the data dir
  must be shared anyway), rewriting its file with a new counter several times a second:
  "waiting" until it has seen every other worker's file change, then "ready". It leaves
  once every other worker is ready, so no worker leaves before all have seen it (the
  strategy's constructor holds Python's GIL while it waits, so nothing can be written
  from then on). After `timeout` seconds it raises an InputError naming the tasks (and
  addresses) that never showed up. Files left by earlier runs do not count: they do
  not change. `leave` removes this worker's file when it is done.
- `exit_on_sigterm`: SIGTERM ends the process at once with a message and exit code 143
  (128 + SIGTERM), also while the main thread is blocked inside a TensorFlow collective
  (a watcher thread reads the signal from Python's wakeup fd). Outputs are written
  atomically, so nothing is left half-written.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import itertools
import threading
import time
from pathlib import Path

from din_common.errors import InputError

POLL_SECONDS = 0.25
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


def cluster_digest(cluster: dict) -> str:
    return hashlib.sha256(json.dumps(cluster, sort_keys=True).encode()).hexdigest()[:12]


def _task_file(directory: Path, task: tuple) -> Path:
    return directory / "{}-{}".format(*task)


def _read(path: Path):
    try:
        return path.read_text()
    except OSError:
        return None


def _announce(path: Path, state: str, count: int) -> None:
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    temporary.write_text(f"{state} {os.getpid()} {count}")
    os.replace(temporary, path)


def wait_for_workers(cluster: dict, tasks: list, me: tuple, rendezvous_dir: Path, timeout: float) -> Path:
    """Return (this worker's announcement file) once every task in `tasks` ((type, index) pairs) is ready."""
    directory = Path(rendezvous_dir) / cluster_digest(cluster)
    directory.mkdir(parents=True, exist_ok=True)
    mine = _task_file(directory, me)
    others = [task for task in tasks if task != me]
    first_seen = {task: _read(_task_file(directory, task)) for task in others}
    alive, ready = set(), set()
    deadline = time.monotonic() + timeout
    for count in itertools.count():
        _announce(mine, "ready" if len(alive) == len(others) else "waiting", count)
        for task in others:
            content = _read(_task_file(directory, task))
            if content not in (None, first_seen[task]):
                alive.add(task)
                if content.startswith("ready"):
                    ready.add(task)
        if len(ready) == len(others) and len(alive) == len(others):
            _announce(mine, "ready", count + 1)
            return mine
        if time.monotonic() > deadline:
            leave(mine)
            missing = ", ".join(f"{kind} {index} ({cluster[kind][index]})" for kind, index in others
                                if (kind, index) not in alive)
            raise InputError(f"TF_CONFIG: {missing or 'a worker'} did not start within {timeout:g} s "
                             f"([train] worker_timeout; this is {me[0]} {me[1]}); start every worker of the cluster "
                             "with the same data dir and TF_CONFIG, or raise the timeout")
        time.sleep(POLL_SECONDS)


def leave(announcement: Path) -> None:
    """Remove this worker's file, and the cluster's directory once it is empty."""
    for remove in (announcement.unlink, announcement.parent.rmdir, announcement.parent.parent.rmdir):
        try:
            remove()
        except OSError:
            return


def exit_on_sigterm(who: str) -> None:
    """From now on SIGTERM ends this process at once, even inside a blocking TensorFlow call (main thread only)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.signal(signal.SIGTERM, lambda number, frame: None)  # the C handler then writes the number to the fd
    signal.set_wakeup_fd(write_end)

    def watch() -> None:
        while True:
            received = os.read(read_end, 64)
            if signal.SIGTERM in received:
                print(f"[train] {who}: stopped by SIGTERM", file=sys.stderr, flush=True)
                os._exit(SIGTERM_EXIT_CODE)

    threading.Thread(target=watch, name="sigterm-watch", daemon=True).start()
