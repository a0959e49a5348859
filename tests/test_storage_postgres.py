"""The PostgreSQL backend: schemas, migrations, secrets, NOTIFY wake-ups and lock waits.

Needs a real server (``SIMPLEPYQ_TEST_POSTGRES_URL``; skipped without one, as the
per-backend fixture is). Each test gets fresh schemas of the test database,
dropped afterwards; raw ``psycopg`` connections inspect them and play the part
of other processes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from simplepyq import SimplePyQ, StoreError
from tests.backends import drop_schema, new_schema_location, postgres_url, raw_sql
from tests.support import (
    check_task_control_after_upgrade,
    finish_all,
    run_python,
    spawn_python,
    tasks_to_upgrade,
    wait_until,
)

psycopg = pytest.importorskip("psycopg")
SCHEMA_VERSION = pytest.importorskip("simplepyq.storage.postgres").SCHEMA_VERSION

PASSWORD = "s3cret-Pa55"
"""A password put in store URLs; the test server trusts local connections and ignores it."""

LISTENER = "simplepyq listener"
"""The application_name of a store's listening connection."""

# Waits for a "go" file, then opens the store (argv[1]) and enqueues to a channel of its own.
# argv: store, go file, number.
OPEN_AT_ONCE = """
    import pathlib, sys, time
    from simplepyq import SimplePyQ

    deadline = time.monotonic() + 60
    while not pathlib.Path(sys.argv[2]).exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    with SimplePyQ(sys.argv[1]) as q:
        q.add_channel(f"c{sys.argv[3]}", print)
        print(q.enqueue(f"c{sys.argv[3]}", sys.argv[3]))
"""

# Enqueues one task (argv[3]) to channel argv[2] of the store argv[1], registered elsewhere.
ENQUEUE = """
    import sys
    from simplepyq import SimplePyQ

    with SimplePyQ(sys.argv[1]) as q:
        print(q.enqueue(sys.argv[2], sys.argv[3]))
"""


@pytest.fixture
def new_location() -> Iterator[Callable[[], tuple[str, str]]]:
    """Makes store URLs naming fresh schemas of the test database: (URL, schema)."""
    url = postgres_url()
    made: list[str] = []

    def new() -> tuple[str, str]:
        location, schema = new_schema_location(url)
        made.append(schema)
        return location, schema

    yield new
    for schema in made:
        drop_schema(url, schema)


@pytest.fixture
def location(new_location: Callable[[], tuple[str, str]]) -> str:
    """A store URL naming a schema that does not exist yet."""
    return new_location()[0]


def _with_password(location: str) -> str:
    """``location`` with PASSWORD as its user's password."""
    parts = urlsplit(location)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user or 'postgres'}:{PASSWORD}@{host}"))


def _tables(schema: str) -> set[str]:
    rows = raw_sql(postgres_url(), "SELECT table_name::text FROM information_schema.tables "
                   "WHERE table_schema = ?", (schema,))
    return {name for (name,) in rows}


def _listener_pids(schema: str) -> list[int]:
    """Backends of listeners on the store in ``schema`` (its topic names the schema)."""
    rows = raw_sql(postgres_url(), "SELECT pid FROM pg_stat_activity WHERE application_name = ? "
                   "AND query = ?", (LISTENER, f'LISTEN "simplepyq.{schema}"'))
    return [int(pid) for (pid,) in rows]


