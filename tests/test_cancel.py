"""Cancellation: ``cancel()`` of a task in each state, of one that is about to start or
to end, from another process, and across a crash.

Every test runs on both backends, but those about PostgreSQL's row locks, where a
cancel and a claim of one task meet on two connections. Tasks that must be caught
mid-run wait on events the test controls; races are driven in both orders by
holding the outcome's commit, or by calling the store's verbs one after the other.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from simplepyq import SimplePyQ, Status, Task, TaskCancelled, current_task, policy
from simplepyq.policy import Backoff
from simplepyq.storage.base import Outcome
from tests.backends import blocked_by, raw_sql, split_location
from tests.support import spawn_python, wait_until

OWNER = "test:1:owner"
"""The owner that store-level tests claim tasks for."""

# Cancels task argv[2] of the store argv[1], then prints what cancel returned and when.
CANCEL = """
    import sys, time
    from simplepyq import SimplePyQ

    with SimplePyQ(sys.argv[1]) as q:
        changed = q.cancel(int(sys.argv[2]))
        print(changed, repr(time.time()))
"""

# Runs channel "c", whose task marks "started" in argv[2], waits until it sees its
# cancel, marks "saw-cancel", and then ignores it: it blocks until the test kills it.
# argv: store, directory for the marks.
IGNORES_ITS_CANCEL = """
    import pathlib, sys, threading, time
    from simplepyq import SimplePyQ, current_task

    marks = pathlib.Path(sys.argv[2])

    def job(args):
        (marks / "started").touch()
        context = current_task()
        deadline = time.monotonic() + 60
        while not context.cancelled() and time.monotonic() < deadline:
            time.sleep(0.005)
        (marks / "saw-cancel").touch()
        threading.Event().wait()

    q = SimplePyQ(sys.argv[1], poll_interval=0.05)
    q.add_channel("c", job)
    q.run_until_complete(timeout=120)  # the test kills it long before
"""


def _never(args: object) -> None:
    """A channel function whose tasks must never run."""
    raise AssertionError(f"a cancelled task ran (args {args!r})")


def _task(queue: SimplePyQ, task_id: int) -> Task:
    task = queue.get_task(task_id)
    assert task is not None
    return task


def _status(store_path: str, task_id: int) -> str:
    ((status,),) = raw_sql(store_path, "SELECT status FROM tasks WHERE id = ?", (task_id,))
    return str(status)


class Gate:
    """Where a task waits until the test opens it; ``started`` tells that one got there."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()

    def wait(self) -> None:
        self.started.set()
        assert self.opened.wait(30), "the test never opened the gate"


# -- pending and delayed -----------------------------------
@pytest.mark.parametrize("delay", [None, 0.05, 3600], ids=["pending", "due-soon", "delayed"])
def test_cancel_of_a_task_not_started_makes_it_cancelled_at_once_and_it_never_runs(
    queue: SimplePyQ, delay: float | None,
) -> None:
    queue.add_channel("c", _never)
    queue.add_channel("other", lambda args: args)
    task_id = queue.enqueue("c", "never", retries=3, delay=delay)
    later = queue.enqueue("other", "runs")

    assert queue.cancel(task_id) is True
    cancelled = _task(queue, task_id)
    assert (cancelled.status, cancelled.attempts, cancelled.cancel_requested) == (
        "cancelled", 0, True)
    assert cancelled.finished_at is not None
    assert cancelled.finished
    queue.run_until_complete(timeout=30)  # counts it finished; a due one would run here

    assert _task(queue, task_id) == cancelled
    assert _task(queue, later).status == "done"
    assert queue.stats()["c"] == {"pending": 0, "running": 0, "delayed": 0, "done": 0,
                                  "failed": 0, "cancelled": 1, "blocked": 0}


