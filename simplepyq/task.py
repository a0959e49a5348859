"""The task model: the statuses stored in ``tasks.status``, and ``Task``, one row made readable."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from simplepyq import codec


class Status(str, Enum):
    """A task's state; each value is the string stored in ``tasks.status`` since 0.1.3."""

    PENDING = "pending"
    """Waiting for a worker; due now unless ``run_at`` says later."""
    RUNNING = "running"
    """Claimed by a worker of a live process (or of a dead one, until it is recovered)."""
    DELAYED = "delayed"
    """Waiting for ``run_at``: deferred by ``DelayException``, a retry backoff or ``delay=``."""
    DONE = "done"
    """Finished; ``result`` holds what the function returned."""
    FAILED = "failed"
    """Out of retries (or unrunnable); ``error`` holds the reason and traceback."""
    CANCELLED = "cancelled"
    """Cancelled by ``cancel()``: before it started, or while it ran and then raised;
    or never run, because a task it depended on failed or was cancelled."""
    BLOCKED = "blocked"
    """Waiting for the tasks it depends on (``depends_on``, a chain, a group) to end."""

    # Python 3.11 made str() and format() of a str-mixin Enum print "Status.PENDING";
    # a status prints as the string it is stored as, on every Python.
    def __str__(self) -> str:
        """The stored string: ``str(Status.PENDING) == "pending"``."""
        return self.value

    def __format__(self, spec: str) -> str:
        """Formatted as the stored string, so that f-strings and messages show it."""
        return format(self.value, spec)


FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)
"""The statuses a task never leaves by itself."""


class TaskId(int):
    """A task's id, as ``enqueue`` returns it: an ``int`` that also tells whether the
    call created the task (``created``), which is False when the task was enqueued
    with a key that an unfinished task of the channel held: then this is that task."""

    created: bool = True
    """Set on the instance only when False: ids are made by the thousand (``enqueue_many``),
    and ``int``'s own constructor, kept, is what makes that cheap."""

    @classmethod
    def held(cls, value: int) -> TaskId:
        """The id of a task that held the key, returned instead of creating one."""
        task_id = cls(value)
        task_id.created = False
        return task_id

    def __repr__(self) -> str:
        return int.__repr__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskId.held if not self.created else TaskId), (int(self),)


@dataclass(frozen=True)
class Attempt:
    """One run of a task that did not succeed, as its history keeps it.

    ``number`` is the attempt it was (1 for the first run). ``outcome`` is ``"error"``
    (the function raised, or its result could not be stored), ``"timeout"`` (it ran
    past its time limit), ``"deferred"`` (``DelayException``), ``"cancelled"`` (it
    ended after a cancel) or ``"recovered"`` (its worker's process died while running
    it); ``error`` is a one-line summary. Times are aware UTC datetimes, None where
    unknown.
    """

    number: int
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str
    error: str | None

    @classmethod
    def from_stored(cls, entry: Any) -> Attempt | None:
        """An entry of the stored history (a JSON object), or None if it is not one."""
        if not isinstance(entry, dict):
            return None
        number = entry.get("attempt")
        error = entry.get("error")
        return cls(number=number if isinstance(number, int) else 0,
                   started_at=_time(entry.get("started_at")),
                   ended_at=_time(entry.get("ended_at")),
                   outcome=str(entry.get("outcome")),
                   error=error if isinstance(error, str) else None)


@dataclass(frozen=True)
class Task:
    """A snapshot of one stored task, as returned by ``get_task``, ``wait`` and ``tasks``.

    ``status`` is one of the ``Status`` values (a ``str``; a row written by hand
    with another string keeps it). ``args`` and ``result`` are decoded from
    msgpack; an undecodable blob is kept as the raw ``bytes``. ``result`` is what the
    function returned, ``error`` the last exception with its traceback (or why the
    task could not run). ``retries`` is how many retries it has left, ``attempts``
    how many runs it started (recovered ones included). Times (``created_at``,
    ``run_at``: when it is or was due, ``started_at``, ``finished_at``) are aware
    UTC datetimes, ``None`` where the row has none (e.g. rows made by 0.1.3).
    ``history`` lists its last runs that did not succeed, oldest first (at most
    10); ``recoveries`` counts the times in a row its worker died while running it
    (its first recovery, then those while it ran alone: see ``SimplePyQ``).
    ``key`` is the unique key it was enqueued with, ``time_limit`` its own time
    limit in seconds (None: its channel's), ``cancel_requested`` whether
    ``cancel()`` was called for it, and ``progress`` the last value it reported with
    ``current_task().set_progress()``.
    """

    id: int
    channel: str
    args: Any
    status: str
    retries: int
    attempts: int
    priority: int
    result: Any
    error: str | None
    created_at: datetime | None
    run_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    recoveries: int = 0
    history: tuple[Attempt, ...] = ()
    key: str | None = None
    time_limit: float | None = None
    cancel_requested: bool = False
    progress: Any = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Task:
        """Build a Task from a row laid out as ``storage.base.TASK_COLUMNS``."""
        (task_id, channel, args, status, retries, attempts, priority,
         result, error, created_at, run_at, started_at, finished_at,
         recoveries, history, key, time_limit, cancel_requested, progress) = row
        return cls(
            id=task_id,
            channel=channel,
            args=_decoded_or_raw(args),
            status=_status(status),
            retries=retries or 0,
            attempts=attempts or 0,
            priority=priority or 0,
            result=_decoded_or_raw(result),
            error=error,
            created_at=_time(created_at),
            run_at=_time(run_at),
            started_at=_time(started_at),
            finished_at=_time(finished_at),
            recoveries=recoveries if isinstance(recoveries, int) else 0,
            history=_history(history),
            key=key if isinstance(key, str) else None,
            time_limit=float(time_limit) if isinstance(time_limit, (int, float)) else None,
            cancel_requested=bool(cancel_requested),
            progress=_decoded_or_raw(progress),
        )

    @property
    def finished(self) -> bool:
        """True once the task is ``done``, ``failed`` or ``cancelled``."""
        return self.status in FINISHED


def _status(value: str | None) -> str:
    try:
        return Status(value)
    except ValueError:
        return str(value)


def _history(stored: object) -> tuple[Attempt, ...]:
    """The attempts of a stored history: JSON text (SQLite) or a list (PostgreSQL)."""
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except ValueError:
            return ()
    if not isinstance(stored, list):
        return ()
    attempts = (Attempt.from_stored(entry) for entry in stored)
    return tuple(attempt for attempt in attempts if attempt is not None)


def _decoded_or_raw(blob: object) -> Any:
    if blob is None:
        return None
    try:
        return codec.unpack(blob)  # type: ignore[arg-type]
    except ValueError:  # kept as stored: bytes, or the text or number a hand-written row holds
        return bytes(blob) if isinstance(blob, (bytes, bytearray, memoryview)) else blob


def _time(epoch: object) -> datetime | None:
    if not isinstance(epoch, (int, float)):
        return None  # no time, or text written by hand: unknown
    try:
        return datetime.fromtimestamp(epoch, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):  # a time no date can show, written by hand
        return datetime.max.replace(tzinfo=timezone.utc) if epoch > 0 else datetime.min.replace(
            tzinfo=timezone.utc)
