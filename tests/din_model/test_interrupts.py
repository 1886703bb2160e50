"""Ctrl-C during the epochs is taken between steps (din_model/run/interrupts.py)."""
import os
import signal
import threading

import pytest

from din_model.run.interrupts import InterruptBetweenSteps


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)


def test_the_first_ctrl_c_is_recorded_and_raised_where_the_loop_checks():
    with pytest.raises(KeyboardInterrupt):
        with InterruptBetweenSteps() as interrupts:
            interrupts.check()
            ctrl_c()
            assert interrupts.requested  # the handler ran; nothing raised yet
            interrupts.check()
            pytest.fail("check() did not raise")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_raises_at_once():
    with pytest.raises(KeyboardInterrupt):
        with InterruptBetweenSteps():
            ctrl_c()
            ctrl_c()
            pytest.fail("the second Ctrl-C did not raise")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_after_the_last_check_is_raised_on_leaving():
    with pytest.raises(KeyboardInterrupt):
        with InterruptBetweenSteps():
            ctrl_c()
    with InterruptBetweenSteps():
        pass  # no Ctrl-C: nothing raised


def test_a_process_that_ignores_sigint_keeps_ignoring_it():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with InterruptBetweenSteps() as interrupts:
            ctrl_c()
            interrupts.check()
        assert not interrupts.requested
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def enter():
        with InterruptBetweenSteps() as interrupts:
            seen.append(signal.getsignal(signal.SIGINT))
            interrupts.check()

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]
