"""The testing mode: an eager queue, the synchronous drain, and an isolated queue.

Tasks run in the calling thread through the path workers take: args through msgpack
and back, the outcome stored with its hooks and dependents. Nothing starts a thread
to run them, and the order is the store's: priority, then first enqueued first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from simplepyq import DelayException, SimplePyQ, Status, Step
from simplepyq.errors import UnknownChannelError
from simplepyq.testing import enqueued, isolated


@pytest.fixture
def eager(store_path: str) -> Iterator[SimplePyQ]:
    q = SimplePyQ(store_path, poll_interval=0.01, eager=True)
    yield q
    q.close()


def _workers_of(channel: str) -> list[str]:
    """The live worker threads of ``channel`` (and housekeepers, which run with them)."""
    return [t.name for t in threading.enumerate()
            if t.name.startswith((f"simplepyq-{channel}-", "simplepyq-housekeeper"))]


# -- eager -------------------------------------------------
def test_an_eager_enqueue_returns_with_the_task_done_and_its_result_stored(
        eager: SimplePyQ) -> None:
    received: list[Any] = []
    given = {"to": "ann@example.com", "tags": ["a", "b"]}

    def send(args: Any) -> str:
        received.append(args)
        return f"sent to {args['to']}"

    eager.add_channel("email", send)
    task_id = eager.enqueue("email", given)
    task = eager.get_task(task_id)
    assert task is not None
    assert (task.status, task.result, task.attempts) == (Status.DONE, "sent to ann@example.com", 1)
    assert received == [given] and received[0] is not given  # decoded from the store
    assert eager.wait(task_id, timeout=0.5).status is Status.DONE
    assert _workers_of("email") == []


def test_an_eager_task_that_raises_is_stored_failed_and_enqueue_returns(
        eager: SimplePyQ) -> None:
    def broken(args: Any) -> None:
        raise ValueError(f"no such user {args}")

    eager.add_channel("c", broken)
    task = eager.get_task(eager.enqueue("c", 7))
    assert task is not None and task.status is Status.FAILED
    assert "ValueError: no such user 7" in (task.error or "")


def test_args_that_cannot_be_stored_are_refused_eagerly_too_and_nothing_runs(
        eager: SimplePyQ) -> None:
    ran: list[Any] = []
    eager.add_channel("c", ran.append)
    with pytest.raises(TypeError, match="object"):
        eager.enqueue("c", {"x": object()})
    assert ran == [] and eager.tasks() == []


def test_eager_retries_without_backoff_run_at_once_and_delays_wait_for_a_due_drain(
        eager: SimplePyQ) -> None:
    attempts: list[str] = []

    def flaky(name: str) -> str:
        attempts.append(name)
        if attempts.count(name) < 3:
            raise RuntimeError("not yet")
        return name

    def deferring(args: Any) -> str:
        if not attempts.count("deferred"):
            attempts.append("deferred")
            raise DelayException(3600)
        return "finally"

    eager.add_channel("flaky", flaky)
    eager.add_channel("slow", flaky, backoff=3600)
    eager.add_channel("later", deferring)
    at_once = eager.enqueue("flaky", "a", retries=5)
    assert eager.get_task(at_once).status is Status.DONE  # type: ignore[union-attr]
    backed_off = eager.enqueue("slow", "b", retries=5)
    deferred = eager.enqueue("later", None)
    delayed = eager.enqueue("flaky", "c", retries=5, delay=3600)
    assert [eager.get_task(i).status for i in (backed_off, deferred, delayed)] == [  # type: ignore[union-attr]
        Status.DELAYED] * 3
    assert attempts == ["a", "a", "a", "b", "deferred"]
    ran = eager.drain(due=True)  # channel by channel, in the order they were added
    assert [task.id for task in ran] == [delayed, backed_off, deferred]
    assert [(t.status, t.result) for t in ran] == [
        (Status.DONE, "c"), (Status.DONE, "b"), (Status.DONE, "finally")]


def test_tasks_a_task_enqueues_run_in_the_same_enqueue_after_it_ends(
        eager: SimplePyQ) -> None:
    log: list[str] = []

    def parent(n: int) -> None:
        log.append(f"start {n}")
        if n < 3:
            eager.enqueue("c", n + 1)
        log.append(f"end {n}")

    eager.add_channel("c", parent)
    eager.enqueue("c", 1)
    assert log == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]


def test_an_eager_chain_runs_whole_and_a_failed_step_cancels_the_rest(
        eager: SimplePyQ) -> None:
    eager.add_channel("inc", lambda n: n + 1)
    eager.add_channel("boom", lambda n: 1 / 0)
    good = eager.chain(Step("inc", 1), Step("inc"), Step("inc"))
    assert [eager.get_task(i).result for i in good.task_ids] == [2, 3, 4]  # type: ignore[union-attr]
    bad = eager.chain(Step("inc", 1), Step("boom"), Step("inc"))
    assert [eager.get_task(i).status for i in bad.task_ids] == [  # type: ignore[union-attr]
        Status.DONE, Status.FAILED, Status.CANCELLED]


def test_eager_hooks_are_called_before_enqueue_returns(eager: SimplePyQ) -> None:
    seen: list[tuple[str, int]] = []
    eager.add_channel("c", lambda n: n)
    eager.on("succeeded", lambda task: seen.append(("succeeded", task.result)))
    eager.enqueue("c", 5)
    assert seen == [("succeeded", 5)]


def test_an_eager_queue_starts_no_workers_and_run_until_complete_drains_what_is_left(
        eager: SimplePyQ) -> None:
    eager.add_channel("c", lambda n: n * 2)
    eager.start()
    assert _workers_of("c") == []
    task_id = eager.enqueue("c", 4, delay=3600)
    eager.run_until_complete()
    assert eager.get_task(task_id).result == 8  # type: ignore[union-attr]


def test_eager_can_be_switched_on_and_off_but_not_while_workers_run(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda n: n)
    first = queue.enqueue("c", 1)
    queue.eager = True
    second = queue.enqueue("c", 2)  # runs what was pending too
    assert [queue.get_task(i).status for i in (first, second)] == [Status.DONE] * 2  # type: ignore[union-attr]
    queue.eager = False
    queue.start()
    with pytest.raises(RuntimeError, match="stop"):
        queue.eager = True
    queue.stop()
    with pytest.raises(TypeError, match="'yes'"):
        queue.eager = "yes"  # type: ignore[assignment]
    assert queue.eager is False


def test_eager_must_be_a_bool(store_path: str) -> None:
    with pytest.raises(TypeError, match="eager must be True or False, not 1"):
        SimplePyQ(store_path, eager=1)  # type: ignore[arg-type]


# -- drain -------------------------------------------------
def test_drain_runs_in_priority_then_enqueue_order_and_says_what_it_ran(
        queue: SimplePyQ) -> None:
    order: list[int] = []
    queue.add_channel("c", order.append)
    low = queue.enqueue("c", 1)
    high = queue.enqueue("c", 2, priority=5)
    later = queue.enqueue("c", 3, delay=3600)
    before = threading.active_count()
    ran = queue.drain()
    assert threading.active_count() == before
    assert order == [2, 1]
    assert [task.id for task in ran] == [high, low]
    assert all(task.status is Status.DONE for task in ran)
    assert queue.get_task(later).status is Status.DELAYED  # type: ignore[union-attr]
    assert queue.drain() == []


def test_drain_runs_dependents_as_their_upstreams_release_them(queue: SimplePyQ) -> None:
    queue.add_channel("a", lambda n: n + 1)
    queue.add_channel("b", lambda values: sum(values))
    group = queue.group([Step("a", 1), Step("a", 2)], then=Step("b"))
    ran = queue.drain()
    assert [task.channel for task in ran] == ["a", "a", "b"]
    assert ran[-1].result == 5
    assert queue.workflow(group.id).finished


def test_drain_of_some_channels_leaves_the_others_alone(queue: SimplePyQ) -> None:
    queue.add_channel("a", lambda n: n)
    queue.add_channel("b", lambda n: n)
    queue.enqueue("a", 1)
    other = queue.enqueue("b", 2)
    assert [task.channel for task in queue.drain(["a"])] == ["a"]
    assert queue.get_task(other).status is Status.PENDING  # type: ignore[union-attr]
    with pytest.raises(UnknownChannelError, match="'nope'"):
        queue.drain(["nope"])


def test_drain_obeys_rate_limits(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda n: n, rate_limit="1/h")
    ids = [queue.enqueue("c", n) for n in range(3)]
    assert [task.id for task in queue.drain()] == ids[:1]
    assert queue.stats()["c"]["pending"] == 2


def test_drain_stops_a_task_that_defers_itself_without_end(queue: SimplePyQ) -> None:
    def forever(args: Any) -> None:
        raise DelayException(60)

    queue.add_channel("c", forever)
    task_id = queue.enqueue("c", None)
    with pytest.raises(RuntimeError, match=f"after 5 runs .*task {task_id} of channel 'c'"):
        queue.drain(due=True, max_runs=5)
    task = queue.get_task(task_id)
    assert task is not None and task.attempts == 5 and not task.finished
    with pytest.raises(ValueError, match="max_runs"):
        queue.drain(max_runs=-1)


def test_drain_is_refused_while_workers_run(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda n: n)
    queue.start()
    try:
        with pytest.raises(RuntimeError, match=r"stop\(\) them first"):
            queue.drain()
    finally:
        queue.stop()


# -- isolated, enqueued, and the fixture ---------------------
def test_isolated_runs_an_applications_queue_on_a_fresh_store_and_gives_it_back(
        store_path: str) -> None:
    app = SimplePyQ(store_path)
    try:
        app.add_channel("email", lambda to: f"sent to {to}", rate_limit="5/s")
        kept = app.enqueue("email", "already@example.com")
        with isolated(app, eager=True) as q:
            assert q is app
            eager_inside = app.eager
            task_id = app.enqueue("email", "ann@example.com")
            assert [t.result for t in enqueued(app, "email")] == ["sent to ann@example.com"]
            assert str(app.limits("email")) == "rate 5/s"
            assert task_id == 1
        assert (eager_inside, app.eager) == (True, False)
        assert [t.id for t in enqueued(app)] == [kept]
        assert app.get_task(kept).status is Status.PENDING  # type: ignore[union-attr]
    finally:
        app.close()


def test_isolated_is_refused_while_workers_run(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda n: n)
    queue.start()
    try:
        with pytest.raises(RuntimeError, match=r"stop\(\) first"), isolated(queue):
            pass
    finally:
        queue.stop()


def test_enqueued_lists_every_task_of_any_status_in_order(queue: SimplePyQ) -> None:
    queue.add_channel("a", lambda n: n)
    queue.add_channel("b", lambda n: n)
    ids = queue.enqueue_many("a", range(150))
    other = queue.enqueue("b", "x")
    queue.drain(["a"])
    assert [t.id for t in enqueued(queue, "a")] == ids
    assert [t.id for t in enqueued(queue)] == [*ids, other]
    assert enqueued(queue, "none") == []


def test_the_fixture_gives_each_test_a_fresh_queue_in_memory(
        simplepyq_queue: SimplePyQ) -> None:
    assert simplepyq_queue.store_path == ":memory:"
    assert simplepyq_queue.stats() == {}
    simplepyq_queue.add_channel("c", lambda n: n + 1)
    simplepyq_queue.enqueue("c", 1)
    assert [t.result for t in simplepyq_queue.drain()] == [2]
