"""Waits that stop() makes let the main thread run signal handlers, wherever the
signal landed."""

from __future__ import annotations

import subprocess
import threading

from simplepyq import waiting
from tests.support import spawn_python

STOP_WHILE_A_TASK_RUNS = """
    import os, signal, sys, threading, time
    from simplepyq import SimplePyQ

    started = threading.Event()

    def main_waits_in_stop():
        frame = sys._current_frames().get(threading.main_thread().ident)
        if frame is None or frame.f_code.co_name != "wait":
            return False
        while frame is not None:
            if frame.f_code.co_name == "stop" and frame.f_code.co_filename.endswith(
                    "scheduler.py"):
                return True
            frame = frame.f_back
        return False

    def task(args):
        started.set()
        deadline = time.monotonic() + 20
        while not main_waits_in_stop():
            if time.monotonic() > deadline:
                os._exit(4)  # the main thread never waited in stop()
            time.sleep(0.001)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # to this thread
        threading.Event().wait(10)  # the handler ends the process well before
        os._exit(3)

    signal.signal(signal.SIGUSR1, lambda signum, frame: os._exit(42))
    q = SimplePyQ(sys.argv[1], poll_interval=0.01)
    q.add_channel("c", task)
    q.enqueue("c", None)
    q.start()
    started.wait(20)
    q.stop()
"""


def test_a_signal_that_lands_on_a_worker_thread_is_handled_while_stop_waits_for_its_task(
        store_path: str) -> None:
    """Linux may deliver a process's signal to any thread; a main thread blocked in
    stop() without a timeout would not run the handler until the task ended (exit 3)."""
    child = spawn_python(STOP_WHILE_A_TASK_RUNS, store_path)
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise
    assert child.returncode == 42, (child.returncode, out, err[-2000:])


def test_wait_for_returns_as_the_event_is_set_or_false_at_the_timeout() -> None:
    event = threading.Event()
    assert waiting.wait_for(event, 0.05) is False
    setter = threading.Timer(0.3, event.set)  # set after more than one slice
    setter.start()
    assert waiting.wait_for(event, None) is True
    setter.join()


def test_join_returns_once_the_thread_ended_or_false_at_the_timeout() -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    assert waiting.join(thread, 0.05) is False
    threading.Timer(0.3, release.set).start()
    assert waiting.join(thread, None) is True
    assert not thread.is_alive()


def test_a_slice_never_exceeds_what_is_left() -> None:
    assert waiting.slice_of(None) == waiting.SLICE
    assert waiting.slice_of(0.01) == 0.01
    assert waiting.slice_of(10.0) == waiting.SLICE
