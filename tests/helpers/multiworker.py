"""Two TF_CONFIG workers on 127.0.0.1 for tests: free ports, the TF_CONFIG each gets, and how a worker may end.

TensorFlow before 2.10 can abort a MultiWorkerMirroredStrategy process while it exits, after a complete run
("terminate called without an active exception": tensorflow/tensorflow#55250; seen here on TF 2.6.5 in CI, in
test_multiworker and test_best_epoch). `worker_ended_well` accepts that abort only on such a TensorFlow and only
once the output shows the run finished; the caller's checks on the outputs still decide.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess

import tensorflow as tf

TF_ABORTS_AT_EXIT = tuple(int(part) for part in tf.__version__.split(".")[:2]) < (2, 10)
ABORT_AT_EXIT = "terminate called without an active exception"
RETURNED_FROM_TRAINING = "[test] the worker returned from training"
# Appended to a worker entry's source after its training call.
PRINT_RETURNED = f"print({RETURNED_FROM_TRAINING!r}, flush=True)\n"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(addresses: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def worker_ended_well(process: subprocess.Popen, output: str, finished: str = RETURNED_FROM_TRAINING) -> bool:
    """Exit status 0, or TensorFlow < 2.10's abort at exit once the output shows the run `finished` (the entry's
    line after training returned; for a `luigi` command, its summary block's `ran:` line)."""
    if process.returncode == 0:
        return True
    return (TF_ABORTS_AT_EXIT and process.returncode in (-signal.SIGABRT, 128 + signal.SIGABRT)
            and finished in output and output.rstrip().endswith(ABORT_AT_EXIT))
