"""The SQLite backend: connections, pragmas, schema upgrades and the task store contract.

One file is shared by every thread and process that opens it. WAL lets readers run
beside the single writer; every write begins IMMEDIATE so that a transaction never
has to upgrade a read lock (which SQLite refuses without waiting), and the busy
timeout plus a retry on "database is locked" keeps contention away from users.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from typing import Any, TypeVar

from simplepyq.errors import StoreError, UnknownChannelError
from simplepyq.limits import Limits
from simplepyq.storage import MEMORY, queries
from simplepyq.storage.base import Claimed, Exchange, Outcome
from simplepyq.storage.browse import BrowseStore
from simplepyq.storage.finished import Ended
from simplepyq.storage.walwatch import WalWatch
from simplepyq.task import Status, TaskId

log = logging.getLogger("simplepyq")

SCHEMA_VERSION = 8
FIRST_PAUSE = 0.0001
"""Seconds a write first waits when the lock is taken; each wait is half again as long."""
ADD_CHUNK = 500
"""Tasks per insert statement in ``add`` (SQLite allows 32766 bound values)."""
LEGACY_COLUMNS = {"id", "channel", "args", "status", "retries", "delay_until"}
CROWDED = 1000
"""How many tasks of one status (of a channel, below a page's bound) there are at least
when a page of them is found by walking ids down rather than through the status's
index (see crowded in sqlite.sql)."""
T = TypeVar("T")


Q = queries.load("sqlite.sql")
Q = {name: text.replace("{next_id}", Q["next_id"]) for name, text in Q.items()}
Q["claim_limited"] = Q["claim"]  # every claim runs under the write lock already


class SQLiteStore(BrowseStore):
    """Tasks in one SQLite file; safe to share between threads and processes.

    At ``":memory:"`` the tasks are in this process's memory instead, shared by its
    threads: a database of SQLite's shared cache under a name of its own, which
    lives while a connection to it is open (the one ``change_token`` reads stays
    open until ``close``). There a write locks the tables it changed until it
    commits, and SQLite answers "locked" at once instead of waiting: the same retry
    as for another process's lock waits it out.
    """

    Q = Q  # its statements, for the methods of QueryStore
    _wal_unemptied = False
    """Set when a write found the disk full; cleared by the next checkpoint that empties
    the WAL (see ``_empty_wal``)."""

    def __init__(self, path: str, busy_timeout: float = 30.0, power_safe: bool = False) -> None:
        self.location = _checked_path(path)
        self._memory = path == MEMORY
        self._target = (f"file:simplepyq-{uuid.uuid4().hex}?mode=memory&cache=shared"
                        if self._memory else path)
        self._busy_timeout = busy_timeout
        # In WAL mode NORMAL keeps every commit through a crash of the process; FULL
        # also through a power cut, at the price of one fsync per commit.
        self._synchronous = "FULL" if power_safe else "NORMAL"
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._watcher: sqlite3.Connection | None = None
        self._wal_lock = threading.Lock()
        self._wal_watch: WalWatch | None = None
        self._wal_seen: _Version | None = None  # the connection the watch confirms with
        self._wal_refused = False
        self._closed = False
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened
        try:
            if self._memory:  # the database lives while this one is open
                self._watcher = self._connect(patient=True)
            with closing(self._connect(patient=True)) as conn:
                # Schema first: if the file is refused, its transaction rolls back and
                # the file is left exactly as it was (WAL mode would persist).
                self._migrate(conn)
                if not self._memory:
                    self._enable_wal(conn)
            self._watcher = self._watcher or self._connect(patient=True)
            self._file = None if self._memory else _file_id(self.location)
        except StoreError:
            self.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"cannot use {self.location!r} as a task store: {exc}") from exc

    # -- connections ---------------------------------------
    def _connect(self, patient: bool = False) -> sqlite3.Connection:
        # SQLite's own busy handler sleeps at least a millisecond, then longer, while
        # a lock is typically held for well under one: working connections fail at
        # once instead, and ``_retrying`` waits in finer steps. The ``patient`` ones
        # (setup, change polling) rarely meet a lock and keep SQLite's handler.
        conn = sqlite3.connect(
            self._target, timeout=self._busy_timeout if patient else 0,
            isolation_level=None, check_same_thread=False, uri=self._memory,
        )
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """Lend an idle connection (or a new one) to the calling thread for one operation."""
        conn = self._lend()
        try:
            yield conn
        finally:
            self._return(conn)

    def _lend(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise StoreError(f"the task store {self.location!r} is closed")
            conn = self._idle.pop() if self._idle else None
        return conn if conn is not None else self._connect()

    def _return(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.rollback()
        with self._lock:
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)

    @staticmethod
    def _ids(task_ids: Sequence[int]) -> str:
        return json.dumps(task_ids)

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._retrying(work, write=False)

    def _write(self, work: Callable[[sqlite3.Connection], T], notify: bool = True,
               alone: bool = False) -> T:
        """Run ``work`` in a write transaction; with ``alone``, ``work`` is one statement
        and commits on its own. (``notify`` needs nothing here: every commit changes
        ``change_token``, and wakes the watchers of other processes.)"""
        # A file deleted (or replaced) while open still takes writes through the open
        # connections, and they vanish with the process: refuse them instead.
        if not self._same_file():
            raise StoreError(f"the task store {self.location!r} was deleted or replaced "
                             "while open; nothing was written (open the queue again)")
        return self._retrying(work, write=True, alone=alone)

    def _same_file(self) -> bool:
        """Whether the file at the store's path is still the one it opened (always, in
        memory)."""
        return self._file is None or _file_id(self.location) == self._file

    def _retrying(self, work: Callable[[sqlite3.Connection], T], write: bool,
                  alone: bool = False) -> T:
        """Run ``work`` in one transaction (or, ``alone``, as one statement that is its
        own), retrying while another process holds the lock, and once more after
        emptying the WAL if the disk is full."""
        deadline = time.monotonic() + self._busy_timeout
        pause = FIRST_PAUSE
        room_made = make_room = False
        while True:
            conn = self._lend()
            try:
                if not write:
                    return work(conn)
                if alone:
                    outcome = work(conn)
                else:
                    conn.execute("BEGIN IMMEDIATE")
                    outcome = work(conn)
                    conn.execute("COMMIT")
                if self._wal_unemptied:  # the first write since the disk was full
                    self._wal_unemptied = not self._empty_wal()
                return outcome
            except sqlite3.OperationalError as exc:
                full = write and _is_full(exc)
                if full:
                    self._wal_unemptied = True
                if full and not room_made:
                    room_made = make_room = True
                elif not _is_busy(exc):  # a full or read-only disk, an I/O error: say where
                    raise StoreError(f"the task store {self.location!r} failed: {exc}") from exc
                elif time.monotonic() > deadline:
                    raise StoreError(
                        f"the task store {self.location!r} stayed locked by another "
                        f"connection for more than busy_timeout={self._busy_timeout}s"
                    ) from exc
                else:
                    log.debug("store %s busy (%s); retrying", self.location, exc)
            finally:
                self._return(conn)
            if make_room:
                make_room = False
                self._empty_wal()
                continue
            time.sleep(pause)
            pause = min(pause * 1.5, 0.01)

    def _empty_wal(self) -> bool:
        """Copy the WAL into the database file and truncate it to nothing; whether it could.

        SQLite checkpoints on its own only once the WAL passes 1000 pages, and the
        WAL grows until a checkpoint lets it start over: on a disk that filled up,
        space freed later would go to the WAL again before any checkpoint came, and
        every write would keep failing. So this runs when a write finds the disk
        full (the write is tried once more), and after the first write that works
        again, while the freed space is still free.
        """
        try:
            conn = self._lend()
        except StoreError:  # closed meanwhile: the write that got here went through
            return False
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.DatabaseError as exc:
            log.debug("store %s: emptying the WAL failed (%s)", self.location, exc)
            return False
        finally:
            self._return(conn)
        log.debug("store %s: emptied the WAL%s", self.location, " partly" if busy else "")
        return not busy

    def close(self) -> None:
        # Only idle connections close here: closing one that another thread is
        # using would crash the interpreter. A lent one closes when it is returned.
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        with self._watch_lock:
            watcher, self._watcher = self._watcher, None
        with self._wal_lock:
            wal_watch, self._wal_watch = self._wal_watch, None
            seen, self._wal_seen = self._wal_seen, None
        if wal_watch is not None:
            wal_watch.stop()  # (its thread has ended: its connection can close)
        if seen is not None:
            seen.close()
        for conn in [*idle, *([watcher] if watcher else [])]:
            conn.close()

    # -- schema --------------------------------------------
    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs a moment with no other connection; while another
        # process is opening the same file it can fail with "locked", so retry.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            log.warning("store %s runs in %s journal mode, not WAL", self.location, mode)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create the schema, or upgrade a file made by an older version in place."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.location!r} was written by a newer simplepyq (schema {version}); "
                "upgrade simplepyq to open it"
            )
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                self._upgrade(conn, version)
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise

    def _upgrade(self, conn: sqlite3.Connection, version: int) -> None:
        """Bring any older schema to SCHEMA_VERSION; each step is safe to repeat."""
        conn.execute(Q["create_tasks"])
        present = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        missing = sorted(LEGACY_COLUMNS - present)
        if missing:
            raise StoreError(
                f"cannot use {self.location!r} as a task store: its 'tasks' table was not "
                f"made by simplepyq (it has no {', '.join(missing)} column)"
            )
        for column in Q["added_columns"].splitlines():
            if column.split()[0] not in present:
                conn.execute(f"ALTER TABLE tasks ADD COLUMN {column}")
        conn.execute(Q["create_channels"])
        conn.execute(Q["create_owners"])
        for table, added in (("simplepyq_owners", "added_owner_columns"),
                             ("simplepyq_channels", "added_channel_columns")):
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for column in Q[added].splitlines():
                if column.split()[0] not in columns:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        for statement in [*Q["create_starts"].split(";"), *Q["retired_indexes"].split(";"),
                          *Q["create_indexes"].split(";"), *Q["create_flows"].split(";"),
                          *Q["create_schedules"].split(";")]:
            if statement.strip():
                conn.execute(statement)
        self._keep_ids_unique(conn)
        self._count_finished(conn)
        if version == 0:
            conn.execute(Q["adopt_legacy_channels"], {"now": time.time()})
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _keep_ids_unique(conn: sqlite3.Connection) -> None:
        """Start tracking the highest id deleted (see next_id in sqlite.sql)."""
        conn.execute(Q["create_high"])
        conn.execute(Q["create_high_trigger"])
        has_sequence = conn.execute(Q["has_sequence"]).fetchone()
        row = conn.execute(Q["tasks_sequence"]).fetchone() if has_sequence else None
        conn.execute(Q["init_high"], {"sequence": row[0] if row else 0})

    @staticmethod
    def _count_finished(conn: sqlite3.Connection) -> None:
        """Start the finished-task counters (schema 8), from the finished tasks the file
        holds (see create_finished in sqlite.sql)."""
        for statement in Q["create_finished"].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(Q["create_removed_trigger"])
        conn.execute(Q["seed_finished"])

    # -- the task life cycle -------------------------------
    def add(self, channel: str, payloads: Sequence[bytes], retries: int,
            run_at: float | None, priority: int, now: float, register: bool,
            time_limit: float | None = None,
            keys: Sequence[str | None] | None = None) -> list[TaskId]:
        status = Status.DELAYED.value if run_at is not None and run_at > now else "pending"
        shared = (channel, status, retries, run_at, priority, now, time_limit)
        keyed = keys is not None and any(key is not None for key in keys)

        def insert(conn: sqlite3.Connection) -> list[TaskId]:
            if register:
                conn.execute(Q["register_channel"], {"name": channel, "now": now})
            elif conn.execute(Q["channel_exists"], {"name": channel}).fetchone() is None:
                known = {row[0] for row in conn.execute(Q["known_channels"])}
                raise UnknownChannelError(channel, known)
            if keyed:
                assert keys is not None
                return [self._add_one(conn, shared, payload, key)
                        for payload, key in zip(payloads, keys, strict=True)]
            first, usual = conn.execute(Q["first_id"]).fetchone()
            named = first != usual  # (naming the ids costs a look-up per row)
            for start in range(0, len(payloads), ADD_CHUNK):
                chunk = payloads[start:start + ADD_CHUNK]
                conn.execute(_insert_statement(len(chunk), named),
                             (*shared, first + start, *chunk) if named else (*shared, *chunk))
            return list(map(TaskId, range(first, first + len(payloads))))

        if len(payloads) == 1 and not keyed:  # the one-call enqueue: one statement
            added = self._write(lambda c: c.execute(Q["add_one"], (*shared, payloads[0])),
                                alone=True)
            if added.rowcount == 1:
                return [TaskId(added.lastrowid or 0)]
        return self._write(insert)

    @staticmethod
    def _add_one(conn: sqlite3.Connection, shared: tuple[Any, ...], payload: bytes,
                 key: str | None) -> TaskId:
        """Insert one task, or find the unfinished one that holds its key."""
        if key is None:
            return TaskId(conn.execute(Q["add_one"], (*shared, payload)).lastrowid or 0)
        channel, status, retries, run_at, priority, now, time_limit = shared
        cursor = conn.execute(Q["add_keyed"], {
            "channel": channel, "args": payload, "status": status, "retries": retries,
            "run_at": run_at, "priority": priority, "now": now, "time_limit": time_limit,
            "key": key})
        if cursor.rowcount == 1:
            return TaskId(cursor.lastrowid or 0)
        holder = conn.execute(Q["key_holder"], {"channel": channel, "key": key}).fetchone()
        return TaskId.held(holder[0])

    def exchange(self, owner: str, outcomes: Sequence[Outcome], channel: str | None,
                 limit: int, now: float, report: bool = False) -> Exchange:
        def swap(conn: sqlite3.Connection) -> Exchange:
            tally = Ended()
            dropped = self._record(conn, outcomes, owner, tally)
            ended = _ended(outcomes, dropped) if outcomes else []
            released = frozenset(self._settle(conn, ended, now, tally)) if outcomes \
                else frozenset()
            if tally:
                tally.write(conn, Q, now)
            recorded = self._rows(conn, ended) if report else None
            if channel is None or limit <= 0:
                return Exchange(dropped, [], released=released, recorded_rows=recorded)
            held = conn.execute(Q["hold_owner"], {"owner": owner}).fetchone()
            self._renew_in_claim(conn, owner, held)
            conn.execute(Q["promote_due"], {"channel": channel, "now": now})
            limits = Limits.from_stored(*(conn.execute(Q["channel_limits"], {"channel": channel})
                                          .fetchone() or (None, None, None)))
            throttle = None
            if limits.rate_limit is None and limits.max_running is None:
                claims = conn.execute(
                    Q["claim"], {"channel": channel, "owner": owner, "limit": limit, "now": now}
                ).fetchall()
            else:  # the time of the claim, now that it holds the write lock
                claims, throttle = self._claim_within(conn, owner, channel, limit, limits,
                                                      time.time())
            claimed = sorted((Claimed(*row) for row in claims), key=_claim_order)
            return Exchange(dropped, claimed, throttle, released, recorded, self._rows(
                conn, [task.id for task in claimed]) if report else None)

        if not outcomes and (channel is None or limit <= 0):
            return Exchange([], [])
        return self._write(swap)

    @staticmethod
    def _record(conn: sqlite3.Connection, outcomes: Sequence[Outcome], owner: str,
                tally: Ended) -> list[int]:
        """Apply outcomes of tasks ``owner`` still runs, counting in ``tally`` the tasks
        they ended; the ids of those it no longer runs.

        Successes, most outcomes, take a statement of their own that leaves the
        history (and, without a progress value, the progress) alone: binding and
        evaluating those values costs every row. They are counted by the channel
        their outcome names; the others, few, are recorded one by one, each counted
        by the channel and the status its statement returns (a cancel requested
        meanwhile ends it cancelled, whatever it asked for).
        """
        if not outcomes:
            return []
        done: list[tuple[Any, ...]] = []
        reported: list[tuple[Any, ...]] = []
        other: list[dict[str, Any]] = []
        succeeded: list[str | None] = []
        for o in outcomes:  # one pass: this is the hot path of every commit
            if o.decision.outcome is not None:
                other.append(_recorded(o, owner))
                continue
            succeeded.append(o.channel)
            if o.decision.progress is None:
                done.append(_recorded_done(o, owner))
            else:
                reported.append((*_recorded_done(o, owner), o.decision.progress))
        batches: list[tuple[str, Sequence[Any]]] = [
            (Q["record_done"], done), (Q["record_done_progress"], reported)]
        conn.execute("SAVEPOINT outcomes")
        recorded = sum(conn.executemany(query, rows).rowcount for query, rows in batches if rows)
        ends = [conn.execute(Q["record"], values).fetchall() for values in other]
        if recorded + sum(map(len, ends)) == len(outcomes):
            conn.execute("RELEASE outcomes")
            _count_done(conn, tally, succeeded, outcomes)
            for rows in ends:
                tally.add_rows(rows)
            return []
        # Rare: some task was recovered or deleted meanwhile. Redo one by one to tell which.
        conn.execute("ROLLBACK TO outcomes")
        conn.execute("RELEASE outcomes")
        dropped: list[int] = []
        for o in outcomes:
            if o.decision.outcome is not None:
                rows = conn.execute(Q["record"], _recorded(o, owner)).fetchall()
                tally.add_rows(rows)
                recorded = len(rows)
            elif o.decision.progress is None:
                recorded = conn.execute(Q["record_done"], _recorded_done(o, owner)).rowcount
                _count_done(conn, tally, [o.channel] if recorded else [], [o])
            else:
                recorded = conn.execute(Q["record_done_progress"], (
                    *_recorded_done(o, owner), o.decision.progress)).rowcount
                _count_done(conn, tally, [o.channel] if recorded else [], [o])
            if recorded != 1:
                dropped.append(o.task_id)
        return dropped

    def release(self, owner: str, task_ids: Sequence[int]) -> int:
        def give_back(conn: sqlite3.Connection) -> int:
            now = time.time()
            tally = Ended()
            count = 0
            for task_id in task_ids:
                rows = conn.execute(Q["release"], {"id": task_id, "owner": owner,
                                                   "now": now}).fetchall()
                count += len(rows)
                tally.add_rows(rows)  # those whose cancel was requested end cancelled
            self._settle(conn, task_ids, now, tally)
            tally.write(conn, Q, now)
            return count

        return self._write(give_back) if task_ids else 0

    def fold_finished(self, before_minute: int) -> int:
        def fold(conn: sqlite3.Connection) -> int:
            # Two statements under the write lock: no other fold comes between them.
            values = {"before": before_minute}
            conn.execute(Q["fold_finished"], values)
            return int(conn.execute(Q["forget_folded"], values).rowcount)

        return self._write(fold)

    def next_due(self, channels: Iterable[str]) -> float | None:
        def earliest(conn: sqlite3.Connection) -> float | None:
            times = [conn.execute(Q["next_due"], {"channel": name}).fetchone()[0]
                     for name in channels]
            # A time written by hand as text is never due (SQLite orders text after
            # every number), so it must not break the wake-ups of the others.
            known = [float(value) for value in times if isinstance(value, (int, float))]
            return min(known, default=None)

        return self._read(earliest)

    def has_unfinished(self, channels: Iterable[str]) -> bool:
        return self._read(lambda c: any(
            c.execute(Q["has_unfinished"], {"channel": name}).fetchone()[0]
            for name in channels
        ))

    def change_token(self) -> int:
        deadline = time.monotonic() + self._busy_timeout
        while True:
            with self._watch_lock:
                if self._watcher is None:
                    raise StoreError(f"the task store {self.location!r} is closed")
                try:
                    return int(self._watcher.execute(Q["change_token"]).fetchone()[0])
                except sqlite3.OperationalError as exc:  # in memory: a write holds a lock
                    if not _is_busy(exc) or time.monotonic() > deadline:
                        raise
            time.sleep(FIRST_PAUSE)

    def watch_added(self, callback: Callable[[str], None]) -> Callable[[], None]:
        return _no_more_calls  # a commit's log write does not say what it was

    def watch(self, callback: Callable[[], None],
              wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
        wal_watch = self._wal_watching()
        return _no_more_calls if wal_watch is None else wal_watch.callbacks.add(callback,
                                                                                wanted)

    def _wal_watching(self) -> WalWatch | None:
        """The watch on the file's log (see ``walwatch``), started on first use; None in
        memory (this process's own signals say everything) or where it cannot run."""
        with self._wal_lock:
            if self._closed:
                raise StoreError(f"the task store {self.location!r} is closed")
            if self._wal_watch is None and not self._memory and not self._wal_refused:
                seen = _Version(self._connect(patient=True), self._same_file)
                wal_watch = WalWatch(self.location, seen.changed)
                if wal_watch.start():
                    self._wal_watch, self._wal_seen = wal_watch, seen
                else:
                    self._wal_refused = True
                    seen.close()
            return self._wal_watch

    # -- browsing and acting on one task (see browse) ------
    def _status_filter(self, conn: Any, values: dict[str, Any]) -> str:
        # SQLite keeps no statistics: a look at the status's index chooses (see crowded).
        probe = {**values, "probe": CROWDED}
        if values["channel"] is not None:
            crowded = conn.execute(Q["crowded"], probe).fetchone()[0]
            return "recent_status_by_id" if crowded else "recent_status"
        crowded = conn.execute(Q["crowded_anywhere"], probe).fetchone()[0]
        return "recent_status_by_id" if crowded else "recent_status_indexed"


@functools.lru_cache(maxsize=8)
def _insert_statement(rows: int, named: bool) -> str:
    """The ``add`` (or, ``named``, ``add_ids``) statement for ``rows`` tasks; made once,
    not again for every batch of 500 tasks."""
    name, first_args = ("add_ids", 9) if named else ("add", 8)
    values = (Q[f"{name}_row"].replace("{place}", str(row))
              .replace("{args}", str(first_args + row)) for row in range(rows))
    return Q[name].replace("{rows}", ", ".join(values))


def _recorded(outcome: Outcome, owner: str) -> dict[str, Any]:
    decision = outcome.decision
    return {
        "id": outcome.task_id, "owner": owner, "status": decision.status.value,
        "retries": decision.retries, "run_at": decision.run_at, "result": decision.result,
        "error": decision.error, "finished_at": decision.finished_at,
        "outcome": decision.outcome, "note": decision.note, "ended_at": decision.ended_at,
        "progress": decision.progress,
    }


def _count_done(conn: sqlite3.Connection, tally: Ended, channels: list[str | None],
                outcomes: Sequence[Outcome]) -> None:
    """Count the successes just recorded by the channels their outcomes name
    (``channels``, in the order of the successes among ``outcomes``; one channel, most
    often); those that name none, by the channels stored."""
    if not channels:
        return
    first = channels[0]
    if first is not None and channels.count(first) == len(channels):
        tally.add(first, "done", len(channels))
        return
    for channel, count in Counter(channels).items():
        if channel is not None:
            tally.add(channel, "done", count)
    unnamed = [o.task_id for o in outcomes if o.decision.outcome is None and o.channel is None]
    if unnamed:
        for channel, count in conn.execute(Q["channels_of"], {"ids": json.dumps(unnamed)}):
            tally.add(channel, "done", count)


def _recorded_done(outcome: Outcome, owner: str) -> tuple[Any, ...]:
    """The values of ``record_done``, in its order."""
    decision = outcome.decision
    return outcome.task_id, owner, decision.retries, decision.result, decision.finished_at


def _ended(outcomes: Sequence[Outcome], dropped: list[int]) -> list[int]:
    """The tasks whose outcomes were recorded (any of them may have ended)."""
    if not dropped:
        return [outcome.task_id for outcome in outcomes]
    skipped = set(dropped)
    return [outcome.task_id for outcome in outcomes if outcome.task_id not in skipped]


class _Version:
    """``PRAGMA data_version`` on a connection of its own: whether another connection
    committed since the last look. A file deleted or replaced since it was opened is
    not looked at (its connection would read the new file's shared index as its own):
    no change, ever after."""

    def __init__(self, conn: sqlite3.Connection, same_file: Callable[[], bool]) -> None:
        self._conn = conn
        self._same_file = same_file
        self._last = self._now()

    def _now(self) -> int:
        return int(self._conn.execute(Q["change_token"]).fetchone()[0])

    def changed(self) -> bool:
        if not self._same_file():
            return False
        now = self._now()
        changed, self._last = now != self._last, now
        return changed

    def close(self) -> None:
        self._conn.close()


def _no_more_calls() -> None:
    """What stops the calls that ``watch`` never makes."""


def _claim_order(task: Claimed) -> tuple[int, int]:
    return -task.priority, task.id


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _is_full(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` is SQLite's "database or disk is full" (its result code 13)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11 and later
    return code == 13 if code is not None else "full" in str(exc).lower()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _checked_path(path: str) -> str:
    """Refuse locations that cannot hold a shared task store, naming the path and the way out."""
    if path == MEMORY:
        return path
    if path == "" or path.startswith("file:"):
        raise ValueError(
            f"store_path {path!r} is not a file: give a file path, or ':memory:' for a "
            "store private to this process"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"cannot create the task store {path!r}: directory {directory!r} does not exist"
        )
    if os.path.isdir(path):
        raise StoreError(f"cannot use {path!r} as a task store: it is a directory")
    return path
