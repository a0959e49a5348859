"""Cheap counts and the finished-task counters: ``counts`` agrees with ``stats`` whatever
ended or deleted the tasks, ``finished`` and ``finished_totals`` count each end once, and
folds keep the totals, also when two processes fold at once."""

from __future__ import annotations

import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from simplepyq import DelayException, FinishedMinute, SimplePyQ, Step, current_task, policy
from simplepyq.storage import open_store
from simplepyq.storage.base import TASK_COLUMNS, Outcome, Owner, Store
from simplepyq.storage.finished import minute_of
from tests.backends import blocked_by, is_postgres, raw_sql, split_location
from tests.support import InThread, died_running, wait_until

OWNER = "test:1:counts"
LONG_AGO = 1_700_000_000.0
"""A time hours before any test runs: its minute is one a fold folds."""
FIXTURE_013 = Path(__file__).parent / "fixtures" / "simplepyq-0.1.3.db"


def _work(args: str) -> str:
    if args == "fail":
        raise RuntimeError("boom")
    if args == "flaky":
        context = current_task()
        assert context is not None
        if context.attempt == 1:
            raise RuntimeError("not yet")
    return args


def _defer(args: object) -> None:
    raise DelayException(3600)


def _never(args: object) -> None:
    raise AssertionError("not to be run")


def _agree(queue: SimplePyQ) -> dict[str, dict[str, int]]:
    """``counts`` equals ``stats`` (both with every status of every channel); the counts."""
    counts = queue.counts()
    assert counts == queue.stats()
    return counts


def _claim(store: Store, channel: str, now: float | None = None) -> int:
    """The next task of ``channel``, claimed by OWNER (running, never started)."""
    claimed = store.exchange(OWNER, [], channel, 1, time.time() if now is None else now).claimed
    assert len(claimed) == 1
    return claimed[0].id


def _fail(task_id: int, now: float) -> Outcome:
    return Outcome(task_id, policy.unrunnable(0, "RuntimeError: boom", now))


def _done(task_id: int, now: float, channel: str | None = None) -> Outcome:
    return Outcome(task_id, policy.succeeded(0, None, now), channel)


@pytest.fixture
def mixed(queue: SimplePyQ) -> SimplePyQ:
    """A queue whose tasks ended in every way a task can end, and some that have not."""
    store = queue._store
    queue.add_channel("work", _work)
    queue.add_channel("later", _defer)
    queue.add_channel("flow", _work)
    queue.add_channel("idle", _never)
    queue.enqueue_many("work", ["ok", "ok", "ok", "fail"])
    queue.enqueue("work", "flaky", retries=1)  # fails once, then done
    queue.enqueue("later", None)  # deferred: delayed
    failing = queue.chain(Step("flow", "fail"), Step("flow", "ok"), Step("flow", "ok"))
    queue.chain(Step("flow", "ok"), Step("flow", "ok"))  # done, done
    queue.drain(["work", "flow"], due=True)
    queue.drain(["later"])
    assert queue.get_task(failing.task_ids[2]).status == "cancelled"  # type: ignore[union-attr]
    # Stored cancelled at once: it needs a task that failed already.
    assert queue.get_task(queue.enqueue("flow", "ok", depends_on=[failing.task_ids[0]])
                          ).status == "cancelled"  # type: ignore[union-attr]
    queue.chain(Step("idle", 1), Step("idle", 2))  # pending, blocked

    now = time.time()
    pending = queue.enqueue("idle", "cancelled while pending")
    assert queue.cancel(pending)
    for end in ("record", "release", "reconcile", "recover"):  # cancelled while running
        task_id = queue.enqueue("idle", end, priority=1)
        assert _claim(store, "idle") == task_id
        assert queue.cancel(task_id)  # a request: it runs
        if end == "record":
            assert store.exchange(OWNER, [_fail(task_id, now)], None, 0, now).dropped == []
        elif end == "release":
            assert store.release(OWNER, [task_id]) == 1
        elif end == "reconcile":
            assert store.reconcile(OWNER, []) == 1
        else:
            assert store.recover([Owner(OWNER, None, None, None, None)], "gone", now, 3) == 1
        assert queue.get_task(task_id).status == "cancelled"  # type: ignore[union-attr]
    recovered = queue.enqueue("idle", "kills its workers", priority=1)
    assert died_running(queue.store_path, "idle", max_recoveries=1) == recovered
    assert queue.get_task(recovered).status == "failed"  # type: ignore[union-attr]
    # Outcomes recorded without their channel: the store finds it.
    unnamed = [queue.enqueue("idle", n, priority=1) for n in range(3)]
    for task_id in unnamed:
        assert _claim(store, "idle") == task_id
    assert store.exchange(OWNER, [_done(unnamed[0], now), _done(unnamed[1], now, "idle"),
                                  _fail(unnamed[2], now)], None, 0, now).dropped == []
    queue.enqueue("idle", "left running", priority=1)
    _claim(store, "idle")
    return queue


