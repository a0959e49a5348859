"""Rows written by hand with raw SQL: the scheduler serves every other task, listings never crash.

Each hostile row goes into a store that also holds ordinary tasks (pending and
delayed); the ordinary ones must all run exactly once, and ``tasks()``,
``get_task()`` and ``stats()`` must describe every row, hostile ones included.
Rows of the wrong type (text args, a status outside the five, NULL retries, ...)
exist only in SQLite, whose columns take any value; PostgreSQL's column types and
CHECK refuse them, which ``test_rows_of_the_wrong_type_exist_only_in_sqlite`` checks.
Channel rows with limits no one could set (a rate of 0, ``max_running`` below 1)
read as no limit, and are claimed as such.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import msgpack
import pytest

from simplepyq import Limits, SimplePyQ, Status
from tests.backends import is_postgres, raw_sql

NOT_MSGPACK = b"\xc1"  # a byte msgpack never uses

# column -> hostile value, one row each; the other columns are those of a plain pending task.
HOSTILE: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "undecodable args": [("args", {"args": NOT_MSGPACK})],
    "args that are text, not bytes": [("args", {"args": "not a blob"})],
    "args that are a number": [("args", {"args": 12345})],
    "unknown status": [("status", {"status": "paused"})],
    "status in capitals": [("status", {"status": "PENDING"})],
    "empty status": [("status", {"status": ""})],
    "NULL status": [("status", {"status": None})],
    "NULL args": [("args", {"args": None})],
    "NULL retries": [("retries", {"retries": None})],
    "NULL delay_until, delayed": [("delay_until", {"status": "delayed", "delay_until": None})],
    "NULL result, error and times": [("times", {"status": "done", "result": None, "error": None,
                                                "created_at": None, "started_at": None,
                                                "finished_at": None})],
    "NULL owner, running": [("owner", {"status": "running", "owner": None})],
    "a channel nobody registered": [("channel", {"channel": "nobody"})],
    "delay_until far in the past": [("delay_until", {"status": "delayed",
                                                     "delay_until": -1e15})],
    "delay_until far in the future": [("delay_until", {"status": "delayed",
                                                       "delay_until": 1e300})],
    "delay_until infinite": [("delay_until", {"status": "delayed",
                                              "delay_until": float("inf")})],
    "delay_until that is text": [("delay_until", {"status": "delayed",
                                                  "delay_until": "tomorrow"})],
    "delay_until that is a huge integer": [("delay_until", {"status": "delayed",
                                                            "delay_until": 2**63 - 1})],
    "times that are text": [("times", {"status": "done", "created_at": "noon",
                                       "started_at": "x", "finished_at": "y"})],
    "retries that are text": [("retries", {"retries": "three"})],
    "retries that are text, task fails": [("retries", {"retries": "three",
                                                        "args": msgpack.packb("raise")})],
    "negative retries": [("retries", {"retries": -5})],
    "NULL retries, task fails": [("retries", {"retries": None, "args": msgpack.packb("raise")})],
    "priority that is text": [("priority", {"priority": "high"})],
    "undecodable result": [("result", {"status": "done", "result": NOT_MSGPACK})],
    "error that is bytes": [("error", {"status": "failed", "error": b"\xff\xfe"})],
    "negative time_limit": [("time_limit", {"time_limit": -5.0})],
    "time_limit of zero": [("time_limit", {"time_limit": 0.0})],
    "infinite time_limit": [("time_limit", {"time_limit": float("inf")})],
    "time_limit that is text": [("time_limit", {"time_limit": "soon"})],
    "key that is a number": [("key", {"key": 42})],
    "cancel requested of a pending task": [("cancel", {"cancel_requested": 1})],
    "cancel_requested of 2": [("cancel", {"cancel_requested": 2})],
    "cancel_requested that is text": [("cancel", {"cancel_requested": "yes"})],
    "cancelled, with NULL times": [("status", {"status": "cancelled", "finished_at": None,
                                               "cancel_requested": 1})],
    "undecodable progress": [("progress", {"status": "done", "progress": NOT_MSGPACK})],
    "progress that is text": [("progress", {"progress": "half"})],
}


def _ran(args: Any) -> Any:
    return ["ran", args]


WRONG_TYPE = frozenset({
    "args that are a number", "unknown status", "status in capitals", "empty status",
    "NULL status", "NULL retries", "delay_until that is text", "times that are text",
    "retries that are text", "retries that are text, task fails", "NULL retries, task fails",
    "priority that is text", "time_limit that is text", "cancel_requested that is text",
})
"""Hostile rows that only SQLite's loose column types let anyone write. (PostgreSQL
converts text args and a bytes error on the way in: b'not a blob' and '\\xfffe'; and a
number key: '42'.)"""


def _insert(store_path: str, **values: Any) -> int:
    row: dict[str, Any] = {"channel": "c", "args": msgpack.packb("hostile"),
                           "status": "pending", "retries": 0, "delay_until": None}
    row.update(values)
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    ((task_id,),) = raw_sql(store_path, f"INSERT INTO tasks ({columns}) VALUES ({marks}) "
                                        "RETURNING id", list(row.values()))
    return int(task_id)


def _cases(names: set[str] | frozenset[str]) -> list[Any]:
    return [pytest.param(name, id=name) for name in sorted(names)]


def _possible_here(store_path: str) -> list[str]:
    """The hostile rows this test's backend can hold."""
    return [name for name in HOSTILE if not (is_postgres(store_path) and name in WRONG_TYPE)]


