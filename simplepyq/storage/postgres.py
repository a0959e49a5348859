"""The PostgreSQL backend: a connection pool, migrations, wake-ups and the store contract.

Many processes on many hosts share one database. Claims use ``FOR UPDATE SKIP
LOCKED``, so claimers never wait for each other and no task goes to two of them.
Every write that others may be waiting for ends with a ``NOTIFY``; one listening
connection per store turns those into wake-ups, so work enqueued on one host
starts on another within milliseconds, and polling is only the fallback for
while that connection is down.

Needs the ``postgres`` extra (psycopg 3 and psycopg_pool).
"""

from __future__ import annotations

import logging
import re
import select
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from simplepyq.callbacks import Callbacks
from simplepyq.errors import StoreError, UnknownChannelError
from simplepyq.limits import Limits
from simplepyq.storage import dependents, queries
from simplepyq.storage.base import Claimed, CommitUnknownError, Exchange, Outcome
from simplepyq.storage.browse import BrowseStore
from simplepyq.storage.finished import Ended, minute_of
from simplepyq.task import Status, TaskId

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql
    from psycopg.pq import TransactionStatus
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "a postgresql:// task store needs psycopg 3: pip install 'simplepyq[postgres]'"
    ) from exc

log = logging.getLogger("simplepyq")

SCHEMA_VERSION = 7
DEFAULT_SCHEMA = "simplepyq"
MAX_CONNECTIONS = 8
"""Connections a store may open besides its listener (workers share them)."""
ADD_CHUNK = 10_000
"""Tasks per insert statement in ``add``."""
IDLE_FLOOR = 10.0
"""Seconds at least that a transaction may sit idle before the server ends it."""
LISTEN_TIMEOUT = 1.0
"""Seconds the listener waits for a notification before checking whether to stop."""
RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure,
             pg_errors.UniqueViolation)
"""Errors after which PostgreSQL has rolled the whole transaction back: safe to redo. A
unique violation is a key taken by a transaction that committed while this one ran
(``requeue_failed``): redone, the statement sees it and leaves the key alone."""
KEY_TRIES = 100
"""How many times an enqueue with a key tries again when the task holding the key
finished between its insert and its look for the holder."""
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

Q = queries.load("postgres.sql")
T = TypeVar("T")
Connection = psycopg.Connection[Any]


