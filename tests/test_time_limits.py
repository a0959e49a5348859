"""Time limits: where a run's limit comes from, what happens at it (a sync task gets
``TaskTimeout``, an async one is cancelled, either counts as a failure), threads
blocked past it left behind while their channel keeps serving, and the races of a
task ending right at its limit."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from simplepyq import Backoff, SimplePyQ, Status, Task, TaskId, TaskTimeout, current_task
from tests.support import run_python, wait_until

# -- where the limit comes from ----------------------------------------------


def _own_limit(args: object) -> float | None:
    """A channel function returning the time limit its run is under."""
    context = current_task()
    assert context is not None
    return context.time_limit


def test_a_task_runs_under_its_own_time_limit_else_under_its_channels(
    queue: SimplePyQ,
) -> None:
    queue.add_channel("limited", _own_limit, time_limit=30)
    queue.add_channel("by_timedelta", _own_limit, time_limit=timedelta(milliseconds=1500))
    queue.channel("free")(_own_limit)
    expected = {
        queue.enqueue("limited", None): 30.0,
        queue.enqueue("limited", None, time_limit=timedelta(seconds=5)): 5.0,
        queue.enqueue("limited", None, time_limit=90): 90.0,  # longer than the channel's
        queue.enqueue("by_timedelta", None): 1.5,
        queue.enqueue("free", None): None,
        queue.enqueue("free", None, time_limit=2.5): 2.5,
    }
    queue.run_until_complete(timeout=30)
    assert {task_id: _get(queue, task_id).result for task_id in expected} == expected


def test_a_tasks_own_time_limit_is_stored_on_it(queue: SimplePyQ) -> None:
    queue.add_channel("c", _own_limit, time_limit=30)
    first, second = queue.enqueue_many("c", [1, 2], time_limit=timedelta(minutes=2))
    inherited = queue.enqueue("c", 3)
    assert _get(queue, first).time_limit == _get(queue, second).time_limit == 120.0
    assert _get(queue, inherited).time_limit is None  # the channel's, decided where it runs


BAD_LIMITS: list[Any] = [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, timedelta(0),
                         timedelta(seconds=-1), "5", True, [1]]


@pytest.mark.parametrize("value", BAD_LIMITS, ids=repr)
def test_a_bad_time_limit_is_refused_at_the_call_naming_it_and_nothing_is_stored(
    queue: SimplePyQ, value: Any,
) -> None:
    with pytest.raises((TypeError, ValueError), match="time_limit") as refused:
        queue.add_channel("c", _own_limit, time_limit=value)
    assert repr(value) in str(refused.value)
    assert "c" not in queue.channels
    assert "c" not in queue.known_channels()

    queue.add_channel("c", _own_limit)
    with pytest.raises((TypeError, ValueError), match="time_limit") as refused:
        queue.enqueue("c", None, time_limit=value)
    assert repr(value) in str(refused.value)
    with pytest.raises((TypeError, ValueError), match="time_limit"):
        queue.enqueue_many("c", [1, 2], time_limit=value)
    assert queue.tasks() == []


# -- sync tasks past their limit ---------------------------------------------


def test_sync_task_past_its_limit_gets_task_timeout_and_is_retried_after_the_backoff(
    queue: SimplePyQ,
) -> None:
    raised: list[type[BaseException]] = []

    def spin(args: object) -> None:
        try:
            while True:
                pass
        except BaseException as exc:
            raised.append(type(exc))
            raise

    queue.add_channel("c", spin, backoff=Backoff(30), time_limit=0.2)
    task_id = queue.enqueue("c", None, retries=1)
    queue.start()
    task = wait_until(lambda: _in(queue, task_id, Status.DELAYED))
    assert raised == [TaskTimeout]
    assert (task.attempts, task.retries) == (1, 0)
    assert [(entry.outcome, entry.error) for entry in task.history] == [
        ("timeout", "time limit of 0.2 s exceeded")]
    ended_at = task.history[0].ended_at
    assert task.run_at is not None and ended_at is not None
    assert task.run_at - ended_at == pytest.approx(timedelta(seconds=30),
                                                   abs=timedelta(milliseconds=1))
    assert task.error is not None
    assert task.error.startswith("time limit of 0.2 s exceeded\n")
    assert "TaskTimeout" in task.error


def test_sync_task_past_its_limit_out_of_retries_fails_saying_the_limit_was_exceeded(
    queue: SimplePyQ,
) -> None:
    runs: list[int] = []
    cleaned_up: list[int] = []

    def stubborn(args: object) -> None:
        runs.append(1)
        try:
            while True:
                # TaskTimeout is a BaseException: not swallowed here.
                with contextlib.suppress(Exception):
                    int("not a number")
        finally:
            cleaned_up.append(1)

    queue.add_channel("c", stubborn)
    task_id = queue.enqueue("c", None, retries=1, time_limit=0.2)
    queue.run_until_complete(timeout=30)
    task = _get(queue, task_id)
    assert (task.status, task.attempts, task.retries) == (Status.FAILED, 2, 0)
    assert len(runs) == len(cleaned_up) == 2
    assert [entry.outcome for entry in task.history] == ["timeout", "timeout"]
    assert task.error is not None
    assert task.error.startswith("time limit of 0.2 s exceeded\n")
    assert "TaskTimeout" in task.error


def test_sync_task_that_catches_task_timeout_and_returns_is_done(queue: SimplePyQ) -> None:
    def gives_up_quietly(args: object) -> str:
        try:
            while True:
                pass
        except TaskTimeout:
            return "partial"

    queue.add_channel("c", gives_up_quietly, time_limit=0.2)
    task_id = queue.enqueue("c", None)
    queue.run_until_complete(timeout=30)
    task = _get(queue, task_id)
    assert (task.status, task.result, task.history) == (Status.DONE, "partial", ())


# -- async tasks past their limit --------------------------------------------


def test_async_task_awaiting_past_its_limit_is_cancelled_and_counts_as_a_timeout(
    queue: SimplePyQ,
) -> None:
    raised: list[type[BaseException]] = []

    async def slow(args: object) -> None:
        try:
            await asyncio.sleep(3600)
        except BaseException as exc:
            raised.append(type(exc))
            raise

    queue.add_channel("c", slow, time_limit=0.2)
    task_id = queue.enqueue("c", None, retries=1)
    queue.run_until_complete(timeout=30)
    task = _get(queue, task_id)
    assert (task.status, task.attempts, task.retries) == (Status.FAILED, 2, 0)
    assert raised == [asyncio.CancelledError, asyncio.CancelledError]
    assert [entry.outcome for entry in task.history] == ["timeout", "timeout"]
    assert task.error is not None
    assert task.error.startswith("time limit of 0.2 s exceeded\n")
    assert "CancelledError" in task.error


def test_async_task_past_its_limit_is_retried_after_the_backoff(queue: SimplePyQ) -> None:
    async def slow(args: object) -> None:
        await asyncio.sleep(3600)

    queue.add_channel("c", slow, backoff=Backoff(30))
    task_id = queue.enqueue("c", None, retries=1, time_limit=timedelta(milliseconds=200))
    queue.start()
    task = wait_until(lambda: _in(queue, task_id, Status.DELAYED))
    assert (task.attempts, task.retries) == (1, 0)
    assert [entry.outcome for entry in task.history] == ["timeout"]
    ended_at = task.history[0].ended_at
    assert task.run_at is not None and ended_at is not None
    assert task.run_at - ended_at == pytest.approx(timedelta(seconds=30),
                                                   abs=timedelta(milliseconds=1))


# -- the task's own view: time_left() and check() ----------------------------


def test_time_left_counts_down_from_the_limit_and_is_none_without_one(
    queue: SimplePyQ,
) -> None:
    def left(args: object) -> list[float | None]:
        context = current_task()
        assert context is not None
        first = context.time_left()
        context.check()  # nothing to raise yet
        return [first, context.time_left()]

    queue.add_channel("c", left)
    limited = queue.enqueue("c", None, time_limit=60)
    free = queue.enqueue("c", None)
    queue.run_until_complete(timeout=30)
    first, second = _get(queue, limited).result
    assert 0 < second <= first <= 60
    assert _get(queue, free).result == [None, None]
    assert current_task() is None  # outside a task


def test_check_raises_task_timeout_after_the_limit_in_a_sync_loop_that_catches_nothing(
    queue: SimplePyQ,
) -> None:
    checks: list[int] = []

    def loop(args: object) -> None:
        context = current_task()
        assert context is not None
        while True:
            checks.append(1)
            context.check()

    queue.add_channel("c", loop)
    task_id = queue.enqueue("c", None, time_limit=0.3)
    queue.run_until_complete(timeout=30)
    task = _get(queue, task_id)
    assert task.status == Status.FAILED
    assert task.error is not None
    # check() or the watchdog, whichever comes first: TaskTimeout either way.
    assert task.error.startswith("time limit of 0.3 s exceeded\n")
    assert "TaskTimeout" in task.error
    assert checks


def test_check_is_what_stops_an_async_task_that_never_awaits(queue: SimplePyQ) -> None:
    # Cancelling an asyncio task takes effect at an await: a loop without one is
    # stopped by its own check() alone, whose message names the limit.
    async def loop(args: object) -> None:
        context = current_task()
        assert context is not None
        while True:
            context.check()

    queue.add_channel("c", loop)
    task_id = queue.enqueue("c", None, time_limit=0.3)
    queue.run_until_complete(timeout=30)
    task = _get(queue, task_id)
    assert task.status == Status.FAILED
    assert task.error is not None
    assert f"TaskTimeout: task {task_id} passed its time limit of 0.3 s" in task.error
    assert [entry.outcome for entry in task.history] == ["timeout"]


# -- threads blocked past their limit ----------------------------------------


class Blocker:
    """A channel function: args "stuck" blocks where no exception reaches it (a C call:
    ``Event.wait``) until ``release``; other args return at once. Logs every run."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs: list[tuple[object, str]] = []
        self._lock = threading.Lock()

    def __call__(self, args: object) -> object:
        with self._lock:
            self.runs.append((args, threading.current_thread().name))
        if args == "stuck":
            self.started.set()
            self.release.wait()
        return args

    def ran(self, args: object) -> list[str]:
        """The threads that ran ``args``."""
        with self._lock:
            return [thread for each, thread in self.runs if each == args]


