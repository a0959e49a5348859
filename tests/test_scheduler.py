"""Running tasks: exactly once, results, retries, deferral, failures, wake-ups, stop and start."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter

import pytest

from simplepyq import Backoff, DelayException, SimplePyQ, Status
from tests.support import run_python, spawn_python, wait_until


class _RunCounter:
    """A channel function that counts, thread-safely, how often it ran with each args."""

    def __init__(self) -> None:
        self.runs: Counter[int] = Counter()
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self._lock:
            self.runs[n] += 1


def test_each_task_runs_exactly_once_with_many_workers(queue: SimplePyQ) -> None:
    count = _RunCounter()
    queue.add_channel("c", count, max_workers=8)
    ids = queue.enqueue_many("c", range(500))
    queue.run_until_complete(timeout=60)
    assert count.runs == Counter(range(500))
    assert {(t.status, t.attempts) for t in queue.tasks(limit=1000)} == {("done", 1)}
    assert len(ids) == 500


def test_return_value_is_stored_as_result(queue: SimplePyQ) -> None:
    queue.add_channel("echo", lambda args: {"got": args, "list": [1, "two", None]})
    task_id = queue.enqueue("echo", {"a": 1})
    queue.run_until_complete(timeout=10)
    task = queue.wait(task_id, timeout=5)
    assert task.status == Status.DONE
    assert task.result == {"got": {"a": 1}, "list": [1, "two", None]}
    assert task.error is None
    assert task.started_at is not None and task.finished_at is not None


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
    task = queue.get_task(task_id)
    assert task is not None
    assert (task.status, task.attempts, task.retries, task.result) == ("done", 3, 0, "ok")


def test_task_out_of_retries_fails_with_its_traceback(queue: SimplePyQ) -> None:
    calls: list[int] = []

    def broken(args: object) -> None:
        calls.append(1)
        raise ValueError("the disk is made of cheese")

    queue.add_channel("c", broken)
    task_id = queue.enqueue("c", None, retries=1)
    queue.run_until_complete(timeout=10)
    task = queue.get_task(task_id)
    assert task is not None
    assert task.status == Status.FAILED
    assert len(calls) == 2
    assert task.error is not None
    assert "Traceback" in task.error and "the disk is made of cheese" in task.error
    assert task.finished_at is not None


def test_retry_waits_for_the_channel_backoff(queue: SimplePyQ) -> None:
    def broken(args: object) -> None:
        raise RuntimeError("later")

    queue.add_channel("c", broken, backoff=Backoff(30))
    before = time.time()
    task_id = queue.enqueue("c", None, retries=2)
    queue.start()
    task = wait_until(lambda: _task_in(queue, task_id, "delayed"))
    after = time.time()
    assert task.retries == 1
    assert task.run_at is not None
    assert before + 30 <= task.run_at.timestamp() <= after + 30


def test_exponential_backoff_grows_between_failures(queue: SimplePyQ, store_path: str) -> None:
    def broken(args: object) -> None:
        raise RuntimeError("again")

    queue.add_channel("c", broken, backoff=Backoff(10, factor=3, max_delay=1000))
    task_id = queue.enqueue("c", None, retries=3)
    queue.start()
    waits = []
    for retries_left in (2, 1, 0):
        task = wait_until(lambda r=retries_left: _task_in(queue, task_id, "delayed", retries=r))
        assert task.run_at is not None and task.started_at is not None
        waits.append(task.run_at.timestamp() - task.started_at.timestamp())
        _make_due(store_path, task_id)
    assert [round(w) for w in waits] == [10, 30, 90]


def test_default_backoff_retries_at_once(queue: SimplePyQ) -> None:
    calls: list[int] = []

    def once_broken(args: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first time")

    queue.add_channel("c", once_broken)
    task_id = queue.enqueue("c", None, retries=1)
    queue.run_until_complete(timeout=10)
    assert queue.wait(task_id, timeout=1).status == "done"
    assert len(calls) == 2


def test_delay_exception_defers_without_using_a_retry(queue: SimplePyQ) -> None:
    calls: list[float] = []
    first_run_seen = threading.Event()
    release = threading.Event()

    def deferring(args: object) -> str:
        calls.append(time.time())
        if len(calls) == 1:
            first_run_seen.set()
            raise DelayException(0.05)
        release.wait(10)
        return "second run"

    queue.add_channel("c", deferring)
    task_id = queue.enqueue("c", None, retries=0)
    queue.start()
    assert first_run_seen.wait(10)
    deferred = wait_until(lambda: _task_in(queue, task_id, "delayed", "running"))
    assert deferred.retries == 0
    release.set()
    done = queue.wait(task_id, timeout=10)
    assert (done.status, done.result, done.retries, len(calls)) == ("done", "second run", 0, 2)
    assert calls[1] - calls[0] >= 0.05


def test_delayed_task_state_records_its_run_at(queue: SimplePyQ) -> None:
    def deferring(args: object) -> None:
        raise DelayException(1000.5)

    queue.add_channel("c", deferring)
    task_id = queue.enqueue("c", None, retries=3)
    queue.start()
    task = wait_until(lambda: _task_in(queue, task_id, "delayed"))
    assert task.retries == 3
    assert task.run_at is not None and task.started_at is not None
    assert task.run_at.timestamp() - task.started_at.timestamp() == pytest.approx(1000.5, abs=1)


def test_async_functions_are_awaited(queue: SimplePyQ) -> None:
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
    assert failed.status == "failed" and "async failure" in (failed.error or "")


@pytest.mark.parametrize("exception", [SystemExit(3), KeyboardInterrupt(), RuntimeError("x")])
def test_any_exception_fails_the_task_and_the_worker_goes_on(
    queue: SimplePyQ, exception: BaseException
) -> None:
    def run(args: str) -> str:
        if args == "raise":
            raise exception
        return "survived"

    queue.add_channel("c", run, max_workers=1)
    bad = queue.enqueue("c", "raise")
    good = queue.enqueue("c", "fine")
    queue.run_until_complete(timeout=10)
    failed = queue.wait(bad, timeout=1)
    assert failed.status == "failed"
    assert type(exception).__name__ in (failed.error or "")
    assert queue.wait(good, timeout=1).result == "survived"


def test_unstorable_result_fails_the_task_without_a_rerun(queue: SimplePyQ) -> None:
    calls: list[int] = []

    def returns_a_set(args: object) -> set[int]:
        calls.append(1)
        return {1, 2}

    queue.add_channel("c", returns_a_set)
    bad = queue.enqueue("c", None, retries=3)
    queue.run_until_complete(timeout=10)
    task = queue.wait(bad, timeout=1)
    assert task.status == "failed"
    assert "set" in (task.error or "") and "cannot be stored" in (task.error or "")
    assert len(calls) == 1
    assert task.retries == 3


def test_undecodable_args_fail_the_task_and_others_still_run(
    queue: SimplePyQ, store_path: str
) -> None:
    seen: list[object] = []
    queue.add_channel("c", seen.append)
    with sqlite3.connect(store_path) as conn:
        bad = conn.execute(
            "INSERT INTO tasks (channel, args, status, retries) VALUES ('c', x'c1c1', 'pending', 0)"
        ).lastrowid
    assert bad is not None
    good = queue.enqueue("c", "fine")
    queue.run_until_complete(timeout=10)
    failed = queue.wait(bad, timeout=1)
    assert failed.status == "failed" and "decode" in (failed.error or "")
    assert queue.wait(good, timeout=1).status == "done"
    assert seen == ["fine"]


def test_a_task_can_enqueue_follow_up_tasks(queue: SimplePyQ) -> None:
    seen: list[int] = []

    def countdown(n: int) -> None:
        seen.append(n)
        if n > 0:
            queue.enqueue("countdown", n - 1)

    queue.add_channel("countdown", countdown, max_workers=2)
    queue.enqueue("countdown", 5)
    queue.run_until_complete(timeout=10)
    assert seen == [5, 4, 3, 2, 1, 0]


def test_channel_added_while_running_starts_its_workers(queue: SimplePyQ) -> None:
    queue.add_channel("first", lambda args: None)
    queue.start()
    queue.add_channel("late", lambda args: "late ran")
    task_id = queue.enqueue("late", None)
    assert queue.wait(task_id, timeout=10).result == "late ran"


def test_idle_worker_is_woken_by_an_enqueue_in_the_same_process(store_path: str) -> None:
    with SimplePyQ(store_path, poll_interval=3600) as q:
        q.add_channel("c", lambda n: n + 1)
        q.start()
        assert q.wait(q.enqueue("c", 1), timeout=10).result == 2
        # The worker is idle again and the poll is an hour away: only a wake-up can run this.
        assert q.wait(q.enqueue("c", 2), timeout=10).result == 3


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


def test_stop_lets_the_running_task_finish_and_keeps_the_rest_pending(queue: SimplePyQ) -> None:
    started, release = threading.Event(), threading.Event()

    def blocking(n: int) -> int:
        started.set()
        release.wait(10)
        return n

    queue.add_channel("c", blocking, max_workers=1)
    first, *rest = queue.enqueue_many("c", range(4))
    queue.start()
    assert started.wait(10)
    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(queue.stop()))
    stopper.start()
    release.set()
    stopper.join(10)
    assert stopped == [True]
    assert queue.wait(first, timeout=1).status == "done"
    assert [queue.get_task(i).status for i in rest] == ["pending"] * 3  # type: ignore[union-attr]
    queue.start()
    assert [queue.wait(i, timeout=10).result for i in rest] == [1, 2, 3]


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
    assert queue.stop(timeout=0.05) is False
    release.set()
    assert queue.wait(task_id, timeout=10).result == "finished late"


def test_run_until_complete_ignores_channels_not_registered_here(store_path: str) -> None:
    with SimplePyQ(store_path) as other:
        other.add_channel("elsewhere", print)
        foreign = other.enqueue("elsewhere", "not for us")
    with SimplePyQ(store_path) as q:
        q.add_channel("here", lambda args: "ok")
        mine = q.enqueue("here", None)
        q.run_until_complete(timeout=10)
        assert q.wait(mine, timeout=1).status == "done"
        assert q.get_task(foreign).status == "pending"  # type: ignore[union-attr]


def test_run_until_complete_stops_and_can_be_called_again(queue: SimplePyQ) -> None:
    seen: list[int] = []
    queue.add_channel("c", seen.append)
    queue.enqueue("c", 1)
    queue.run_until_complete(timeout=10)
    later = queue.enqueue("c", 2)
    assert queue.get_task(later).status == "pending"  # type: ignore[union-attr]
    queue.run_until_complete(timeout=10)
    assert seen == [1, 2]


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


def test_run_until_complete_times_out_with_an_error(queue: SimplePyQ) -> None:
    release = threading.Event()
    queue.add_channel("c", lambda args: release.wait(10))
    task_id = queue.enqueue("c", None)
    try:
        with pytest.raises(TimeoutError, match="c"):
            queue.run_until_complete(timeout=0.2)
    finally:
        release.set()
    assert queue.wait(task_id, timeout=10).status == "done"


def test_wait_works_in_a_process_that_runs_no_workers(queue: SimplePyQ, store_path: str) -> None:
    queue.add_channel("c", lambda n: n + 100)
    task_id = queue.enqueue("c", 1)
    child = spawn_python(
        """
        import sys
        from simplepyq import SimplePyQ
        with SimplePyQ(sys.argv[1]) as q:
            print(q.wait(int(sys.argv[2]), timeout=30).result)
        """,
        store_path, str(task_id),
    )
    queue.run_until_complete(timeout=10)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert out.strip() == "101"


def test_wait_on_an_unknown_task_raises(queue: SimplePyQ) -> None:
    with pytest.raises(ValueError, match="12345"):
        queue.wait(12345, timeout=1)


def test_wait_times_out_on_a_task_that_never_runs(queue: SimplePyQ) -> None:
    queue.add_channel("c", print)
    task_id = queue.enqueue("c", None)
    with pytest.raises(TimeoutError, match=str(task_id)):
        queue.wait(task_id, timeout=0.1)


def test_removed_channel_stops_while_others_keep_running(queue: SimplePyQ) -> None:
    queue.add_channel("gone", lambda args: "gone ran")
    queue.add_channel("kept", lambda args: "kept ran")
    queue.start()
    assert queue.remove_channel("gone") == 0
    with pytest.raises(ValueError, match="gone"):
        queue.enqueue("gone", None)
    assert queue.wait(queue.enqueue("kept", None), timeout=10).result == "kept ran"


def test_concurrent_enqueues_from_many_threads_all_run_once(queue: SimplePyQ) -> None:
    count = _RunCounter()
    queue.add_channel("c", count, max_workers=4)
    queue.start()

    def produce(base: int) -> None:
        for n in range(base, base + 200):
            queue.enqueue("c", n)

    producers = [threading.Thread(target=produce, args=(i * 200,)) for i in range(8)]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join(30)
    queue.run_until_complete(timeout=60)
    assert count.runs == Counter(range(1600))


def test_workers_survive_many_failing_tasks(queue: SimplePyQ) -> None:
    def run(args: str) -> str:
        if args == "fail":
            raise RuntimeError("boom")
        return "alive"

    queue.add_channel("c", run, max_workers=2)
    queue.enqueue_many("c", ["fail"] * 20)
    queue.run_until_complete(timeout=10)
    queue.start()
    assert queue.wait(queue.enqueue("c", "ok"), timeout=10).result == "alive"
    assert queue.stats()["c"]["failed"] == 20


def _task_in(queue: SimplePyQ, task_id: int, *statuses: str, retries: int | None = None):
    task = queue.get_task(task_id)
    if task is None or task.status not in statuses:
        return None
    if retries is not None and task.retries != retries:
        return None
    return task


def _make_due(store_path: str, task_id: int) -> None:
    with sqlite3.connect(store_path) as conn:
        conn.execute("UPDATE tasks SET delay_until = 0 WHERE id = ?", (task_id,))


def test_close_waits_for_a_task_that_outlived_a_stop_timeout(store_path: str) -> None:
    started, release = threading.Event(), threading.Event()

    def blocking(args: object) -> str:
        started.set()
        release.wait(10)
        return "recorded before close returned"

    q = SimplePyQ(store_path)
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
    with SimplePyQ(store_path) as reopened:
        assert reopened.get_task(task_id).result == "recorded before close returned"  # type: ignore[union-attr]