def _unused_port() -> socket.socket:
    """A socket bound to a local port and not listening: connections to it are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


# -- schemas -----------------------------------------------
def test_schema_parameter_puts_the_store_tables_in_that_schema(
    new_location: Callable[[], tuple[str, str]],
) -> None:
    location, schema = new_location()
    with SimplePyQ(location) as q:
        q.add_channel("c", print)
        task_id = q.enqueue("c", "here")
    assert _tables(schema) == {"tasks", "simplepyq_channels", "simplepyq_owners",
                               "simplepyq_schema", "simplepyq_starts", "simplepyq_flows",
                               "simplepyq_deps", "simplepyq_schedules", "simplepyq_ticks",
                               "simplepyq_finished"}
    assert "simplepyq_schema" not in _tables("public")
    rows = raw_sql(postgres_url(), f'SELECT id, channel FROM "{schema}".tasks')
    assert rows == [(task_id, "c")]


def test_two_schemas_of_one_database_are_separate_queues(
    new_location: Callable[[], tuple[str, str]],
) -> None:
    (first, _), (second, _) = new_location(), new_location()
    with SimplePyQ(first, poll_interval=0.01) as one, SimplePyQ(second, poll_interval=0.01) as two:
        one.add_channel("c", lambda args: f"one ran {args}")
        with pytest.raises(ValueError, match="unknown channel 'c'"):
            two.enqueue("c", "registered in the other schema only")
        two.add_channel("d", print)
        ids = one.enqueue_many("c", ["a", "b"])
        assert two.enqueue("d", "x") == 1  # ids of their own
        assert set(one.stats()) == {"c"} and set(two.stats()) == {"d"}

        two.run_until_complete(timeout=30)
        assert [t.status for t in one.tasks()] == ["pending", "pending"]
        one.run_until_complete(timeout=30)
        assert [t.result for t in map(one.get_task, ids) if t] == ["one ran a", "one ran b"]
        assert two.stats()["d"]["done"] == 1


@pytest.mark.parametrize("schema", ["1st", "has-dash", 'x"; DROP SCHEMA public; --', "a" * 64,
                                    "", "sp ace"])
def test_a_schema_that_is_not_a_plain_name_raises_value_error_naming_it(schema: str) -> None:
    url = postgres_url()
    joiner = "&" if "?" in url else "?"
    with pytest.raises(ValueError, match=r"schema .* not a plain PostgreSQL name") as raised:
        SimplePyQ(f"{url}{joiner}schema={schema}")
    assert repr(schema) in str(raised.value)


def test_many_processes_opening_a_fresh_schema_at_once_all_succeed(
    new_location: Callable[[], tuple[str, str]], tmp_path: Path,
) -> None:
    location, _ = new_location()
    go = tmp_path / "go"
    children = [spawn_python(OPEN_AT_ONCE, location, str(go), str(n)) for n in range(6)]
    go.touch()
    outputs = finish_all(children, timeout=90)

    assert [child.returncode for child in children] == [0] * 6, [err for _, err in outputs]
    assert sorted(int(out) for out, _ in outputs) == [1, 2, 3, 4, 5, 6]
    assert raw_sql(location, "SELECT version FROM simplepyq_schema") == [(SCHEMA_VERSION,)]
    with SimplePyQ(location) as q:
        assert {name: counts["pending"] for name, counts in q.stats().items()} == {
            f"c{n}": 1 for n in range(6)}


def test_a_schema_written_by_a_newer_version_is_refused_with_store_error(location: str) -> None:
    SimplePyQ(location).close()
    raw_sql(location, "UPDATE simplepyq_schema SET version = version + 1")
    with pytest.raises(StoreError, match=rf"newer simplepyq \(schema {SCHEMA_VERSION + 1}\)"):
        SimplePyQ(location)
    assert raw_sql(location, "SELECT version FROM simplepyq_schema") == [
        (SCHEMA_VERSION + 1,)]  # left alone


SCHEMA_3_TASK_COLUMNS = ("key", "time_limit", "cancel_requested", "progress")
SCHEMA_3_CHANNEL_COLUMNS = ("rate_count", "rate_period", "max_running")


def _back_to_schema_2(location: str) -> None:
    """Undo what schema 3 added, leaving the store as simplepyq at schema 2 made it."""
    raw_sql(location, "DROP INDEX tasks_key")
    raw_sql(location, "DROP TABLE simplepyq_starts")
    raw_sql(location, "ALTER TABLE tasks " + ", ".join(
        f"DROP COLUMN {column}" for column in SCHEMA_3_TASK_COLUMNS))
    raw_sql(location, "ALTER TABLE simplepyq_channels " + ", ".join(
        f"DROP COLUMN {column}" for column in SCHEMA_3_CHANNEL_COLUMNS))
    raw_sql(location, "ALTER TABLE tasks DROP CONSTRAINT tasks_status_check, ADD CONSTRAINT "
                      "tasks_status_check CHECK (status IN ('pending', 'delayed', 'running', "
                      "'done', 'failed'))")
    raw_sql(location, "UPDATE simplepyq_schema SET version = 2")


def _columns(location: str) -> set[tuple[str, str]]:
    return set(raw_sql(location, "SELECT table_name, column_name FROM "
                                 "information_schema.columns WHERE table_schema = "
                                 "current_schema()"))


def _indexes(location: str) -> set[tuple[str, str]]:
    return set(raw_sql(location, "SELECT indexname::text, indexdef FROM pg_indexes "
                                 "WHERE schemaname = current_schema()"))


def test_a_schema_1_store_gains_recoveries_history_and_owner_channels_keeping_its_tasks(
    location: str,
) -> None:
    with SimplePyQ(location) as q:
        q.add_channel("kept", lambda args: args * 2)
        task_id = q.enqueue("kept", 21)
    _back_to_schema_2(location)
    raw_sql(location, "ALTER TABLE tasks DROP COLUMN recoveries, DROP COLUMN history, "
                      "DROP COLUMN alone")
    raw_sql(location, "ALTER TABLE simplepyq_owners DROP COLUMN channels")
    raw_sql(location, "UPDATE simplepyq_schema SET version = 1")

    with SimplePyQ(location) as q:
        q.add_channel("kept", lambda args: args * 2)
        q.run_until_complete(timeout=30)
        assert q.get_task(task_id).result == 42  # type: ignore[union-attr]
    assert raw_sql(location, "SELECT version FROM simplepyq_schema") == [(SCHEMA_VERSION,)]
    assert {("tasks", "recoveries"), ("tasks", "history"), ("tasks", "alone"),
            ("simplepyq_owners", "channels"),
            *(("tasks", column) for column in SCHEMA_3_TASK_COLUMNS)} <= _columns(location)


def test_a_schema_2_store_gains_keys_time_limits_cancels_progress_and_limits_keeping_its_tasks(
    location: str,
) -> None:
    pending, failed = tasks_to_upgrade(location)
    fresh = _indexes(location)
    _back_to_schema_2(location)
    with pytest.raises(psycopg.errors.CheckViolation):  # schema 2 knew no 'cancelled'
        raw_sql(location, "UPDATE tasks SET status = 'cancelled' WHERE id = ?", (pending,))

    check_task_control_after_upgrade(location, pending, failed)
    assert raw_sql(location, "SELECT version FROM simplepyq_schema") == [(SCHEMA_VERSION,)]
    assert {*(("tasks", column) for column in SCHEMA_3_TASK_COLUMNS),
            *(("simplepyq_channels", column) for column in SCHEMA_3_CHANNEL_COLUMNS),
            ("simplepyq_starts", "started_at")} <= _columns(location)
    assert _indexes(location) == fresh  # the same indexes as a new store's, defined alike


def test_opening_waits_no_longer_than_busy_timeout_for_a_migration_that_holds_the_lock(
    new_location: Callable[[], tuple[str, str]],
) -> None:
    location, schema = new_location()
    with closing(psycopg.connect(postgres_url())) as other:
        # What a process migrating this schema holds until it commits.
        other.execute("SELECT pg_advisory_xact_lock(hashtext('simplepyq schema ' || %s))",
                      (schema,))
        with pytest.raises(StoreError, match=r"busy_timeout=0\.2"):
            SimplePyQ(location, busy_timeout=0.2)
        other.rollback()
    with SimplePyQ(location) as q:  # and once it is released, the schema is made
        q.add_channel("c", print)
        assert q.enqueue("c", 1) == 1


# -- secrets -----------------------------------------------
def test_the_password_never_appears_in_store_path_or_error_messages(location: str) -> None:
    secret = _with_password(location)
    with SimplePyQ(secret) as q:
        assert PASSWORD not in q.store_path
        assert q.store_path == secret.replace(PASSWORD, "***")
        with pytest.raises(ValueError, match="unknown channel 'nope'") as unknown:
            q.enqueue("nope", 1)
        assert PASSWORD not in str(unknown.value)
    with pytest.raises(StoreError) as closed:
        q.enqueue("nope", 1)
    assert "closed" in str(closed.value) and PASSWORD not in str(closed.value)

    with pytest.raises(StoreError) as missing:
        SimplePyQ(secret.replace("/simplepyq_test", "/no_such_database_here"), busy_timeout=2)
    assert "no_such_database_here" in str(missing.value)
    assert PASSWORD not in str(missing.value)


def test_a_password_given_as_a_url_parameter_is_hidden_too(location: str) -> None:
    secret = f"{location}&password={PASSWORD}"
    with SimplePyQ(secret) as q:
        assert PASSWORD not in q.store_path
    with closing(_unused_port()) as port:
        unreachable = f"postgresql://u@127.0.0.1:{port.getsockname()[1]}/db?password={PASSWORD}"
        with pytest.raises(StoreError) as raised:
            SimplePyQ(unreachable, busy_timeout=2)
    assert PASSWORD not in str(raised.value)


def test_an_unreachable_server_gives_store_error_naming_the_location_without_password() -> None:
    with closing(_unused_port()) as port:
        number = port.getsockname()[1]
        url = f"postgresql://ada:{PASSWORD}@127.0.0.1:{number}/tasks?schema=jobs"
        with pytest.raises(StoreError) as raised:
            SimplePyQ(url, busy_timeout=2)
    message = str(raised.value)
    assert f"postgresql://ada:***@127.0.0.1:{number}/tasks?schema=jobs" in message
    assert PASSWORD not in message


# -- wake-ups ----------------------------------------------
def _wait_for_listener(schema: str, other_than: int | None = None) -> int:
    """The pid of the store's listening backend once it LISTENs (a new one, if ``other_than``)."""
    return wait_until(lambda: next((pid for pid in _listener_pids(schema) if pid != other_than),
                                   None), timeout=30)