def _stuck_in(queue: SimplePyQ, channel: str, **options: Any) -> tuple[Blocker, TaskId]:
    """A one-worker channel whose first task ("stuck", with ``options``) blocks past
    its limit of 0.3 s; started, and that task running."""
    blocker = Blocker()
    queue.add_channel(channel, blocker, max_workers=1)
    stuck = queue.enqueue(channel, "stuck", time_limit=0.3, **options)
    queue.start()
    assert blocker.started.wait(10)
    return blocker, stuck


def _workers_of(channel: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name.startswith(f"simplepyq-{channel}-")]


def test_task_blocked_past_its_limit_is_left_behind_and_a_new_worker_serves_its_channel(
    queue: SimplePyQ,
) -> None:
    blocker, stuck = _stuck_in(queue, "left")
    try:
        others = queue.enqueue_many("left", range(5))
        # With one worker, these run only once the stuck one is left behind.
        assert [queue.wait(task_id, timeout=15).status for task_id in others] == [
            Status.DONE] * 5
        task = _get(queue, stuck)
        assert (task.status, task.attempts) == (Status.RUNNING, 1)
        [stuck_thread] = blocker.ran("stuck")
        assert stuck_thread not in {thread for n in range(5) for thread in blocker.ran(n)}
        assert len(_workers_of("left")) == 2  # the one left behind, and its replacement
    finally:
        blocker.release.set()
    # When the call returns, the TaskTimeout lands: the run's outcome is recorded then.
    task = queue.wait(stuck, timeout=10)
    assert task.status == Status.FAILED
    assert task.error is not None and task.error.startswith("time limit of 0.3 s exceeded\n")
    assert [entry.outcome for entry in task.history] == ["timeout"]
    assert blocker.ran("stuck") == [stuck_thread]  # never run twice
    # The thread left behind ends after its task; its replacement goes on alone.
    wait_until(lambda: stuck_thread not in {thread.name for thread in _workers_of("left")})
    assert len(_workers_of("left")) == 1
    assert queue.wait(queue.enqueue("left", "after"), timeout=10).status == Status.DONE


