"""The task context: what a running task knows of its own run (``current_task()``) and
the progress it publishes (``set_progress``).

Every test runs on both backends; the tasks run in this process, so that they can
tell the test what they saw through plain Python objects and events.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from simplepyq import SimplePyQ, TaskContext, TaskTimeout, current_task
from simplepyq.context import MAX_PROGRESS
from simplepyq.scheduler import PROGRESS_EVERY
from tests.support import wait_until


def _context() -> TaskContext:
    """The running task's context; fails the task (and so the test) outside one."""
    context = current_task()
    assert context is not None, "current_task() is None inside a task"
    return context


def _seen(context: TaskContext) -> dict[str, Any]:
    """What a task can read of its run, as one comparable value."""
    return {"id": context.id, "channel": context.channel, "attempt": context.attempt,
            "time_limit": context.time_limit, "time_left": context.time_left(),
            "cancelled": context.cancelled()}


# -- current_task() ----------------------------------------
def test_current_task_is_none_outside_a_task(queue: SimplePyQ) -> None:
    in_other_thread: list[TaskContext | None] = []
    seen_in_task: list[TaskContext | None] = []
    queue.add_channel("c", lambda args: seen_in_task.append(current_task()))
    queue.enqueue("c", None)
    queue.run_until_complete(timeout=30)

    thread = threading.Thread(target=lambda: in_other_thread.append(current_task()))
    thread.start()
    thread.join()

    async def in_a_coroutine() -> TaskContext | None:
        return current_task()

    assert seen_in_task[0] is not None  # a task ran, and the context did not leak out of it
    assert current_task() is None
    assert in_other_thread == [None]
    assert asyncio.run(in_a_coroutine()) is None


def test_a_sync_task_sees_its_id_channel_first_attempt_and_no_time_limit(
    queue: SimplePyQ,
) -> None:
    seen: list[dict[str, Any]] = []

    def job(args: object) -> None:
        context = _context()
        context.check()  # neither cancelled nor past a limit: returns
        seen.append(_seen(context))

    queue.add_channel("sync", job)
    task_id = queue.enqueue("sync", None)
    queue.run_until_complete(timeout=30)

    assert seen == [{"id": task_id, "channel": "sync", "attempt": 1, "time_limit": None,
                     "time_left": None, "cancelled": False}]


def test_an_async_task_and_the_asyncio_tasks_it_creates_see_its_context(
    queue: SimplePyQ,
) -> None:
    seen: list[dict[str, Any]] = []

    async def job(args: object) -> None:
        async def step() -> dict[str, Any]:
            await asyncio.sleep(0)
            return _seen(_context())

        seen.append(_seen(_context()))
        seen.extend(await asyncio.gather(step(), asyncio.create_task(step())))

    queue.add_channel("async", job)
    task_id = queue.enqueue("async", None)
    queue.run_until_complete(timeout=30)

    expected = {"id": task_id, "channel": "async", "attempt": 1, "time_limit": None,
                "time_left": None, "cancelled": False}
    assert seen == [expected] * 3


def test_attempt_is_2_on_the_retry_of_a_task_that_raised(queue: SimplePyQ) -> None:
    attempts: list[int] = []

    def job(args: object) -> str:
        attempts.append(_context().attempt)
        if len(attempts) == 1:
            raise RuntimeError("the first run fails")
        return "second run"

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None, retries=1)
    queue.run_until_complete(timeout=30)

    assert attempts == [1, 2]
    task = queue.get_task(task_id)
    assert task is not None
    assert (task.status, task.attempts, task.result) == ("done", 2, "second run")


def test_attempt_counts_a_run_recovered_from_a_dead_worker(queue: SimplePyQ) -> None:
    attempts: list[int] = []
    queue.add_channel("c", lambda args: attempts.append(_context().attempt))
    task_id = queue.enqueue("c", None)
    # A worker that never registered (so is dead to everyone) claims it, and is gone.
    claimed = queue._store.exchange("gone:1:owner", [], "c", 1, time.time()).claimed
    assert [task.id for task in claimed] == [task_id]

    queue.run_until_complete(timeout=30)  # recovers it first, then runs it

    assert attempts == [2]
    task = queue.get_task(task_id)
    assert task is not None
    assert (task.status, task.attempts) == ("done", 2)
    assert [attempt.outcome for attempt in task.history] == ["recovered"]


def test_time_left_counts_down_from_the_task_time_limit_which_comes_before_the_channel_one(
    queue: SimplePyQ,
) -> None:
    seen: dict[int, tuple[float | None, float | None, float | None]] = {}

    def job(args: object) -> None:
        context = _context()
        before = context.time_left()
        time.sleep(0.05)  # time passing, not a wait for anything
        seen[context.id] = (context.time_limit, before, context.time_left())

    queue.add_channel("c", job, time_limit=timedelta(minutes=1))
    own = queue.enqueue("c", None, time_limit=30)
    channels = queue.enqueue("c", None)
    queue.run_until_complete(timeout=30)

    for task_id, limit in ((own, 30.0), (channels, 60.0)):
        time_limit, before, after = seen[task_id]
        assert time_limit == limit
        assert before is not None and after is not None
        assert limit - 5 < before <= limit
        assert before - 1 < after <= before - 0.04