# -- running -----------------------------------------------
def test_cancel_of_a_running_sync_task_is_seen_at_once_and_check_ends_it_cancelled_never_retried(
    queue: SimplePyQ,
) -> None:
    gate = Gate()
    runs: list[float] = []

    def job(args: object) -> str:
        context = current_task()
        assert context is not None
        runs.append(time.monotonic())
        gate.wait()
        wait_until(context.cancelled, timeout=10)
        runs.append(time.monotonic())
        context.check()  # raises TaskCancelled
        return "not cancelled"

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None, retries=3)
    queue.start()
    assert gate.started.wait(30)
    assert queue.cancel(task_id) is True
    requested = _task(queue, task_id)
    gate.opened.set()
    task = queue.wait(task_id, timeout=30)
    queue.run_until_complete(timeout=30)  # nothing runs again

    assert (requested.status, requested.cancel_requested) == ("running", True)
    assert (task.status, task.attempts, task.result, task.cancel_requested) == (
        "cancelled", 1, None, True)
    assert len(runs) == 2  # one run, which saw the cancel
    assert task.error is not None
    assert f"TaskCancelled: task {task_id} was cancelled" in task.error
    assert [(attempt.number, attempt.outcome) for attempt in task.history] == [
        (1, "cancelled")]
    assert _task(queue, task_id) == task


def test_a_running_task_that_returns_after_its_cancel_is_done_with_its_result(
    queue: SimplePyQ,
) -> None:
    gate = Gate()

    def job(args: object) -> str:
        context = current_task()
        assert context is not None
        gate.wait()
        wait_until(context.cancelled, timeout=10)
        return "finished anyway"

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None, retries=3)
    queue.start()
    assert gate.started.wait(30)
    assert queue.cancel(task_id) is True
    gate.opened.set()
    task = queue.wait(task_id, timeout=30)

    assert (task.status, task.result, task.attempts, task.cancel_requested, task.history) == (
        "done", "finished anyway", 1, True, ())


def test_cancel_of_an_async_task_cancels_it_at_its_await(queue: SimplePyQ) -> None:
    started = threading.Event()
    ended: list[str] = []

    async def job(args: object) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            ended.append("cancelled at the await")
            raise
        return "slept all along"

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None, retries=3)
    queue.start()
    assert started.wait(30)
    asked = time.monotonic()
    assert queue.cancel(task_id) is True
    task = queue.wait(task_id, timeout=20)

    assert time.monotonic() - asked < 10  # not at the end of its sleep
    assert ended == ["cancelled at the await"]
    assert (task.status, task.attempts) == ("cancelled", 1)
    assert task.error is not None and "CancelledError" in task.error
    assert [attempt.outcome for attempt in task.history] == ["cancelled"]


def test_cancel_from_another_process_reaches_a_running_task(
    store_path: str, backend: str,
) -> None:
    # PostgreSQL tells of the cancel by NOTIFY: far sooner than its (long) poll interval.
    # SQLite's workers learn of it when they poll: within a few poll intervals.
    poll, bound = (30.0, 3.0) if backend == "postgres" else (0.5, 5.0)
    seen: list[float] = []

    def job(args: object) -> None:
        context = current_task()
        assert context is not None
        wait_until(context.cancelled, timeout=30, interval=0.001)
        seen.append(time.time())
        context.check()

    with SimplePyQ(store_path, poll_interval=poll) as q:
        q.add_channel("c", job)
        task_id = q.enqueue("c", None)
        q.start()
        wait_until(lambda: _task(q, task_id).status == "running", timeout=30)
        child = spawn_python(CANCEL, store_path, str(task_id))
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        task = q.wait(task_id, timeout=60)

    changed, cancelled_at = out.split()
    assert changed == "True"
    assert task.status == "cancelled"
    assert seen[0] - float(cancelled_at) < bound


