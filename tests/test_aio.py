"""The asyncio face: awaitable calls that never block the event loop.

Each ``*_async`` call gives what its synchronous form gives; a call waiting for
another process's write lock leaves the loop ticking; ``wait_async`` wakes on a
commit of this process's workers, on PostgreSQL's NOTIFY, or at the next poll.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from simplepyq import SimplePyQ, Status
from tests.backends import is_postgres, pg_connect
from tests.support import spawn_python, wait_until


def test_each_async_call_gives_what_its_sync_form_gives(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda args: args * 2)

    async def scenario() -> None:
        task_id = await queue.enqueue_async("c", 21, priority=3)
        many = await queue.enqueue_many_async("c", iter([1, 2]), keys=["a", "b"])
        assert await queue.get_task_async(task_id) == queue.get_task(task_id)
        assert await queue.stats_async() == queue.stats()
        assert await queue.cancel_async(many[0]) is True
        assert await queue.cancel_async(many[0]) is False
        with pytest.raises(ValueError, match="unknown channel 'nope'"):
            await queue.enqueue_async("nope", 1)
        with pytest.raises(ValueError, match="there is no task with id 999"):
            await queue.cancel_async(999)

    asyncio.run(scenario())
    assert queue.get_task(1).priority == 3  # type: ignore[union-attr]


def test_wait_async_wakes_when_a_worker_here_finishes_the_task(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda args: args * 2)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    async def scenario() -> Any:
        running = asyncio.create_task(ticker())
        task_id = await queue.enqueue_async("c", 21)
        queue.start()
        try:
            return await queue.wait_async(task_id, timeout=30)
        finally:
            running.cancel()

    task = asyncio.run(scenario())
    queue.stop()
    assert (task.status, task.result) == (Status.DONE, 42)
    assert len(ticks) >= 1  # the loop ran while it waited


def test_wait_async_times_out_saying_where_the_task_is(queue: SimplePyQ) -> None:
    queue.declare("elsewhere")
    task_id = queue.enqueue("elsewhere", 1)

    async def scenario() -> None:
        with pytest.raises(TimeoutError, match=f"task {task_id} was still pending after 0.05s"):
            await queue.wait_async(task_id, timeout=0.05)
        with pytest.raises(ValueError, match="there is no task with id 999"):
            await queue.wait_async(999, timeout=1)

    asyncio.run(scenario())


def test_wait_async_wakes_for_a_task_another_process_finishes(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.declare("c")
    task_id = queue.enqueue("c", 5)
    worker = spawn_python("""
        import sys
        from simplepyq import SimplePyQ
        with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
            q.add_channel("c", lambda args: args + 1)
            q.run_until_complete(timeout=60)
    """, store_path)

    async def scenario() -> Any:
        return await queue.wait_async(task_id, timeout=60)

    try:
        assert asyncio.run(scenario()).result == 6
    finally:
        worker.communicate(timeout=60)


def test_an_enqueue_waiting_for_another_processs_write_lock_leaves_the_loop_ticking(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.declare("c")
    held = 2.0
    if is_postgres(store_path):
        holder: Any = pg_connect(store_path)
        holder.execute("LOCK TABLE tasks IN EXCLUSIVE MODE")

        def release() -> None:
            holder.rollback()
            holder.close()
    else:
        locker = spawn_python("""
            import sqlite3, sys, time
            conn = sqlite3.connect(sys.argv[1], isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            print("locked", flush=True)
            time.sleep(float(sys.argv[2]))
            conn.execute("COMMIT")
        """, store_path, str(held))
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"

        def release() -> None:
            locker.communicate(timeout=60)

    gaps: list[float] = []

    async def scenario() -> float:
        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        running = asyncio.create_task(ticker())
        began = time.monotonic()
        if is_postgres(store_path):
            asyncio.get_running_loop().call_later(held, release)
        await queue.enqueue_async("c", "after the lock")
        running.cancel()
        return time.monotonic() - began

    took = asyncio.run(scenario())
    if not is_postgres(store_path):
        release()
    assert took >= held * 0.9  # it did wait for the lock
    assert len(gaps) >= held / 0.02 and max(gaps) < 0.2  # the loop kept ticking
    wait_until(lambda: queue.stats()["c"]["pending"] == 1)


def test_an_async_call_outside_a_running_loop_fails_clearly(queue: SimplePyQ) -> None:
    call = queue.stats_async()
    with pytest.raises(RuntimeError, match="no running event loop"):
        call.send(None)
    call.close()