class PostgresStore(BrowseStore):
    """Tasks in one PostgreSQL schema; safe to share between threads, processes and hosts.

    The URL is libpq's, plus an optional ``schema`` parameter naming the schema
    that holds the store's tables (``simplepyq`` by default), created if missing.
    """

    Q = Q  # its statements, for the methods of QueryStore

    def __init__(self, url: str, busy_timeout: float = 30.0) -> None:
        self._conninfo, self.schema = _split_url(url)
        self.location = redacted(url)
        self._busy_timeout = busy_timeout
        self._topic = f"simplepyq.{self.schema}"
        self._origin = uuid.uuid4().hex  # names this store in its enqueues' notifications
        self._closed = False
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        try:
            with psycopg.connect(self._conninfo, connect_timeout=_connect_timeout(busy_timeout),
                                 application_name="simplepyq") as conn:
                self._migrate(conn)
        except pg_errors.LockNotAvailable as exc:
            raise StoreError(f"cannot open the task store {self.location!r}: another process "
                             "held its schema locked (migrating it?) for more than "
                             f"busy_timeout={busy_timeout}s") from exc
        except psycopg.Error as exc:
            raise StoreError(f"cannot use {self.location!r} as a task store: {exc}") from exc
        self._pool = ConnectionPool(
            self._conninfo, min_size=1, max_size=MAX_CONNECTIONS, open=False,
            timeout=busy_timeout, configure=self._configure, name="simplepyq",
            kwargs={"application_name": "simplepyq",
                    "connect_timeout": _connect_timeout(busy_timeout)},
        )
        try:
            self._pool.open(wait=True, timeout=busy_timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to the task store {self.location!r} "
                             f"within busy_timeout={busy_timeout}s") from exc

    # -- connections ---------------------------------------
    def _configure(self, conn: Connection) -> None:
        """Point a new connection at the store's schema, and bound how long it waits."""
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        # psycopg prepares statements run often; a prepared statement's generic plan
        # cannot see which owner or channel it is for, and turns the index lookups of
        # recording and claiming into table scans (ten times slower on a deep queue).
        conn.execute("SET plan_cache_mode = force_custom_plan")
        # Another writer (or a process migrating the schema) holds its locks until it
        # commits: wait for it no longer than busy_timeout.
        conn.execute(sql.SQL("SET lock_timeout = {}").format(_milliseconds(self._busy_timeout)))
        # No transaction of ours waits on anything but the server, so one left open is
        # a frozen process (a paused VM, say): end it rather than let its row locks
        # hold up the recovery of everyone else's work.
        conn.execute(sql.SQL("SET idle_in_transaction_session_timeout = {}").format(
            _milliseconds(max(self._busy_timeout, IDLE_FLOOR))))
        conn.commit()

    @staticmethod
    def _ids(task_ids: Sequence[int]) -> list[int]:
        return list(task_ids)

    def _read(self, work: Callable[[Connection], T]) -> T:
        return self._transaction(work, notify=False)

    def _write(self, work: Callable[[Connection], T], notify: bool = True) -> T:
        return self._transaction(work, notify)

    def _transaction(self, work: Callable[[Connection], T], notify: bool,
                     begins: bool = False) -> T:
        """Run ``work`` in one transaction, redoing it if PostgreSQL rolled it back for a
        deadlock, or if its connection had died before it (the server restarted);
        ``notify`` wakes the listening processes when it commits.

        With ``begins``, ``work`` opens the transaction itself, BEGIN first in its
        pipeline: psycopg's own BEGIN would take a round trip of its own (the
        connection is in autocommit meanwhile, and this ends the block it opened).
        """
        if self._closed:
            raise StoreError(f"the task store {self.location!r} is closed")
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                with self._pool.connection() as conn:
                    conn.autocommit = begins
                    try:
                        outcome = work(conn)
                        if notify:
                            conn.execute(Q["notify"], {"topic": self._topic})
                    except BaseException as exc:
                        if begins:
                            _roll_back(conn)
                        # Nothing was committed yet: safe to redo on a fresh connection
                        # (the pool drops this one). A failed commit is not redone.
                        if not isinstance(exc, psycopg.OperationalError) or \
                                not conn.broken or time.monotonic() > deadline:
                            raise
                        raise _ConnectionLost from exc
                    self._commit(conn, begins)
                    return outcome
            except _ConnectionLost as lost:
                log.info("store %s: connection lost (%s); retrying", self.location,
                         lost.__cause__)
            except RETRYABLE as exc:
                if time.monotonic() > deadline:
                    raise self._failed(exc) from exc
                log.debug("store %s: %s; retrying", self.location, exc)
            except (pg_errors.LockNotAvailable, PoolTimeout, psycopg.Error) as exc:
                raise self._refused(exc) from exc

    def _refused(self, exc: Exception) -> StoreError:
        """What to raise for an error that redoing the transaction would not cure."""
        if isinstance(exc, pg_errors.LockNotAvailable):
            return StoreError(f"the task store {self.location!r} stayed locked by another "
                              f"connection for more than busy_timeout={self._busy_timeout}s")
        if isinstance(exc, PoolTimeout):
            return StoreError(f"no connection to the task store {self.location!r} came free "
                              f"within busy_timeout={self._busy_timeout}s")
        return self._failed(exc)

    def _alone(self, statement: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Run one statement that commits on its own, in one round trip; its first row.

        A connection with something to read before anything was sent (the server
        closed it, say) is not used for that: the statement runs as a transaction
        instead, redone on a fresh connection if need be, as it does after a deadlock.
        Lost while the statement ran, it may have committed or not:
        ``CommitUnknownError``.
        """
        if self._closed:
            raise StoreError(f"the task store {self.location!r} is closed")
        try:
            with self._pool.connection() as conn:
                if not select.select([conn.fileno()], [], [], 0)[0]:
                    return self._autocommitted(conn, statement, params)
        except RETRYABLE:
            pass
        except (pg_errors.LockNotAvailable, PoolTimeout, psycopg.Error) as exc:
            raise self._refused(exc) from exc
        return self._transaction(lambda c: c.execute(statement, params).fetchone(),
                                 notify=False)

    def _autocommitted(self, conn: Connection, statement: str,
                       params: dict[str, Any]) -> tuple[Any, ...] | None:
        conn.autocommit = True
        try:
            return conn.execute(statement, params).fetchone()
        except psycopg.OperationalError as exc:
            if not conn.broken:
                raise
            raise CommitUnknownError(
                f"the connection to the task store {self.location!r} was lost while a "
                f"statement ran ({exc}): it may have been committed or not") from exc
        finally:
            if not conn.broken:
                conn.autocommit = False

    def _commit(self, conn: Connection, begun: bool = False) -> None:
        """Commit (a block the work ``begun`` itself: see ``_transaction``), telling a
        commit that failed from one whose answer was lost.

        When the connection breaks after COMMIT was sent, the server may have
        committed or not: redoing the work could do it twice, and calling it failed
        could make the caller redo it, so ``CommitUnknownError`` says exactly that.
        """
        try:
            if begun:
                try:
                    conn.execute("COMMIT")
                finally:
                    _roll_back(conn)  # (after a COMMIT that failed; else only autocommit)
            else:
                conn.commit()
        except psycopg.OperationalError as exc:
            if not conn.broken:
                raise
            raise CommitUnknownError(
                f"the connection to the task store {self.location!r} was lost while it "
                f"committed ({exc}): the transaction may have been committed or not"
            ) from exc

    def _failed(self, exc: Exception) -> StoreError:
        return StoreError(f"the task store {self.location!r} failed: {exc}")

    def close(self) -> None:
        self._closed = True
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop(self._conninfo)
        self._pool.close()

    # -- schema --------------------------------------------
    def _migrate(self, conn: Connection) -> None:
        """Create the schema, or upgrade one made by an older version, once per database."""
        self._configure(conn)
        if self._version(conn) == SCHEMA_VERSION:
            return
        with conn.transaction():
            conn.execute(Q["lock_schema"], {"schema": self.schema})
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(self.schema)))
            version = self._version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.location!r} was written by a newer simplepyq (schema {version}); "
                    "upgrade simplepyq to open it"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                _run_script(conn, Q[f"migrate_{step}"], {})
            _run_script(conn, Q["set_version"], {"version": SCHEMA_VERSION})
        conn.commit()

    def _version(self, conn: Connection) -> int:
        """The schema version of the store: 0 before its tables exist."""
        with conn.transaction():
            found = conn.execute(Q["version_table"]).fetchone()
            if found is None or found[0] is None:
                return 0
            row = conn.execute(Q["schema_version"]).fetchone()
        return 0 if row is None else int(row[0])

    # -- wake-ups ------------------------------------------
    def change_token(self) -> int:
        return self._listening().token()

    def watch(self, callback: Callable[[], None],
              wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
        return self._listening().callbacks.add(callback, wanted)

    def watch_added(self, callback: Callable[[str], None]) -> Callable[[], None]:
        return self._listening().added.add(callback)

    def _listening(self) -> _Listener:
        """The store's listener, started on first use: producers that never wait need none."""
        with self._listener_lock:
            if self._closed:
                raise StoreError(f"the task store {self.location!r} is closed")
            if self._listener is None:
                self._listener = _Listener(self._conninfo, self._topic, self.location,
                                           self._origin)
            return self._listener

    # -- the task life cycle -------------------------------
    def add(self, channel: str, payloads: Sequence[bytes], retries: int,
            run_at: float | None, priority: int, now: float, register: bool,
            time_limit: float | None = None,
            keys: Sequence[str | None] | None = None) -> list[TaskId]:
        status = Status.DELAYED.value if run_at is not None and run_at > now else "pending"
        shared = {"channel": channel, "status": status, "retries": retries, "run_at": run_at,
                  "priority": priority, "now": now, "time_limit": time_limit}
        keyed = keys is not None and any(key is not None for key in keys)

        def insert(conn: Connection) -> list[TaskId]:
            if not register and conn.execute(Q["channel_exists"],
                                             {"name": channel}).fetchone() is None:
                known = {row[0] for row in conn.execute(Q["known_channels"])}
                raise UnknownChannelError(channel, known)
            if keyed:
                assert keys is not None
                if register:
                    conn.execute(Q["register_channel"], {"name": channel, "now": now})
                conn.execute(Q["lock_keys"], {"channel": channel, "keys": [
                    key for key in keys if key is not None]})
                ids = [self._add_one(conn, shared, payload, key)
                       for payload, key in zip(payloads, keys, strict=True)]
                conn.execute(Q["notify"], {"topic": self._topic})
                return ids
            with conn.pipeline():  # one round trip for the statements, one to commit
                if register:
                    conn.execute(Q["register_channel"], {"name": channel, "now": now})
                inserts = [conn.execute(Q["add"], {**shared, "payloads": list(
                    payloads[start:start + ADD_CHUNK])})
                    for start in range(0, len(payloads), ADD_CHUNK)]
                conn.execute(Q["notify"], {"topic": self._topic})
            # Identity values are drawn in row order, whatever order RETURNING uses.
            return list(map(TaskId, sorted(row[0] for cursor in inserts
                                           for row in cursor.fetchall())))

        if len(payloads) == 1 and not keyed:  # the one-call enqueue: one statement
            row = self._alone(Q["add_one"], {**shared, "args": payloads[0],
                                             "topic": self._topic, "origin": self._origin})
            if row is not None:
                return [TaskId(row[0])]
        return self._write(insert, notify=False)

    @staticmethod
    def _add_one(conn: Connection, shared: dict[str, Any], payload: bytes,
                 key: str | None) -> TaskId:
        """Insert one task, or find the unfinished one that holds its key."""
        if key is None:
            row = conn.execute(Q["add"], {**shared, "payloads": [payload]}).fetchone()
            assert row is not None  # an insert returns its id
            return TaskId(row[0])
        for _ in range(KEY_TRIES):
            row = conn.execute(Q["add_keyed"], {**shared, "args": payload, "key": key}).fetchone()
            if row is not None:
                return TaskId(row[0])
            holder = conn.execute(Q["key_holder"], {"channel": shared["channel"],
                                                    "key": key}).fetchone()
            if holder is not None:
                return TaskId.held(holder[0])
        raise StoreError(f"key {key!r} of channel {shared['channel']!r} kept changing hands "
                         f"({KEY_TRIES} tries): no task was enqueued")

    def exchange(self, owner: str, outcomes: Sequence[Outcome], channel: str | None,
                 limit: int, now: float, report: bool = False) -> Exchange:
        claiming = channel is not None and limit > 0

        def swap(conn: Connection) -> Exchange:
            # One round trip for the whole transaction's statements, then one to commit.
            with conn.pipeline():
                conn.execute("BEGIN")
                if claiming:  # first: the owner row is locked before any task row
                    held = conn.execute(Q["hold_owner"], {"owner": owner})
                    limited = conn.execute(Q["channel_limits"], {"channel": channel})
                if not outcomes:
                    conn.execute(Q["claim_without_flush"])
                recorded = [conn.execute(Q[name], values)
                            for name, values in _recorded(outcomes, owner, minute_of(now))]
                reported = conn.execute(Q["rows_of"], {  # as recorded, before a claim
                    "ids": [outcome.task_id for outcome in outcomes]}) \
                    if report and outcomes else None
                if claiming:
                    conn.execute(Q["promote_due"], {"channel": channel, "now": now})
                    claims = conn.execute(Q["claim"], {"channel": channel, "owner": owner,
                                                       "limit": limit, "now": now})
                if outcomes:  # claims alone change nothing that anyone waits for
                    # A statement of its own, after the one that ended the tasks: see
                    # finished_upstreams.
                    ended = conn.execute(Q["finished_upstreams"], {
                        "ids": [outcome.task_id for outcome in outcomes]})
                    conn.execute(Q["notify"], {"topic": self._topic})
            tally = Ended()  # what the outcomes' ends cancel down their workflows
            released = frozenset(dependents.tell(conn, Q, ended.fetchall(), now, tally)) \
                if outcomes else frozenset()
            if tally:
                tally.write(conn, Q, now)
            done = {row[0] for cursor in recorded for row in cursor.fetchall()}
            dropped = [outcome.task_id for outcome in outcomes if outcome.task_id not in done]
            rows = None if not report else {} if reported is None else {
                int(row[0]): tuple(row) for row in reported.fetchall() if row[0] in done}
            if not claiming:
                return Exchange(dropped, [], released=released, recorded_rows=rows)
            self._renew_in_claim(conn, owner, held.fetchone())
            claims_taken, throttle = claims.fetchall(), None
            if channel in released and len(claims_taken) < limit:
                # The outcomes released tasks of this channel after its claim ran: the
                # next step of a chain starts now, not after another commit.
                claims_taken += conn.execute(Q["claim"], {
                    "channel": channel, "owner": owner, "limit": limit - len(claims_taken),
                    "now": now}).fetchall()
            stored = limited.fetchone()
            if not claims_taken and channel is not None and stored is not None and (
                    stored[0] is not None or stored[2] is not None):
                # claim took nothing: the channel has limits, or had when it ran (rows
                # it took mean a limit lifted since it was read: they are handed over)
                locked = conn.execute(Q["lock_limits"], {"channel": channel}).fetchone()
                if locked is not None:
                    claims_taken, throttle = self._claim_within(
                        conn, owner, channel, limit, Limits.from_stored(*locked[:3]),
                        float(locked[3]))
            claimed = sorted((Claimed(*row) for row in claims_taken), key=_claim_order)
            return Exchange(dropped, claimed, throttle, released, rows, self._rows(
                conn, [task.id for task in claimed]) if report else None)

        if not outcomes and not claiming:
            return Exchange([], [])
        return self._transaction(swap, notify=False, begins=True)

    def release(self, owner: str, task_ids: Sequence[int]) -> int:
        if not task_ids:
            return 0
        now = time.time()
        values = {"ids": list(task_ids), "owner": owner, "now": now}

        def give_back(conn: Connection) -> int:
            rows = conn.execute(Q["release"], values).fetchall()
            tally = Ended()
            tally.add_rows(rows)  # those whose cancel was requested end cancelled
            self._settle(conn, task_ids, now, tally)
            tally.write(conn, Q, now)
            return len(rows)

        return self._write(give_back)

    def next_due(self, channels: Iterable[str]) -> float | None:
        names = list(channels)
        row = self._read(lambda c: c.execute(Q["next_due"], {"channels": names}).fetchone())
        return None if row is None or row[0] is None else float(row[0])

    def has_unfinished(self, channels: Iterable[str]) -> bool:
        names = list(channels)
        row = self._read(lambda c: c.execute(Q["has_unfinished"],
                                             {"channels": names}).fetchone())
        return row is not None and bool(row[0])

    # -- finished-task counters (see storage/finished.py) --
    def fold_finished(self, before_minute: int) -> int:
        row = self._write(lambda c: c.execute(Q["fold_finished"], {"before": before_minute})
                          .fetchone(), notify=False)
        return 0 if row is None else int(row[0])

    # -- browsing and acting on one task (see browse) ------
    def _runnable_now(self, conn: Connection, channel: str) -> None:
        conn.execute(Q["note_runnable"], {"topic": self._topic, "origin": self._origin,
                                          "channel": channel})


class _ConnectionLost(Exception):
    """A transaction's connection died before it committed: redo it on another."""


class _Listener:
    """One connection that LISTENs for the store's notifications and counts them.

    ``token()`` is that count. While the connection is down (the server restarted,
    say) every call returns a new value instead, so callers fall back to polling
    the store, and it reconnects in the background. A notification that names a
    channel (a task of it can run) goes to ``added``, unless it came from this
    store (``origin``), whose enqueue woke its own workers already; any other goes
    to ``callbacks``.
    """

    def __init__(self, conninfo: str, topic: str, location: str, origin: str) -> None:
        self._conninfo = conninfo
        self._topic = topic
        self._location = location
        self._origin = origin
        self._count = 0
        self._connected = False
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.callbacks: Callbacks[[]] = Callbacks()
        self.added: Callbacks[[str]] = Callbacks()
        self._thread = threading.Thread(target=self._listen, name="simplepyq-listener",
                                        daemon=True)
        self._thread.start()

    def token(self) -> int:
        with self._lock:
            if not self._connected:
                self._count += 1
            return self._count

    def stop(self, conninfo: str) -> None:
        """End the listening thread; a notification of our own wakes it at once."""
        self._stopping.set()
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=2) as conn:
                conn.execute(Q["notify"], {"topic": self._topic})
        except psycopg.Error:
            pass  # it wakes within LISTEN_TIMEOUT anyway
        self._thread.join(LISTEN_TIMEOUT * 2)

    def _listen(self) -> None:
        pause = 0.05
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5,
                                     application_name="simplepyq listener") as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._topic)))
                    self._changed(connected=True)  # whatever happened while it was down
                    pause = 0.05
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=LISTEN_TIMEOUT):
                            self._changed(connected=True, added=notice.payload)
                            if self._stopping.is_set():
                                break
            except psycopg.Error as exc:
                self._changed(connected=False)
                log.warning("listening for changes in %s failed (%s); polling until it "
                            "reconnects", self._location, exc)
                self._stopping.wait(pause)
                pause = min(pause * 2, 5.0)
        with self._lock:
            self._connected = False

    def _changed(self, connected: bool, added: str = "") -> None:
        """Count a change; ``added`` is a notification's payload: ``ORIGIN CHANNEL``
        for a task that can run, else empty."""
        with self._lock:
            self._connected = connected
            self._count += 1
        origin, _, channel = added.partition(" ")
        if channel:
            if origin != self._origin:
                self.added.fire(channel)
        elif self.callbacks.wanted():
            self.callbacks.fire()


