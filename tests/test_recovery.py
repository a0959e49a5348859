"""Crash recovery: tasks of dead processes run again; tasks of live ones are never taken."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from simplepyq import SimplePyQ, Task, policy
from tests.support import spawn_python, wait_until

HANGING_WORKER = """
    import pathlib, sys, threading
    from simplepyq import SimplePyQ

    def hang(args):
        pathlib.Path(sys.argv[2]).write_text("started")
        threading.Event().wait()

    q = SimplePyQ(sys.argv[1])
    q.add_channel("c", hang)
    q.run_until_complete()
"""

WORKER_UNTIL_RELEASED = """
    import pathlib, sys, time
    from simplepyq import SimplePyQ

    def until_released(args):
        pathlib.Path(sys.argv[2]).write_text("started")
        while not pathlib.Path(sys.argv[3]).exists():
            time.sleep(0.01)
        return "finished by its own process"

    with SimplePyQ(sys.argv[1]) as q:
        q.add_channel("c", until_released)
        q.run_until_complete(timeout=60)
"""


def _enqueue(store_path: str, args: object) -> int:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", print)
        return q.enqueue("c", args)


def _start_hanging_child(store_path: str, tmp_path: Path) -> subprocess.Popen[str]:
    marker = tmp_path / "started"
    child = spawn_python(HANGING_WORKER, store_path, str(marker))
    wait_until(lambda: marker.exists() or child.poll() is not None, timeout=30)
    assert child.poll() is None, child.communicate()[1]
    return child


def _task_of_a_killed_child(store_path: str, tmp_path: Path, args: str) -> int:
    """Enqueue a task, let a child process start it, SIGKILL the child and reap it."""
    task_id = _enqueue(store_path, args)
    child = _start_hanging_child(store_path, tmp_path)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=10)
    return task_id


def _recover_and_run(store_path: str, task_id: int) -> Task | None:
    with SimplePyQ(store_path, lease=3600) as q:
        q.add_channel("c", lambda args: f"recovered {args}")
        q.run_until_complete(timeout=30)
        return q.get_task(task_id)


def test_task_of_a_killed_process_runs_again_in_the_next_one(
    store_path: str, tmp_path: Path
) -> None:
    task_id = _task_of_a_killed_child(store_path, tmp_path, "job")

    task = _recover_and_run(store_path, task_id)

    assert task is not None
    assert (task.status, task.result, task.attempts) == ("done", "recovered job", 2)


def test_recovery_is_noted_on_the_task_until_it_runs(store_path: str, tmp_path: Path) -> None:
    task_id = _task_of_a_killed_child(store_path, tmp_path, "job")
    with SimplePyQ(store_path, lease=3600) as q:
        q.add_channel("other", print)
        q.start()  # recovers the dead process's task, which no channel here runs
        task = q.get_task(task_id)
    assert task is not None
    assert task.status == "pending"
    assert "recovered" in (task.error or "")


def test_task_of_a_killed_but_unreaped_process_is_recovered(
    store_path: str, tmp_path: Path
) -> None:
    task_id = _enqueue(store_path, "zombie")
    child = _start_hanging_child(store_path, tmp_path)
    os.kill(child.pid, signal.SIGKILL)
    try:
        wait_until(lambda: _proc_state(child.pid) in ("Z", None), timeout=10)
        task = _recover_and_run(store_path, task_id)
    finally:
        child.communicate(timeout=10)
    assert task is not None
    assert (task.status, task.attempts) == ("done", 2)


def test_task_of_a_live_process_is_never_taken_however_long_it_runs(
    store_path: str, tmp_path: Path
) -> None:
    task_id = _enqueue(store_path, "long")
    started, release = tmp_path / "started", tmp_path / "release"
    child = spawn_python(WORKER_UNTIL_RELEASED, store_path, str(started), str(release))
    try:
        wait_until(lambda: started.exists() or child.poll() is not None, timeout=30)
        ran_here: list[object] = []
        with SimplePyQ(store_path, lease=0.2, poll_interval=0.01) as q:
            q.add_channel("c", ran_here.append)
            q.start()
            # Several leases pass while the task runs; every sweep must leave it alone.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                assert q._scheduler is not None
                assert q._scheduler.recover_dead() == 0
                threading.Event().wait(0.05)
            task = q.get_task(task_id)
            assert task is not None
            assert task.status == "running"
            release.write_text("go")
            done = q.wait(task_id, timeout=30)
        assert ran_here == []
        assert (done.status, done.result, done.attempts) == (
            "done", "finished by its own process", 1)
    finally:
        release.write_text("go")
        _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err


def test_task_of_another_host_is_recovered_only_after_its_lease(store_path: str) -> None:
    task_id = _enqueue(store_path, "remote")
    _make_remote_owner(store_path, task_id, heartbeat_at=time.time())
    with SimplePyQ(store_path, lease=30, poll_interval=0.01) as q:
        q.add_channel("c", lambda args: f"ran {args}")
        q.start()
        assert q._scheduler is not None
        assert q._scheduler.recover_dead() == 0
        assert q.get_task(task_id).status == "running"  # type: ignore[union-attr]
        with sqlite3.connect(store_path) as conn:
            conn.execute("UPDATE simplepyq_owners SET heartbeat_at = ?", (time.time() - 31,))
        done = q.wait(task_id, timeout=30)
    assert (done.status, done.result, done.attempts) == ("done", "ran remote", 1)


def test_running_task_without_owner_is_recovered_at_start(store_path: str) -> None:
    task_id = _enqueue(store_path, "orphan")
    with sqlite3.connect(store_path) as conn:
        conn.execute("UPDATE tasks SET status = 'running', owner = NULL WHERE id = ?", (task_id,))
    with SimplePyQ(store_path) as q:
        q.add_channel("c", lambda args: "ran")
        q.run_until_complete(timeout=30)
        assert q.wait(task_id, timeout=1).result == "ran"


def test_worker_given_up_for_dead_cannot_overwrite_the_rerun(store_path: str) -> None:
    task_id = _enqueue(store_path, "x")
    with SimplePyQ(store_path) as q:
        store = q._store
        (claimed,) = store.claim("c", "ghost", 1, time.time())
        assert store.recover(["ghost"], "recovered: test", time.time()) == 1
        (again,) = store.claim("c", "heir", 1, time.time())
        assert store.record(task_id, "ghost", policy.succeeded(0, None, time.time())) is False
        assert store.record(task_id, "heir", policy.succeeded(0, None, time.time())) is True
        assert (claimed.id, again.id) == (task_id, task_id)
        assert q.get_task(task_id).attempts == 2  # type: ignore[union-attr]


MULTI_WORKER = """
    import os, sys
    from simplepyq import SimplePyQ

    log = open(sys.argv[2], "a", buffering=1)

    def work(n):
        log.write(f"{n} {os.getpid()}\\n")

    with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=4)
        q.run_until_complete(timeout=120)
