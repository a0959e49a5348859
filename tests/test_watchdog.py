"""A run and its watchdog on their own, without a store: what an interruption reaches,
that none escapes a run that has ended, and when a run is abandoned."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from simplepyq import TaskCancelled, TaskTimeout, current_task, watchdog
from simplepyq.runs import CURRENT, Run, seat
from simplepyq.watchdog import Watchdog
from tests.support import wait_until


def _run(limit: float | None = 60.0) -> Run:
    return Run(1, "c", 1, limit, lambda task_id, blob: None)


class Worker:
    """A thread that makes runs of ``func`` (each by ``make_run``) until told to stop,
    like a scheduler's worker; it records each call's value or error, and anything
    that escapes a call (which must never happen)."""

    def __init__(self, func: Callable[[Any], Any], make_run: Callable[[], Run],
                 runs: int) -> None:
        self.func = func
        self.make_run = make_run
        self.runs = runs
        self.current: Run | None = None
        self.results: list[tuple[Any, BaseException | None]] = []
        self.escaped: list[BaseException] = []
        self.thread = threading.Thread(target=self._work, name="test-worker", daemon=True)

    def _work(self) -> None:
        here = seat()
        try:
            for n in range(self.runs):
                run = self.current = self.make_run()
                value, error = run.call(self.func, n, here)
                self.results.append((value, error))
            # Some more Python code, where a stray interruption would land.
            total = 0
            for n in range(100_000):
                total += n
        except BaseException as exc:
            self.escaped.append(exc)
        finally:
            here.close_loop()


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads take turns every 10 µs instead of every 5 ms, so that one thread's
    interruptions land all over another's code."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


# -- what an interruption reaches --------------------------------------------


def test_time_out_raises_task_timeout_in_python_code_at_once() -> None:
    started = threading.Event()

    def spin(args: object) -> None:
        started.set()
        while True:
            pass

    worker = Worker(spin, _run, runs=1)
    worker.thread.start()
    assert started.wait(10)
    assert worker.current is not None
    assert worker.current.time_out() is True
    worker.thread.join(10)
    [(value, error)] = worker.results
    assert value is None
    assert isinstance(error, TaskTimeout)
    assert worker.escaped == []


def test_a_call_blocked_in_c_is_not_interrupted_and_the_timeout_comes_as_it_returns() -> None:
    started, release = threading.Event(), threading.Event()
    after_wait: list[int] = []

    def blocked(args: object) -> None:
        started.set()
        release.wait()  # a C call (a lock): no exception reaches it
        after_wait.append(1)

    worker = Worker(blocked, _run, runs=1)
    worker.thread.start()
    assert started.wait(10)
    assert worker.current is not None
    assert worker.current.time_out() is True
    assert worker.thread.is_alive()  # still blocked: nothing interrupted it
    release.set()
    worker.thread.join(10)
    [(_, error)] = worker.results
    assert isinstance(error, TaskTimeout)
    assert after_wait == []  # raised as the call returned, before the next line
    assert worker.escaped == []


def test_time_out_of_a_finished_run_does_nothing() -> None:
    run = _run()
    value, error = run.call(lambda args: args * 2, 21, seat())
    assert (value, error) == (42, None)
    assert run.time_out() is False
    total = 0
    for n in range(100_000):  # no TaskTimeout lands here
        total += n
    assert total == 4_999_950_000


def test_time_out_cancels_an_async_run_at_its_await() -> None:
    started = threading.Event()
    seen: list[type[BaseException]] = []

    async def slow(args: object) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except BaseException as exc:
            seen.append(type(exc))
            raise

    worker = Worker(slow, _run, runs=1)
    worker.thread.start()
    assert started.wait(10)
    assert worker.current is not None
    assert worker.current.time_out() is True
    worker.thread.join(10)
    [(_, error)] = worker.results
    assert isinstance(error, asyncio.CancelledError)
    assert seen == [asyncio.CancelledError]
    assert worker.escaped == []


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_interruptions_racing_the_end_of_runs_never_escape_them(
    asynchronous: bool, fast_switching: None,
) -> None:
    # An interruption may come at any instruction of the worker: before the function
    # is called, as it returns, while an async one is handed to its event loop. It
    # must end as that run's failure, or be withdrawn, never reach the worker's code
    # (and never leave a coroutine unawaited or an event loop unclosed).
    def quick(n: int) -> int:
        for _ in range(300 + n % 100):  # long enough for interruptions to land in it
            pass
        return n

    async def quick_async(n: int) -> int:
        await asyncio.sleep(0)
        return quick(n)

    worker = Worker(quick_async if asynchronous else quick, _run, runs=3000)
    rng = random.Random(7)
    worker.thread.start()
    interrupted = 0
    while worker.thread.is_alive():
        run = worker.current
        if run is not None and not run.timed_out:
            interrupted += run.time_out()
        time.sleep(0)  # let the worker go on, to a random moment later
        for _ in range(rng.randrange(50)):
            pass
    assert worker.escaped == []
    assert len(worker.results) == 3000
    for n, (value, error) in enumerate(worker.results):
        assert (value, error) == (n, None) or (
            value is None and isinstance(error, (TaskTimeout, asyncio.CancelledError))), n
    assert interrupted > 10, interrupted  # the race was run (about 100 times, typically)


# -- the task's view ---------------------------------------------------------


def test_time_left_reaches_zero_and_check_raises_task_timeout_naming_the_limit() -> None:
    token = CURRENT.set(_run(limit=0.05))
    try:
        context = current_task()
        assert context is not None
        first = context.time_left()
        assert first is not None and 0 < first <= 0.05
        context.check()
        wait_until(lambda: context.time_left() == 0)
        with pytest.raises(TaskTimeout, match=r"task 1 passed its time limit of 0\.05 s"):
            context.check()
    finally:
        CURRENT.reset(token)


def test_a_cancel_is_told_by_check_before_the_time_limit() -> None:
    run = _run(limit=0.01)
    run.request_cancel()
    token = CURRENT.set(run)
    try:
        context = current_task()
        assert context is not None
        wait_until(lambda: context.time_left() == 0)
        with pytest.raises(TaskCancelled):
            context.check()
    finally:
        CURRENT.reset(token)


def test_a_run_without_a_limit_has_no_time_left_and_is_not_watched() -> None:
    run = _run(limit=None)
    abandoned: list[Run] = []
    dog = Watchdog(abandoned.append)
    dog.watch(run)
    token = CURRENT.set(run)
    try:
        context = current_task()
        assert context is not None
        assert (context.time_limit, context.time_left()) == (None, None)
        context.check()
    finally:
        CURRENT.reset(token)
        dog.stop()
    assert dog._thread is None  # channels without time limits cost no thread


# -- the watchdog ------------------------------------------------------------


def test_watchdog_interrupts_at_the_deadline_and_abandons_a_run_stuck_past_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watchdog, "GRACE", 0.05)
    started, release = threading.Event(), threading.Event()

    def blocked(args: object) -> None:
        started.set()
        release.wait()

    abandoned: list[Run] = []
    dog = Watchdog(abandoned.append)
    worker = Worker(blocked, lambda: _run(limit=0.05), runs=1)
    try:
        worker.thread.start()
        assert started.wait(10)
        assert worker.current is not None
        dog.watch(worker.current)
        wait_until(lambda: abandoned)
        assert abandoned == [worker.current]
        assert worker.current.timed_out and worker.current.abandoned
        assert worker.thread.is_alive()
    finally:
        release.set()
        dog.stop()
    worker.thread.join(10)
    [(_, error)] = worker.results
    assert isinstance(error, TaskTimeout)  # its outcome, once the thread returns


def test_watchdog_does_not_abandon_a_run_that_stopped_at_its_interruption(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watchdog, "GRACE", 0.05)
    spinning = threading.Event()
    stuck, release = threading.Event(), threading.Event()

    def spin(args: object) -> None:
        spinning.set()
        while True:
            pass

    def blocked(args: object) -> None:
        stuck.set()
        release.wait()

    abandoned: list[Run] = []
    dog = Watchdog(abandoned.append)
    stops = Worker(spin, lambda: _run(limit=0.05), runs=1)
    probe = Worker(blocked, lambda: _run(limit=0.05), runs=1)
    try:
        stops.thread.start()
        assert spinning.wait(10)
        assert stops.current is not None
        dog.watch(stops.current)
        stops.thread.join(10)
        # A run watched after it is abandoned later: once it is, the first run's
        # abandon check has been made.
        probe.thread.start()
        assert stuck.wait(10)
        assert probe.current is not None
        dog.watch(probe.current)
        wait_until(lambda: abandoned)
        assert abandoned == [probe.current]
        assert not stops.current.abandoned
    finally:
        release.set()
        dog.stop()
    probe.thread.join(10)
    [(_, error)] = stops.results
    assert isinstance(error, TaskTimeout)



def test_a_run_that_lost_its_interruption_is_interrupted_again_before_it_is_abandoned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watchdog, "GRACE", 2.0)
    caught = threading.Event()

    def swallows_the_first(args: object) -> str:
        # As a garbage collector callback would, the first TaskTimeout is swallowed.
        try:
            while True:
                pass
        except TaskTimeout:
            caught.set()
        while True:
            pass

    abandoned: list[Run] = []
    dog = Watchdog(abandoned.append)
    worker = Worker(swallows_the_first, lambda: _run(limit=0.05), runs=1)
    try:
        worker.thread.start()
        wait_until(lambda: worker.current is not None)
        assert worker.current is not None
        dog.watch(worker.current)
        worker.thread.join(10)
    finally:
        dog.stop()
    assert caught.is_set() and not worker.thread.is_alive()
    [(_, error)] = worker.results
    assert isinstance(error, TaskTimeout) and not abandoned