def test_a_task_left_behind_with_retries_left_is_retried_once_its_thread_returns(
    queue: SimplePyQ,
) -> None:
    blocker, stuck = _stuck_in(queue, "c", retries=1)
    try:
        assert queue.wait(queue.enqueue("c", "other"), timeout=15).status == Status.DONE
        assert _get(queue, stuck).status == Status.RUNNING
        assert len(blocker.ran("stuck")) == 1
        blocker.started.clear()
    finally:
        blocker.release.set()  # the retry finds it set: it returns at once
    task = queue.wait(stuck, timeout=10)
    assert (task.status, task.attempts, task.result) == (Status.DONE, 2, "stuck")
    assert [entry.outcome for entry in task.history] == ["timeout"]
    assert len(blocker.ran("stuck")) == 2


def test_stop_returns_within_its_timeout_while_a_task_is_stuck_past_its_limit(
    queue: SimplePyQ,
) -> None:
    blocker, stuck = _stuck_in(queue, "stopping")
    try:
        began = time.monotonic()
        assert queue.stop(timeout=10) is False  # a task still runs
        assert time.monotonic() - began < 10
        assert _get(queue, stuck).status == Status.RUNNING
        # stop() without a timeout does not wait for it either.
        assert queue.stop() is False
        assert _get(queue, stuck).status == Status.RUNNING
    finally:
        blocker.release.set()
    # Once the thread returns, its outcome is still recorded, and a stop ends cleanly.
    task = queue.wait(stuck, timeout=10)
    assert task.status == Status.FAILED
    assert [entry.outcome for entry in task.history] == ["timeout"]
    wait_until(lambda: not _workers_of("stopping"))
    assert queue.stop(timeout=10) is True
    assert len(blocker.ran("stuck")) == 1


