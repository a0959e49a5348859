"""Browsing the store and acting on one task: what a dashboard asks of the queue.

``recent_tasks`` lists tasks newest first, a page at a time, keyed by the last id
seen; ``recent_workflows`` does the same for workflows. ``requeue``, ``delete`` and
``run_now`` act on one task and say whether they did: the store's transaction
decides whether the task's state allows it. ``workers()`` shows every registered
queue instance with its liveness and running count.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from simplepyq import SimplePyQ, Status, Step, Task, Worker, WorkflowStatus
from simplepyq.identity import host_id
from tests.backends import blocked_by, is_postgres, pg_connect, raw_sql
from tests.support import InThread, run_python, wait_until

SLOW_POLL = 60.0
"""A poll interval no test waits for: a task that starts within its bound was woken."""


class Gate:
    """A task function that holds its task running until ``release`` is set."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, args: Any) -> Any:
        self.started.set()
        assert self.release.wait(30), "the test never released its task"
        return args


@pytest.fixture
def gate() -> Iterator[Gate]:
    held = Gate()
    yield held
    held.release.set()  # a failed test must not leave a worker waiting


def work(args: Any) -> Any:
    if args == "fail":
        raise RuntimeError("asked to fail")
    return args


def _status(queue: SimplePyQ, task_id: int) -> str:
    task = queue.get_task(task_id)
    assert task is not None
    return task.status


def _ids(tasks: list[Task]) -> list[int]:
    return [task.id for task in tasks]


def _pages(queue: SimplePyQ, limit: int, before: int | None = None,
           **filters: Any) -> list[list[int]]:
    """Every page of ``recent_tasks`` with ``filters`` below ``before``, each after the last
    id of the one before, up to the first empty page (left out)."""
    pages: list[list[int]] = []
    while True:
        page = _ids(queue.recent_tasks(**filters, before=before, limit=limit))
        assert len(page) <= limit
        if not page:
            return pages
        pages.append(page)
        before = page[-1]


# -- recent_tasks: keyset pages, newest first --------------
def test_paging_through_250_tasks_gives_each_once_newest_first(queue: SimplePyQ) -> None:
    queue.add_channel("c", work)
    ids = queue.enqueue_many("c", range(250))

    first = _ids(queue.recent_tasks("c", limit=40))
    later = queue.enqueue_many("c", ["enqueued", "meanwhile"])  # above every page's bound
    pages = [first, *_pages(queue, 40, before=first[-1], channel="c")]

    assert [len(page) for page in pages] == [40] * 6 + [10]
    assert [task_id for page in pages for task_id in page] == sorted(ids, reverse=True)
    assert _ids(queue.recent_tasks(limit=2)) == sorted(later, reverse=True)
    assert _ids(queue.recent_tasks(before=1)) == []


