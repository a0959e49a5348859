"""Wake-ups between processes sharing a SQLite file, without polling (Linux inotify).

A commit in one process wakes the workers and waiters of the others at once. The
tests give every queue a poll interval of a minute, so that only a wake-up can
make them pass within their bounds; where the watch cannot run, the poll still
finds everything.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from simplepyq import SimplePyQ, Status
from simplepyq.storage import walwatch
from simplepyq.storage.sqlite import SQLiteStore
from tests.support import InThread, run_python, spawn_python, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the watch uses Linux's inotify; elsewhere it polls")

SLOW_POLL = 60.0
"""A poll interval no test waits for: what passes within its bounds was woken."""

ENQUEUE = """
import sys
from simplepyq import SimplePyQ
with SimplePyQ(sys.argv[1]) as q:
    print(q.enqueue("c", sys.argv[2]))
"""


def _watching() -> bool:
    return any(t.name == "simplepyq-walwatch" for t in threading.enumerate())


def test_a_commit_in_another_process_calls_the_stores_watchers(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    with SimplePyQ(path) as q:
        q.add_channel("c", print)
    store = SQLiteStore(path)
    woken = threading.Event()
    try:
        store.watch(woken.set)
        run_python(ENQUEUE, path, "x")
        assert woken.wait(10)
    finally:
        store.close()
    assert not _watching()


def test_while_no_watcher_wants_commits_the_watch_does_not_look_for_them(
        tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    with SimplePyQ(path) as q:
        q.add_channel("c", print)
    wanted = False
    looked_while_wanted: list[bool] = []
    store = SQLiteStore(path)
    try:
        woken = threading.Event()
        store.watch(woken.set, lambda: wanted)
        watch = store._wal_watch
        assert watch is not None
        changed = watch._changed

        def looked() -> bool:
            looked_while_wanted.append(wanted)
            return changed()

        watch._changed = looked
        run_python(ENQUEUE, path, "not wanted")  # a busy process's own commit, say
        wanted = True
        run_python(ENQUEUE, path, "wanted")  # heard after the first: one watch thread
        assert woken.wait(10)
    finally:
        store.close()
    assert looked_while_wanted and all(looked_while_wanted)


def test_a_task_enqueued_by_another_process_starts_without_waiting_for_a_poll(
        tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    started = threading.Event()
    with SimplePyQ(path, poll_interval=SLOW_POLL) as q:
        q.add_channel("c", lambda args: started.set())
        q.start()
        wait_until(_watching)
        run_python(ENQUEUE, path, "x")
        assert started.wait(10)


def test_wait_in_a_process_without_workers_returns_when_another_finishes_the_task(
        tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    with SimplePyQ(path, poll_interval=SLOW_POLL) as q:
        q.add_channel("c", print)
        task_id = q.enqueue("c", "x")
        worker = spawn_python("""
            import sys
            from simplepyq import SimplePyQ
            with SimplePyQ(sys.argv[1]) as q:
                q.add_channel("c", lambda args: args * 2)
                q.run_until_complete(timeout=30)
        """, path)
        waiting = InThread(lambda: q.wait(task_id, timeout=SLOW_POLL))
        _, errors = worker.communicate(timeout=30)
        assert worker.returncode == 0, errors
        wait_until(lambda: not waiting.running(), timeout=10)
        task = waiting.result()
        assert (task.status, task.result) == (Status.DONE, "xx")


def test_a_delayed_task_starts_when_it_comes_due_not_at_the_next_poll(tmp_path: Path) -> None:
    started: list[float] = []
    with SimplePyQ(str(tmp_path / "tasks.db"), poll_interval=SLOW_POLL) as q:
        q.add_channel("c", lambda due: started.append(time.time() - due))
        q.start()
        q.enqueue("c", time.time() + 0.2, delay=0.2)
        wait_until(lambda: started, timeout=10)
    assert started[0] < 5


def test_where_the_watch_cannot_run_the_poll_still_finds_the_task(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walwatch, "_inotify", lambda: None)
    path = str(tmp_path / "tasks.db")
    started = threading.Event()
    with SimplePyQ(path, poll_interval=0.01) as q:
        q.add_channel("c", lambda args: started.set())
        q.start()
        run_python(ENQUEUE, path, "x")
        assert started.wait(10)
    assert not _watching()


def test_a_watching_process_killed_leaves_nothing_behind(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    with SimplePyQ(path) as q:
        q.add_channel("c", print)
    watcher = spawn_python("""
        import sys, threading
        from simplepyq import SimplePyQ
        q = SimplePyQ(sys.argv[1])
        woken = threading.Event()
        q._store.watch(woken.set)
        print("watching", flush=True)
        print("woken" if woken.wait(30) else "not woken", flush=True)
        threading.Event().wait(60)
    """, path)
    assert watcher.stdout is not None
    assert watcher.stdout.readline() == "watching\n"
    run_python(ENQUEUE, path, "x")
    assert watcher.stdout.readline() == "woken\n"
    os.killpg(watcher.pid, signal.SIGKILL)
    watcher.communicate(timeout=10)
    assert sorted(p.name for p in tmp_path.iterdir()) <= ["tasks.db", "tasks.db-shm",
                                                          "tasks.db-wal"]
    assert run_python(ENQUEUE, path, "y").strip().isdigit()


def test_a_file_deleted_and_made_again_under_a_watching_queue_is_left_alone(
        tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    old = SimplePyQ(path)
    try:
        old.add_channel("c", print)
        woken = threading.Event()
        old._store.watch(woken.set)
        os.remove(path)  # as a test's tear-down may, the old queue still open
        with SimplePyQ(path) as new:
            new.add_channel("c", print)
            ids = [new.enqueue("c", n) for n in range(200)]
            assert new.stats()["c"]["pending"] == 200
            assert [task.args for task in new.tasks(limit=300)] == list(range(200))
            assert ids == list(range(1, 201))
        assert not woken.is_set()
    finally:
        old.close()


def test_commits_elsewhere_do_not_send_idle_workers_of_other_channels_to_claim(
        tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    ran = threading.Event()
    with SimplePyQ(path, poll_interval=SLOW_POLL) as idle, SimplePyQ(path) as busy:
        busy.add_channel("x", print)
        idle.add_channel("y", lambda args: ran.set(), max_workers=4)
        idle.start()
        wait_until(_watching)
        claims = Counter[str]()
        exchange = idle._store.exchange

        def counted(*args: Any, **kwargs: Any) -> Any:
            claims["claims"] += 1
            return exchange(*args, **kwargs)

        idle._store.exchange = counted  # type: ignore[method-assign]
        for n in range(100):
            busy.enqueue("x", n)  # a commit each, none for "y"
        busy.enqueue("y", "last")  # then one for "y": all the others were seen by now
        assert ran.wait(10)
    assert claims["claims"] <= 5
