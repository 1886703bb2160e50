"""Sandbox jobs that act as if a pickle had taken over the loader (for tests/pipeline/test_pickle_sandbox.py).

Layer 2 (the allow-list) should stop every payload before it runs anything, so
to test layer 1 on its own these jobs do the hostile thing themselves, in the
child, right after the pickle is read: open a file, start a program, connect,
allocate without end, spin, crash. The warm-up sample (before confinement)
passes untouched. The target path/port comes from the pickle itself.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess

import pandas as pd

from pipeline.untrusted import SandboxJob

WARM_UP = "warm-up sample"


def _read_file(target):
    with open(target, "rb") as handle:
        return handle.read(16)


def _write_file(target):
    with open(target, "w") as handle:
        handle.write("escaped")


def _run_program(target):
    subprocess.run(["touch", target], check=False)


def _shell(target):
    os.system(f"touch {target}")  # returns an error status instead of raising


def _connect(target):
    socket.create_connection(("127.0.0.1", int(target)), timeout=1)


def _signal_parent(target):
    os.kill(os.getppid(), signal.SIGTERM)


def _environment(target):
    raise RuntimeError(f"{target}={os.environ.get(target, 'absent')}")  # the message reaches the parent


def _allocate(target):
    hoard = []
    while True:
        hoard.append(bytearray(256 << 20))


def _spin(target):
    while True:
        pass


def _crash(target):
    ctypes.string_at(0)  # SIGSEGV


ACTIONS = {
    "read_file": _read_file, "write_file": _write_file, "run_program": _run_program, "shell": _shell,
    "connect": _connect, "signal_parent": _signal_parent, "environment": _environment,
    "allocate": _allocate, "spin": _spin, "crash": _crash,
}


def _job(action: str) -> SandboxJob:
    def check(objects: list, name: str):
        target = objects[0]
        if name != WARM_UP:
            ACTIONS[action](target)
        return {"frame": pd.DataFrame({"n": [len(str(target))]})}, {"rows": 1}

    return SandboxJob(action, __name__, check, lambda: [["sample"]], 1, "a test pickle",
                      {"frame": {"n": "int64"}}, ("rows",))


SANDBOX_JOBS = {action: _job(action) for action in ACTIONS}