def test_a_task_claimed_but_not_started_when_its_cancel_comes_ends_cancelled_without_running(
    queue: SimplePyQ, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The one worker claims both tasks at once (its tasks look instant), and keeps the
    # second in its hand until it is free (none is given back to the store).
    monkeypatch.setattr("simplepyq.batches.HOLD_LIMIT", 3600.0)
    gate = Gate()
    ran: list[str] = []

    def job(args: str) -> None:
        ran.append(args)
        gate.wait()

    queue.add_channel("c", job)
    queue._channels["c"].pace.ran(0.0)
    first, second = queue.enqueue_many("c", ["first", "second"])
    queue.start()
    assert gate.started.wait(30)
    assert _status(queue.store_path, second) == "running"  # in the worker's hand
    assert queue.cancel(second) is True
    gate.opened.set()
    task = queue.wait(second, timeout=30)

    assert ran == ["first"]
    assert (task.status, task.error) == ("cancelled", "cancelled before it ran")
    assert _task(queue, first).status == "done"


def test_a_claimed_task_given_back_unstarted_after_its_cancel_came_ends_cancelled(
    queue: SimplePyQ,
) -> None:
    queue.add_channel("c", _never)
    task_id = queue.enqueue("c", None)
    store = queue._store
    store.exchange(OWNER, [], "c", 1, time.time())
    assert queue.cancel(task_id) is True  # running: a request
    assert store.release(OWNER, [task_id]) == 1

    task = _task(queue, task_id)
    assert (task.status, task.error, task.attempts) == ("cancelled", "cancelled before it ran", 0)
    assert task.finished_at is not None


def test_a_cancel_that_comes_between_the_claim_and_the_start_of_a_run_reaches_it(
    queue: SimplePyQ, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The claim is held after it committed, so that no task runs here when the cancel
    # (from another queue, as from another process) comes and the housekeeper looks.
    store = queue._store
    exchange, change_token = store.exchange, store.change_token
    claimed, go = threading.Event(), threading.Event()
    looks: list[int] = []

    def held_claim(owner: str, outcomes: Any, channel: str | None, limit: int,
                   now: float) -> Any:
        done = exchange(owner, outcomes, channel, limit, now)
        if done.claimed:
            claimed.set()
            assert go.wait(30), "the test never let the claim through"
        return done

    def counted_token() -> int:
        looks.append(1)
        return change_token()

    monkeypatch.setattr(store, "exchange", held_claim)
    monkeypatch.setattr(store, "change_token", counted_token)
    seen: list[bool] = []

    def job(args: object) -> None:
        context = current_task()
        assert context is not None
        deadline = time.monotonic() + 5
        while not context.cancelled() and time.monotonic() < deadline:
            time.sleep(0.001)
        seen.append(context.cancelled())
        context.check()

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None)
    try:
        queue.start()
        assert claimed.wait(30)
        before = change_token()
        with SimplePyQ(queue.store_path) as other:
            assert other.cancel(task_id) is True
        wait_until(lambda: change_token() != before)  # the store tells of the change
        passes = len(looks)
        wait_until(lambda: len(looks) >= passes + 2)  # and the housekeeper has seen it
    finally:
        go.set()
    task = queue.wait(task_id, timeout=30)

    assert seen == [True]
    assert task.status == "cancelled"


# -- finished, missing, malformed --------------------------
@pytest.mark.parametrize("ending", ["done", "failed", "cancelled"])
def test_cancel_of_a_finished_task_returns_false_and_changes_nothing(
    queue: SimplePyQ, ending: str,
) -> None:
    def job(args: object) -> str:
        if ending == "failed":
            raise RuntimeError("fails")
        return "result"

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None)
    if ending == "cancelled":
        assert queue.cancel(task_id) is True
    queue.run_until_complete(timeout=30)
    before = _task(queue, task_id)
    assert before.status == ending

    assert queue.cancel(task_id) is False
    assert _task(queue, task_id) == before


def test_cancel_of_a_task_that_does_not_exist_raises_value_error_naming_it(
    queue: SimplePyQ,
) -> None:
    queue.add_channel("c", _never)
    queue.enqueue("c", None)
    with pytest.raises(ValueError, match="there is no task with id 12345"):
        queue.cancel(12345)


@pytest.mark.parametrize("bad", ["1", 1.0, True, None, [1]])
def test_cancel_of_a_non_int_raises_type_error_and_changes_nothing(
    queue: SimplePyQ, bad: Any,
) -> None:
    queue.add_channel("c", _never)
    task_id = queue.enqueue("c", None)
    assert task_id == 1
    before = _task(queue, task_id)

    with pytest.raises(TypeError, match=f"task_id must be an int, not {type(bad).__name__}"):
        queue.cancel(bad)
    assert _task(queue, task_id) == before


# -- a cancel that races the task's own end ----------------
@contextmanager
def _outcomes_held(queue: SimplePyQ, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        tuple[threading.Event, threading.Event]]:
    """Hold every commit of outcomes until the test sets the second event; the first is
    set when one arrives (the task has ended, its outcome not recorded yet)."""
    store = queue._store
    exchange = store.exchange
    arrived, go = threading.Event(), threading.Event()

    def held(owner: str, outcomes: Any, channel: str | None, limit: int, now: float) -> Any:
        if outcomes:
            arrived.set()
            assert go.wait(30), "the test never let the outcome through"
        return exchange(owner, outcomes, channel, limit, now)

    monkeypatch.setattr(store, "exchange", held)
    try:
        yield arrived, go
    finally:
        go.set()


