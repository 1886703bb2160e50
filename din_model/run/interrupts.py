"""Ctrl-C during the epochs, taken between steps: a SIGINT sets a flag that the loop checks.

Python turns a SIGINT into a `KeyboardInterrupt` at whatever bytecode the main thread runs next. Inside
TensorFlow's and Keras' own Python code (callbacks from C++, context managers, iterator plumbing) such an
exception can be dropped: a CI run saw a Ctrl-C right after epoch 1 of 8 ignored and the run end with exit 0.
While `InterruptBetweenSteps` is entered, the first SIGINT only records the request, and `check()` (called by
the loop after each call of the step and after each epoch's validation and checkpoint) raises the
`KeyboardInterrupt` there, where the loop's own handler turns it into the one-line message. A second SIGINT
raises at once, as Python's default does. The handler is installed only in the main thread and only over
Python's default one (a process that ignores SIGINT, e.g. started in the background, keeps ignoring it).
"""
from __future__ import annotations

import signal
import threading


class InterruptBetweenSteps:
    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "InterruptBetweenSteps":
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signal_number, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Raise the KeyboardInterrupt a SIGINT asked for."""
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, kind, error, traceback) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if kind is None:
            self.check()  # a Ctrl-C during the last epoch's bookkeeping is not lost either
