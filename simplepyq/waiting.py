"""Blocking waits during which the main thread still runs signal handlers.

A signal sent to a process may be delivered to any of its threads, and Python runs
its handler in the main thread only, between two bytecodes. A main thread blocked
on a lock without a timeout is not woken by a signal that landed on another
thread: the handler waits until the lock is released. While ``stop()`` waits for a
stuck task, that may be never, and the second Ctrl-C that should stop a worker at
once does nothing. So the waits a stop makes block in slices no longer than
``SLICE``: between two, the interpreter runs the handlers that are due.
"""

from __future__ import annotations

import threading
import time

SLICE = 0.2
"""The longest a wait here blocks before the interpreter may run signal handlers."""


def slice_of(remaining: float | None) -> float:
    """How long to block at once when ``remaining`` seconds are left (None: no end)."""
    return SLICE if remaining is None else min(remaining, SLICE)


def wait_for(event: threading.Event, timeout: float | None) -> bool:
    """``event.wait(timeout)``, a slice at a time: whether the event is set."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not event.wait(slice_of(_left(deadline))):
        if deadline is not None and time.monotonic() >= deadline:
            return False
    return True


def join(thread: threading.Thread, timeout: float | None) -> bool:
    """``thread.join(timeout)``, a slice at a time: whether the thread has ended."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while thread.is_alive():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        thread.join(slice_of(_left(deadline)))
    return True


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)