def test_counts_equal_stats_after_every_way_a_task_ends(mixed: SimplePyQ) -> None:
    counts = _agree(mixed)

    assert counts["work"] == {"pending": 0, "running": 0, "delayed": 0, "done": 4,
                              "failed": 1, "cancelled": 0, "blocked": 0}
    assert counts["flow"] == {"pending": 0, "running": 0, "delayed": 0, "done": 2,
                              "failed": 1, "cancelled": 3, "blocked": 0}
    assert counts["later"]["delayed"] == 1
    assert counts["idle"] == {"pending": 1, "running": 1, "delayed": 0, "done": 2,
                              "failed": 2, "cancelled": 5, "blocked": 1}
    assert mixed.finished_totals() == {  # a retry is no end; a cancel while it ran is
        "work": {"done": 4, "failed": 1, "cancelled": 0},
        "flow": {"done": 2, "failed": 1, "cancelled": 3},
        "idle": {"done": 2, "failed": 2, "cancelled": 5}}


def test_counts_stay_equal_to_stats_through_every_kind_of_delete(mixed: SimplePyQ) -> None:
    (one_done,) = raw_sql(mixed.store_path, "SELECT MIN(id) FROM tasks WHERE status = 'done'")
    raw_sql(mixed.store_path, "DELETE FROM tasks WHERE id = ?", one_done)
    assert _agree(mixed)["work"]["done"] == 3

    assert mixed.purge(0, channel="work") == 4
    assert _agree(mixed)["work"]["done"] == 0
    assert mixed.clear_failed() == 3
    assert _agree(mixed)["idle"]["failed"] == 0
    assert mixed.remove_channel("flow") == 5  # its failed one went with clear_failed
    assert "flow" not in _agree(mixed)
    mixed.set_retention(keep_done=1e-6, keep_failed=1e-6)
    assert mixed.apply_retention() == 7  # idle's done and cancelled ones
    assert _agree(mixed)["idle"] == {"pending": 1, "running": 1, "delayed": 0, "done": 0,
                                     "failed": 0, "cancelled": 0, "blocked": 1}


def test_a_done_task_that_a_0_1_3_process_finished_is_counted_neither_done_nor_deleted(
    queue: SimplePyQ,
) -> None:
    queue.add_channel("c", _work)
    done = queue.enqueue("c", "ok")
    queue.drain()
    legacy = queue.enqueue("c", "ok")
    # What a 0.1.3 worker writes when a task returns: it knows no finished_at.
    raw_sql(queue.store_path, "UPDATE tasks SET status = 'done' WHERE id = ?", (legacy,))
    assert (queue.counts()["c"]["done"], queue.stats()["c"]["done"]) == (1, 2)

    raw_sql(queue.store_path, "DELETE FROM tasks WHERE id = ?", (legacy,))
    assert _agree(queue)["c"]["done"] == 1
    raw_sql(queue.store_path, "DELETE FROM tasks WHERE id = ?", (done,))
    assert _agree(queue)["c"]["done"] == 0