@pytest.mark.parametrize("case", _cases(set(HOSTILE) - WRONG_TYPE))
def test_a_hostile_row_leaves_every_other_task_served_and_every_listing_working(
    store_path: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    _check_every_other_task_served(store_path, case, caplog)


@pytest.mark.sqlite_only
@pytest.mark.parametrize("case", _cases(WRONG_TYPE))
def test_a_row_of_the_wrong_type_leaves_every_other_task_served_and_every_listing_working(
    store_path: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    _check_every_other_task_served(store_path, case, caplog)


def _check_every_other_task_served(store_path: str, case: str,
                                   caplog: pytest.LogCaptureFixture) -> None:
    with SimplePyQ(store_path, poll_interval=0.01, lease=3600) as q:
        runs: Counter[Any] = Counter()

        def work(args: Any) -> Any:
            runs[repr(args)] += 1
            if args == "raise":
                raise RuntimeError("this hostile row's task fails")
            return _ran(args)

        q.add_channel("c", work, max_workers=2)
        before = q.enqueue_many("c", ["first", "second"])
        hostile = [_insert(store_path, **values)
                   for _, values in HOSTILE[case]]
        after = [q.enqueue("c", "third"), q.enqueue("c", "later", delay=0.2)]

        # Not run_until_complete: a row delayed to the year 10**292 is rightly unfinished.
        q.start()
        for task_id in before + after:
            task = q.wait(task_id, timeout=30)
            assert (task.status, task.result) == ("done", _ran(task.args))
        q.stop()
        assert all(runs[repr(name)] == 1 for name in ["first", "second", "third", "later"])
        # Every listing describes the hostile rows too, without raising.
        listed = {task.id: task for task in q.tasks(limit=1000)}
        assert set(listed) == {*before, *hostile, *after}
        for hostile_id in hostile:
            found = q.get_task(hostile_id)
            assert found is not None
            task = found
            assert task.id == hostile_id
            assert isinstance(task.status, str)
            assert task.status in Status.__members__.values() or task.status == listed[
                hostile_id].status
        stats = q.stats()
        assert stats["c"]["done"] >= 4
        for status in Status:
            assert q.tasks(status=status) is not None
        # A hostile row the queue could run ended done or failed, never stuck running.
        assert q.tasks(status="running", channel="c") == []
    # Nothing in the scheduler failed on the way: at most a task's failure was logged.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_hostile_rows_all_at_once_leave_every_other_task_served(store_path: str) -> None:
    with SimplePyQ(store_path, poll_interval=0.01, lease=3600) as q:
        q.add_channel("c", _ran, max_workers=3)
        hostile = [_insert(store_path, **values)
                   for name in _possible_here(store_path) for _, values in HOSTILE[name]]
        ordinary = q.enqueue_many("c", range(50)) + q.enqueue_many("c", range(50, 60),
                                                                   delay=0.1)
        q.start()
        assert [q.wait(task_id, timeout=30).result for task_id in ordinary] == [
            ["ran", number] for number in range(60)]
        q.stop()
        assert len(q.tasks(limit=1000)) == len(hostile) + len(ordinary)
        assert sum(q.stats()["c"].values()) >= len(ordinary)


def test_undecodable_args_fail_the_task_saying_why_and_use_no_retry(store_path: str) -> None:
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("c", _ran)
        task_id = _insert(store_path, args=NOT_MSGPACK, retries=3)
        q.run_until_complete(timeout=30)
        task = q.get_task(task_id)
    assert task is not None
    assert (task.status, task.args, task.attempts) == ("failed", NOT_MSGPACK, 1)
    assert "could not be decoded" in (task.error or "")


@pytest.mark.parametrize("case", _cases(WRONG_TYPE))
def test_rows_of_the_wrong_type_exist_only_in_sqlite(store_path: str, case: str) -> None:
    with SimplePyQ(store_path):
        pass  # creates the tables
    for _, values in HOSTILE[case]:
        if not is_postgres(store_path):
            _insert(store_path, **values)
            continue
        import psycopg

        with pytest.raises((psycopg.DataError, psycopg.IntegrityError,
                            psycopg.ProgrammingError)):
            _insert(store_path, **values)
    assert raw_sql(store_path, "SELECT COUNT(*) FROM tasks") == [
        (0 if is_postgres(store_path) else len(HOSTILE[case]),)]


HOSTILE_LIMITS: dict[str, dict[str, Any]] = {
    "max_running of 0": {"max_running": 0},
    "negative max_running": {"max_running": -3},
    "rate of 0 a second": {"rate_count": 0, "rate_period": 1.0},
    "negative rate": {"rate_count": -2, "rate_period": 1.0},
    "rate over a period of 0": {"rate_count": 5, "rate_period": 0.0},
    "rate over a negative period": {"rate_count": 5, "rate_period": -60.0},
    "rate without a period": {"rate_count": 5, "rate_period": None},
    "max_running that is text": {"max_running": "three"},
    "rate that is text": {"rate_count": "ten", "rate_period": 1.0},
}
LIMITS_OF_THE_WRONG_TYPE = frozenset({"max_running that is text", "rate that is text"})


@pytest.mark.parametrize("case", _cases(set(HOSTILE_LIMITS) - LIMITS_OF_THE_WRONG_TYPE))
def test_channel_limits_no_one_could_set_read_as_none_and_its_tasks_are_served(
    store_path: str, case: str
) -> None:
    _check_served_without_limits(store_path, HOSTILE_LIMITS[case])


@pytest.mark.sqlite_only
@pytest.mark.parametrize("case", _cases(LIMITS_OF_THE_WRONG_TYPE))
def test_channel_limits_of_the_wrong_type_read_as_none_and_its_tasks_are_served(
    store_path: str, case: str
) -> None:
    _check_served_without_limits(store_path, HOSTILE_LIMITS[case])


def _check_served_without_limits(store_path: str, limits: dict[str, Any]) -> None:
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("c", _ran, max_workers=2)
        raw_sql(store_path, "UPDATE simplepyq_channels SET "
                + ", ".join(f"{column} = ?" for column in limits) + " WHERE name = 'c'",
                list(limits.values()))
        ids = q.enqueue_many("c", range(3))

        assert q.limits("c") == Limits()
        q.start()
        assert [q.wait(task_id, timeout=30).result for task_id in ids] == [
            ["ran", number] for number in range(3)]