@pytest.mark.parametrize("ending", ["returns", "raises"])
def test_a_cancel_that_comes_after_the_run_ended_but_before_its_outcome_is_recorded(
    queue: SimplePyQ, monkeypatch: pytest.MonkeyPatch, ending: str,
) -> None:
    runs: list[bool] = []

    def job(args: object) -> str:
        context = current_task()
        assert context is not None
        runs.append(context.cancelled())
        if ending == "raises":
            raise RuntimeError("would be retried")
        return "returned"

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None, retries=3)
    with _outcomes_held(queue, monkeypatch) as (arrived, go):
        queue.start()
        assert arrived.wait(30)
        assert queue.cancel(task_id) is True  # still running, as far as the store knows
        go.set()
        task = queue.wait(task_id, timeout=30)
        queue.run_until_complete(timeout=30)

    assert runs == [False]  # one run, which ended before the cancel
    if ending == "returns":
        assert (task.status, task.result, task.cancel_requested) == ("done", "returned", True)
    else:  # the retry it asked for is not made: the cancel wins
        assert (task.status, task.cancel_requested) == ("cancelled", True)
        assert task.error is not None and "would be retried" in task.error
        assert [attempt.outcome for attempt in task.history] == ["cancelled"]
    assert _task(queue, task_id) == task


@pytest.mark.parametrize(("order", "outcome", "expected"), [
    ("cancel first", "returned", ((True, "running"), "done")),
    ("cancel first", "raised", ((True, "running"), "cancelled")),
    ("outcome first", "returned", ((False, "done"), "done")),
    ("outcome first", "raised", ((True, "cancelled"), "cancelled")),
])
def test_cancel_and_outcome_recorded_in_either_order_end_done_or_cancelled_never_retried(
    queue: SimplePyQ, order: str, outcome: str, expected: tuple[tuple[bool, str], str],
) -> None:
    queue.add_channel("c", _never)
    task_id = queue.enqueue("c", None, retries=3)
    store = queue._store
    (claimed,) = store.exchange(OWNER, [], "c", 1, time.time()).claimed
    assert claimed.id == task_id
    now = time.time()
    decision = policy.succeeded(3, b"\xa2ok", now) if outcome == "returned" else \
        policy.raised(3, 1, "RuntimeError: asks for a retry", Backoff(0), now)
    record: Callable[[], Any] = lambda: store.exchange(  # noqa: E731
        OWNER, [Outcome(task_id, decision)], None, 0, time.time())

    if order == "cancel first":
        cancelled = store.cancel(task_id, time.time())
        assert record().dropped == []
    else:
        assert record().dropped == []
        cancelled = store.cancel(task_id, time.time())
    reclaimed = store.exchange(OWNER, [], "c", 1, time.time()).claimed

    expected_cancel, expected_status = expected
    task = _task(queue, task_id)
    assert (cancelled, task.status) == (expected_cancel, expected_status)
    assert reclaimed == []  # never run again
    assert task.attempts == 1
    assert task.result == ("ok" if expected_status == "done" else None)


# -- PostgreSQL: a cancel and a claim on two connections ---
@pytest.mark.postgres_only
@pytest.mark.parametrize("claimer_ends", ["commit", "rollback"])
def test_a_cancel_waits_for_a_claim_in_flight_and_then_sees_what_it_did(
    queue: SimplePyQ, claimer_ends: str,
) -> None:
    import psycopg

    from simplepyq.storage.postgres import Q

    queue.add_channel("c", _never)
    task_id = queue.enqueue("c", None)
    url, schema = split_location(queue.store_path)
    with ThreadPoolExecutor(1) as pool, \
            psycopg.connect(url, options=f"-c search_path={schema}") as claimer:
        claimed = claimer.execute(Q["claim"], {"channel": "c", "owner": OWNER, "limit": 1,
                                               "now": time.time()}).fetchall()
        assert [row[0] for row in claimed] == [task_id]
        cancel = pool.submit(queue.cancel, task_id)
        wait_until(lambda: blocked_by(queue.store_path, claimer.info.backend_pid))
        assert not cancel.done()
        getattr(claimer, claimer_ends)()
        changed = cancel.result(timeout=30)

    task = _task(queue, task_id)
    assert changed is True
    if claimer_ends == "commit":  # it runs: its cancel is requested, for its owner to see
        assert (task.status, task.cancel_requested) == ("running", True)
        assert queue._store.cancel_requests(OWNER) == [task_id]
    else:
        assert (task.status, task.attempts) == ("cancelled", 0)