def test_a_task_enqueued_by_another_process_starts_long_before_the_poll_interval(
    new_location: Callable[[], tuple[str, str]],
) -> None:
    location, schema = new_location()
    started = threading.Event()
    with SimplePyQ(location, poll_interval=3600) as q:  # only a NOTIFY can wake it in time
        q.add_channel("c", lambda args: started.set())
        q.start()
        _wait_for_listener(schema)

        (task_id,) = map(int, run_python(ENQUEUE, location, "c", "from afar").split())

        assert started.wait(30), "the task did not start within 30s of its enqueue"
        assert q.wait(task_id, timeout=30).status == "done"


def test_an_enqueue_elsewhere_names_its_channel_to_watch_added_and_only_when_it_can_run(
    new_location: Callable[[], tuple[str, str]],
) -> None:
    location, schema = new_location()
    added: list[str] = []
    other: list[str] = []
    with SimplePyQ(location) as here, SimplePyQ(location) as there:
        here._store.watch(lambda: other.append("commit"))
        here._store.watch_added(added.append)
        _wait_for_listener(schema)
        there.add_channel("mail", print)
        there.add_channel("first", print)
        there.enqueue("first", "told after every earlier commit")
        wait_until(lambda: added == ["first"], timeout=30)
        added.clear()
        other.clear()

        there.enqueue("mail", "now")
        wait_until(lambda: added, timeout=30)
        assert (added, other) == (["mail"], [])  # (one notification: one or the other)

        there.enqueue("mail", "later", delay=3600)  # the housekeeper's next_due must hear
        wait_until(lambda: other, timeout=30)
        assert (added, other) == (["mail"], ["commit"])


