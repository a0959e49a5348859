"""What an outcome means for a task: retry after a backoff, defer, finish or fail.

Kept apart from the worker loop so the rules read in one place and test on their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

from simplepyq.errors import seconds_from
from simplepyq.task import Status


@dataclass(frozen=True)
class Backoff:
    """How long a failed task waits before its retry.

    The n-th attempt's failure waits ``delay * factor ** (n - 1)`` seconds, at most
    ``max_delay``. ``Backoff(5)`` is a fixed 5 s; ``Backoff(1, factor=2, max_delay=60)``
    doubles from 1 s up to a minute. The default, ``Backoff(0)``, retries at once.
    """

    delay: float = 0.0
    """Seconds before the first retry."""
    factor: float = 1.0
    """What each later wait is multiplied by (1: a fixed delay)."""
    max_delay: float | None = None
    """The longest wait, in seconds; None: no cap."""

    def __post_init__(self) -> None:
        seconds_from(self.delay, "Backoff delay")
        if not isinstance(self.factor, (int, float)) or isinstance(self.factor, bool):
            raise TypeError(f"Backoff factor must be a number, not {type(self.factor).__name__}")
        if not math.isfinite(self.factor) or self.factor < 1:
            raise ValueError(f"Backoff factor must be a finite number >= 1, got {self.factor!r}")
        if self.max_delay is not None:
            seconds_from(self.max_delay, "Backoff max_delay")

    @classmethod
    def coerce(cls, value: Backoff | float | timedelta) -> Backoff:
        """Accept a Backoff, or a number of seconds / timedelta meaning a fixed delay."""
        if isinstance(value, Backoff):
            return value
        return cls(seconds_from(value, "backoff"))

    def seconds_after(self, attempts: int) -> float:
        """The wait before the next run of a task that has failed ``attempts`` times."""
        exponent = max(attempts - 1, 0)
        try:
            wait = self.delay * self.factor**exponent
        except OverflowError:
            wait = float("inf")
        if self.max_delay is not None:
            wait = min(wait, self.max_delay)
        return min(wait, 10 * 365 * 86400.0)


NOTE_LENGTH = 200
"""The longest error summary a history entry keeps (the full error is in ``error``)."""


class Decision(NamedTuple):
    """The row update that records one run of a task (a tuple: one is made per run).

    ``outcome`` says how a run that did not succeed ended (``"error"``,
    ``"timeout"``, ``"deferred"`` or ``"cancelled"``), for the task's history, with
    ``note`` its one-line summary; both are None for a success. ``ended_at`` is when
    the run ended; ``progress`` the last progress the run reported (msgpack), if any.
    """

    status: Status
    retries: int
    run_at: float | None = None
    result: bytes | None = None
    error: str | None = None
    finished_at: float | None = None
    outcome: str | None = None
    note: str | None = None
    ended_at: float | None = None
    progress: bytes | None = None


def succeeded(retries: int, result: bytes | None, now: float) -> Decision:
    """The function returned: the task is done and keeps its result.

    Made from a plain tuple of every field in order: a third of the time of naming
    the fields, for the decision made for nearly every task."""
    return _make(Decision, (Status.DONE, retries, None, result, None, now, None, None, now,
                            None))


_make = tuple.__new__


def deferred(retries: int, delay: float, now: float) -> Decision:
    """The function raised DelayException: run again later, retries untouched."""
    return Decision(Status.DELAYED, retries, run_at=now + delay, outcome="deferred",
                    note=f"deferred for {delay:g}s", ended_at=now)


def raised(retries: int, attempts: int, error: str, backoff: Backoff, now: float) -> Decision:
    """The function raised: retry after the backoff while retries last, else fail for good."""
    if retries <= 0:
        return unrunnable(retries, error, now)
    wait = backoff.seconds_after(attempts)
    return Decision(Status.DELAYED if wait > 0 else Status.PENDING, retries - 1,
                    run_at=now + wait if wait > 0 else None, error=error, outcome="error",
                    note=summary(error), ended_at=now)


def timed_out(retries: int, attempts: int, limit: float, error: str, backoff: Backoff,
              now: float) -> Decision:
    """The run passed its time limit: a failure like any other (retried while retries
    last), whose error says so first."""
    decision = raised(retries, attempts, f"time limit of {limit:g} s exceeded\n{error}",
                      backoff, now)
    return decision._replace(outcome="timeout",
                             note=f"time limit of {limit:g} s exceeded")


def cancelled(retries: int, error: str | None, now: float) -> Decision:
    """The task's cancel was requested and its run raised (or it never started): it ends
    cancelled, never retried."""
    return Decision(Status.CANCELLED, retries, error=error or "cancelled", finished_at=now,
                    outcome="cancelled", note="cancelled", ended_at=now)


def unrunnable(retries: int, error: str, now: float) -> Decision:
    """Running again cannot help (or retries are spent): record the error and stop."""
    return Decision(Status.FAILED, retries, error=error, finished_at=now, outcome="error",
                    note=summary(error), ended_at=now)


def summary(error: str) -> str:
    """The line of an error that says what happened: a traceback's last line, shortened."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    text = lines[-1].strip() if lines else error
    return text if len(text) <= NOTE_LENGTH else text[:NOTE_LENGTH - 3] + "..."


def explained(decision: Decision, attempts: int) -> str:
    """What a run that raised led to, for the log line: a retry or the end."""
    if decision.status is Status.FAILED:
        return f"failed for good after {attempts} attempt{'s' if attempts != 1 else ''}"
    left = f"{decision.retries} retr{'ies' if decision.retries != 1 else 'y'} left"
    if decision.run_at is None or decision.ended_at is None:
        return f"retrying now ({left})"
    return f"retrying in {decision.run_at - decision.ended_at:.1f} s ({left})"
