"""Named SQL statements (internal): read once from a backend's ``.sql`` file, and the
store methods that are nothing but running some of them.

Each backend keeps its SQL as SQL: a file of statements, each introduced by a
``-- name: NAME`` line; other ``--`` lines are comments. Both backends' drivers
take named parameters as a dict, so a method that only runs named statements is
written once, here, for both.
"""

from __future__ import annotations

import builtins
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar, TypeVar

from simplepyq.errors import UnknownChannelError
from simplepyq.limits import Limits
from simplepyq.storage import dependents
from simplepyq.storage.base import LimitChange, NewTick, Owner, Requeued, named
from simplepyq.storage.dependents import NewTask
from simplepyq.storage.finished import ENDS, Ended
from simplepyq.task import TaskId

T = TypeVar("T")

log = logging.getLogger("simplepyq")


@dataclass(frozen=True)
class Renewal:
    """How a claim renews its owner's heartbeat: ``register_owner``'s values, and the
    age past which it must."""

    values: dict[str, Any]
    after: float


def load(filename: str) -> dict[str, str]:
    """The statements of ``filename`` in this package, by name."""
    text = resources.files("simplepyq.storage").joinpath(filename).read_text("utf-8")
    queries: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("-- name:"):
            name = line.split(":", 1)[1].strip()
            queries[name] = ""
        elif name and not line.startswith("--"):
            queries[name] += line + "\n"
    return {key: value.strip() for key, value in queries.items()}


