"""``SimplePyQ(":memory:")``: a store private to this process, in its memory.

Its threads share it (workers, the threads that enqueue, those that wait); each
queue opened at ``":memory:"`` has a store of its own, gone once it is closed.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import closing

import pytest

from simplepyq import SimplePyQ, Status, Step
from simplepyq.storage.sqlite import SQLiteStore
from tests.support import InThread, wait_until


@pytest.fixture
def memory() -> Iterator[SimplePyQ]:
    queue = SimplePyQ(":memory:", poll_interval=0.01)
    yield queue
    queue.close()


def test_tasks_enqueued_from_many_threads_run_once_each_on_several_workers(
        memory: SimplePyQ) -> None:
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            ran[n] += 1
        return n * 2

    memory.add_channel("c", work, max_workers=4)
    memory.start()
    ids: list[list[int]] = [[] for _ in range(8)]

    def enqueue(slot: int) -> None:
        ids[slot] = [memory.enqueue("c", slot * 1000 + n) for n in range(200)]

    threads = [threading.Thread(target=enqueue, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    memory.run_until_complete(timeout=60)
    every = [task_id for some in ids for task_id in some]
    assert len(set(every)) == 1600
    assert ran == Counter({slot * 1000 + n: 1 for slot in range(8) for n in range(200)})
    assert memory.get_task(ids[3][7]).result == (3 * 1000 + 7) * 2  # type: ignore[union-attr]
    assert memory.stats()["c"]["done"] == 1600


def test_wait_in_another_thread_wakes_when_a_worker_finishes(memory: SimplePyQ) -> None:
    release = threading.Event()
    memory.add_channel("c", lambda args: release.wait(10) and args)
    task_id = memory.enqueue("c", "x")
    memory.start()
    waiting = InThread(lambda: memory.wait(task_id, timeout=30))
    wait_until(lambda: memory.get_task(task_id).status is Status.RUNNING)  # type: ignore[union-attr]
    assert waiting.running()
    release.set()
    task = waiting.result()
    assert (task.status, task.result) == (Status.DONE, "x")


def test_two_memory_queues_of_one_process_are_separate_and_a_closed_one_is_gone() -> None:
    first, second = SimplePyQ(":memory:"), SimplePyQ(":memory:")
    try:
        first.add_channel("c", print)
        first.enqueue("c", 1)
        assert second.stats() == {}
        assert first.stats()["c"]["pending"] == 1
    finally:
        first.close()
        second.close()
    again = SimplePyQ(":memory:")
    try:
        assert again.stats() == {}
    finally:
        again.close()


def test_workflows_and_limits_work_in_memory(memory: SimplePyQ) -> None:
    memory.add_channel("add", lambda args: sum(args) if isinstance(args, list) else args + 1)
    memory.set_limits("add", max_running=1)
    workflow = memory.chain(Step("add", 1), Step("add"), Step("add"))
    memory.run_until_complete(timeout=60)
    results = [memory.get_task(task_id).result for task_id in workflow.task_ids]  # type: ignore[union-attr]
    assert results == [2, 3, 4]


def test_a_write_held_open_makes_a_change_poll_wait_instead_of_failing() -> None:
    # In memory, SQLite answers "locked" at once where a file would wait; the store
    # waits it out as for any lock.
    store = SQLiteStore(":memory:", busy_timeout=30)
    watcher = store._watcher
    tries = Counter[str]()

    class Counted:
        def execute(self, statement: str) -> sqlite3.Cursor:
            tries["polls"] += 1
            return watcher.execute(statement)  # type: ignore[union-attr]

    store._watcher = Counted()  # type: ignore[assignment]
    try:
        with closing(sqlite3.connect(store._target, uri=True, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute("CREATE TABLE holding (x)")  # holds the schema's lock
            polling = InThread(store.change_token)
            wait_until(lambda: tries["polls"] >= 3)
            assert polling.running()
            other.execute("COMMIT")
            assert isinstance(polling.result(), int)
    finally:
        store._watcher = watcher
        store.close()


@pytest.mark.parametrize("location", ["", "file:tasks.db?mode=memory", "file::memory:"])
def test_other_locations_that_are_not_files_are_refused_naming_them(location: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(location))) as refused:
        SimplePyQ(location)
    assert "give a file path, or ':memory:'" in str(refused.value)