@pytest.mark.postgres_only
def test_a_claim_passes_over_a_task_whose_cancel_is_being_committed(queue: SimplePyQ) -> None:
    import psycopg

    from simplepyq.storage.postgres import Q

    queue.add_channel("c", _never)
    task_id = queue.enqueue("c", None)
    url, schema = split_location(queue.store_path)
    with psycopg.connect(url, options=f"-c search_path={schema}") as canceller:
        row = canceller.execute(Q["cancel"], {"id": task_id, "now": time.time()}).fetchone()
        assert row is not None and row[0] == "cancelled"
        claimed = queue._store.exchange(OWNER, [], "c", 1, time.time()).claimed
        canceller.commit()

    assert claimed == []
    assert _task(queue, task_id).status == "cancelled"


# -- what knows the cancelled status -----------------------
def test_wait_returns_a_task_cancelled_while_it_waits(queue: SimplePyQ) -> None:
    queue.add_channel("c", _never)
    task_id = queue.enqueue("c", None)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(queue.wait, task_id, 30)
        assert queue.cancel(task_id) is True
        task = waiting.result(timeout=60)

    assert task.status == Status.CANCELLED
    assert task.finished


def test_stats_tasks_and_purge_know_cancelled_tasks(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda args: args)
    done, cancelled = queue.enqueue_many("c", ["done", "cancelled"])
    assert queue.cancel(cancelled) is True
    queue.run_until_complete(timeout=30)

    assert queue.stats()["c"]["cancelled"] == 1
    assert _task(queue, done).status == "done"
    assert [task.id for task in queue.tasks(status="cancelled")] == [cancelled]
    assert [task.id for task in queue.tasks(status=Status.CANCELLED)] == [cancelled]
    assert queue.purge(timedelta(hours=1)) == 0  # too recent
    assert queue.purge(0) == 2  # the done one and the cancelled one
    assert queue.stats()["c"]["cancelled"] == 0


# -- a crash after the cancel ------------------------------
def test_a_running_task_cancelled_whose_process_dies_ends_cancelled_not_pending(
    store_path: str, tmp_path: Path,
) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", _never)
        task_id = q.enqueue("c", None, retries=3)
    marks = tmp_path / "marks"
    marks.mkdir()
    child = spawn_python(IGNORES_ITS_CANCEL, store_path, str(marks))
    try:
        wait_until(lambda: (marks / "started").exists() or child.poll() is not None,
                   timeout=30)
        assert child.poll() is None, child.communicate()[1]
        with SimplePyQ(store_path) as q:
            assert q.cancel(task_id) is True
        wait_until(lambda: (marks / "saw-cancel").exists(), timeout=30)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=30)

    with SimplePyQ(store_path) as q:
        q.add_channel("c", _never)
        q.run_until_complete(timeout=30)  # recovers it first: it must not run
        task = _task(q, task_id)

    assert (task.status, task.attempts, task.retries) == ("cancelled", 1, 3)
    assert task.error is not None and task.error.startswith("cancelled; recovered")
    assert [attempt.outcome for attempt in task.history] == ["recovered"]


def test_a_task_that_catches_exception_around_check_still_ends_cancelled(
    queue: SimplePyQ,
) -> None:
    gate = Gate()

    def job(args: object) -> str:
        context = current_task()
        assert context is not None
        gate.wait()
        wait_until(context.cancelled, timeout=10)
        try:
            context.check()
        except Exception:  # TaskCancelled is a BaseException: not caught here
            return "swallowed the cancel"
        return "check did not raise"

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None)
    queue.start()
    assert gate.started.wait(30)
    assert queue.cancel(task_id) is True
    gate.opened.set()
    task = queue.wait(task_id, timeout=30)

    assert (task.status, task.result) == ("cancelled", None)
    assert issubclass(TaskCancelled, BaseException)
