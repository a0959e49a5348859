"""Running tasks: exactly once, results, retries, deferral, failures, wake-ups, stop and start."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from functools import partial
from typing import Any

import pytest

from simplepyq import Backoff, DelayException, SimplePyQ, Status, Task
from simplepyq.scheduler import Wakeup
from tests.backends import is_postgres, raw_sql
from tests.support import run_python, spawn_python, wait_until


class _RunCounter:
    """A channel function that counts, thread-safely, how often it ran with each args."""

    def __init__(self) -> None:
        self.runs: Counter[int] = Counter()
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self._lock:
            self.runs[n] += 1


# -- exactly once and results ------------------------------------------------


def test_each_task_runs_exactly_once_with_many_workers(queue: SimplePyQ) -> None:
    count = _RunCounter()
    queue.add_channel("c", count, max_workers=8)
    ids = queue.enqueue_many("c", range(500))
    queue.run_until_complete(timeout=60)
    assert count.runs == Counter(range(500))
    tasks = queue.tasks("c", limit=1000)
    assert sorted(t.id for t in tasks) == sorted(ids)
    assert {(t.status, t.attempts) for t in tasks} == {(Status.DONE, 1)}


@pytest.mark.parametrize(
    "value",
    [{"got": {"a": 1}, "nested": [1, "two", None]}, [1, "two", 3.5, None], "text", None],
    ids=["dict", "list", "str", "None"],
)
def test_return_value_is_stored_as_the_task_result(queue: SimplePyQ, value: Any) -> None:
    queue.add_channel("echo", lambda args: value)
    task_id = queue.enqueue("echo", "anything")
    queue.run_until_complete(timeout=10)
    task = queue.wait(task_id, timeout=5)
    assert task.status == Status.DONE
    assert task.result == value
    assert task.error is None
    assert task.started_at is not None and task.finished_at is not None


# -- retries and backoff -----------------------------------------------------


def test_failing_task_is_retried_until_it_succeeds(queue: SimplePyQ) -> None:
    calls: list[int] = []

    def flaky(args: object) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(f"transient #{len(calls)}")
        return "ok"

    queue.add_channel("c", flaky)
    task_id = queue.enqueue("c", None, retries=2)
    queue.run_until_complete(timeout=10)
    task = queue.wait(task_id, timeout=1)
    assert (task.status, task.attempts, task.retries, task.result) == (Status.DONE, 3, 0, "ok")
    assert len(calls) == 3


def test_task_out_of_retries_fails_with_its_message_and_traceback(queue: SimplePyQ) -> None:
    calls: list[int] = []

    def broken(args: object) -> None:
        calls.append(1)
        raise ValueError("the disk is made of cheese")

    queue.add_channel("c", broken)
    task_id = queue.enqueue("c", None, retries=1)
    queue.run_until_complete(timeout=10)
    task = queue.wait(task_id, timeout=1)
    assert task.status == Status.FAILED
    assert (len(calls), task.attempts, task.retries) == (2, 2, 0)
    assert task.error is not None
    assert "Traceback" in task.error and "the disk is made of cheese" in task.error
    assert task.finished_at is not None


def test_failed_task_with_retries_left_is_delayed_by_the_channel_backoff(
    queue: SimplePyQ,
) -> None:
    failed_at: list[float] = []

    def broken(args: object) -> None:
        failed_at.append(time.time())
        raise RuntimeError("later")

    queue.add_channel("c", broken, backoff=Backoff(30))
    task_id = queue.enqueue("c", None, retries=2)
    queue.start()
    task = wait_until(lambda: _task_in(queue, task_id, Status.DELAYED))
    observed = time.time()
    assert task.retries == 1
    assert task.run_at is not None
    assert failed_at[0] + 30 <= task.run_at.timestamp() <= observed + 30
    assert "later" in (task.error or "")
    assert len(failed_at) == 1


def test_exponential_backoff_grows_between_consecutive_failures(
    queue: SimplePyQ, store_path: str
) -> None:
    failed_at: list[float] = []

    def broken(args: object) -> None:
        failed_at.append(time.time())
        raise RuntimeError("again")

    queue.add_channel("c", broken, backoff=Backoff(10, factor=3, max_delay=1000))
    task_id = queue.enqueue("c", None, retries=3)
    queue.start()
    for failure, (retries_left, wait) in enumerate([(2, 10), (1, 30), (0, 90)]):
        task = wait_until(partial(_task_in, queue, task_id, Status.DELAYED,
                                  retries=retries_left))
        observed = time.time()
        assert task.run_at is not None
        assert failed_at[failure] + wait <= task.run_at.timestamp() <= observed + wait
        _make_due(store_path, task_id)
    final = queue.wait(task_id, timeout=10)
    assert (final.status, final.attempts, final.retries) == (Status.FAILED, 4, 0)


def test_default_backoff_retries_at_once(queue: SimplePyQ) -> None:
    calls: list[int] = []

    def once_broken(args: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first time")
        return "second time"

    queue.add_channel("c", once_broken)
    task_id = queue.enqueue("c", None, retries=1)
    queue.run_until_complete(timeout=10)
    task = queue.wait(task_id, timeout=1)
    assert (task.status, task.result, task.retries, task.attempts) == (
        Status.DONE, "second time", 0, 2)
    assert task.run_at is None  # never held back


# -- DelayException ----------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 2])
def test_delay_exception_defers_the_task_without_using_a_retry(
    queue: SimplePyQ, retries: int
) -> None:
    raised_at: list[float] = []
    seen_on_rerun: list[Task] = []

    def deferring(args: object) -> str:
        if not raised_at:
            raised_at.append(time.time())
            raise DelayException(0.05)
        seen_on_rerun.extend(queue.tasks("c"))
        return "second run"

    queue.add_channel("c", deferring)
    task_id = queue.enqueue("c", None, retries=retries)
    queue.run_until_complete(timeout=10)
    done = queue.wait(task_id, timeout=1)
    assert (done.status, done.result, done.retries, done.attempts) == (
        Status.DONE, "second run", retries, 2)
    [rerun] = seen_on_rerun
    # While rerunning, the row still holds the run-at time the deferral stored.
    assert rerun.retries == retries
    assert rerun.run_at is not None and rerun.started_at is not None
    assert rerun.run_at.timestamp() >= raised_at[0] + 0.05
    assert rerun.started_at >= rerun.run_at  # not run again before it came due


def test_deferred_task_is_stored_delayed_until_its_run_at_with_retries_kept(
    queue: SimplePyQ,
) -> None:
    raised_at: list[float] = []

    def deferring(args: object) -> None:
        raised_at.append(time.time())
        raise DelayException(1000.5)

    queue.add_channel("c", deferring)
    task_id = queue.enqueue("c", None, retries=0)
    queue.start()
    task = wait_until(lambda: _task_in(queue, task_id, Status.DELAYED))
    observed = time.time()
    assert (task.retries, task.attempts, task.error) == (0, 1, None)
    assert task.run_at is not None
    assert raised_at[0] + 1000.5 <= task.run_at.timestamp() <= observed + 1000.5
    assert len(raised_at) == 1


# -- async functions and failures -------------------------------------------


def test_async_functions_are_awaited_and_their_failures_recorded(queue: SimplePyQ) -> None:
    async def double(n: int) -> int:
        return n * 2

    async def broken(n: int) -> None:
        raise RuntimeError("async failure")

    queue.add_channel("double", double)
    queue.add_channel("broken", broken)
    good = queue.enqueue("double", 21)
    bad = queue.enqueue("broken", 1)
    queue.run_until_complete(timeout=10)
    assert queue.wait(good, timeout=1).result == 42
    failed = queue.wait(bad, timeout=1)
    assert failed.status == Status.FAILED
    assert "async failure" in (failed.error or "") and "Traceback" in (failed.error or "")


@pytest.mark.parametrize(
    "exception", [SystemExit(3), KeyboardInterrupt(), RuntimeError("x")],
    ids=["SystemExit", "KeyboardInterrupt", "Exception"],
)
def test_any_exception_fails_the_task_and_the_same_worker_goes_on(
    queue: SimplePyQ, exception: BaseException
) -> None:
    threads: list[int] = []

    def run(args: str) -> str:
        threads.append(threading.get_ident())
        if args == "raise":
            raise exception
        return "survived"

    queue.add_channel("c", run, max_workers=1)
    bad = queue.enqueue("c", "raise")
    good = queue.enqueue("c", "fine")
    queue.run_until_complete(timeout=10)
    failed = queue.wait(bad, timeout=1)
    assert (failed.status, failed.retries, failed.attempts) == (Status.FAILED, 0, 1)
    assert type(exception).__name__ in (failed.error or "")
    assert queue.wait(good, timeout=1).result == "survived"
    assert len(threads) == 2 and threads[0] == threads[1]


@pytest.mark.parametrize("value", [range(2), object()], ids=["range", "object"])
def test_unstorable_result_fails_the_task_once_and_the_worker_goes_on(
    queue: SimplePyQ, value: object
) -> None:
    calls: list[str] = []

    def run(args: str) -> object:
        calls.append(args)
        return value if args == "unstorable" else "fine"

    queue.add_channel("c", run, max_workers=1)
    bad = queue.enqueue("c", "unstorable", retries=3)
    good = queue.enqueue("c", "storable")
    queue.run_until_complete(timeout=10)
    task = queue.wait(bad, timeout=1)
    assert task.status == Status.FAILED
    assert "cannot be stored" in (task.error or "")
    assert type(value).__name__ in (task.error or "")
    assert (task.attempts, task.retries, task.result) == (1, 3, None)
    assert calls == ["unstorable", "storable"]
    assert queue.wait(good, timeout=1).result == "fine"


def test_undecodable_args_fail_the_task_and_others_still_run(
    queue: SimplePyQ, store_path: str
) -> None:
    seen: list[object] = []
    queue.add_channel("c", seen.append)
    # 0xc1 is never valid msgpack.
    [(bad,)] = raw_sql(store_path, "INSERT INTO tasks (channel, args, status, retries) "
                                   "VALUES ('c', ?, 'pending', 0) RETURNING id", [b"\xc1\xc1"])
    good = queue.enqueue("c", "fine")
    queue.run_until_complete(timeout=10)
    failed = queue.wait(bad, timeout=1)
    assert failed.status == Status.FAILED and "decode" in (failed.error or "")
    assert queue.wait(good, timeout=1).status == Status.DONE
    assert seen == ["fine"]


def test_workers_survive_many_failing_tasks(queue: SimplePyQ) -> None:
    def run(args: str) -> str:
        if args == "fail":
            raise RuntimeError("boom")
        return "alive"

    queue.add_channel("c", run, max_workers=2)
    queue.start()
    failing = queue.enqueue_many("c", ["fail"] * 20)
    assert {queue.wait(i, timeout=10).status for i in failing} == {Status.FAILED}
    assert queue.wait(queue.enqueue("c", "ok"), timeout=10).result == "alive"
    assert _nonzero(queue.stats()["c"]) == {"failed": 20, "done": 1}


# -- channels and enqueues while running ------------------------------------


def test_a_task_can_enqueue_follow_up_tasks_run_in_the_same_run(queue: SimplePyQ) -> None:
    seen: list[int] = []

    def countdown(n: int) -> None:
        seen.append(n)
        if n > 0:
            queue.enqueue("countdown", n - 1)

    queue.add_channel("countdown", countdown, max_workers=2)
    queue.enqueue("countdown", 5)
    queue.run_until_complete(timeout=10)
    assert seen == [5, 4, 3, 2, 1, 0]
    assert _nonzero(queue.stats()["countdown"]) == {"done": 6}


def test_channel_added_while_running_starts_its_workers_at_once(queue: SimplePyQ) -> None:
    queue.add_channel("first", lambda args: None)
    queue.start()
    queue.add_channel("late", lambda args: "late ran")
    task_id = queue.enqueue("late", None)
    assert queue.wait(task_id, timeout=10).result == "late ran"


def test_removed_channel_stops_taking_tasks_while_others_keep_running(
    queue: SimplePyQ, store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    gone_ran: list[object] = []
    queue.add_channel("gone", gone_ran.append, max_workers=2)
    queue.add_channel("kept", lambda args: "kept ran")
    queue.start()
    assert queue.wait(queue.enqueue("gone", "before"), timeout=10).status == Status.DONE
    with caplog.at_level(logging.WARNING, logger="simplepyq"):
        assert queue.remove_channel("gone") == 1
        wait_until(lambda: not _threads_of("gone"))
        # Another instance brings the channel back: this queue's workers must not run it.
        with SimplePyQ(store_path) as other:
            other.add_channel("gone", print)
            orphan = other.enqueue("gone", "after")
        assert queue.wait(queue.enqueue("kept", None), timeout=10).result == "kept ran"
        assert queue.stop(timeout=10) is True
    assert queue.get_task(orphan).status == Status.PENDING  # type: ignore[union-attr]
    assert gone_ran == ["before"]
    assert caplog.records == []


def test_concurrent_enqueues_from_many_threads_all_run_exactly_once(queue: SimplePyQ) -> None:
    count = _RunCounter()
    queue.add_channel("c", count, max_workers=4)
    queue.start()
    errors: list[BaseException] = []

    def produce(base: int) -> None:
        try:
            for n in range(base, base + 200):
                queue.enqueue("c", n)
        except BaseException as exc:
            errors.append(exc)

    producers = [threading.Thread(target=produce, args=(i * 200,)) for i in range(8)]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join(30)
    assert errors == []
    queue.run_until_complete(timeout=60)
    assert count.runs == Counter(range(1600))
    assert _nonzero(queue.stats()["c"]) == {"done": 1600}


# -- wake-ups ----------------------------------------------------------------


def test_idle_worker_is_woken_by_an_enqueue_in_the_same_process(store_path: str) -> None:
    with SimplePyQ(store_path, poll_interval=3600) as q:
        q.add_channel("c", lambda n: n + 1)
        q.start()
        assert q.wait(q.enqueue("c", 1), timeout=5).result == 2
        # The worker is idle again and the next poll is an hour away: only a wake-up runs this.
        assert q.wait(q.enqueue("c", 2), timeout=5).result == 3


def test_task_enqueued_by_another_process_is_picked_up(store_path: str) -> None:
    with SimplePyQ(store_path, poll_interval=0.02) as q:
        q.add_channel("c", lambda n: n * 10)
        q.start()
        out = run_python(
            """
            import sys
            from simplepyq import SimplePyQ
            with SimplePyQ(sys.argv[1]) as other:
                print(other.enqueue("c", 7))
            """,
            store_path,
        )
        assert q.wait(int(out), timeout=10).result == 70


# -- stop and start ----------------------------------------------------------


def test_stop_lets_the_running_task_finish_and_keeps_the_rest_pending(queue: SimplePyQ) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def blocking(n: int) -> int:
        ran.append(n)
        started.set()
        release.wait(10)
        return n

    queue.add_channel("c", blocking, max_workers=1)
    queue.add_channel("idle", print)
    first, *rest = queue.enqueue_many("c", range(4))
    queue.start()
    assert started.wait(10)
    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(queue.stop()))
    stopper.start()
    # The idle channel's worker ends once stop() has begun: only then release the task.
    wait_until(lambda: not _threads_of("idle"))
    assert stopper.is_alive()
    release.set()
    stopper.join(10)
    assert stopped == [True]
    assert queue.get_task(first).status == Status.DONE  # type: ignore[union-attr]
    assert [queue.get_task(i).status for i in rest] == [Status.PENDING] * 3  # type: ignore[union-attr]
    assert ran == [0]
    queue.start()
    assert [queue.wait(i, timeout=10).result for i in rest] == [1, 2, 3]
    assert ran == [0, 1, 2, 3]


def test_stop_with_timeout_reports_a_task_still_running(queue: SimplePyQ) -> None:
    started, release = threading.Event(), threading.Event()

    def blocking(args: object) -> str:
        started.set()
        release.wait(10)
        return "finished late"

    queue.add_channel("c", blocking)
    task_id = queue.enqueue("c", None)
    queue.start()
    assert started.wait(10)
    try:
        assert queue.stop(timeout=0.05) is False
        assert queue.get_task(task_id).status == Status.RUNNING  # type: ignore[union-attr]
    finally:
        release.set()
    task = queue.wait(task_id, timeout=10)
    assert (task.status, task.result) == (Status.DONE, "finished late")


def test_close_waits_for_a_task_that_outlived_a_stop_timeout(store_path: str) -> None:
    started, release = threading.Event(), threading.Event()

    def blocking(args: object) -> str:
        started.set()
        release.wait(10)
        return "recorded before close returned"

    q = SimplePyQ(store_path)
    try:
        q.add_channel("c", blocking)
        task_id = q.enqueue("c", None)
        q.start()
        assert started.wait(10)
        assert q.stop(timeout=0.01) is False
        closer = threading.Thread(target=q.close)
        closer.start()
        release.set()
        closer.join(30)
        assert not closer.is_alive()
    finally:
        release.set()
        q.close()
    with SimplePyQ(store_path) as reopened:
        task = reopened.get_task(task_id)
        assert task is not None and task.result == "recorded before close returned"


# -- run_until_complete ------------------------------------------------------


def test_run_until_complete_ignores_channels_not_registered_here(store_path: str) -> None:
    with SimplePyQ(store_path) as other:
        other.add_channel("elsewhere", print)
        foreign = other.enqueue_many("elsewhere", ["not for us"] * 3)
    with SimplePyQ(store_path) as q:
        q.add_channel("here", lambda args: "ok")
        mine = q.enqueue("here", None)
        q.run_until_complete(timeout=10)
        assert q.wait(mine, timeout=1).status == Status.DONE
        assert {q.get_task(i).status for i in foreign} == {Status.PENDING}  # type: ignore[union-attr]


def test_run_until_complete_leaves_the_workers_stopped_and_can_run_again(
    queue: SimplePyQ,
) -> None:
    seen: list[int] = []
    queue.add_channel("c", seen.append)
    queue.enqueue("c", 1)
    queue.run_until_complete(timeout=10)
    assert seen == [1]
    later = queue.enqueue("c", 2)
    with pytest.raises(TimeoutError):
        queue.wait(later, timeout=0.2)  # nobody runs it: the workers were stopped
    assert queue.get_task(later).status == Status.PENDING  # type: ignore[union-attr]
    queue.run_until_complete(timeout=10)
    assert seen == [1, 2]
    assert queue.wait(later, timeout=1).status == Status.DONE


def test_run_until_complete_waits_out_delays_and_retries(queue: SimplePyQ) -> None:
    calls: list[int] = []

    def slow_starter(args: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise DelayException(0.05)
        if len(calls) == 2:
            raise RuntimeError("transient")
        return "finally"

    queue.add_channel("c", slow_starter, backoff=0.05)
    task_id = queue.enqueue("c", None, retries=1)
    queue.run_until_complete(timeout=10)
    assert queue.wait(task_id, timeout=1).result == "finally"
    assert len(calls) == 3


def test_run_until_complete_raises_timeout_error_while_a_task_blocks(queue: SimplePyQ) -> None:
    release = threading.Event()
    queue.add_channel("blocked", lambda args: release.wait(10))
    task_id = queue.enqueue("blocked", None)
    try:
        with pytest.raises(TimeoutError, match="blocked"):
            queue.run_until_complete(timeout=0.2)
    finally:
        release.set()
    assert queue.wait(task_id, timeout=10).status == Status.DONE


# -- wait ----------------------------------------------------------------------


def test_wait_works_in_a_process_that_runs_no_workers(queue: SimplePyQ, store_path: str) -> None:
    queue.add_channel("c", lambda n: {"answer": n + 100})
    task_id = queue.enqueue("c", 1)
    child = spawn_python(
        """
        import sys
        from simplepyq import SimplePyQ
        with SimplePyQ(sys.argv[1]) as q:
            print(q.wait(int(sys.argv[2]), timeout=20).result["answer"])
        """,
        store_path, str(task_id),
    )
    try:
        queue.run_until_complete(timeout=10)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    assert out.strip() == "101"


def test_wait_on_an_unknown_task_raises_value_error(queue: SimplePyQ) -> None:
    with pytest.raises(ValueError, match="12345"):
        queue.wait(12345, timeout=1)


def test_wait_times_out_on_a_task_that_never_runs(queue: SimplePyQ) -> None:
    queue.add_channel("c", print)
    task_id = queue.enqueue("c", None)
    with pytest.raises(TimeoutError, match=str(task_id)):
        queue.wait(task_id, timeout=0.1)
    assert queue.get_task(task_id).status == Status.PENDING  # type: ignore[union-attr]


# -- helpers -------------------------------------------------------------------


def _task_in(queue: SimplePyQ, task_id: int, *statuses: str,
             retries: int | None = None) -> Task | None:
    """The task if it is in one of ``statuses`` (and has ``retries`` left, if given)."""
    task = queue.get_task(task_id)
    if task is None or task.status not in statuses:
        return None
    if retries is not None and task.retries != retries:
        return None
    return task


def _make_due(store_path: str, task_id: int) -> None:
    """Bring a delayed task's run-at time to the past, behind the library's back, and
    tell the workers as any simplepyq writer would.

    SQLite's workers see every commit to the file. PostgreSQL's learn of changes from
    the NOTIFY on 'simplepyq.<schema>' that each of the library's writes sends, so the
    update sends it too, in the same transaction.
    """
    if is_postgres(store_path):
        raw_sql(store_path, "WITH due AS (UPDATE tasks SET delay_until=0 WHERE id=? RETURNING id)"
                            " SELECT pg_notify('simplepyq.' || current_schema(), '') FROM due",
                [task_id])
    else:
        raw_sql(store_path, "UPDATE tasks SET delay_until=0 WHERE id=?", [task_id])


def _threads_of(channel: str) -> list[threading.Thread]:
    """The live worker threads of ``channel`` (the scheduler names them after it)."""
    prefix = f"simplepyq-{channel}-"
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {status: n for status, n in counts.items() if n}


def test_a_sleeper_woken_by_notify_no_longer_counts_as_idle_before_it_runs() -> None:
    wake = Wakeup()
    sleeper = threading.Thread(target=wake.wait_past, args=(wake.generation, 30))
    sleeper.start()
    wait_until(lambda: wake.sleepers == 1)
    assert wake.idle == 1
    with wake._cond:  # (the sleeper cannot return while this thread holds the lock)
        wake.notify(1)
        assert (wake.sleepers, wake.idle) == (1, 0)
    sleeper.join(30)
    assert (wake.sleepers, wake.idle) == (0, 0)
    wake.wait_past(wake.generation, 0.001)  # a sleep that ends by its timeout
    assert (wake.sleepers, wake.idle) == (0, 0)
