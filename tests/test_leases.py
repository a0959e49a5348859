"""Leases: a heartbeating process keeps its long task; a silent one loses it after the lease.

On one host a live pid alone protects a task, so to test the heartbeat itself the
worker process runs under another host name (its own UTS namespace, made with
``unshare --uts``, which needs root): the sweeping process on this host can judge
it only by its heartbeats. Each recovery sweep of the sweeper is counted by a
canary: a task of a long-dead remote owner, written after the previous canary
was recovered.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import msgpack

from simplepyq import SimplePyQ
from tests.backends import is_postgres, raw_sql
from tests.support import needs_host_names, spawn_on_host, wait_until

LEASE = 0.5
OTHER_HOST = "simplepyq-lease-test-host"

# Runs channel "c" with lease=LEASE; its task logs "start ID PID", waits for the
# release file, then logs "end ID PID". argv: store, log, release file, lease.
LONG_TASK = """
    import os, pathlib, sys, time
    from simplepyq import SimplePyQ

    log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def until_released(args):
        os.write(log, f"start {args} {os.getpid()}\\n".encode())
        deadline = time.monotonic() + 120
        while not pathlib.Path(sys.argv[3]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.write(log, f"end {args} {os.getpid()}\\n".encode())
        return f"finished by {os.getpid()}"

    with SimplePyQ(sys.argv[1], lease=float(sys.argv[4]), poll_interval=0.01) as q:
        q.add_channel("c", until_released)
        q.run_until_complete(timeout=120)
"""


pytestmark = needs_host_names


@contextmanager
def _worker_on_another_host(store_path: str, log: Path,
                            release: Path) -> Iterator[subprocess.Popen[str]]:
    child = spawn_on_host(OTHER_HOST, LONG_TASK, store_path, str(log), str(release), str(LEASE))
    try:
        yield child
    finally:
        release.touch()
        child.send_signal(signal.SIGCONT)
        try:
            child.communicate(timeout=60)
        finally:
            child.kill()


def _log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _sweep_times(q: SimplePyQ, store_path: str, count: int) -> None:
    """Return after ``count`` more recovery sweeps of ``q`` (one canary recovered per sweep)."""
    for number in range(count):
        owner = f"far:{number}:dead"
        raw_sql(store_path, "INSERT INTO simplepyq_owners (owner, host, pid, pid_start, "
                            "heartbeat_at) VALUES (?, 'far', 1, NULL, 0)", (owner,))
        ((canary,),) = raw_sql(store_path,
                               "INSERT INTO tasks (channel, args, status, retries, attempts, "
                               "owner) VALUES ('canary', ?, 'running', 0, 1, ?) RETURNING id",
                               (msgpack.packb(number), owner))
        assert q.wait(canary, timeout=30).status == "done"


def test_task_running_three_leases_under_a_heartbeating_process_is_never_run_again(
    store_path: str, tmp_path: Path
) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", lambda args: f"rerun by {os.getpid()}")
        (task_id,) = q.enqueue_many("c", ["long"])
    log, release = tmp_path / "runs.log", tmp_path / "release"
    with _worker_on_another_host(store_path, log, release) as child, \
            SimplePyQ(store_path, lease=LEASE, poll_interval=0.01) as sweeper:
        wait_until(lambda: _log_lines(log) or child.poll() is not None, timeout=30)
        assert child.poll() is None, child.communicate()[1]
        # The sweeper would run the task too, were it ever recovered.
        sweeper.add_channel("c", lambda args: f"rerun by {os.getpid()}")
        sweeper.add_channel("canary", lambda args: None)
        sweeper.start()
        # Sweeps come at most every lease/3: ten of them span at least three leases.
        _sweep_times(sweeper, store_path, 10)
        assert socket.gethostname() != OTHER_HOST
        assert _owner_host(store_path, task_id) == OTHER_HOST
        release.touch()
        task = sweeper.wait(task_id, timeout=30)
        sweeper.stop()
    assert child.returncode == 0, child.stderr
    assert (task.status, task.result, task.attempts) == ("done", f"finished by {child.pid}", 1)
    assert task.error is None
    assert _log_lines(log) == [f"start long {child.pid}", f"end long {child.pid}"]


def test_task_of_a_silent_process_on_another_host_is_run_again_after_the_lease_only_once(
    store_path: str, tmp_path: Path
) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", lambda args: None)
        (task_id,) = q.enqueue_many("c", ["long"])
    log, release = tmp_path / "runs.log", tmp_path / "release"
    with _worker_on_another_host(store_path, log, release) as child, \
            SimplePyQ(store_path, lease=LEASE, poll_interval=0.01) as sweeper:
        wait_until(lambda: _log_lines(log) or child.poll() is not None, timeout=30)
        assert child.poll() is None, child.communicate()[1]
        _freeze_between_transactions(child, store_path)  # alive, but no heartbeat any more
        stopped_at = time.time()

        notes: list[str | None] = []

        def rerun(args: str) -> str:
            notes.append(sweeper.get_task(task_id).error)  # type: ignore[union-attr]
            with log.open("a") as lines:
                lines.write(f"rerun {args}\n")
            return "rerun here"

        sweeper.add_channel("c", rerun)
        sweeper.start()
        task = sweeper.wait(task_id, timeout=30)
        assert (task.status, task.result, task.attempts) == ("done", "rerun here", 2)
        assert time.time() - stopped_at >= LEASE * 0.5  # not before its heartbeat aged
        assert OTHER_HOST in (notes[0] or "")  # the rerun saw a note naming the owner
        # The frozen worker wakes up and ends its run: its outcome is dropped.
        release.touch()
        child.send_signal(signal.SIGCONT)
        wait_until(lambda: len(_log_lines(log)) >= 3, timeout=30)
        sweeper.stop()
    after = _stored(store_path, task_id)
    assert after == ("done", msgpack.packb("rerun here"))
    assert _log_lines(log) == [f"start long {child.pid}", "rerun long", f"end long {child.pid}"]


def _freeze_between_transactions(child: subprocess.Popen[str], store_path: str) -> None:
    """SIGSTOP ``child`` at a moment it holds no write lock on the store.

    Frozen inside a write transaction, it would keep its locks (SQLite's write lock,
    PostgreSQL's row locks) and so block the very recovery under test: that is
    another fault. If the stop lands inside one, let the child go on and stop it again.
    """
    def stopped_outside_a_write() -> bool:
        child.send_signal(signal.SIGSTOP)
        wait_until(lambda: _all_threads_stopped(child.pid), timeout=30)
        if not _write_locked(store_path):
            return True
        child.send_signal(signal.SIGCONT)
        return False

    wait_until(stopped_outside_a_write, timeout=30)


def _all_threads_stopped(pid: int) -> bool:
    states = []
    for thread in Path(f"/proc/{pid}/task").iterdir():
        states.append((thread / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return all(state in ("T", "t") for state in states)


def _write_locked(store_path: str) -> bool:
    """Whether some connection holds the store's write lock (or a row lock in it) now."""
    if is_postgres(store_path):
        import psycopg

        try:
            raw_sql(store_path,
                    "LOCK TABLE tasks, simplepyq_owners IN EXCLUSIVE MODE NOWAIT")
        except psycopg.errors.LockNotAvailable:
            return True
        return False
    with closing(sqlite3.connect(store_path, timeout=0, isolation_level=None)) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return True
            raise
        conn.execute("ROLLBACK")
    return False


def _stored(store_path: str, task_id: int) -> tuple[str, bytes]:
    ((status, result),) = raw_sql(store_path, "SELECT status, result FROM tasks WHERE id = ?",
                                  (task_id,))
    return status, bytes(result)


def _owner_host(store_path: str, task_id: int) -> str | None:
    rows = raw_sql(store_path,
                   "SELECT o.host FROM tasks AS t JOIN simplepyq_owners AS o "
                   "ON o.owner = t.owner WHERE t.id = ? AND t.status = 'running'", (task_id,))
    return str(rows[0][0]).split("/")[0] if rows else None  # host id: name/PID namespace