def test_filters_by_channel_status_and_key_combine(queue: SimplePyQ) -> None:
    queue.add_channel("a", work)
    queue.add_channel("b", work)
    queue.enqueue_many("a", ["ok", "fail", "ok", "fail"], keys=["k1", "k2", None, "k1"])
    queue.enqueue_many("b", ["ok", "fail", "ok"], keys=["k1", None, "k2"])
    queue.drain()  # done and failed, some with keys
    queue.enqueue("a", "pending", key="k1")
    queue.enqueue("a", "later", key="k3", delay=3600)
    queue.cancel(queue.enqueue("a", "cancelled", key="k2"))
    queue.enqueue("b", "pending")
    queue.enqueue("b", "later", delay=3600, key="k1")
    queue.chain(Step("b", "first"), Step("b"))  # pending, then blocked
    stored = queue.tasks(limit=1000)
    assert {task.status for task in stored} == set(Status) - {Status.RUNNING}

    for channel in (None, "a", "b", "nowhere"):
        for status in (None, *Status):
            for key in (None, "k1", "k2", "k3", "nowhere"):
                expected = [task.id for task in reversed(stored)
                            if channel in (None, task.channel) and status in (None, task.status)
                            and key in (None, task.key)]
                filters = {"channel": channel, "status": status, "key": key}
                assert _ids(queue.recent_tasks(**filters)) == expected, filters
                assert [i for page in _pages(queue, 2, **filters) for i in page] == expected
                if expected:
                    middle = expected[len(expected) // 2]
                    assert _ids(queue.recent_tasks(**filters, before=middle)) == [
                        task_id for task_id in expected if task_id < middle]


def test_a_crowded_channel_of_one_status_pages_as_any_other(queue: SimplePyQ) -> None:
    # Past a thousand pending tasks of a channel, SQLite finds a page by walking ids
    # down instead of through the claim index (see crowded in sqlite.sql).
    queue.add_channel("deep", work)
    queue.add_channel("other", work)
    deep = queue.enqueue_many("deep", range(1100))
    other = queue.enqueue_many("other", range(30))
    deep += queue.enqueue_many("deep", range(20))

    pages = _pages(queue, 300, channel="deep", status="pending")
    assert [task_id for page in pages for task_id in page] == sorted(deep, reverse=True)
    pages = _pages(queue, 300, status="pending")
    assert [task_id for page in pages for task_id in page] == sorted(deep + other,
                                                                     reverse=True)
    assert _ids(queue.recent_tasks("other", "pending", limit=100)) == sorted(other,
                                                                               reverse=True)


@pytest.mark.parametrize(("call", "error", "message"), [
    pytest.param(lambda q: q.recent_tasks(status="finished"), ValueError,
                 r"unknown status 'finished'; statuses are pending, running", id="status"),
    pytest.param(lambda q: q.recent_tasks(limit=0), ValueError,
                 r"limit must be at least 1, got 0", id="limit-0"),
    pytest.param(lambda q: q.recent_tasks(limit="5"), TypeError,
                 r"limit must be an int, not str", id="limit-str"),
    pytest.param(lambda q: q.recent_tasks(before=0), ValueError,
                 r"before must be at least 1, got 0", id="before-0"),
    pytest.param(lambda q: q.recent_tasks(before=True), TypeError,
                 r"before must be an int, not bool", id="before-bool"),
    pytest.param(lambda q: q.recent_tasks(key=""), ValueError,
                 r"a key must not be empty", id="key-empty"),
    pytest.param(lambda q: q.recent_tasks(key=7), TypeError,
                 r"a key must be a str, not int 7", id="key-int"),
    pytest.param(lambda q: q.recent_tasks(channel=""), ValueError,
                 r"a channel name must not be empty", id="channel"),
    pytest.param(lambda q: q.recent_workflows(before=-3), ValueError,
                 r"before must be at least 1, got -3", id="workflows-before"),
    pytest.param(lambda q: q.recent_workflows(limit=0), ValueError,
                 r"limit must be at least 1, got 0", id="workflows-limit"),
    pytest.param(lambda q: q.requeue(1, retries=-1), ValueError,
                 r"retries must be >= 0, got -1", id="requeue-retries"),
    pytest.param(lambda q: q.delete("1"), TypeError,
                 r"task_id must be an int, not str", id="delete-id"),
    pytest.param(lambda q: q.run_now(None), TypeError,
                 r"task_id must be an int, not NoneType", id="run-now-id"),
])
def test_bad_arguments_are_refused_naming_them(queue: SimplePyQ, call: Any,
                                               error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call(queue)


# -- requeue -----------------------------------------------
def test_requeue_makes_a_failed_task_pending_with_new_retries_and_it_runs_again(
        queue: SimplePyQ) -> None:
    runs: list[int] = []

    def fails_once(args: Any) -> Any:
        runs.append(args)
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        return "second run"

    queue.add_channel("c", fails_once)
    task_id = queue.enqueue("c", 1)
    queue.drain()
    assert _status(queue, task_id) == Status.FAILED

    assert queue.requeue(task_id, retries=2) is True
    task = queue.get_task(task_id)
    assert task is not None and (task.status, task.retries) == (Status.PENDING, 2)
    queue.drain()
    task = queue.get_task(task_id)
    assert task is not None and (task.status, task.result, task.attempts) == (
        Status.DONE, "second run", 2)


def test_requeue_makes_a_cancelled_task_pending_and_forgets_its_cancel(
        queue: SimplePyQ) -> None:
    queue.add_channel("c", work)
    task_id = queue.enqueue("c", "x")
    assert queue.cancel(task_id) is True

    assert queue.requeue(task_id) is True
    task = queue.get_task(task_id)
    assert task is not None and (task.status, task.cancel_requested) == (Status.PENDING, False)
    queue.drain()
    assert _status(queue, task_id) == Status.DONE  # not cancelled by the old request


def test_requeue_refuses_done_pending_delayed_running_and_absent_tasks(
        queue: SimplePyQ, gate: Gate) -> None:
    queue.add_channel("c", work)
    queue.add_channel("held", gate)
    done = queue.enqueue("c", "done")
    queue.drain()
    pending = queue.enqueue("c", "pending")
    delayed = queue.enqueue("c", "later", delay=3600)
    running = queue.enqueue("held", "running")
    queue.start(["held"])
    assert gate.started.wait(10)

    for task_id, status in [(done, Status.DONE), (pending, Status.PENDING),
                            (delayed, Status.DELAYED), (running, Status.RUNNING)]:
        assert queue.requeue(task_id) is False
        assert _status(queue, task_id) == status
    assert queue.requeue(running + 1000) is False


def test_a_keyed_task_is_not_requeued_while_an_unfinished_task_holds_its_key(
        queue: SimplePyQ) -> None:
    queue.add_channel("c", work)
    failed = queue.enqueue("c", "fail", key="invoice-7")
    queue.drain()
    holder = queue.enqueue("c", "again", key="invoice-7")
    assert holder.created

    assert queue.requeue(failed) is False
    assert _status(queue, failed) == Status.FAILED
    queue.drain()  # the holder ends: the key is free
    assert queue.requeue(failed) is True
    assert _status(queue, failed) == Status.PENDING
    assert queue.enqueue("c", "third", key="invoice-7") == failed  # it holds the key now


def test_requeue_of_a_failed_step_brings_back_the_steps_its_failure_cancelled(
        queue: SimplePyQ) -> None:
    calls: list[Any] = []

    def fails_first(args: Any) -> Any:
        calls.append(args)
        if calls.count(args) == 1 and args == "first":
            raise RuntimeError("first run of the first step fails")
        return f"{args}!"

    queue.add_channel("c", fails_first)
    first, second = queue.chain(Step("c", "first"), Step("c")).task_ids
    queue.drain()
    assert (_status(queue, first), _status(queue, second)) == (Status.FAILED, Status.CANCELLED)
    # The second step was cancelled by its upstream: it comes back with it, not alone.
    assert queue.requeue(second) is False

    assert queue.requeue(first) is True
    assert (_status(queue, first), _status(queue, second)) == (Status.PENDING, Status.BLOCKED)
    queue.drain()
    task = queue.get_task(second)
    assert task is not None and (task.status, task.result) == (Status.DONE, "first!!")


def test_a_step_cancelled_while_it_waited_is_not_requeued(queue: SimplePyQ) -> None:
    queue.add_channel("c", work)
    first, second = queue.chain(Step("c", "x"), Step("c")).task_ids
    assert queue.cancel(second) is True  # blocked: it never received its input

    assert queue.requeue(second) is False
    queue.drain()
    assert queue.requeue(second) is False  # its upstream is done now, but it has no input
    assert (_status(queue, first), _status(queue, second)) == (Status.DONE, Status.CANCELLED)


@pytest.mark.postgres_only
@pytest.mark.parametrize("first", ["enqueue", "requeue"])
def test_a_requeue_and_an_enqueue_of_its_key_at_once_leave_one_unfinished_holder(
        queue: SimplePyQ, first: str) -> None:
    from simplepyq.storage.postgres import Q

    queue.add_channel("c", work)
    failed = queue.enqueue("c", "fail", key="k")
    queue.drain()
    with pg_connect(queue.store_path) as other:
        if first == "enqueue":  # an enqueue of the key, not committed yet
            (inserted,) = other.execute(Q["add_keyed"], {
                "channel": "c", "args": None, "status": "pending", "retries": 0,
                "run_at": None, "priority": 0, "now": time.time(), "time_limit": None,
                "key": "k"}).fetchone()
            second = InThread(lambda: queue.requeue(failed))
        else:  # a requeue of the failed task, not committed yet
            assert other.execute(Q["requeue"], {"id": failed, "retries": None}
                                 ).fetchone() == ("c",)
            second = InThread(lambda: queue.enqueue("c", "again", key="k"))
        wait_until(lambda: blocked_by(queue.store_path, other.info.backend_pid))
        assert second.running()  # it waits for the first to end
        other.commit()
        outcome = second.result()

    holders = raw_sql(queue.store_path, "SELECT id FROM tasks WHERE key = 'k' AND status IN "
                                        "('pending', 'delayed', 'running', 'blocked')")
    if first == "enqueue":
        assert outcome is False
        assert holders == [(inserted,)]
        assert _status(queue, failed) == Status.FAILED
    else:
        assert (outcome, outcome.created) == (failed, False)  # the requeued task holds it
        assert holders == [(failed,)]


# -- delete ------------------------------------------------
def _side_rows(store_path: str, task_id: int) -> dict[str, int]:
    """How many rows of each side table name ``task_id`` as their task."""
    return {table: raw_sql(store_path, f"SELECT COUNT(*) FROM {table} WHERE task_id = ?",
                           (task_id,))[0][0]
            for table in ("simplepyq_flows", "simplepyq_deps", "simplepyq_ticks")}


def test_delete_removes_a_task_with_its_rows_in_the_side_tables(
        queue: SimplePyQ, store_path: str) -> None:
    queue.add_channel("c", work)
    first, second = queue.chain(Step("c", "x"), Step("c")).task_ids
    raw_sql(store_path, "INSERT INTO simplepyq_ticks (task_id, schedule, scheduled_at) "
                        "VALUES (?, 'nightly', 0)", (second,))
    assert _side_rows(store_path, second) == {
        "simplepyq_flows": 1, "simplepyq_deps": 1, "simplepyq_ticks": 1}

    assert queue.delete(second) is True  # blocked, and nothing waits for it
    assert queue.get_task(second) is None
    assert _side_rows(store_path, second) == {
        "simplepyq_flows": 0, "simplepyq_deps": 0, "simplepyq_ticks": 0}
    assert queue.delete(first) is True  # pending; what waited for it is gone
    assert _side_rows(store_path, first)["simplepyq_flows"] == 0
    assert queue.recent_tasks() == []
    assert queue.delete(first) is False  # absent


def test_delete_refuses_a_running_task_and_one_a_blocked_task_waits_for(
        queue: SimplePyQ, gate: Gate) -> None:
    queue.add_channel("c", work)
    queue.add_channel("held", gate)
    upstream, waiting = queue.chain(Step("c", "x"), Step("c")).task_ids
    running = queue.enqueue("held", "running")
    queue.start(["held"])
    assert gate.started.wait(10)

    assert queue.delete(running) is False
    assert queue.delete(upstream) is False  # pending, and a blocked task waits for it
    assert (_status(queue, running), _status(queue, upstream)) == (Status.RUNNING,
                                                                   Status.PENDING)
    gate.release.set()
    assert queue.wait(running, timeout=30).status == Status.DONE
    assert queue.delete(running) is True
    queue.stop()
    queue.drain(["c"])
    assert _status(queue, waiting) == Status.DONE  # it received its input
    assert queue.delete(upstream) is True


def _cancelled_by_one_and_waiting_for_another(queue: SimplePyQ) -> tuple[int, int, int]:
    """A failed task, an unfinished (delayed) one, and a task that needs both: cancelled
    by the failure, it would wait for the other again once the first is requeued."""
    queue.add_channel("c", work)
    failed = queue.enqueue("c", "fail")
    unfinished = queue.enqueue("c", "later", delay=3600)
    dependent = queue.enqueue("c", "after both", depends_on=[failed, unfinished])
    queue.drain()
    assert [_status(queue, i) for i in (failed, unfinished, dependent)] == [
        Status.FAILED, Status.DELAYED, Status.CANCELLED]
    return failed, unfinished, dependent


def test_a_task_that_needs_a_task_deleted_while_it_was_cancelled_stays_cancelled(
        queue: SimplePyQ) -> None:
    failed, unfinished, dependent = _cancelled_by_one_and_waiting_for_another(queue)
    assert queue.delete(unfinished) is True  # no blocked task waits for it
    assert queue.requeue(failed) is True
    assert _status(queue, dependent) == Status.CANCELLED  # blocked, it would wait forever
    assert queue.requeue(dependent) is False


@pytest.mark.postgres_only
def test_a_requeue_waits_for_a_delete_of_what_its_dependent_needs_and_leaves_it_cancelled(
        queue: SimplePyQ) -> None:
    from simplepyq.storage.postgres import Q

    failed, unfinished, dependent = _cancelled_by_one_and_waiting_for_another(queue)
    with pg_connect(queue.store_path) as other:  # a delete of the other, uncommitted
        assert other.execute(Q["lock_task"], {"id": unfinished}).fetchone() == ("delayed",)
        assert other.execute(Q["delete_task"], {"id": unfinished}).fetchone() is not None
        requeueing = InThread(lambda: queue.requeue(failed))
        wait_until(lambda: blocked_by(queue.store_path, other.info.backend_pid))
        other.commit()
        assert requeueing.result() is True
    assert _status(queue, dependent) == Status.CANCELLED


@pytest.mark.postgres_only
def test_a_delete_waits_for_a_requeue_that_restores_a_dependent_and_then_refuses(
        queue: SimplePyQ) -> None:
    from simplepyq.storage import dependents
    from simplepyq.storage.postgres import Q

    failed, unfinished, dependent = _cancelled_by_one_and_waiting_for_another(queue)
    with pg_connect(queue.store_path) as other:  # a requeue of the failed one, uncommitted
        assert other.execute(Q["requeue"], {"id": failed, "retries": None}
                             ).fetchone() == ("c",)
        assert dependents.restore(other, Q, list, [failed]) == 1
        deleting = InThread(lambda: queue.delete(unfinished))
        wait_until(lambda: blocked_by(queue.store_path, other.info.backend_pid))
        other.commit()
        assert deleting.result() is False  # the dependent waits for it now
    assert [_status(queue, i) for i in (unfinished, dependent)] == [
        Status.DELAYED, Status.BLOCKED]


@pytest.mark.postgres_only
def test_a_delete_waits_for_a_dependent_being_stored_and_then_refuses(
        queue: SimplePyQ) -> None:
    from simplepyq.storage.postgres import Q

    queue.add_channel("c", work)
    upstream = queue.enqueue("c", "x")
    with pg_connect(queue.store_path) as other:  # a task stored to wait for it, uncommitted
        other.execute(Q["lock_upstreams"], {"ids": [upstream]}).fetchall()
        (waiting,) = other.execute(Q["add_node"], {
            "channel": "c", "args": None, "status": "blocked", "retries": 0, "run_at": None,
            "priority": 0, "now": time.time(), "time_limit": None, "key": None,
            "finished_at": None, "error": None}).fetchone()
        other.execute(Q["add_flow"], {"id": waiting, "workflow": waiting, "waiting": 1,
                                      "needs": "done", "input": "result"})
        other.execute(Q["add_edge"], {"id": waiting, "position": 0, "upstream": upstream,
                                      "needs": "done", "settled": 0})
        deleting = InThread(lambda: queue.delete(upstream))
        wait_until(lambda: blocked_by(queue.store_path, other.info.backend_pid))
        other.commit()
        assert deleting.result() is False

    assert _status(queue, upstream) == Status.PENDING
    queue.drain()
    task = queue.get_task(waiting)
    assert task is not None and (task.status, task.result) == (Status.DONE, "x")


# -- run_now -----------------------------------------------
def test_run_now_makes_a_delayed_task_run_at_once() -> None:
    # In memory nothing hears of commits, and the poll takes a minute: only run_now
    # itself can wake the worker (the store's own wake-ups: see the next test).
    with SimplePyQ(":memory:", poll_interval=SLOW_POLL) as q:
        q.add_channel("c", work)
        task_id = q.enqueue("c", "later", delay=3600)
        wake = q._channels["c"].wake
        before = wake.generation
        q.start()
        # Its housekeeper woke it once at start (the one other wake-up), and it sleeps.
        wait_until(lambda: wake.generation > before and wake.idle == 1)

        assert q.run_now(task_id) is True
        task = q.wait(task_id, timeout=10)
        assert (task.status, task.result) == (Status.DONE, "later")


RUN_NOW = """
import sys
from simplepyq import SimplePyQ
with SimplePyQ(sys.argv[1]) as q:
    print(q.run_now(int(sys.argv[2])))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="SQLite's watch on its log uses Linux's inotify; elsewhere it polls")
def test_run_now_in_another_process_wakes_the_workers_here(store_path: str) -> None:
    with SimplePyQ(store_path, poll_interval=SLOW_POLL) as q:
        q.add_channel("c", work)
        task_id = q.enqueue("c", "later", delay=3600)
        q.start()
        wait_until(lambda: _hears_other_processes(q))

        assert run_python(RUN_NOW, q.store_path, str(task_id)).strip() == "True"
        task = q.wait(task_id, timeout=10)
        assert task.status == Status.DONE


def _hears_other_processes(queue: SimplePyQ) -> bool:
    """Whether the store of a started queue listens for other processes' commits."""
    store: Any = queue._store
    if is_postgres(queue.store_path):
        return store._listener is not None and store._listener._connected is True
    return any(thread.name == "simplepyq-walwatch" for thread in threading.enumerate())


def test_run_now_brings_a_delayed_task_forward_and_refuses_any_other(
        queue: SimplePyQ) -> None:
    queue.add_channel("c", work)
    done = queue.enqueue("c", "done")
    queue.drain()
    pending = queue.enqueue("c", "now")
    delayed = queue.enqueue("c", "later", delay=3600)

    assert queue.run_now(delayed) is True
    task = queue.get_task(delayed)
    assert task is not None and task.status == Status.PENDING
    assert task.run_at is not None and task.run_at <= datetime.now(timezone.utc)
    assert queue.run_now(delayed) is False  # pending now
    assert queue.run_now(pending) is False
    assert queue.run_now(done) is False
    assert queue.run_now(delayed + 1) is False
    assert (_status(queue, pending), _status(queue, done)) == (Status.PENDING, Status.DONE)


# -- workers -----------------------------------------------
def _register_by_hand(store_path: str, owner: str, host: str, pid: int, beat: float,
                      alive: bool) -> Worker:
    raw_sql(store_path, "INSERT INTO simplepyq_owners (owner, host, pid, pid_start, "
                        "heartbeat_at, channels) VALUES (?, ?, ?, ?, ?, ?)",
            (owner, host, pid, None, beat, '["c"]'))
    return Worker(owner, host, pid, ("c",), datetime.fromtimestamp(beat, timezone.utc),
                  alive=alive, running=0)


def test_workers_shows_this_process_with_its_running_count_while_a_task_runs(
        queue: SimplePyQ, store_path: str, gate: Gate) -> None:
    queue.add_channel("c", gate)
    queue.add_channel("idle", work)
    # On other hosts: one silent for longer than a lease (dead), and one whose heartbeat
    # is fresh (dated ahead, so that it stays fresh however slowly this test runs).
    gone = _register_by_hand(store_path, "elsewhere:42:gone", "elsewhere", 42,
                             time.time() - 3600, alive=False)
    there = _register_by_hand(store_path, "there:7:up", "there", 7, time.time() + 600,
                              alive=True)
    assert queue.workers() == [gone, there]
    task_id = queue.enqueue("c", "held")
    queue.start()
    assert gate.started.wait(10)

    # The housekeeper forgets an instance it judges dead, though it was running nothing.
    listed = wait_until(lambda: None if gone in (found := queue.workers()) else found)
    assert there in listed and len(listed) == 2
    (worker,) = (each for each in listed if each != there)
    assert (worker.host, worker.pid, worker.channels, worker.alive, worker.running) == (
        host_id(), os.getpid(), ("c", "idle"), True, 1)
    assert worker.heartbeat_at is not None and worker.heartbeat_at.tzinfo is not None
    assert datetime.now(timezone.utc) - worker.heartbeat_at < timedelta(minutes=1)
    assert queue.live_workers() == {"c": 2, "idle": 1}  # judged alike (here, and there)

    gate.release.set()
    assert queue.wait(task_id, timeout=30).status == Status.DONE
    assert [w.running for w in queue.workers() if w.owner == worker.owner] == [0]
    queue.stop()
    assert queue.workers() == [there]  # a stopped instance is gone


# -- recent_workflows --------------------------------------
def test_recent_workflows_pages_newest_first_with_their_counts(queue: SimplePyQ) -> None:
    queue.add_channel("c", work)
    made = [queue.chain(Step("c", "fail" if n == 1 else n), Step("c")).id for n in range(4)]
    queue.drain()
    made += [queue.chain(Step("c", n), Step("c"), Step("c")).id for n in range(3)]
    queue.enqueue("c", "outside any workflow")

    pages: list[list[WorkflowStatus]] = []
    before = None
    while page := queue.recent_workflows(before=before, limit=3):
        pages.append(page)
        before = page[-1].id

    assert [[status.id for status in page] for page in pages] == [
        sorted(made, reverse=True)[:3], sorted(made, reverse=True)[3:6],
        sorted(made)[:1]]
    for status in (status for page in pages for status in page):
        assert dict(status.counts) == dict(queue.workflow(status.id).counts)
    assert dict(pages[0][0].counts) == {"pending": 1, "blocked": 2}
    assert dict(pages[2][0].counts) == {"done": 2}
    assert dict(pages[1][2].counts) == {"failed": 1, "cancelled": 1}


# -- what the indexes serve (SQLite: no statistics, so the plans are fixed) ----
def _plan(store_path: str, statement: str, values: dict[str, Any]) -> str:
    with closing(sqlite3.connect(store_path)) as conn:
        return " / ".join(str(row[3]) for row in
                          conn.execute("EXPLAIN QUERY PLAN " + statement, values))


@pytest.mark.sqlite_only
def test_listings_read_the_partial_index_of_a_status_and_the_index_of_keys(
        queue: SimplePyQ, store_path: str) -> None:
    from simplepyq.storage.browse import _recent_statement
    from simplepyq.storage.sqlite import CROWDED, Q

    queue.add_channel("deep", work)
    queue.add_channel("shallow", work)
    queue.enqueue_many("deep", range(CROWDED))
    queue.enqueue_many("shallow", range(5))
    values = {"channel": "deep", "status": "pending", "key": "k", "before": 2**62,
              "limit": 50}

    def plan(channel: bool, status: str | None, key: bool,
             status_filter: str = "recent_status") -> str:
        statement = _recent_statement(Q, channel, status and status_filter, key)
        return _plan(store_path, statement, {**values, "status": status})

    assert "tasks_failed (channel=? AND rowid<?)" in plan(True, "failed", False)
    assert "tasks_running" in plan(True, "running", False)
    assert "tasks_claim" in plan(True, "pending", False)
    assert "INTEGER PRIMARY KEY (rowid<?)" in plan(True, "pending", False,
                                                   "recent_status_by_id")
    assert "tasks_running (channel=?)" in plan(False, "running", False,
                                               "recent_status_indexed")
    assert "tasks_failed (channel=? AND rowid<?)" in plan(False, "failed", False,
                                                          "recent_status_indexed")
    assert "tasks_keyed (key=? AND id<?)" in plan(False, None, True)
    assert "tasks_keyed" in plan(True, "done", True)
    assert "INTEGER PRIMARY KEY (rowid<?)" in plan(False, "done", False)

    def crowded(channel: str | None, status: str) -> bool:
        with closing(sqlite3.connect(store_path)) as conn:
            probe = {**values, "channel": channel, "status": status, "probe": CROWDED}
            name = "crowded" if channel is not None else "crowded_anywhere"
            return bool(conn.execute(Q[name], probe).fetchone()[0])

    assert crowded("deep", "pending") and not crowded("shallow", "pending")
    assert not crowded("deep", "failed")  # an index in id order serves any number
    assert crowded(None, "pending") and crowded(None, "done")  # done: no index at all
    assert not crowded(None, "running") and not crowded(None, "failed")
    assert "SCAN tasks USING INDEX tasks_running" in _plan(store_path, Q["running_by_owner"], {})
    assert "simplepyq_flows_workflow (workflow<?)" in _plan(
        store_path, Q["recent_workflows"], values)


@pytest.mark.sqlite_only
def test_no_status_change_writes_the_index_of_keys(queue: SimplePyQ, store_path: str) -> None:
    from simplepyq.storage.sqlite import Q

    with closing(sqlite3.connect(store_path)) as conn:
        roots = dict(conn.execute("SELECT name, rootpage FROM sqlite_master "
                                  "WHERE type = 'index'").fetchall())

        def written(name: str) -> set[str]:
            statement = Q[name]
            numbered = [int(n) for n in re.findall(r"\?(\d+)", statement)]
            values: Any = (None,) * max(numbered) if numbered else dict.fromkeys(
                re.findall(r":(\w+)", statement))
            pages = {row[3] for row in conn.execute("EXPLAIN " + statement, values)
                     if row[1] == "OpenWrite"}
            return {index for index, page in roots.items() if page in pages}

        for name in ("claim", "record_done", "record", "release", "recover", "reconcile",
                     "cancel", "promote_due", "make_due", "release_blocked", "cancel_blocked",
                     "restore", "requeue_failed", "requeue", "run_now"):
            assert "tasks_keyed" not in written(name), name
        assert {"tasks_claim", "tasks_running", "tasks_key"} <= written("claim")
        assert "tasks_keyed" in written("add_keyed")  # what the check would see