def _roll_back(conn: Connection) -> None:
    """End a block that a transaction's work opened itself (see ``_transaction``), if
    the server still has it open, and leave autocommit."""
    if conn.broken:
        return  # the pool drops it
    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.execute("ROLLBACK")
    conn.autocommit = False


def _recorded(outcomes: Sequence[Outcome], owner: str,
              minute: int) -> list[tuple[str, dict[str, Any]]]:
    """The statements that record ``outcomes``, with their values (one array per column,
    one item per outcome): ``record_done`` for the runs that succeeded and reported no
    progress (most: fewer columns to send and to evaluate), ``record`` for the others.
    Each counts the tasks it ended in the counters of ``minute``."""
    plain: list[Outcome] = []
    other: list[Outcome] = []
    for outcome in outcomes:  # (a run without an outcome succeeded, as in sqlite.py)
        succeeded = outcome.decision.outcome is None and outcome.decision.progress is None
        (plain if succeeded else other).append(outcome)
    statements: list[tuple[str, dict[str, Any]]] = []
    if plain:
        statements.append(("record_done", {
            "owner": owner, "minute": minute, "ids": [o.task_id for o in plain],
            "retries": [o.decision.retries for o in plain],
            "results": [o.decision.result for o in plain],
            "finished": [o.decision.finished_at for o in plain]}))
    if other:
        decisions = [outcome.decision for outcome in other]
        statements.append(("record", {
            "owner": owner, "minute": minute, "ids": [outcome.task_id for outcome in other],
            "statuses": [d.status.value for d in decisions],
            "retries": [d.retries for d in decisions],
            "run_ats": [d.run_at for d in decisions],
            "results": [d.result for d in decisions],
            "errors": [d.error for d in decisions],
            "finished": [d.finished_at for d in decisions],
            "outcomes": [d.outcome for d in decisions],
            "notes": [d.note for d in decisions],
            "ended": [d.ended_at for d in decisions],
            "progress": [d.progress for d in decisions],
        }))
    return statements