def test_a_sync_task_interrupted_at_its_limit_finds_check_raising_task_timeout(
    queue: SimplePyQ,
) -> None:
    def job(args: object) -> str:
        context = _context()
        try:
            while True:  # interrupted by TaskTimeout at the limit
                time.sleep(0.001)
        except TaskTimeout:
            pass
        assert context.time_left() == 0
        try:
            context.check()
        except TaskTimeout as exc:
            return f"check raised: {exc}"
        return "check did not raise"

    queue.add_channel("c", job, time_limit=0.2)
    task_id = queue.enqueue("c", None)
    queue.run_until_complete(timeout=30)

    task = queue.get_task(task_id)
    assert task is not None
    assert (task.status, task.result) == (
        "done", f"check raised: task {task_id} passed its time limit of 0.2 s")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_check_raises_task_timeout_past_the_limit_and_the_run_counts_as_timed_out(
    queue: SimplePyQ, monkeypatch: pytest.MonkeyPatch, kind: str,
) -> None:
    # Without the watchdog, check() is what notices the limit (it can come first).
    monkeypatch.setattr("simplepyq.watchdog.Watchdog.watch", lambda self, run: None)

    def job(args: object) -> None:
        context = _context()
        while True:
            context.check()

    async def async_job(args: object) -> None:
        job(args)  # never awaits

    queue.add_channel("c", job if kind == "sync" else async_job, time_limit=0.2)
    task_id = queue.enqueue("c", None)
    queue.run_until_complete(timeout=30)

    task = queue.get_task(task_id)
    assert task is not None
    assert task.status == "failed"
    assert task.error is not None
    assert task.error.startswith("time limit of 0.2 s exceeded")
    assert f"TaskTimeout: task {task_id} passed its time limit of 0.2 s" in task.error
    assert [attempt.outcome for attempt in task.history] == ["timeout"]


# -- set_progress ------------------------------------------
def test_progress_shows_in_get_task_while_the_task_runs_and_the_last_value_stays(
    queue: SimplePyQ,
) -> None:
    release = threading.Event()

    def job(args: object) -> str:
        context = _context()
        context.set_progress({"done": 1, "of": 3})
        release.wait(30)
        context.set_progress({"done": 2, "of": 3})
        context.set_progress({"done": 3, "of": 3})  # just before returning
        return "finished"

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None)
    queue.start()
    try:
        task = wait_until(lambda: _with_progress(queue, task_id, {"done": 1, "of": 3}),
                          timeout=10)
        assert task.status == "running"
    finally:
        release.set()
    task = queue.wait(task_id, timeout=10)

    assert (task.status, task.result, task.progress) == ("done", "finished",
                                                         {"done": 3, "of": 3})


@pytest.mark.parametrize("ending", ["raises", "returns"])
def test_progress_reported_just_before_the_end_is_kept_however_the_task_ends(
    queue: SimplePyQ, ending: str,
) -> None:
    def job(args: object) -> str:
        _context().set_progress(["last", "value"])
        if ending == "raises":
            raise RuntimeError("failed after reporting progress")
        return "returned"

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None)
    queue.run_until_complete(timeout=30)

    task = queue.get_task(task_id)
    assert task is not None
    assert task.status == ("failed" if ending == "raises" else "done")
    assert task.progress == ["last", "value"]


def test_a_tight_loop_of_progress_calls_writes_to_the_store_only_every_half_second(
    queue: SimplePyQ, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = queue._store
    save_progress = store.save_progress
    writes: list[dict[int, bytes]] = []

    def counted(owner: str, progress: Any) -> None:
        writes.append(dict(progress))
        save_progress(owner, progress)

    monkeypatch.setattr(store, "save_progress", counted)

    def job(args: object) -> float:
        context = _context()
        began = time.monotonic()
        step = 0
        # 100k calls at least, for long enough that a write per housekeeping pass shows.
        while step < 100_000 or time.monotonic() - began < 3 * PROGRESS_EVERY:
            step += 1
            context.set_progress(step)
        context.set_progress("last")
        return time.monotonic() - began

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None)
    queue.run_until_complete(timeout=60)

    task = queue.get_task(task_id)
    assert task is not None
    assert (task.status, task.progress) == ("done", "last")
    loop_seconds = task.result
    assert len(writes) <= loop_seconds / PROGRESS_EVERY + 2, (len(writes), loop_seconds)


def test_progress_that_is_too_big_or_cannot_be_stored_is_refused_naming_the_value(
    queue: SimplePyQ,
) -> None:
    too_big = "x" * MAX_PROGRESS

    def job(args: object) -> list[list[str]]:
        context = _context()
        context.set_progress("kept")
        refused = []
        for value in (too_big, {"when": object()}, [1j]):
            try:
                context.set_progress(value)
            except (TypeError, ValueError) as exc:
                refused.append([type(exc).__name__, str(exc)])
        return refused

    queue.add_channel("c", job)
    task_id = queue.enqueue("c", None)
    queue.run_until_complete(timeout=30)

    task = queue.get_task(task_id)
    assert task is not None
    assert (task.status, task.progress) == ("done", "kept")
    (big_kind, big), (object_kind, unstorable), (complex_kind, a_complex) = task.result
    assert (big_kind, object_kind, complex_kind) == ("ValueError", "TypeError", "TypeError")
    assert "'xxxxxxxx" in big and f"{MAX_PROGRESS}" in big
    assert "progress value" in unstorable and "object" in unstorable and "'when'" in unstorable
    assert "progress value" in a_complex and "complex value 1j at [0]" in a_complex


def _with_progress(queue: SimplePyQ, task_id: int, progress: object) -> Any:
    """The task, once its stored progress is ``progress``; else None."""
    task = queue.get_task(task_id)
    return task if task is not None and task.progress == progress else None
