"""``current_task()``: what a running task can know and do about its own run.

Inside a task (sync or ``async def``, in the worker thread that runs it and in the
asyncio tasks it creates, which inherit the context) ``current_task()`` returns a
``TaskContext``; anywhere else, None. Threads the task starts itself do not
inherit it (Python gives a new thread a fresh context): pass the context along.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any

from simplepyq import codec
from simplepyq.errors import TaskCancelled, TaskTimeout
from simplepyq.runs import Run, running, store_here

MAX_PROGRESS = 64 * 1024
"""The most bytes a progress value may take, encoded: it is rewritten often."""


class TaskContext:
    """The run of the task that called ``current_task()``.

    ``id`` and ``channel`` name the task; ``attempt`` is 1 for its first run and
    counts every run since, recovered ones included.
    """

    __slots__ = ("_run",)

    def __init__(self, run: Run) -> None:
        self._run = run

    @property
    def id(self) -> int:
        """The running task's id."""
        return self._run.task_id

    @property
    def channel(self) -> str:
        """The running task's channel."""
        return self._run.channel

    @property
    def attempt(self) -> int:
        """Which run of the task this is: 1 for the first, counting every run since
        (retries, deferrals and runs after a recovery)."""
        return self._run.attempt

    @property
    def time_limit(self) -> float | None:
        """This run's time limit in seconds, None without one."""
        return self._run.limit

    @property
    def scheduled_at(self) -> datetime | None:
        """For a periodic task, the tick it was enqueued for (UTC); else None. Read from
        the store when asked."""
        store: Any = store_here()
        when = None if store is None else store.scheduled_at(self._run.task_id)
        return None if when is None else datetime.fromtimestamp(when, timezone.utc)

    def cancelled(self) -> bool:
        """Whether ``cancel()`` was called for this task while it runs: seen at once when
        called in this process; from another, within milliseconds where the store
        wakes this one (PostgreSQL's NOTIFY, a SQLite file's log on Linux), else within
        ``poll_interval``."""
        return self._run.cancel_requested

    def time_left(self) -> float | None:
        """Seconds until the time limit (0 once it passed), None without one."""
        deadline = self._run.deadline
        return None if deadline is None else max(deadline - time.monotonic(), 0.0)

    def check(self) -> None:
        """Raise ``TaskCancelled`` if a cancel was requested, ``TaskTimeout`` if the time
        limit passed; for long loops in sync tasks, to stop cleanly between steps."""
        run = self._run
        if run.cancel_requested:
            raise TaskCancelled(f"task {run.task_id} was cancelled")
        if run.deadline is not None and time.monotonic() >= run.deadline:
            raise TaskTimeout(f"task {run.task_id} passed its time limit of {run.limit:g} s")

    def set_progress(self, value: object) -> None:
        """Publish ``value`` (anything args may hold, at most 64 KiB encoded) as the
        task's progress: shown by ``get_task`` and the command line.

        Calls are coalesced: the latest value is written with the others at most
        every half second, and with the task's outcome, so a tight loop may call it
        freely. ``TypeError`` if the value cannot be stored, ``ValueError`` if too big.
        """
        blob = codec.pack(value, "the progress value")
        if len(blob) > MAX_PROGRESS:
            raise ValueError(f"the progress value {codec.short_repr(value)} takes {len(blob)} "
                             f"bytes encoded; at most {MAX_PROGRESS} are kept")
        self._run.progress(self._run.task_id, blob)

    def __repr__(self) -> str:
        return f"<TaskContext task {self.id} of channel {self.channel!r}, attempt {self.attempt}>"


def current_task() -> TaskContext | None:
    """The context of the task running in this thread (or asyncio task), else None."""
    run = running()
    return None if run is None else TaskContext(run)


class ProgressBox:
    """The progress values reported by this process's running tasks: the latest of each,
    and which of them the store has not been given yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latest: dict[int, bytes] = {}
        """The latest value of each running task that reported one (empty, usually)."""
        self._unsaved: set[int] = set()

    def put(self, task_id: int, blob: bytes) -> None:
        with self._lock:
            self.latest[task_id] = blob
            self._unsaved.add(task_id)

    def unsaved(self) -> dict[int, bytes]:
        """The values not given to the store yet; they count as given from now on."""
        with self._lock:
            taken = {task_id: self.latest[task_id] for task_id in self._unsaved
                     if task_id in self.latest}
            self._unsaved.clear()
            return taken

    def end(self, task_id: int) -> bytes | None:
        """The task's run ended: its latest value (saved or not), for its outcome."""
        if task_id not in self.latest:  # without the lock: only this task puts its value
            return None
        with self._lock:
            self._unsaved.discard(task_id)
            return self.latest.pop(task_id, None)
