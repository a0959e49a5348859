"""Exceptions a task raises to steer the queue, and those the library raises to its caller."""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta, timezone

LATEST_DUE = datetime(9999, 12, 31, tzinfo=timezone.utc).timestamp()
"""The latest run-at time a task may have: later ones could not be shown as dates."""


class DelayException(Exception):
    """Raised by a task to run again later, without consuming one of its retries.

    ``delay_seconds`` may be fractional or a ``timedelta``; the task is stored as
    ``delayed`` and becomes due once that much time has passed.
    """

    def __init__(self, delay_seconds: float | timedelta) -> None:
        self.delay_seconds = delay_from_now(delay_seconds, "delay_seconds")
        super().__init__(f"task deferred for {self.delay_seconds:g}s")


class TaskCancelled(BaseException):
    """Raised in a task by ``current_task().check()`` once its cancel was requested.

    A ``BaseException``, like ``asyncio.CancelledError``, so that a task's own
    ``except Exception`` does not swallow it. A run that ends by raising after a
    cancel was requested leaves its task ``cancelled``, never retried.
    """


class TaskTimeout(BaseException):
    """Raised in a task that ran past its time limit: in a sync task's thread by the
    queue itself (at the next Python instruction it runs), or by
    ``current_task().check()``. A ``BaseException``, so that ``except Exception``
    in the task does not swallow it. The run counts as a failure (retried while
    retries last)."""


class UnknownChannelError(ValueError):
    """Tasks were enqueued for a channel that no process sharing the store has registered."""

    def __init__(self, name: str, known: set[str], where: str = "") -> None:
        listing = ", ".join(sorted(known)) or "none"
        super().__init__(f"{where}unknown channel {name!r}; known channels: {listing} (a "
                         "channel is known once a process sharing the store adds it, or "
                         f"declares it with declare({name!r}))")
        self.name = name
        self.known = known


class StoreError(Exception):
    """The task store cannot be opened or used: the message names the store and the cause."""


def seconds_from(value: float | timedelta, name: str) -> float:
    """Return ``value`` as a finite, non-negative number of seconds, or raise naming ``name``."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta, not {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def delay_from_now(value: float | timedelta, name: str) -> float:
    """Like ``seconds_from``, also refusing delays that end past the last representable date."""
    seconds = seconds_from(value, name)
    if time.time() + seconds > LATEST_DUE:
        raise ValueError(f"{name} of {value!r} ends after the year 9999; give a shorter delay")
    return seconds


def check_timeout(value: object, name: str = "timeout") -> None:
    """Refuse a ``timeout`` that is not ``None`` (no limit) or a finite number of seconds
    >= 0, naming it; called first, so that a bad one changes nothing."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        hint = "; give its .total_seconds()" if isinstance(value, timedelta) else ""
        raise TypeError(f"{name} must be a number of seconds or None (no limit), not "
                        f"{type(value).__name__} {value!r}{hint}")
    if not value >= 0:  # negative, or NaN
        raise ValueError(f"{name} must be a number of seconds >= 0 or None (no limit), "
                         f"got {value!r}")
    if value > threading.TIMEOUT_MAX:  # infinite, or more than a thread may wait
        shown = repr(value) if isinstance(value, float) else f"{value.bit_length()}-bit int"
        raise ValueError(f"{name} of {shown} seconds is more than can be waited "
                         f"({threading.TIMEOUT_MAX:.0f} s at most); give None to wait "
                         f"without limit")