"""


def test_processes_sharing_a_file_run_each_task_exactly_once(
    store_path: str, tmp_path: Path
) -> None:
    tasks = 3000
    with SimplePyQ(store_path) as q:
        q.add_channel("c", print)
        q.enqueue_many("c", range(tasks))
    logs = [tmp_path / f"log{i}" for i in range(3)]
    children = [spawn_python(MULTI_WORKER, store_path, str(log)) for log in logs]
    errors = [child.communicate(timeout=180)[1] for child in children]

    assert [child.returncode for child in children] == [0, 0, 0], errors
    assert not any("locked" in err for err in errors)
    runs = [line.split()[0] for log in logs for line in log.read_text().splitlines()]
    assert sorted(map(int, runs)) == list(range(tasks))
    with sqlite3.connect(store_path) as conn:
        rows = conn.execute("SELECT status, attempts, COUNT(*) FROM tasks GROUP BY 1, 2")
        assert rows.fetchall() == [("done", 1, tasks)]


def _make_remote_owner(store_path: str, task_id: int, heartbeat_at: float) -> None:
    with sqlite3.connect(store_path) as conn:
        conn.execute(
            "INSERT INTO simplepyq_owners (owner, host, pid, pid_start, heartbeat_at) "
            "VALUES ('far:1:abc', 'far-away-host', 1, NULL, ?)", (heartbeat_at,))
        conn.execute(
            "UPDATE tasks SET status = 'running', owner = 'far:1:abc' WHERE id = ?", (task_id,))


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