class QueryStore:
    """The part of the store contract that is one named statement (or a few) in every
    backend: subclasses give their statements ``Q`` and their transactions.

    ``_read`` and ``_write`` run ``work`` in one transaction on a connection of the
    backend's driver (sqlite3 or psycopg: the same ``execute`` and cursors); a
    write with ``notify`` tells waiting processes where the backend can.
    """

    Q: ClassVar[dict[str, str]]

    def _read(self, work: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _write(self, work: Callable[[Any], T], notify: bool = True) -> T:
        raise NotImplementedError

    @staticmethod
    def _ids(task_ids: Sequence[int]) -> Any:
        """Ids as the backend's statements take a list of them (``:ids``)."""
        raise NotImplementedError

    def _rows(self, conn: Any, task_ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        """The rows (TASK_COLUMNS) of ``task_ids`` as the caller's transaction sees them."""
        if not task_ids:
            return {}
        return {int(row[0]): tuple(row) for row in conn.execute(
            self.Q["rows_of"], {"ids": self._ids(list(task_ids))})}

    def _settle(self, conn: Any, task_ids: Sequence[int], now: float,
                tally: Ended) -> set[str]:
        """Tell the dependents of those of ``task_ids`` that have ended (see
        ``dependents``), in the caller's transaction, counting in ``tally`` those this
        cancels; the channels released."""
        return dependents.settle(conn, self.Q, self._ids, task_ids, now, tally)

    def runnable(self, channels: Sequence[str], now: float) -> list[str]:
        return self._read(lambda c: [name for name in channels if c.execute(
            self.Q["runnable"], {"channel": name, "now": now}).fetchone()[0]])

    def make_due(self, channels: Sequence[str], now: float) -> int:
        return self._write(lambda c: sum(int(c.execute(self.Q["make_due"], {
            "channel": name, "now": now}).rowcount) for name in channels))

    # -- workflows -----------------------------------------
    def add_graph(self, tasks: Sequence[NewTask], workflow: int | None,
                  register: Iterable[str], now: float) -> list[TaskId]:
        def add(conn: Any) -> list[TaskId]:
            tally = Ended()  # tasks stored cancelled: an upstream had ended as they do not need
            added = dependents.add_graph(conn, self.Q, self._ids, tasks, workflow, register,
                                         now, tally)
            tally.write(conn, self.Q, now)
            return added

        return self._write(add)

    def workflow_of(self, task_id: int) -> int | None:
        row = self._read(lambda c: c.execute(self.Q["workflow_of"], {"id": task_id}).fetchone())
        return None if row is None else int(row[0])

    def workflow_counts(self, workflow: int) -> dict[str, int]:
        return self._read(lambda c: {str(status): int(count) for status, count in c.execute(
            self.Q["workflow_counts"], {"workflow": workflow})})

    def workflow_tasks(self, workflow: int) -> list[int]:
        return self._read(lambda c: [int(row[0]) for row in c.execute(
            self.Q["workflow_tasks"], {"workflow": workflow})])

    def links(self, task_id: int) -> tuple[list[int], list[int], int | None]:
        def read(conn: Any) -> tuple[list[int], list[int], int | None]:
            workflow = conn.execute(self.Q["workflow_of"], {"id": task_id}).fetchone()
            return ([int(row[0]) for row in conn.execute(self.Q["upstreams_of"],
                                                          {"id": task_id})],
                    [int(row[0]) for row in conn.execute(self.Q["dependents_of"],
                                                          {"id": task_id})],
                    None if workflow is None else int(workflow[0]))

        return self._read(read)

    # -- channels ------------------------------------------
    def register_channel(self, name: str, now: float,
                         limits: LimitChange | None = None) -> None:
        def register(conn: Any) -> None:
            conn.execute(self.Q["register_channel"], {"name": name, "now": now})
            if limits is not None and (limits.set_rate or limits.set_max_running):
                self._change_limits(conn, name, limits)

        self._write(register)

    def known_channels(self) -> set[str]:
        return self._read(lambda c: {row[0] for row in c.execute(self.Q["known_channels"])})

    # -- limits --------------------------------------------
    def set_limits(self, channel: str, change: LimitChange) -> Limits:
        return self._write(lambda c: self._change_limits(c, channel, change))

    def limits(self) -> dict[str, Limits]:
        return self._read(lambda c: {name: Limits.from_stored(count, period, running)
                                     for name, count, period, running
                                     in c.execute(self.Q["all_limits"])})

    def _change_limits(self, conn: Any, channel: str, change: LimitChange) -> Limits:
        rate = change.rate
        row = conn.execute(self.Q["set_limits"], {
            "channel": channel, "set_rate": change.set_rate,
            "rate_count": None if rate is None else rate.count,
            "rate_period": None if rate is None else rate.period,
            "set_max": change.set_max_running, "max_running": change.max_running,
        }).fetchone()
        if row is None:
            known = {found[0] for found in conn.execute(self.Q["known_channels"])}
            raise UnknownChannelError(channel, known)
        if change.set_rate and rate is None:
            conn.execute(self.Q["forget_all_starts"], {"channel": channel})
        return Limits.from_stored(*row)

    def _claim_within(self, conn: Any, owner: str, channel: str, limit: int, limits: Limits,
                      now: float) -> tuple[list[Any], float | None]:
        """Claim up to ``limit`` tasks of a channel with ``limits``, no more than they
        allow at ``now`` (the time, taken once the claim holds its locks): the rows
        claimed, and the throttle (see ``Exchange.throttle``) if they allowed fewer.

        ``max_running`` counts the channel's running tasks, in every process; the
        rate counts the starts logged in the last period, and logs those made now.
        """
        allowed, throttle = limit, None
        if limits.max_running is not None:
            running = int(conn.execute(self.Q["running_count"], {"channel": channel})
                          .fetchone()[0])
            if limits.max_running - running < allowed:
                allowed, throttle = max(limits.max_running - running, 0), math.inf
        rate = limits.rate_limit
        if rate is not None:
            conn.execute(self.Q["forget_starts"], {"channel": channel,
                                                   "since": now - rate.period})
            used, oldest = conn.execute(self.Q["recent_starts"], {"channel": channel}).fetchone()
            if rate.count - used <= allowed:
                # Once these start the window is full, until its oldest start leaves it.
                first = now if not used else float(oldest)
                allowed, throttle = max(rate.count - used, 0), max(first + rate.period - now, 0)
        rows = [] if allowed <= 0 else conn.execute(self.Q["claim_limited"], {
            "channel": channel, "owner": owner, "limit": allowed, "now": now}).fetchall()
        if rate is not None and rows:
            conn.execute(self.Q["note_starts"], {"channel": channel, "now": now,
                                                 "count": len(rows)})
        return rows, throttle if len(rows) >= allowed else None

    # -- liveness and recovery -----------------------------
    def register_owner(self, owner: str, host: str, pid: int, pid_start: str | None,
                       now: float, channels: Sequence[str] = (),
                       renew_after: float | None = None) -> None:
        values = {"owner": owner, "host": host, "pid": pid, "pid_start": pid_start, "now": now,
                  "channels": json.dumps(sorted(channels))}

        def beat(conn: Any) -> None:
            # The time of the write, once the locks are had: not an old time that waited.
            conn.execute(self.Q["hold_for_beat"], {"owner": owner})
            conn.execute(self.Q["register_owner"], {**values, "now": max(now, time.time())})

        self._write(beat, notify=False)
        if renew_after is None:
            self._renewals.pop(owner, None)
        else:
            self._renewals[owner] = Renewal(values, renew_after)

    def unregister_owner(self, owner: str) -> None:
        self._renewals.pop(owner, None)
        self._write(lambda c: c.execute(self.Q["unregister_owner"], {"owner": owner}),
                    notify=False)

    @functools.cached_property
    def _renewals(self) -> dict[str, Renewal]:
        """The owners registered here with ``renew_after``: whose heartbeat claims renew."""
        return {}

    def _renew_in_claim(self, conn: Any, owner: str, held: Sequence[Any] | None) -> None:
        """In a claim's transaction, given the claimer's owner row as ``hold_owner`` read
        (and, on PostgreSQL, holds) it: write its heartbeat again if the row is gone
        (another process gave it up for dead) or older than ``renew_after``, so that no
        task is claimed under an owner that looks dead or is not there at all."""
        renewal = self._renewals.get(owner)
        if renewal is None:
            return  # not registered here to be renewed (a tool or a test claiming by hand)
        now = time.time()
        if held is not None and held[0] is not None and now - float(held[0]) <= renewal.after:
            return
        if held is None:
            log.warning("%s was given up for dead by another process (its heartbeat was "
                        "late); it is registered again and goes on", owner)
        conn.execute(self.Q["register_owner"], {**renewal.values, "now": now})

    def running_owners(self) -> list[Owner]:
        return self._read(lambda c: [Owner(*row) for row in c.execute(self.Q["running_owners"])])

    def owners_to_judge(self) -> list[Owner]:
        return self._read(lambda c: [Owner(*row) for row in c.execute(self.Q["owners_to_judge"])])

    def owners(self) -> list[Owner]:
        def read(conn: Any) -> list[Owner]:
            return [Owner(owner, host, pid, pid_start, heartbeat_at, _channel_names(channels))
                    for owner, host, pid, pid_start, heartbeat_at, channels
                    in conn.execute(self.Q["owners"])]

        return self._read(read)

    def recover(self, owners: Sequence[Owner], note: str, now: float,
                max_recoveries: int) -> int:
        def requeue(conn: Any) -> int:
            count = 0
            tally = Ended()
            # In one order for every process: two recoveries never wait for each other.
            for owner in sorted(owners, key=lambda judged: judged.owner or ""):
                row = conn.execute(self.Q["judged_heartbeat"], {"owner": owner.owner}).fetchone()
                if (None if row is None else row[0]) != owner.heartbeat_at:
                    continue  # it wrote a heartbeat since it was judged: alive after all
                values = {"owner": owner.owner, "note": note, "now": now,
                          "max_recoveries": max_recoveries}
                rows = conn.execute(self.Q["recover"], values).fetchall()
                ended = [int(row[0]) for row in rows]
                count += len(ended)
                tally.add_rows((channel, status) for _, channel, status in rows)
                self._settle(conn, ended, now, tally)  # those failed or cancelled
                conn.execute(self.Q["unregister_owner"], {"owner": owner.owner})
            tally.write(conn, self.Q, now)
            return count

        return self._write(requeue)

    def reconcile(self, owner: str, held: Sequence[int]) -> int:
        now = time.time()
        values = {"owner": owner, "held": json.dumps(list(held)), "now": now}

        def give_back(conn: Any) -> int:
            rows = conn.execute(self.Q["reconcile"], values).fetchall()
            back = [int(row[0]) for row in rows]
            tally = Ended()
            tally.add_rows((channel, status) for _, channel, status in rows)
            self._settle(conn, back, now, tally)  # those whose cancel was requested
            tally.write(conn, self.Q, now)
            return len(back)

        return self._write(give_back)

    # -- task control --------------------------------------
    def cancel(self, task_id: int, now: float) -> tuple[bool, str] | None:
        def cancel(conn: Any) -> tuple[bool, str] | None:
            row = conn.execute(self.Q["cancel"], {"id": task_id, "now": now}).fetchone()
            if row is not None:
                tally = Ended()
                if row[0] == "cancelled":  # (a running one is asked to stop: not ended yet)
                    tally.add(str(row[1]), "cancelled")
                self._settle(conn, [task_id], now, tally)
                tally.write(conn, self.Q, now)
                return True, str(row[0])
            row = conn.execute(self.Q["task_status"], {"id": task_id}).fetchone()
            return None if row is None else (False, str(row[0]))

        return self._write(cancel)

    def cancel_requests(self, owner: str) -> list[int]:
        return self._read(lambda c: [int(row[0]) for row in c.execute(
            self.Q["cancel_requests"], {"owner": owner})])

    def save_progress(self, owner: str, progress: Mapping[int, bytes]) -> None:
        values = [{"id": task_id, "owner": owner, "progress": value}
                  for task_id, value in progress.items()]
        if values:
            self._write(lambda c: c.cursor().executemany(self.Q["progress"], values),
                        notify=False)

    def run_alone(self, owner: str, task_id: int) -> None:
        values = {"owner": owner, "id": task_id}
        self._write(lambda c: c.execute(self.Q["run_alone"], values), notify=False)

    # -- inspection ----------------------------------------
    def get(self, task_id: int) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._read(
            lambda c: c.execute(self.Q["get"], {"id": task_id}).fetchone()
        )
        return row

    def list(self, channel: str | None, status: str | None, limit: int) -> list[tuple[Any, ...]]:
        values = {"channel": channel, "status": status, "limit": limit}
        rows: list[tuple[Any, ...]] = self._read(
            lambda c: c.execute(self.Q["list"], values).fetchall())
        return rows

    def stats(self) -> dict[str, dict[str, int]]:
        def count(conn: Any) -> dict[str, dict[str, int]]:
            counts: dict[str, dict[str, int]] = {}
            for channel, status, number in conn.execute(self.Q["stats"]):
                counts.setdefault(channel, {})[str(status)] = int(number)
            return counts

        return self._read(count)

    def pending_since(self) -> dict[str, float | None]:
        return self._read(lambda c: {channel: None if since is None else float(since)
                                     for channel, since in c.execute(self.Q["pending_since"])})

    # -- finished-task counters (see storage/finished.py) --
    def counts(self) -> dict[str, dict[str, int]]:
        def count(conn: Any) -> dict[str, dict[str, int]]:
            counts: dict[str, dict[str, int]] = {}
            for channel, status, number in conn.execute(self.Q["counts"]):
                counts.setdefault(str(channel), {})[str(status)] = int(number or 0)
            return counts

        return self._read(count)

    def finished(self, since_minute: int) -> builtins.list[tuple[str, int, int, int, int]]:
        return self._read(lambda c: [
            (str(channel), int(minute), int(done), int(failed), int(cancelled))
            for channel, minute, done, failed, cancelled
            in c.execute(self.Q["finished"], {"since": since_minute})])

    def finished_totals(self) -> dict[str, dict[str, int]]:
        return self._read(lambda c: {
            str(row[0]): dict(zip(ENDS, map(int, row[1:]), strict=True))
            for row in c.execute(self.Q["finished_totals"])})

    # -- maintenance ---------------------------------------
    def clear_failed(self, channel: str | None) -> int:
        def clear(conn: Any) -> int:
            count = int(conn.execute(self.Q["clear_failed"], {"channel": channel}).rowcount)
            self._forget_flows(conn, count)
            return count

        return self._write(clear)

    def requeue_failed(self, channel: str | None, retries: int | None) -> Requeued:
        values = {"channel": channel, "retries": retries}

        def requeue(conn: Any) -> Requeued:
            requeued = [int(row[0]) for row in conn.execute(self.Q["requeue_failed"], values)]
            count = len(requeued)
            dependents.restore(conn, self.Q, self._ids, requeued)
            kept = [(int(task_id), str(key)) for task_id, key
                    in conn.execute(self.Q["kept_failed"], {"channel": channel})]
            return Requeued(count, kept)

        return self._write(requeue)

    def remove_channel(self, name: str) -> int:
        def remove(conn: Any) -> int:
            awaited = [int(row[0]) for row in conn.execute(self.Q["channel_upstreams"],
                                                           {"name": name})]
            conn.execute(self.Q["remove_channel"], {"name": name})
            count = int(conn.execute(self.Q["remove_channel_tasks"], {"name": name}).rowcount)
            # What waited for its unfinished tasks can no longer run.
            now, tally = time.time(), Ended()
            dependents.tell(conn, self.Q, [(task_id, "cancelled", f"removed with channel "
                                            f"{name!r}") for task_id in awaited], now, tally)
            tally.write(conn, self.Q, now)
            self._forget_flows(conn, count)
            return count

        return self._write(remove)

    def purge(self, channel: str | None, finished_before: float) -> int:
        values = {"channel": channel, "before": finished_before}

        def purge(conn: Any) -> int:
            count = int(conn.execute(self.Q["purge"], values).rowcount)
            self._forget_flows(conn, count)
            return count

        return self._write(purge)

    def max_task_id(self) -> int:
        row = self._read(lambda c: c.execute(self.Q["max_task_id"]).fetchone())
        return 0 if row is None or row[0] is None else int(row[0])

    def expired(self, start: int, stop: int, done_before: float | None,
                failed_before: float | None) -> Sequence[int]:
        values = {"start": start, "stop": stop, "done_before": done_before,
                  "failed_before": failed_before}
        return self._read(lambda c: [int(row[0]) for row in c.execute(self.Q["expired"],
                                                                       values)])

    def prune(self, task_ids: Sequence[int], done_before: float | None,
              failed_before: float | None) -> int:
        values = {"ids": self._ids(list(task_ids)), "done_before": done_before,
                  "failed_before": failed_before}

        def delete(conn: Any) -> int:
            deleted = [int(row[0]) for row in conn.execute(self.Q["prune"], values)]
            if deleted:
                conn.execute(self.Q["forget_flows_of"], {"ids": self._ids(deleted)})
                conn.execute(self.Q["forget_edges_of"], {"ids": self._ids(deleted)})
                conn.execute(self.Q["forget_ticks_of"], {"ids": self._ids(deleted)})
            return len(deleted)

        return self._write(delete, notify=False) if task_ids else 0

    # -- periodic tasks ------------------------------------
    def schedule(self, name: str) -> tuple[Any, ...] | None:
        row = self._read(lambda c: c.execute(self.Q["schedule_of"], {"name": name}).fetchone())
        return None if row is None else tuple(row)

    def put_schedule(self, name: str, channel: str, spec: str, args: bytes | None,
                     next_at: float, register: bool, now: float) -> None:
        def put(conn: Any) -> None:
            dependents.check_channels(conn, self.Q, {channel}, {channel} if register else set(),
                                      now)
            conn.execute(self.Q["put_schedule"], {"name": name, "channel": channel,
                                                  "spec": spec, "args": args,
                                                  "next_at": next_at})

        self._write(put)

    def remove_schedule(self, name: str) -> bool:
        return self._write(lambda c: int(c.execute(self.Q["remove_schedule"],
                                                   {"name": name}).rowcount) > 0)

    def schedules(self) -> builtins.list[tuple[Any, ...]]:
        return self._read(lambda c: [tuple(row) for row in c.execute(self.Q["schedules"])])

    def fire(self, name: str, fired: int, next_at: float, ticks: Sequence[float],
             task: NewTick) -> builtins.list[TaskId] | None:
        def fire(conn: Any) -> list[TaskId] | None:
            moved = conn.execute(self.Q["fire_schedule"], {
                "name": name, "fired": fired, "next_at": next_at,
                "tick": ticks[-1] if ticks else None}).fetchone()
            if moved is None:
                return None
            made: list[TaskId] = []
            for tick in ticks:
                row = conn.execute(self.Q["add_node"], {
                    "channel": task.channel, "args": task.args, "status": "pending",
                    "retries": task.retries, "run_at": None, "priority": task.priority,
                    "now": tick, "time_limit": task.time_limit, "key": task.key,
                    "finished_at": None, "error": None}).fetchone()
                if row is None:
                    continue  # the previous tick's task still holds the key: skipped
                made.append(TaskId(row[0]))
                conn.execute(self.Q["note_tick"], {"id": row[0], "name": name, "tick": tick})
            if made:
                conn.execute(self.Q["note_last_task"], {"id": made[-1], "name": name})
            return made

        return self._write(fire)

    def scheduled_at(self, task_id: int) -> float | None:
        row = self._read(lambda c: c.execute(self.Q["scheduled_at"], {"id": task_id}).fetchone())
        return None if row is None else float(row[0])

    def _forget_flows(self, conn: Any, deleted: int) -> None:
        """After ``deleted`` tasks were deleted: forget their places in workflows and
        their ticks."""
        if deleted:
            conn.execute(self.Q["forget_flows"])
            conn.execute(self.Q["forget_edges"])
            conn.execute(self.Q["forget_ticks"])

    # -- moving between stores -----------------------------
    def adopt(self, rows: Sequence[tuple[Any, ...]], channels: Iterable[str],
              now: float) -> int:
        values = [{**task, "history": history_text(task["history"])}
                  for task in map(named, rows)]

        def insert(conn: Any) -> int:
            for name in channels:
                conn.execute(self.Q["register_channel"], {"name": name, "now": now})
            if values:
                conn.cursor().executemany(self.Q["adopt"], values)
            tally = Ended()  # what ended in the other store ends here too (as seed_finished)
            for task in values:
                if task["status"] != "done" or task["finished_at"] is not None:
                    tally.add(str(task["channel"]), str(task["status"]))
            tally.write(conn, self.Q, now)
            return len(values)

        return self._write(insert)

    def forget(self, rows: Sequence[tuple[Any, ...]]) -> int:
        values = [named(row) for row in rows]

        def delete(conn: Any) -> int:
            return sum(int(conn.execute(self.Q["forget"], value).rowcount) for value in values)

        return self._write(delete) if values else 0


def history_text(stored: Any) -> str | None:
    """A task's history as the JSON text both backends take: PostgreSQL gives a list,
    SQLite text; anything else (written by hand) is dropped."""
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except ValueError:
            return None
    return json.dumps(stored) if isinstance(stored, list) else None


def _channel_names(stored: Any) -> tuple[str, ...]:
    """The channels an owner row lists (JSON text); none where it lists nothing readable."""
    try:
        names = json.loads(stored) if isinstance(stored, str) else []
    except ValueError:
        return ()
    return tuple(name for name in names if isinstance(name, str)) \
        if isinstance(names, list) else ()