def test_outcomes_of_tasks_taken_from_their_worker_are_dropped_and_not_counted(
    queue: SimplePyQ,
) -> None:
    queue.add_channel("c", _never)
    store = queue._store
    ids = queue.enqueue_many("c", range(4))
    for task_id in ids:
        assert _claim(store, "c") == task_id
    raw_sql(queue.store_path, "UPDATE tasks SET owner = 'someone else' WHERE id IN (?, ?)",
            (ids[1], ids[3]))  # recovered and claimed again, say
    now = time.time()

    exchange = store.exchange(OWNER, [_done(ids[0], now, "c"), _done(ids[1], now, "c"),
                                      _fail(ids[2], now), _fail(ids[3], now)], None, 0, now)

    assert exchange.dropped == [ids[1], ids[3]]
    assert queue.finished_totals() == {"c": {"done": 1, "failed": 1, "cancelled": 0}}
    assert _agree(queue)["c"]["done"] == 1


def test_tasks_adopted_from_another_store_count_as_ended_there(queue: SimplePyQ) -> None:
    with SimplePyQ(":memory:") as source:
        source.add_channel("c", _work)
        source.enqueue_many("c", ["ok", "fail"])
        source.cancel(source.enqueue("c", "ok"))
        source.drain()
        source.enqueue("c", "pending")
        rows = source._store.list(None, None, 100)
    at = TASK_COLUMNS.index("finished_at")
    legacy = (*rows[0][:at], None, *rows[0][at + 1:])  # done, no finish time (0.1.3)

    assert queue._store.adopt([*rows, legacy], ["c"], time.time()) == 5

    counts, stats = queue.counts(), queue.stats()
    assert counts["c"] == {"pending": 1, "running": 0, "delayed": 0, "done": 1,
                           "failed": 1, "cancelled": 1, "blocked": 0}
    assert stats == {"c": {**counts["c"], "done": 2}}  # (and the one with no finish time)
    assert queue.finished_totals() == {"c": {"done": 1, "failed": 1, "cancelled": 1}}


def test_finished_counts_each_end_in_the_minute_it_was_committed(queue: SimplePyQ) -> None:
    queue.add_channel("a", _work)
    queue.add_channel("b", _work)
    first = minute_of(time.time())
    queue.enqueue_many("a", ["ok", "ok", "fail"])
    queue.enqueue("b", "ok")
    queue.cancel(queue.enqueue("b", "ok"))
    queue.drain()
    last = minute_of(time.time())

    minutes = queue.finished()

    assert all(isinstance(row, FinishedMinute) for row in minutes)
    assert all(first * 60 <= row.minute.timestamp() <= last * 60 for row in minutes)
    assert all(row.minute.utcoffset() is not None and row.minute.second == 0
               for row in minutes)
    assert [(row.minute, row.channel) for row in minutes] == sorted(
        (row.minute, row.channel) for row in minutes)
    assert {name: [sum(getattr(row, end) for row in minutes if row.channel == name)
                   for end in ("done", "failed", "cancelled")] for name in "ab"} == {
        "a": [2, 1, 0], "b": [1, 0, 1]}
    assert queue.finished_totals() == {"a": {"done": 2, "failed": 1, "cancelled": 0},
                                       "b": {"done": 1, "failed": 0, "cancelled": 1}}


def test_finished_store_rows_are_per_minute_and_only_minutes_with_ends(queue: SimplePyQ) -> None:
    queue.add_channel("c", _never)
    store = queue._store
    ids = queue.enqueue_many("c", [1, 2, 3])
    for task_id, at in zip(ids, (LONG_AGO, LONG_AGO + 1, LONG_AGO + 120), strict=True):
        assert _claim(store, "c", at) == task_id
        store.exchange(OWNER, [_done(task_id, at, "c")], None, 0, at)
    minute = minute_of(LONG_AGO)

    assert store.finished(minute) == [("c", minute, 2, 0, 0), ("c", minute + 2, 1, 0, 0)]
    assert store.finished(minute + 1) == [("c", minute + 2, 1, 0, 0)]
    queue.purge(0)  # removals are no ends: no row of their own shows
    assert store.finished(minute) == [("c", minute, 2, 0, 0), ("c", minute + 2, 1, 0, 0)]
    assert queue.finished(60) == []  # the last hour: nothing


def test_finished_totals_never_go_down_when_tasks_are_deleted(queue: SimplePyQ) -> None:
    queue.add_channel("c", _work)
    queue.enqueue_many("c", ["ok", "ok", "fail"])
    queue.cancel(queue.enqueue("c", "ok"))
    queue.drain()
    totals = queue.finished_totals()

    queue.purge(0)
    assert queue.counts()["c"]["done"] == 0
    assert queue.finished_totals() == totals == {"c": {"done": 2, "failed": 1, "cancelled": 1}}
    queue.enqueue("c", "ok")
    queue.drain()
    assert queue.finished_totals() == {"c": {"done": 3, "failed": 1, "cancelled": 1}}