def test_work_is_picked_up_after_the_listener_is_killed_and_the_listener_reconnects(
    new_location: Callable[[], tuple[str, str]], caplog: pytest.LogCaptureFixture,
) -> None:
    location, schema = new_location()
    ran: list[str] = []
    secret = _with_password(location)
    with SimplePyQ(secret, poll_interval=3600) as q:
        q.add_channel("c", ran.append)
        q.start()
        first = _wait_for_listener(schema)

        killed = raw_sql(location, "SELECT pg_terminate_backend(?)", (first,))
        assert killed == [(True,)]
        (during,) = map(int, run_python(ENQUEUE, location, "c", "while it was down").split())
        assert q.wait(during, timeout=30).status == "done"

        second = _wait_for_listener(schema, other_than=first)
        (after,) = map(int, run_python(ENQUEUE, location, "c", "after it came back").split())
        assert q.wait(after, timeout=30).status == "done"

    assert ran == ["while it was down", "after it came back"]
    assert second != first
    assert any("listening for changes" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if PASSWORD in r.getMessage()]


def test_an_enqueue_on_a_connection_the_server_closed_while_idle_is_stored_once(
    new_location: Callable[[], tuple[str, str]],
) -> None:
    location, _ = new_location()
    with SimplePyQ(location) as q:
        q.add_channel("c", print)
        q.enqueue("c", "before")  # the pool keeps that connection, idle
        pids = raw_sql(location, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                       "'simplepyq' AND pid <> pg_backend_pid()")
        assert pids
        for (pid,) in pids:
            raw_sql(location, "SELECT pg_terminate_backend(?)", (pid,))
        wait_until(lambda: not raw_sql(location, "SELECT 1 FROM pg_stat_activity WHERE "
                                       "application_name = 'simplepyq' AND pid <> "
                                       "pg_backend_pid()"))
        task_id = q.enqueue("c", "after")
        assert [t.args for t in q.tasks()] == ["before", "after"]
        assert q.get_task(task_id).args == "after"  # type: ignore[union-attr]


# -- lock waits --------------------------------------------
def test_a_row_lock_held_past_busy_timeout_gives_store_error_and_changes_nothing(
    new_location: Callable[[], tuple[str, str]],
) -> None:
    location, schema = new_location()
    with SimplePyQ(location, busy_timeout=0.2) as q:
        q.add_channel("c", print)
        task_id = q.enqueue("c", "locked")
        with closing(psycopg.connect(postgres_url())) as other:
            other.execute(f'SELECT 1 FROM "{schema}".tasks WHERE id = %s FOR UPDATE',
                          (task_id,))
            with pytest.raises(StoreError, match=r"locked.*busy_timeout=0\.2") as raised:
                q.remove_channel("c")
            other.rollback()

        assert isinstance(raised.value.__cause__, psycopg.errors.LockNotAvailable)
        assert PASSWORD not in str(raised.value)
        assert q.get_task(task_id) is not None  # the removal was rolled back, channel and all
        assert raw_sql(location, "SELECT name FROM simplepyq_channels") == [("c",)]
        assert q.remove_channel("c") == 1  # and goes through once the lock is gone