def _run_script(conn: Connection, script: str, values: dict[str, Any]) -> None:
    for statement in _statements(script):
        conn.execute(statement, values or None)


def _statements(script: str) -> list[str]:
    """The statements of a script, split at the semicolons that are not in a
    dollar-quoted body (a function's, whose own statements end with semicolons)."""
    statements: list[str] = []
    pieces: list[str] = []
    for piece in script.split(";"):
        pieces.append(piece)
        statement = ";".join(pieces)
        if statement.count("$$") % 2 == 0:  # not inside $$ ... $$
            if statement.strip():
                statements.append(statement)
            pieces = []
    return statements


def _claim_order(task: Claimed) -> tuple[int, int]:
    return -task.priority, task.id


def _milliseconds(seconds: float) -> sql.Literal:
    """A duration for a SET statement; at least 1 ms, since 0 would mean no limit."""
    return sql.Literal(f"{max(1, int(seconds * 1000))}ms")


def _connect_timeout(busy_timeout: float) -> int:
    return max(2, min(int(busy_timeout), 30))


def _split_url(url: str) -> tuple[str, str]:
    """libpq's URL without our ``schema`` parameter, and that schema (checked)."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    kept = []
    for key, value in params:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"schema {schema!r} in the store URL is not a plain PostgreSQL name: use "
            "letters, digits and underscores, not starting with a digit, at most 63"
        )
    return urlunsplit(parts._replace(query=urlencode(kept))), schema


def redacted(url: str) -> str:
    """The URL without its password, fit for messages and logs: libpq takes one in the
    user part (``user:secret@host``) or as a ``password`` parameter, and both are hidden."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    params = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in params):
        hidden = [(key, "***" if key == "password" else value) for key, value in params]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return urlunsplit(parts)


def store_exists(url: str, busy_timeout: float = 30.0) -> bool:
    """Whether the schema ``url`` names holds a task store; creates nothing, where opening
    the store would create it. Raises ``StoreError`` if the database cannot be reached."""
    conninfo, schema = _split_url(url)
    try:
        with psycopg.connect(conninfo, connect_timeout=_connect_timeout(busy_timeout),
                             application_name="simplepyq") as conn:
            return conn.execute(Q["store_exists"], {"schema": schema}).fetchone() is not None
    except psycopg.Error as exc:
        raise StoreError(f"cannot reach the task store {redacted(url)!r}: {exc}") from exc