def test_fold_moves_old_minutes_into_the_totals_and_keeps_them_equal(queue: SimplePyQ) -> None:
    queue.add_channel("c", _work)
    store = queue._store
    old = [queue.enqueue("c", n) for n in range(3)]
    for task_id, at in zip(old, (LONG_AGO, LONG_AGO + 60, LONG_AGO + 120), strict=True):
        _claim(store, "c", at)
        store.exchange(OWNER, [_done(task_id, at, "c") if task_id != old[1]
                               else _fail(task_id, at)], None, 0, at)
    queue.enqueue("c", "ok")
    queue.drain()  # in the present minute: not folded
    totals, counts = queue.finished_totals(), _agree(queue)
    before = minute_of(time.time()) - 120

    assert store.fold_finished(before) == 3
    assert store.fold_finished(before) == 0

    assert queue.finished_totals() == totals == {"c": {"done": 3, "failed": 1, "cancelled": 0}}
    assert _agree(queue) == counts
    kept = store.finished(minute_of(LONG_AGO))
    assert [(channel, done) for channel, _, done, _, _ in kept] == [("c", 1)]  # the drain's
    assert all(minute >= before for _, minute, _, _, _ in kept)


@pytest.mark.postgres_only
def test_two_folds_at_once_fold_each_minute_once(queue: SimplePyQ) -> None:
    import psycopg

    from simplepyq.storage.postgres import Q

    queue.add_channel("c", _never)
    store = queue._store
    for n, at in enumerate((LONG_AGO, LONG_AGO + 60, LONG_AGO + 120)):
        task_id = queue.enqueue("c", n)
        _claim(store, "c", at)
        store.exchange(OWNER, [_done(task_id, at, "c")], None, 0, at)
    totals = queue.finished_totals()
    before = minute_of(time.time()) - 120
    other = open_store(queue.store_path, 30.0)
    url, schema = split_location(queue.store_path)
    try:
        with psycopg.connect(url, options=f"-c search_path={schema}") as first:
            # The first fold has deleted the rows and added them up, not committed yet.
            assert first.execute(Q["fold_finished"], {"before": before}).fetchone() == (3,)
            pid = first.info.backend_pid
            second = InThread(lambda: other.fold_finished(before))
            wait_until(lambda: blocked_by(queue.store_path, pid), timeout=30)
            first.commit()
            assert second.result() == 0  # it found them gone
    finally:
        other.close()

    assert queue.finished_totals() == totals == {"c": {"done": 3, "failed": 0, "cancelled": 0}}
    assert raw_sql(queue.store_path, "SELECT minute, done FROM simplepyq_finished") == [(0, 3)]


def test_housekeeping_folds_the_minutes_older_than_two_hours(store_path: str) -> None:
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("c", _work)
        store = q._store
        task_id = q.enqueue("c", 1)
        _claim(store, "c", LONG_AGO)
        store.exchange(OWNER, [_done(task_id, LONG_AGO, "c")], None, 0, LONG_AGO)
        q.start()  # its housekeeper folds at once
        wait_until(lambda: not store.finished(minute_of(LONG_AGO)), timeout=30)
        assert q.finished_totals() == {"c": {"done": 1, "failed": 0, "cancelled": 0}}


@pytest.mark.parametrize("minutes", [0, -5])
def test_finished_of_fewer_than_one_minute_raises_value_error_naming_it(
    queue: SimplePyQ, minutes: int,
) -> None:
    with pytest.raises(ValueError, match=rf"minutes must be at least 1, got {minutes}"):
        queue.finished(minutes)


@pytest.mark.parametrize("minutes", ["60", 1.5, True, None])
def test_finished_of_a_non_int_raises_type_error(queue: SimplePyQ, minutes: Any) -> None:
    with pytest.raises(TypeError, match="minutes must be an int"):
        queue.finished(minutes)


# -- upgrades ---------------------------------------------------------------------


