"""The SQLite backend: schema, WAL, locking, indexes and the change counter.

Driven through the public API; raw ``sqlite3`` connections inspect the file and
play the part of other processes. Those tests are marked ``sqlite_only``
(tests/test_storage_postgres.py holds PostgreSQL's own); the few about opening a
store hold for every backend, and run on both.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from contextlib import closing

import pytest

from simplepyq import SimplePyQ, StoreError
from simplepyq.storage.sqlite import FIRST_PAUSE, SCHEMA_VERSION, Q
from tests.backends import is_postgres, raw_sql, store_exists
from tests.support import check_task_control_after_upgrade, tasks_to_upgrade, wait_until

PG_CATALOG = """
    SELECT 'table', table_name::text, NULL FROM information_schema.tables
    WHERE table_schema = current_schema()
    UNION ALL
    SELECT 'index', indexname::text, indexdef FROM pg_indexes
    WHERE schemaname = current_schema()
    ORDER BY 1, 2
"""
"""The tables and indexes of a PostgreSQL store's schema, laid out as ``_schema``'s rows."""


def _schema(store_path: str) -> list[tuple[str, str, str | None]]:
    """Every table and index of the store, with its definition."""
    if is_postgres(store_path):
        return [(kind, name, sql) for kind, name, sql in raw_sql(store_path, PG_CATALOG)]
    with closing(sqlite3.connect(store_path)) as conn:
        return conn.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()


def _version(store_path: str) -> int:
    """The schema version the store records."""
    if is_postgres(store_path):
        ((version,),) = raw_sql(store_path, "SELECT version FROM simplepyq_schema")
    else:
        ((version,),) = raw_sql(store_path, "PRAGMA user_version")
    return int(version)


@pytest.mark.sqlite_only
def test_new_store_is_in_wal_mode_with_schema_version_8(queue: SimplePyQ, store_path: str) -> None:
    with closing(sqlite3.connect(store_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (8,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert SCHEMA_VERSION == 8
    schema = {name: sql for _, name, sql in _schema(store_path)}
    assert {"tasks", "simplepyq_channels", "simplepyq_owners", "simplepyq_starts",
            "simplepyq_flows", "simplepyq_deps", "simplepyq_deps_unsettled",
            "simplepyq_schedules", "simplepyq_ticks", "simplepyq_high", "simplepyq_high_kept",
            "tasks_claim", "tasks_due", "tasks_running", "tasks_failed", "tasks_key",
            "tasks_keyed", "tasks_cancelled_blocked", "simplepyq_finished",
            "simplepyq_done_removed"} <= set(schema)
    assert "tasks_channel_status" not in schema  # an index on every row costs every write
    # No sqlite_sequence row to rewrite at every insert (see next_id in sqlite.sql).
    assert "AUTOINCREMENT" not in (schema["tasks"] or "")
    assert "sqlite_sequence" not in schema


@pytest.mark.sqlite_only
def test_schema_1_store_is_upgraded_without_touching_its_tasks_or_channels(
    store_path: str,
) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("kept", print)
        task_id = q.enqueue("kept", "payload")
    with closing(sqlite3.connect(store_path, isolation_level=None)) as conn:
        # What schema 1 had: an index on (channel, status) and running tasks by owner.
        conn.execute("DROP INDEX tasks_running")
        conn.execute("CREATE INDEX tasks_running ON tasks (owner) WHERE status = 'running'")
        conn.execute("CREATE INDEX tasks_channel_status ON tasks (channel, status)")
        conn.execute("INSERT INTO tasks (channel, args) VALUES ('stray', x'c0')")
        conn.execute("PRAGMA user_version = 1")

    with SimplePyQ(store_path) as q:
        assert q.get_task(task_id).args == "payload"  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="unknown channel 'stray'"):
            q.enqueue("stray", 1)  # a hand-made row does not register its channel

    schema = {name: sql for _, name, sql in _schema(store_path)}
    assert "tasks_channel_status" not in schema
    assert "(channel, owner)" in (schema["tasks_running"] or "")
    with closing(sqlite3.connect(store_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


SCHEMA_4_TASK_COLUMNS = ("key", "time_limit", "cancel_requested", "progress")
SCHEMA_4_CHANNEL_COLUMNS = ("rate_count", "rate_period", "max_running")


def _back_to_schema_3(conn: sqlite3.Connection) -> None:
    """Undo what schema 4 added, leaving the file as simplepyq at schema 3 made it."""
    conn.execute("DROP INDEX tasks_key")  # (a column in an index cannot be dropped)
    conn.execute("DROP INDEX tasks_keyed")
    conn.execute("DROP TABLE simplepyq_starts")
    for column in SCHEMA_4_TASK_COLUMNS:
        conn.execute(f"ALTER TABLE tasks DROP COLUMN {column}")
    for column in SCHEMA_4_CHANNEL_COLUMNS:
        conn.execute(f"ALTER TABLE simplepyq_channels DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 3")


@pytest.mark.sqlite_only
def test_schema_2_store_gains_recoveries_history_and_owner_channels_keeping_its_tasks(
    store_path: str,
) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("kept", lambda args: args * 2)
        task_id = q.enqueue("kept", 21)
    with closing(sqlite3.connect(store_path, isolation_level=None)) as conn:
        _back_to_schema_3(conn)
        for table, column in [("tasks", "recoveries"), ("tasks", "history"),
                              ("tasks", "alone"), ("simplepyq_owners", "channels")]:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("PRAGMA user_version = 2")

    with SimplePyQ(store_path) as q:
        q.add_channel("kept", lambda args: args * 2)
        q.run_until_complete(timeout=30)
        assert q.get_task(task_id).result == 42  # type: ignore[union-attr]
    with closing(sqlite3.connect(store_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        owner_columns = {row[1] for row in conn.execute("PRAGMA table_info(simplepyq_owners)")}
        task_columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    assert "channels" in owner_columns
    assert {"recoveries", "history", "alone", *SCHEMA_4_TASK_COLUMNS} <= task_columns


@pytest.mark.sqlite_only
def test_schema_3_store_gains_keys_time_limits_cancels_progress_and_limits_keeping_its_tasks(
    store_path: str,
) -> None:
    pending, failed = tasks_to_upgrade(store_path)
    fresh = {(kind, name, sql) for kind, name, sql in _schema(store_path) if kind == "index"}
    with closing(sqlite3.connect(store_path, isolation_level=None)) as conn:
        _back_to_schema_3(conn)
        assert {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}.isdisjoint(
            SCHEMA_4_TASK_COLUMNS)

    check_task_control_after_upgrade(store_path, pending, failed)
    with closing(sqlite3.connect(store_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        task_columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        channel_columns = {row[1] for row in conn.execute("PRAGMA table_info("
                                                          "simplepyq_channels)")}
    assert set(SCHEMA_4_TASK_COLUMNS) <= task_columns
    assert set(SCHEMA_4_CHANNEL_COLUMNS) <= channel_columns
    upgraded = {(kind, name, sql) for kind, name, sql in _schema(store_path) if kind == "index"}
    assert upgraded == fresh  # the same indexes as a new store's, defined alike


def test_opening_an_existing_store_twice_changes_nothing_and_keeps_its_tasks(
    store_path: str,
) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", print)
        task_id = q.enqueue("c", {"keep": True})
    schema, version = _schema(store_path), _version(store_path)
    assert version >= 1

    with SimplePyQ(store_path) as again, SimplePyQ(store_path) as third:
        assert again.get_task(task_id).args == {"keep": True}  # type: ignore[union-attr]
        assert third.stats()["c"]["pending"] == 1
        assert again.enqueue("c", "from again") == task_id + 1

    assert _schema(store_path) == schema
    assert _version(store_path) == version
    assert raw_sql(store_path, "SELECT COUNT(*) FROM tasks") == [(2,)]


@pytest.mark.sqlite_only
def test_writer_waits_for_a_lock_held_less_than_busy_timeout(store_path: str) -> None:
    with SimplePyQ(store_path, busy_timeout=30) as q:
        q.add_channel("c", print)
        locked, enqueue_called = threading.Event(), threading.Event()
        order: list[str] = []
        caller = threading.get_ident()

        def hold_the_write_lock() -> None:
            with closing(sqlite3.connect(store_path, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")
                locked.set()
                assert enqueue_called.wait(10)
                # Release only once the enqueue has found the lock taken and waits for it.
                wait_until(lambda: _waiting_for_the_lock(caller), timeout=10)
                order.append("released")
                other.execute("COMMIT")

        holder = threading.Thread(target=hold_the_write_lock)
        holder.start()
        try:
            assert locked.wait(10)
            enqueue_called.set()
            task_id = q.enqueue("c", "after the lock")
            order.append("enqueued")
        finally:
            holder.join(30)

        assert isinstance(task_id, int)
        assert order == ["released", "enqueued"]
        assert q.get_task(task_id).args == "after the lock"  # type: ignore[union-attr]


@pytest.mark.sqlite_only
def test_lock_held_past_busy_timeout_raises_store_error_from_operational_error_writing_nothing(
    store_path: str,
) -> None:
    """The caller gets ``simplepyq.StoreError`` naming the store and busy_timeout.

    Its ``__cause__`` is SQLite's own ``sqlite3.OperationalError: database is locked``.
    """
    with SimplePyQ(store_path, busy_timeout=0.2) as q:
        q.add_channel("c", print)
        with closing(sqlite3.connect(store_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match=r"locked.*busy_timeout=0\.2") as raised:
                q.enqueue_many("c", range(10))
            other.execute("ROLLBACK")

        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        assert "database is locked" in str(raised.value.__cause__)
        with closing(sqlite3.connect(store_path)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone() == (0,)
        assert q.enqueue_many("c", range(10)) == list(range(1, 11))


@pytest.mark.sqlite_only
def test_claim_cost_does_not_depend_on_the_number_of_finished_rows(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.add_channel("c", lambda args: f"ran {args}")
    task_id = queue.enqueue("c", "needle")
    claim = Q["claim"]
    params = {"channel": "c", "limit": 1, "owner": "probe", "now": 0.0}
    with closing(sqlite3.connect(store_path, isolation_level=None)) as conn:
        steps_before, found_before = _vm_steps(conn, claim, params)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO tasks (channel, args, status, attempts, created_at, finished_at) "
            "VALUES ('c', x'c0', 'done', 1, 0, 0)",
            ((),) * 1_000_000,
        )
        conn.execute("COMMIT")
        plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + claim, params)]
        steps_after, found_after = _vm_steps(conn, claim, params)

    assert any("USING INDEX tasks_claim" in step for step in plan), plan
    assert not any(step.startswith("SCAN tasks") for step in plan), plan
    assert [row[0] for row in found_before] == [row[0] for row in found_after] == [task_id]
    assert steps_after == steps_before  # the same work with 0 or 1,000,000 done rows

    queue.run_until_complete(timeout=30)
    task = queue.get_task(task_id)
    assert task is not None
    assert (task.status, task.result, task.attempts) == ("done", "ran needle", 1)


@pytest.mark.sqlite_only
def test_change_token_moves_when_another_connection_commits_and_not_otherwise(
    queue: SimplePyQ, store_path: str
) -> None:
    store = queue._store
    queue.add_channel("c", print)
    first = store.change_token()
    assert store.change_token() == first

    with closing(sqlite3.connect(store_path, isolation_level=None)) as other:
        other.execute("SELECT COUNT(*) FROM tasks").fetchall()
        assert store.change_token() == first  # a read commits nothing
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO simplepyq_channels (name) VALUES ('rolled back')")
        other.execute("ROLLBACK")
        assert store.change_token() == first  # nor does a rolled-back write

        other.execute("INSERT INTO simplepyq_channels (name) VALUES ('committed')")
        second = store.change_token()
        assert second != first
        assert store.change_token() == second

    queue.enqueue("c", "through the queue's own writer connection")
    assert store.change_token() != second


def test_concurrent_openers_of_a_new_file_all_succeed(store_path: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_and_enqueue(n: int) -> None:
        try:
            start.wait(10)
            with SimplePyQ(store_path) as q:
                q.add_channel(f"c{n}", print)
                q.enqueue(f"c{n}", n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_enqueue, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with SimplePyQ(store_path) as q:
        assert sum(s["pending"] for s in q.stats().values()) == 6


@pytest.mark.sqlite_only
def test_store_from_a_newer_version_is_refused(store_path: str) -> None:
    SimplePyQ(store_path).close()
    with closing(sqlite3.connect(store_path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        SimplePyQ(store_path)


def _vm_steps(conn: sqlite3.Connection, sql: str,
              params: dict[str, object]) -> tuple[int, list[tuple[object, ...]]]:
    """How many SQLite VM instructions ``sql`` executes (its cost, untimed), and its rows.

    Runs in a transaction that is rolled back, so the claim it measures leaves no trace.
    """
    conn.execute("BEGIN")
    try:
        return _counted(conn, sql, params)
    finally:
        conn.execute("ROLLBACK")


def _counted(conn: sqlite3.Connection, sql: str,
             params: dict[str, object]) -> tuple[int, list[tuple[object, ...]]]:
    conn.execute("SAVEPOINT warm")
    conn.execute(sql, params).fetchall()  # prepared and cached: count the run alone
    conn.execute("ROLLBACK TO warm")
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        rows = conn.execute(sql, params).fetchall()
    finally:
        conn.set_progress_handler(None, 1)
    return steps, rows


def _waiting_for_the_lock(thread_id: int) -> bool:
    """Whether the thread is in the store's retry loop after at least one failed try.

    Working connections fail at once on a taken lock; the loop then sleeps in
    growing steps, so its ``pause`` has grown past its first value.
    """
    frame = sys._current_frames().get(thread_id)
    if frame is None or frame.f_code.co_name != "_retrying":
        return False
    return float(frame.f_locals.get("pause", 0)) > FIRST_PAUSE


@pytest.mark.sqlite_only
@pytest.mark.parametrize(("power_safe", "synchronous"), [(False, 1), (True, 2)])
def test_power_safe_flushes_every_commit_to_disk_and_default_survives_process_crashes(
    store_path: str, power_safe: bool, synchronous: int
) -> None:
    # In WAL mode NORMAL (1) keeps commits through a process crash; FULL (2) also
    # through a power cut.
    with SimplePyQ(store_path, power_safe=power_safe) as q:
        assert q._store._read(  # type: ignore[attr-defined]
            lambda c: c.execute("PRAGMA synchronous").fetchone()) == (
            synchronous,)


def test_power_safe_must_be_a_bool_and_a_bad_one_creates_no_store(store_path: str) -> None:
    with pytest.raises(TypeError, match="power_safe must be True or False, not 'yes'"):
        SimplePyQ(store_path, power_safe="yes")  # type: ignore[arg-type]
    assert not store_exists(store_path)
    SimplePyQ(store_path).close()
    assert store_exists(store_path)  # (so the check above can tell)