# A channel of one worker, time limit 1 s, whose task "sleeper" sleeps for an hour:
# the other tasks are served meanwhile, then close(timeout=3) returns while it still
# sleeps, and the process exits. argv: store.
SLEEPER = """
    import sys, time
    from simplepyq import SimplePyQ

    def work(args):
        if args == "sleeper":
            print("sleeping", flush=True)
            time.sleep(3600)
        return args

    q = SimplePyQ(sys.argv[1], poll_interval=0.01)
    q.add_channel("c", work, max_workers=1, time_limit=1)
    sleeper = q.enqueue("c", "sleeper")
    q.start()
    others = q.enqueue_many("c", range(3))
    for task_id in others:
        print("other", q.wait(task_id, timeout=30).status, flush=True)
    task = q.get_task(sleeper)
    print("sleeper", task.status, task.attempts, flush=True)
    began = time.monotonic()
    q.close(timeout=3)
    print("closed after", time.monotonic() - began, flush=True)
"""


def test_task_in_an_hour_long_sleep_does_not_hold_its_channel_or_close(
    store_path: str,
) -> None:
    out = run_python(SLEEPER, store_path, timeout=60).splitlines()
    assert out[:5] == ["sleeping", "other done", "other done", "other done", "sleeper running 1"]
    closed_after = float(out[5].removeprefix("closed after "))
    assert closed_after < 3
    # Its process is gone: the task is recovered and runs again, like any task of a
    # process that died.
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("c", lambda args: f"{args} woke up")
        q.run_until_complete(timeout=30)
        [task] = [task for task in q.tasks("c") if task.args == "sleeper"]
        assert (task.status, task.result, task.attempts) == (Status.DONE, "sleeper woke up", 2)
        assert [entry.outcome for entry in task.history] == ["recovered"]