def _before_counters(location: str) -> None:
    """Undo what the schema that brought the counters added, as a store of the version
    before it was left."""
    if is_postgres(location):
        from simplepyq.storage.postgres import SCHEMA_VERSION

        raw_sql(location, "DROP TRIGGER simplepyq_done_removed ON tasks")
        raw_sql(location, "DROP FUNCTION simplepyq_count_removed()")
        raw_sql(location, "DROP TABLE simplepyq_finished")
        raw_sql(location, "DROP INDEX tasks_cancelled_blocked")
        raw_sql(location, "UPDATE simplepyq_schema SET version = ?", (SCHEMA_VERSION - 1,))
        return
    from simplepyq.storage.sqlite import SCHEMA_VERSION as SQLITE_VERSION

    with closing(sqlite3.connect(location, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER simplepyq_done_removed")
        conn.execute("DROP TABLE simplepyq_finished")
        conn.execute("DROP INDEX tasks_cancelled_blocked")
        conn.execute(f"PRAGMA user_version = {SQLITE_VERSION - 1}")


def test_a_store_of_the_version_before_the_counters_starts_them_from_its_tasks(
    store_path: str,
) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", _work)
        q.enqueue_many("c", ["ok", "ok", "ok", "fail"])
        q.cancel(q.enqueue("c", "ok"))
        q.drain()
        q.chain(Step("c", "ok"), Step("c", "ok"))
        q.enqueue("c", "pending")
    _before_counters(store_path)
    raw_sql(store_path, "DELETE FROM tasks WHERE id = 1")  # before: nothing counts it

    with SimplePyQ(store_path) as q:
        q.add_channel("c", _work)
        assert _agree(q)["c"] == {"pending": 2, "running": 0, "delayed": 0, "done": 2,
                                  "failed": 1, "cancelled": 1, "blocked": 1}
        assert q.finished_totals() == {"c": {"done": 2, "failed": 1, "cancelled": 1}}
        q.drain()
        raw_sql(store_path, "DELETE FROM tasks WHERE id = 2")
        assert _agree(q)["c"]["done"] == 4
        assert q.finished_totals() == {"c": {"done": 5, "failed": 1, "cancelled": 1}}

    with SimplePyQ(store_path) as q:  # opened again: counted once
        assert q.finished_totals() == {"c": {"done": 5, "failed": 1, "cancelled": 1}}


@pytest.mark.sqlite_only
def test_an_upgraded_0_1_3_store_counts_all_but_the_done_tasks_0_1_3_finished(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "legacy.db")
    shutil.copyfile(FIXTURE_013, path)
    with SimplePyQ(path) as q:
        counts, stats = q.counts(), q.stats()
        assert stats["email"]["done"] == 3  # finished by 0.1.3: no finish time
        assert counts == {**stats, "email": {**stats["email"], "done": 0}}
        q.add_channel("email", lambda args: None)
        q.drain()
        raw_sql(path, "DELETE FROM tasks WHERE id = 1")  # one of 0.1.3's
        assert q.stats()["email"]["done"] == 4
        assert q.counts()["email"]["done"] == 2  # the two run here


@pytest.mark.sqlite_only
def test_counting_adds_no_trigger_to_the_inserts_and_updates_of_tasks(queue: SimplePyQ) -> None:
    triggers = raw_sql(queue.store_path, "SELECT name, sql FROM sqlite_master "
                                         "WHERE type = 'trigger' AND tbl_name = 'tasks'")
    assert triggers and all(" AFTER DELETE ON tasks" in sql for _, sql in triggers)


@pytest.mark.sqlite_only
def test_counts_reads_no_finished_task_but_through_the_indexes_of_failed_and_cancelled(
    queue: SimplePyQ,
) -> None:
    from simplepyq.storage.sqlite import Q

    plan = [row[3] for row in raw_sql(queue.store_path, "EXPLAIN QUERY PLAN " + Q["counts"])]
    scans = [step for step in plan if step.startswith(("SCAN", "SEARCH"))]
    assert len(scans) == 6
    assert all((step.startswith("SCAN tasks USING ") and " INDEX tasks_" in step)
               or step == "SCAN simplepyq_finished" for step in scans), plan
