"""Moving work between stores: the unfinished and failed tasks of one copied into another.

This is ``simplepyq copy``, for a project that moves up from a SQLite file to
PostgreSQL (or back). Tasks keep their channel, args, retries, attempts,
priority, run-at time, error, creation time, key and time limit; they get new ids
in the target. Channels keep their rate and concurrency limits.
A task that was running when its worker died is copied as pending, to be run
again, as recovery would have done (as cancelled, if its cancel was requested).
While a live worker still runs tasks of the source nothing is copied: the same
task could then finish in both stores. Nor is anything copied while tasks of the
source are blocked: dependencies between tasks are not carried over.

Unless kept, the copied tasks are then deleted from the source, each only if it
is still as it was read, so a task changed meanwhile (a worker started after the
check claimed it) is reported and stays in both stores.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from simplepyq.identity import ProcessIdentity, is_dead
from simplepyq.storage.base import LimitChange, Store, named
from simplepyq.task import Status

COPIED = (Status.PENDING, Status.DELAYED, Status.RUNNING, Status.FAILED)
"""The statuses of the tasks a copy takes: all but done."""


class LiveWorkersError(Exception):
    """The source store has tasks that a live worker is running: stop it first."""


class BlockedTasksError(Exception):
    """The source store has blocked tasks (workflows in flight), whose dependencies a
    copy does not carry: let them finish, or cancel them, first."""


@dataclass
class CopyReport:
    """What one copy did."""

    copied: Counter[str] = field(default_factory=Counter)
    """Tasks written to the target, by the status they have there."""
    removed: int = 0
    """Copied tasks deleted from the source."""
    changed: int = 0
    """Copied tasks that changed in the source during the copy, so were left there too."""
    skipped: list[str] = field(default_factory=list)
    """Why each task that could not be copied was not."""


def copy_tasks(source: Store, target: Store, *, keep: bool, lease: float,
               now: float) -> CopyReport:
    """Copy the unfinished and failed tasks of ``source`` into ``target`` (one transaction),
    then delete them from ``source`` unless ``keep``."""
    _refuse_live_workers(source, lease, now)
    blocked = source.list(None, Status.BLOCKED.value, 1)
    if blocked:
        raise BlockedTasksError(
            f"{source.location!r} has blocked tasks (task {blocked[0][0]} is one): a copy "
            "does not carry what tasks wait for; let the workflows finish, or cancel "
            "them, then copy")
    report = CopyReport()
    listed = (source.list(None, status.value, sys.maxsize) for status in COPIED)
    rows = sorted((row for rows in listed for row in rows), key=lambda row: int(row[0]))
    taken, portable = [], []
    for row in rows:
        clean = _portable(row, report.skipped, now)
        if clean is not None:
            taken.append(row)
            portable.append(clean)
    channels = source.known_channels() | {str(row[1]) for row in portable}
    target.adopt(portable, sorted(channels), now)
    _copy_limits(source, target)
    report.copied.update(str(named(row)["status"]) for row in portable)
    if not keep:
        report.removed = source.forget(taken)
        report.changed = len(taken) - report.removed
    return report


def _copy_limits(source: Store, target: Store) -> None:
    """The channels' rate and concurrency limits, set in the target as in the source."""
    for name, limits in source.limits().items():
        if limits.rate_limit is not None or limits.max_running is not None:
            target.set_limits(name, LimitChange(
                set_rate=limits.rate_limit is not None, rate=limits.rate_limit,
                set_max_running=limits.max_running is not None,
                max_running=limits.max_running))


def _refuse_live_workers(source: Store, lease: float, now: float) -> None:
    me = ProcessIdentity.current()
    live = [owner.owner for owner in source.running_owners()
            if not is_dead(owner, me, lease, now)]
    if live:
        raise LiveWorkersError(
            f"{source.location!r} has tasks running in live worker(s) {', '.join(live)}: "
            "stop them first (or wait for them to finish), so that no task runs twice"
        )


def _portable(row: tuple[Any, ...], skipped: list[str], now: float) -> tuple[Any, ...] | None:
    """The row as any backend stores it: a running task made pending (cancelled, finished
    ``now``, if its cancel was requested), numbers as numbers; None (with the reason
    added to ``skipped``) for a row no backend could run."""
    task = named(row)
    if task["channel"] is None:
        skipped.append(f"task {task['id']}: it has no channel")
        return None
    args = task["args"]
    if isinstance(args, str):
        args = args.encode("utf-8")
    if args is not None and not isinstance(args, bytes):
        skipped.append(f"task {task['id']}: its args are a {type(args).__name__}, not bytes")
        return None
    running = task["status"] == Status.RUNNING.value
    cancelled = running and bool(task["cancel_requested"])
    task.update(
        channel=str(task["channel"]), args=args,
        status=Status.CANCELLED.value if cancelled
        else Status.PENDING.value if running else task["status"],
        retries=_number(task["retries"], int) or 0,
        attempts=_number(task["attempts"], int) or 0,
        priority=_number(task["priority"], int) or 0,
        result=task["result"] if isinstance(task["result"], bytes) else None,
        error=None if task["error"] is None else str(task["error"]),
        created_at=_number(task["created_at"], float),
        delay_until=_number(task["delay_until"], float),
        started_at=None if running else _number(task["started_at"], float),
        finished_at=now if cancelled else _number(task["finished_at"], float),
    )
    return tuple(task.values())


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    """``value`` as ``kind`` if it is a finite number (or a numeric string), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return int(number) if kind is int else number
