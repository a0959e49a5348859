"""Batch claims and group commits: what they buy, and the guarantees they must keep."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from simplepyq import SimplePyQ, Status, StoreError, Task
from simplepyq.batches import BATCH_SECONDS, HOLD_LIMIT, MAX_BATCH, Hand, Outbox, Pace
from simplepyq.policy import succeeded
from simplepyq.storage.base import Claimed, Outcome
from tests.support import wait_until


def _claimed(*ids: int) -> list[Claimed]:
    return [Claimed(task_id, None, 0, 1) for task_id in ids]


def _task(queue: SimplePyQ, task_id: int) -> Task:
    task = queue.get_task(task_id)
    assert task is not None, f"task {task_id} is gone"
    return task


# -- Hand: claimed tasks waiting for a worker -------------------------------------
def _paced(seconds: float) -> Pace:
    pace = Pace()
    pace.ran(seconds)
    return pace


def test_hand_claims_one_task_per_worker_until_it_knows_the_channels_pace() -> None:
    assert Hand(3, Pace()).wanted() == 3


def test_hand_claims_about_batch_seconds_of_work_per_worker_once_paced() -> None:
    assert Hand(2, _paced(BATCH_SECONDS / 10)).wanted() == 20
    assert Hand(2, _paced(BATCH_SECONDS * 10)).wanted() == 1  # slow tasks: one each


def test_hand_never_claims_more_than_max_batch() -> None:
    assert Hand(4, _paced(0.0)).wanted() == MAX_BATCH


def test_pace_is_a_moving_average_of_run_times() -> None:
    pace = _paced(1.0)
    pace.ran(2.0)
    assert pace.seconds == pytest.approx(1.2)


def test_hand_gives_tasks_out_in_claim_order_and_empties_on_demand() -> None:
    hand = Hand(1, Pace())
    hand.put(_claimed(7, 8, 9))
    assert hand.take() == _claimed(7)[0]
    assert hand.empty() == _claimed(8, 9)
    assert hand.take() is None


def test_hand_is_stale_once_its_oldest_task_waited_past_the_hold_limit() -> None:
    hand = Hand(1, Pace())
    assert not hand.stale(time.monotonic() + 10 * HOLD_LIMIT)  # nothing held
    hand.put(_claimed(1))
    put_at = time.monotonic()
    assert not hand.stale(put_at)
    hand.put(_claimed(2))  # a later batch does not make the oldest younger
    assert hand.stale(put_at + HOLD_LIMIT * 1.01)


# -- Outbox: outcomes waiting for a commit ----------------------------------------
def _outcome(task_id: int) -> Outcome:
    return Outcome(task_id, succeeded(0, None, 0.0))


def test_outbox_reports_the_first_waiting_outcome_only() -> None:
    outbox = Outbox()
    assert outbox.due_in(time.monotonic()) is None
    assert outbox.add(_outcome(1)) is True
    assert outbox.add(_outcome(2)) is False
    assert [o.task_id for o in outbox.take()] == [1, 2]
    assert outbox.take() == []


def test_outbox_outcome_falls_due_after_the_group_window() -> None:
    outbox = Outbox()
    outbox.add(_outcome(1))
    added = time.monotonic()
    due_in = outbox.due_in(added)
    assert due_in is not None and due_in > 0
    assert outbox.due_in(added + 1.0) == 0.0


def test_outbox_keeps_outcomes_of_a_failed_commit_ahead_of_newer_ones() -> None:
    outbox = Outbox()
    outbox.add(_outcome(1))
    failed = outbox.take()
    outbox.add(_outcome(2))
    outbox.restore(failed)
    assert [o.task_id for o in outbox.take()] == [1, 2]


# -- the scheduler's use of them --------------------------------------------------
def test_many_tasks_drain_in_far_fewer_transactions_than_tasks(queue: SimplePyQ) -> None:
    exchanges = 0
    store = queue._store
    original = store.exchange

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal exchanges
        exchanges += 1
        return original(*args, **kwargs)

    store.exchange = counted  # type: ignore[method-assign]
    queue.add_channel("c", lambda n: n * 2)
    ids = queue.enqueue_many("c", range(2000))
    queue.run_until_complete(timeout=60)

    assert [t.result for t in queue.tasks("c", limit=3000)] == [n * 2 for n in range(2000)]
    assert {_task(queue, i).attempts for i in ids} == {1}
    assert exchanges < 2000 / 5  # claims and outcomes are shared by many tasks


def _paced_channel_with_a_long_task(queue: SimplePyQ) -> tuple[threading.Event, threading.Event]:
    """Channel "c": a task "long" blocks until released, others return their args.

    Fifty quick tasks have run, so the channel's pace is known and claims are batched.
    Returns (long task started, release it).
    """
    started, release = threading.Event(), threading.Event()

    def work(args: str) -> str:
        if args == "long":
            started.set()
            release.wait(30)
        return args

    queue.add_channel("c", work)
    queue.enqueue_many("c", ["warm"] * 50)
    queue.run_until_complete(timeout=30)
    return started, release


def test_claimed_tasks_behind_a_long_task_are_released_for_others(queue: SimplePyQ) -> None:
    _, release = _paced_channel_with_a_long_task(queue)
    long_id, *behind = queue.enqueue_many("c", ["long"] + ["quick"] * 20)
    queue.start()
    try:
        wait_until(lambda: _task(queue, long_id).status == Status.RUNNING)
        # Claimed with the long task, they go back to pending for any process to take.
        wait_until(lambda: all(_task(queue, i).status == Status.PENDING for i in behind),
                   timeout=10)
        assert {_task(queue, i).attempts for i in behind} == {0}  # never started
    finally:
        release.set()
    queue.run_until_complete(timeout=30)
    assert {_task(queue, i).status for i in [long_id, *behind]} == {Status.DONE}
    assert {_task(queue, i).attempts for i in behind} == {1}


def test_outcome_is_recorded_while_the_next_task_still_runs(queue: SimplePyQ) -> None:
    _, release = _paced_channel_with_a_long_task(queue)
    quick_id, long_id = queue.enqueue_many("c", ["quick", "long"])
    queue.start()
    try:
        done = queue.wait(quick_id, timeout=10)  # not held back by the long task's run
        assert (done.status, done.result) == (Status.DONE, "quick")
        assert _task(queue, long_id).status == Status.RUNNING
    finally:
        release.set()
    queue.run_until_complete(timeout=30)


def test_stop_returns_claimed_but_unstarted_tasks_to_pending(queue: SimplePyQ) -> None:
    started, release = _paced_channel_with_a_long_task(queue)
    long_id, *behind = queue.enqueue_many("c", ["long"] + ["quick"] * 5)
    queue.start()
    assert started.wait(10)
    release.set()
    assert queue.stop(timeout=30)

    assert _task(queue, long_id).status == Status.DONE
    rest = [_task(queue, i) for i in behind]
    assert {(t.status, t.attempts) for t in rest} <= {(Status.PENDING, 0), (Status.DONE, 1)}
    assert any(t.status == Status.PENDING for t in rest)  # stop started no new task
    queue.run_until_complete(timeout=30)
    assert {_task(queue, i).status for i in behind} == {Status.DONE}


def test_one_worker_runs_batched_tasks_in_priority_then_fifo_order(store_path: str) -> None:
    order: list[int] = []
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("c", order.append, max_workers=1)
        q.enqueue_many("c", range(100))
        q.enqueue_many("c", range(100, 110), priority=5)
        q.run_until_complete(timeout=30)
    assert order == [*range(100, 110), *range(100)]


def test_claimed_tasks_the_store_refuses_to_release_stay_claimed_and_still_run(
    queue: SimplePyQ,
) -> None:
    started, release = _paced_channel_with_a_long_task(queue)
    store = queue._store
    original = store.release
    tries: list[list[int]] = []

    def refused_once(owner: str, task_ids: Sequence[int]) -> int:
        tries.append(list(task_ids))
        if len(tries) == 1:
            raise StoreError("the disk is full (injected)")
        return original(owner, task_ids)

    store.release = refused_once  # type: ignore[method-assign]
    _, *behind = queue.enqueue_many("c", ["long"] + ["quick"] * 20)
    queue.start()
    try:
        assert started.wait(10)
        wait_until(lambda: len(tries) >= 2, timeout=10)  # tried again after the refusal
        assert tries[1] == tries[0]  # the same tasks, kept claimed in between
        wait_until(lambda: all(_task(queue, i).status == Status.PENDING for i in behind))
    finally:
        release.set()
    queue.run_until_complete(timeout=30)
    assert {(_task(queue, i).status, _task(queue, i).attempts) for i in behind} == {
        (Status.DONE, 1)}
