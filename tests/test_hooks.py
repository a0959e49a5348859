"""Lifecycle hooks: ``q.on(event, handler)`` is told of the tasks this process runs.

Each handler receives the task as the commit that made the event left it, after that
commit, on one hook thread per queue, in commit order; a handler that raises is logged
and changes nothing, and workers never wait for handlers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from simplepyq import DelayException, SimplePyQ, Status, Step, Task, current_task
from simplepyq.hooks import EVENTS
from tests.support import wait_until


class Recorder:
    """Records (event, task id, status, attempts, result) of every event, and the thread."""

    def __init__(self, queue: SimplePyQ, channel: str | None = None) -> None:
        self.seen: list[tuple[str, int, str, int, Any]] = []
        self.threads: set[str] = set()
        for event in EVENTS:
            queue.on(event, self._handler(event), channel)

    def _handler(self, event: str) -> Any:
        def handle(task: Task) -> None:
            self.threads.add(threading.current_thread().name)
            self.seen.append((event, task.id, str(task.status), task.attempts, task.result))
        return handle

    def of(self, task_id: int) -> list[tuple[str, str, int, Any]]:
        return [(event, status, attempts, result)
                for event, seen_id, status, attempts, result in self.seen if seen_id == task_id]


def flaky(args: Any) -> Any:
    """Raises on its first attempt for "retry", defers once for "defer", always raises
    for "fail"; returns the args otherwise."""
    context = current_task()
    assert context is not None
    if args == "fail" or (args == "retry" and context.attempt == 1):
        raise RuntimeError(f"{args} on attempt {context.attempt}")
    if args == "defer" and context.attempt == 1:
        raise DelayException(0.01)
    return args


def test_each_outcome_gives_its_events_in_order_with_the_task_as_committed(
    queue: SimplePyQ
) -> None:
    queue.add_channel("c", flaky)
    recorder = Recorder(queue)
    done, retried, deferred, failed = (queue.enqueue("c", "ok"), queue.enqueue("c", "retry",
                                                                               retries=1),
                                       queue.enqueue("c", "defer"), queue.enqueue("c", "fail"))
    queue.run_until_complete(timeout=60)

    assert recorder.of(done) == [("started", "running", 1, None),
                                 ("succeeded", "done", 1, "ok")]
    assert recorder.of(retried) == [("started", "running", 1, None),
                                    ("retrying", "pending", 1, None),
                                    ("started", "running", 2, None),
                                    ("succeeded", "done", 2, "retry")]
    assert [event for event, *_ in recorder.of(deferred)] == [
        "started", "deferred", "started", "succeeded"]
    assert recorder.of(deferred)[1][1] == "delayed"
    assert recorder.of(failed) == [("started", "running", 1, None),
                                   ("failed", "failed", 1, None)]
    assert recorder.threads == {"simplepyq-hooks"}


def test_a_task_cancelled_while_it_runs_gives_cancelled(queue: SimplePyQ) -> None:
    started = threading.Event()

    def until_cancelled(args: Any) -> None:
        context = current_task()
        assert context is not None
        started.set()
        wait_until(context.cancelled, timeout=30)
        context.check()

    queue.add_channel("c", until_cancelled)
    recorder = Recorder(queue)
    task_id = queue.enqueue("c", None)
    queue.start()
    assert started.wait(30)
    queue.cancel(task_id)
    queue.wait(task_id, timeout=30)
    queue.stop()
    assert [(event, status) for event, status, *_ in recorder.of(task_id)] == [
        ("started", "running"), ("cancelled", "cancelled")]


def test_a_handler_for_one_channel_hears_only_that_channel(queue: SimplePyQ) -> None:
    queue.add_channel("a", flaky)
    queue.add_channel("b", flaky)
    recorder = Recorder(queue, channel="b")
    queue.enqueue("a", 1)
    in_b = queue.enqueue("b", 2)
    queue.run_until_complete(timeout=60)
    assert {task_id for _, task_id, *_ in recorder.seen} == {in_b}


def test_a_handler_that_raises_is_logged_and_changes_nothing(
    queue: SimplePyQ, caplog: pytest.LogCaptureFixture
) -> None:
    queue.add_channel("c", flaky)
    queue.on("succeeded", lambda task: 1 / 0)
    later: list[int] = []
    queue.on("succeeded", lambda task: later.append(task.id))
    task_id = queue.enqueue("c", "ok")
    queue.run_until_complete(timeout=60)
    assert queue.get_task(task_id).status == Status.DONE  # type: ignore[union-attr]
    assert later == [task_id]  # the next handler still ran
    assert any("hook" in r.getMessage() and "ZeroDivisionError" in (r.exc_text or "")
               for r in caplog.records if r.levelno == logging.ERROR)


def test_workers_go_on_while_a_handler_is_slow(queue: SimplePyQ) -> None:
    queue.add_channel("c", flaky)
    release = threading.Event()
    queue.on("succeeded", lambda task: release.wait(60))
    first = queue.enqueue("c", 1)
    queue.start()
    queue.wait(first, timeout=30)
    second = queue.enqueue("c", 2)
    assert queue.wait(second, timeout=30).status == Status.DONE  # the handler still waits
    release.set()
    queue.stop()


def test_tasks_released_or_cancelled_by_a_workflow_give_events_only_when_run_here(
    queue: SimplePyQ
) -> None:
    queue.add_channel("c", flaky)
    recorder = Recorder(queue)
    _, _, third = queue.chain(Step("c", "fail"), Step("c"), Step("c")).task_ids
    queue.run_until_complete(timeout=60)
    assert [event for event, task_id, *_ in recorder.seen] == ["started", "failed"]
    assert queue.get_task(third).status == Status.CANCELLED  # type: ignore[union-attr]


@pytest.mark.parametrize(("event", "handler", "error", "message"), [
    ("finished", print, ValueError, "unknown event 'finished'; events are started, "),
    ("failed", "print", TypeError, "must be callable, not 'print'"),
])
def test_an_unknown_event_or_a_handler_that_is_not_callable_is_refused_at_on(
    queue: SimplePyQ, event: str, handler: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        queue.on(event, handler)