# -- ending at the limit -----------------------------------------------------


def test_task_done_before_its_limit_is_left_alone_by_the_watchdog(queue: SimplePyQ) -> None:
    blocker = Blocker()

    def spin(args: object) -> None:
        while True:
            pass

    queue.add_channel("c", blocker, max_workers=1)
    queue.add_channel("probe", spin)
    quick = queue.enqueue("c", "quick", time_limit=0.2)
    stuck = queue.enqueue("c", "stuck")  # no limit: blocks the same worker past quick's
    queue.start()
    assert queue.wait(quick, timeout=10).status == Status.DONE
    try:
        assert blocker.started.wait(10)
        # The watchdog handles deadlines in order: once a run that started after quick
        # ended has been timed out, quick's deadline has passed through the watchdog.
        probe = queue.enqueue("probe", None, time_limit=0.2)
        assert queue.wait(probe, timeout=10).status == Status.FAILED
    finally:
        blocker.release.set()
    task = queue.wait(stuck, timeout=10)
    assert (task.status, task.result, task.history) == (Status.DONE, "stuck", ())
    assert queue.wait(queue.enqueue("c", "next"), timeout=10).status == Status.DONE
    # One worker ran them all: no stray TaskTimeout ended it.
    assert len({*blocker.ran("quick"), *blocker.ran("stuck"), *blocker.ran("next")}) == 1


def _spin_for(seconds: float) -> float:
    """Busy for ``seconds`` of Python code (forever if infinite)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


async def _spin_then_await(seconds: float) -> float:
    """Busy for ``seconds``, then awaits (forever if infinite)."""
    if math.isinf(seconds):
        await asyncio.sleep(3600)
    _spin_for(seconds)
    await asyncio.sleep(0)
    return seconds


@pytest.mark.parametrize("func", [_spin_for, _spin_then_await], ids=["sync", "async"])
def test_tasks_ending_right_at_their_tiny_limits_end_done_or_timed_out_and_workers_live_on(
    queue: SimplePyQ, func: Any,
) -> None:
    barrier = threading.Barrier(4, timeout=20)

    def work(args: Any) -> Any:
        if args == "together":
            return barrier.wait()  # only if all 4 workers still live
        return func(args)

    rng = random.Random(12)
    queue.add_channel("c", work, max_workers=4)
    spins: dict[int, float] = {}
    for n in range(200):
        seconds = math.inf if n % 10 == 0 else rng.uniform(0, 0.006)
        spins[queue.enqueue("c", seconds, time_limit=rng.uniform(0.001, 0.005))] = seconds
    queue.start()
    tasks = [queue.wait(task_id, timeout=60) for task_id in spins]
    done = [task for task in tasks if task.status == Status.DONE]
    timed_out = [task for task in tasks if task.status == Status.FAILED
                 and task.error is not None and task.error.startswith("time limit of")
                 and [entry.outcome for entry in task.history] == ["timeout"]]
    assert len(done) + len(timed_out) == len(tasks), [
        (task.status, task.error) for task in tasks if task not in done + timed_out]
    assert all(task.result == spins[task.id] for task in done)
    assert {task.id for task in tasks if math.isinf(spins[task.id])} <= {
        task.id for task in timed_out}
    assert done  # the race was run: some ended before their limit
    # The same 4 workers still live: 4 tasks that each wait for the others end.
    together = queue.enqueue_many("c", ["together"] * 4)
    assert {queue.wait(task_id, timeout=30).status for task_id in together} == {Status.DONE}


# -- helpers -----------------------------------------------------------------


def _get(queue: SimplePyQ, task_id: int) -> Task:
    task = queue.get_task(task_id)
    assert task is not None
    return task


def _in(queue: SimplePyQ, task_id: int, status: Status) -> Task | None:
    task = queue.get_task(task_id)
    return task if task is not None and task.status == status else None
