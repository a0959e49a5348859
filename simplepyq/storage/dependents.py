"""Dependencies between tasks, in the store's transactions (internal): storing a
workflow's tasks, and telling the tasks that wait for one that it has ended.

A task stored with upstreams is ``blocked``. Its row in ``simplepyq_flows`` counts
the upstreams that have not ended as it needs (``waiting``); each edge in
``simplepyq_deps`` is settled once its upstream has ended and been counted. Every
transaction that ends tasks (a recorded outcome, a cancel, a release, a recovery)
calls ``settle`` with their ids in that same transaction: an upstream that ended as
the dependent needs takes one off its count, and the transaction that brings it to
0 releases it (``pending``, with its input as args); one that ended otherwise
cancels it, and that cancel is an end to tell its own dependents, and so on down.

The count lives on one row that each such transaction updates, so on PostgreSQL
two upstreams ending at once are ordered by its row lock: exactly one of them sees
0. A dependent stored while an upstream ends is ordered by that upstream's row: the
insert reads it ``FOR SHARE`` (``lock_upstreams``).

Both backends run this code with their own statements (``Q``); ``ids`` turns a list
of ids into the parameter their statements take (a JSON array, or an array).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from simplepyq import codec
from simplepyq.errors import StoreError, UnknownChannelError
from simplepyq.storage.finished import Ended
from simplepyq.task import TaskId

KEY_TRIES = 5
"""How many times a task whose key changes hands while it is stored is tried again."""
FINISHED = ("done", "failed", "cancelled")
UNFINISHED = ("pending", "delayed", "running", "blocked")

NEEDS = ("done", "finished", "failed")
"""What a task waits for of each upstream: to be done; to have finished, whatever the
outcome; to have failed or been cancelled (a follow-up for a failure)."""

INPUTS = ("result", "results", "outcome", "outcomes", "failure")
"""What a task stored without args receives once released: its upstream's result; the
list of its upstreams' results, in order; the outcome ({id, status, result, error})
of its upstream, or the list of its upstreams' outcomes; what failed ({id, status,
error})."""


class Upstream(NamedTuple):
    """A task that a new task waits for: a stored one (``task_id``), or an earlier task
    of the same ``add_graph`` call (``earlier``, its position in the call)."""

    task_id: int | None = None
    earlier: int | None = None


class NewTask(NamedTuple):
    """One task of a workflow, as ``add_graph`` stores it."""

    channel: str
    args: bytes | None
    """Encoded args; None for a task that receives its ``input`` instead."""
    retries: int = 0
    run_at: float | None = None
    priority: int = 0
    time_limit: float | None = None
    key: str | None = None
    after: tuple[Upstream, ...] = ()
    needs: str = "done"
    input: str | None = None


Ids = Callable[[Sequence[int]], Any]


def settle(conn: Any, q: dict[str, str], ids: Ids, task_ids: Sequence[int],
           now: float, tally: Ended) -> set[str]:
    """Tell the dependents of those of ``task_ids`` that have ended, and theirs in turn
    (counting in ``tally`` those this cancels); the channels of the tasks released.
    Without workflows in flight this is one look at an empty index; with some, one
    more per task."""
    if not task_ids or conn.execute(q["any_unsettled"]).fetchone() is None:
        return set()
    return tell(conn, q, conn.execute(q["finished_upstreams"],
                                      {"ids": ids(list(task_ids))}).fetchall(), now, tally)


def tell(conn: Any, q: dict[str, str], ended: Iterable[Sequence[Any]], now: float,
         tally: Ended) -> set[str]:
    """Tell the dependents of the tasks ``ended`` (rows of id, status, error: as
    ``finished_upstreams`` reads them), and theirs in turn, counting in ``tally`` those
    this cancels; the channels released."""
    released: set[str] = set()
    todo = sorted((int(task_id), str(status), error) for task_id, status, error in ended)
    while todo:
        todo = _tell(conn, q, todo, now, released, tally)
    return released


def _tell(conn: Any, q: dict[str, str], ended: list[tuple[int, str, str | None]],
          now: float, released: set[str], tally: Ended) -> list[tuple[int, str, str | None]]:
    """Count the ends of ``ended`` (id, status, error) in their dependents: release those
    that no longer wait (adding their channels to ``released``), cancel those that can
    no longer run (counted in ``tally``); the tasks so cancelled."""
    counted: Counter[int] = Counter()
    broken: dict[int, tuple[int, str]] = {}
    for upstream, status, error in ended:
        for dependent, needs in conn.execute(q["settle_edges"], {"id": upstream}).fetchall():
            if _satisfies(str(needs), status):
                counted[int(dependent)] += 1
            else:
                broken.setdefault(int(dependent), (upstream, _why(upstream, status, error,
                                                                   str(needs))))
    cancelled: list[tuple[int, str, str | None]] = []
    # In id order, so that transactions telling the same dependents lock them in one order.
    for dependent in sorted(set(counted) | set(broken)):
        # Every end it needed is counted, even if another end cancels it: the count must
        # stay true for a requeue that brings it back (see restore).
        row = conn.execute(q["one_less"], {"id": dependent, "count": counted[dependent]}
                           ).fetchone() if counted[dependent] else None
        if dependent in broken:
            upstream, why = broken[dependent]
            stopped = conn.execute(q["cancel_blocked"], {"id": dependent, "now": now,
                                                         "error": why}).fetchone()
            if stopped is not None:
                tally.add(str(stopped[1]), "cancelled")
                conn.execute(q["note_cancelled_by"], {"id": dependent, "upstream": upstream})
                cancelled.append((dependent, "cancelled", why))
        elif row is not None and int(row[0]) <= 0:
            channel = release(conn, q, dependent, row[1], now)
            if channel is not None:
                released.add(channel)
    return cancelled


def restore(conn: Any, q: dict[str, str], ids: Ids, requeued: Sequence[int]) -> int:
    """After failed tasks were requeued: the tasks their failure cancelled wait for them
    again (blocked), and so on down the tasks that cancel cancelled; how many. A task
    that another failed or cancelled upstream would cancel anyway, or whose key an
    unfinished task holds, stays cancelled; so do follow-ups that have run, and tasks
    that would wait for a task deleted meanwhile."""
    restored = 0
    todo = list(requeued)
    while todo:
        rows = conn.execute(q["restorable"], {"ids": ids(todo)}).fetchall()
        todo = []
        for task_id, upstream in rows:
            values = {"id": task_id, "upstream": upstream}
            conn.execute(q["lock_upstreams_of"], values).fetchall()
            if conn.execute(q["restore"], values).rowcount == 1:
                conn.execute(q["unsettle"], values)
                conn.execute(q["forget_cancelled_by"], values)
                todo.append(int(task_id))
        restored += len(todo)
    return restored


def release(conn: Any, q: dict[str, str], task_id: int, input_kind: str | None,
            now: float) -> str | None:
    """Make a blocked task due, with its input as args if it takes one; its channel
    (None if it was no longer blocked: cancelled meanwhile)."""
    args = None if input_kind is None else input_for(
        input_kind, conn.execute(q["inputs_of"], {"id": task_id}).fetchall())
    row = conn.execute(q["release_blocked"], {"id": task_id, "now": now,
                                              "has_input": input_kind is not None,
                                              "args": args}).fetchone()
    return None if row is None else str(row[0])


def input_for(kind: str, upstreams: Sequence[Sequence[Any]]) -> bytes:
    """The args of a task that receives ``kind`` from ``upstreams`` (rows of id, status,
    result, error, in order; status None for one that is gone)."""
    if kind == "result":
        return codec.NIL if not upstreams or upstreams[0][2] is None else bytes(upstreams[0][2])
    if kind == "results":
        return codec.array_of(None if row[2] is None else bytes(row[2]) for row in upstreams)
    outcomes = [_outcome(row, with_result=kind != "failure") for row in upstreams]
    if kind in ("outcome", "failure"):
        return outcomes[0] if outcomes else codec.NIL
    return codec.array_of(outcomes)


def _outcome(row: Sequence[Any], with_result: bool) -> bytes:
    task_id, status, result, error = row
    fields = {"id": int(task_id), "status": status, "error": error}
    return codec.map_of(fields, {"result": None if result is None else bytes(result)}
                        if with_result else {})


def _satisfies(needs: str, status: str) -> bool:
    if needs == "finished":
        return True
    return (status == "done") == (needs == "done")


def _why(upstream: int, status: str, error: str | None, needs: str) -> str:
    """The error of a dependent cancelled because ``upstream`` ended as ``status``: it
    names that upstream and, down a cascade, the task where the cascade began."""
    if needs == "failed":
        return f"not needed: task {upstream}, which it follows up on, ended {status}"
    text = (error or "").strip()
    root = text.rfind(_CASCADE)
    cause = text[root:] if root >= 0 else (text.splitlines() or [""])[-1]
    return f"{_CASCADE}{upstream} ended {status}" + (f": {cause}" if cause else "")


_CASCADE = "upstream task "


def add_graph(conn: Any, q: dict[str, str], ids: Ids, tasks: Sequence[NewTask],
              workflow: int | None, register: Iterable[str], now: float,
              tally: Ended) -> list[TaskId]:
    """Store ``tasks`` (each after the tasks it names) in the caller's transaction; their
    ids. They join ``workflow``, else the workflow of their first stored upstream that
    has one, else a new one named by the first task's id. A task whose key is held is
    not stored: the holder stands for it (its id comes back with ``created`` False),
    as with ``add``. A task none of whose upstreams it still waits for is stored due
    at once (or cancelled, if one ended as it does not need: counted in ``tally``)."""
    check_channels(conn, q, {task.channel for task in tasks}, set(register), now)
    stored = sorted({up.task_id for task in tasks for up in task.after
                     if up.task_id is not None})
    found = _locked(conn, q, ids, stored)
    missing = [task_id for task_id in stored if task_id not in found]
    if missing:
        raise ValueError(f"there is no task with id {missing[0]} to depend on")
    if workflow is None:
        workflow = next((int(found[up][1]) for up in stored if found[up][1] is not None),
                        None)
    made: list[tuple[TaskId, str]] = []
    for task in tasks:
        upstreams = [made[up.earlier] if up.earlier is not None
                     else (TaskId(up.task_id or 0), found[up.task_id or 0][0])
                     for up in task.after]
        new = _add_one(conn, q, ids, task, upstreams, workflow, now, tally)
        if workflow is None and new[0].created:
            workflow = new[0]
        made.append(new)
    return [task_id for task_id, _ in made]


def _locked(conn: Any, q: dict[str, str], ids: Ids, task_ids: Sequence[int]
            ) -> dict[int, tuple[str, Any]]:
    """The status and workflow of each of ``task_ids`` that exists, read under a lock
    that orders this transaction with any that ends them (see ``lock_upstreams``)."""
    if not task_ids:
        return {}
    return {int(row[0]): (str(row[1]), row[2]) for row in
            conn.execute(q["lock_upstreams"], {"ids": ids(list(task_ids))}).fetchall()}


def _add_one(conn: Any, q: dict[str, str], ids: Ids, task: NewTask,
             upstreams: list[tuple[TaskId, str]], workflow: int | None, now: float,
             tally: Ended) -> tuple[TaskId, str]:
    """Store one task of ``add_graph`` after ``upstreams`` (id, status): its id, and its
    status (the holder's, when its key is held)."""
    # As at run time (see _tell), the count is of the upstreams not ended as it needs.
    waiting = sum(not (status in FINISHED and _satisfies(task.needs, status))
                  for _, status in upstreams)
    broken = next(((up, status) for up, status in upstreams
                   if status in FINISHED and not _satisfies(task.needs, status)), None)
    status, error, finished_at, args = "blocked", None, None, task.args
    if broken is not None:
        status, finished_at = "cancelled", now
        error = _why(broken[0], broken[1], None, task.needs)
    elif waiting == 0:
        status = "delayed" if task.run_at is not None and task.run_at > now else "pending"
        if task.input is not None:
            args = input_for(task.input, [(up, *conn.execute(q["task_end"], {"id": up})
                                           .fetchone()) for up, _ in upstreams])
    values = {"channel": task.channel, "args": args, "status": status,
              "retries": task.retries, "run_at": task.run_at, "priority": task.priority,
              "now": now, "time_limit": task.time_limit, "key": task.key,
              "finished_at": finished_at, "error": error}
    for _ in range(KEY_TRIES):
        row = conn.execute(q["add_node"], values).fetchone()
        if row is not None:
            break
        holder = _holder(conn, q, ids, task)  # its key is held: the holder stands for it
        if holder is not None:
            return holder
    else:
        raise StoreError(f"key {task.key!r} of channel {task.channel!r} kept changing "
                         f"hands ({KEY_TRIES} tries): nothing was stored")
    new_id = TaskId(row[0])
    tally.add(task.channel, status)  # (cancelled at once: an end)
    conn.execute(q["add_flow"], {"id": new_id, "workflow": new_id if workflow is None
                                 else workflow, "waiting": waiting, "needs": task.needs,
                                 "input": task.input})
    if broken is not None:  # a requeue of that upstream brings it back
        conn.execute(q["note_cancelled_by"], {"id": new_id, "upstream": broken[0]})
    for position, (up, up_status) in enumerate(upstreams):
        conn.execute(q["add_edge"], {"id": new_id, "position": position, "upstream": up,
                                     "needs": task.needs,
                                     "settled": int(up_status in FINISHED)})
    return new_id, status


def _holder(conn: Any, q: dict[str, str], ids: Ids, task: NewTask
            ) -> tuple[TaskId, str] | None:
    """The unfinished task that holds ``task``'s key, and its status, read under the
    lock an upstream is read with; None if it has ended since the insert found it
    (on PostgreSQL: the insert is tried again)."""
    row = conn.execute(q["key_holder"], {"channel": task.channel, "key": task.key}).fetchone()
    if row is None:
        return None
    found = _locked(conn, q, ids, [int(row[0])]).get(int(row[0]))
    if found is None or found[0] in FINISHED:
        return None
    return TaskId.held(int(row[0])), found[0]


def check_channels(conn: Any, q: dict[str, str], channels: set[str], register: set[str],
                   now: float) -> None:
    """Register the channels this process runs; any other must be registered already."""
    for channel in sorted(channels):
        if channel in register:
            conn.execute(q["register_channel"], {"name": channel, "now": now})
        elif conn.execute(q["channel_exists"], {"name": channel}).fetchone() is None:
            known = {row[0] for row in conn.execute(q["known_channels"])}
            raise UnknownChannelError(channel, known)
