"""The `luigi` command's process imports pandas once its first task process has started.

`import pipeline` does not import pandas (~0.3 s, half of the command's start-up), so the
scheduling starts that much earlier, and a no-op run never imports it. But the task processes
all need it: pyarrow imports pandas in the first conversion a process makes (`Array.to_numpy`,
`pa.array`, whenever pandas is installed), and with more than one worker Luigi forks every task's
process from this one. Imported here once, before the shard tasks fork, it spares each of them
that import (16 of them at full scale: without this, the command took ~1.5 s more CPU).

So the first fork of a Luigi task process (RemapIds, which starts the pickle sandbox and imports
pandas itself while the sandbox child starts) starts a thread that imports pandas
  * at a lower CPU priority (`PRELOAD_NICE`), so that it takes what the first task leaves idle (its
    remap uses about one core of two) instead of slowing it; on Linux the nice value is the
    thread's, and the task processes, forked by the main thread, keep the command's own. A
    moderate value, not 19: on a box busy with low-priority jobs the import still gets a core;
  * holding `luigi.worker.fork_lock`, which Luigi holds around every fork of a task process: none is
    forked while the import is half done (a child would find pandas' module locks held by a thread
    it does not have), and the next one waits for the import, as it waited for it at start-up before.
A run with nothing to do forks nothing, so imports nothing.
"""
from __future__ import annotations

import os
import sys
import threading

PRELOADED = "pandas"
PRELOAD_NICE = 10  # nice 0 has ~9x its CPU share, nice 19 ~1/7 of it
_state = {"armed": False, "thread": None}


def preload_after_first_task_process() -> None:
    """In this process, import pandas in a thread once Luigi has forked its first task process (see above)."""
    if _state["armed"] or not hasattr(os, "register_at_fork"):
        return
    _state["armed"] = True
    command_pid = os.getpid()

    def after_fork_in_parent() -> None:
        from luigi.worker import fork_lock

        # Luigi's task processes only (it holds fork_lock while it forks one), once, in this process.
        if (os.getpid() == command_pid and _state["thread"] is None and fork_lock.locked()
                and PRELOADED not in sys.modules):
            _state["thread"] = threading.Thread(target=_import_holding_fork_lock, name="preload-pandas", daemon=True)
            _state["thread"].start()

    os.register_at_fork(after_in_parent=after_fork_in_parent)


def _import_holding_fork_lock() -> None:
    from luigi.worker import fork_lock

    with fork_lock:  # taken once the fork that started this thread has returned
        if sys.platform.startswith("linux"):  # elsewhere the nice value is the whole process's
            try:
                os.setpriority(os.PRIO_PROCESS, 0, PRELOAD_NICE)  # 0: the calling thread, on Linux
            except OSError:
                pass
        try:
            __import__(PRELOADED)
        except ImportError:  # the task that needs it says so
            pass
