"""Leases: a heartbeating process keeps its long task; a silent one loses it after the lease.

On one host a live pid alone protects a task, so to test the heartbeat itself the
worker process runs under another host name (its own UTS namespace, made with
``unshare --uts``, which needs root): the sweeping process on this host can judge
it only by its heartbeats. Each recovery sweep of the sweeper is counted by a
canary: a task of a long-dead remote owner, written after the previous canary
was recovered.

A stall that stops every process's heartbeat (a process frozen holding SQLite's
write lock, PostgreSQL's owners locked or down) is not the silence of the others:
after it, each gets a full lease again. Those tests give each worker process a
host id of its own (``SIMPLEPYQ_HOST_ID``, no root needed), so that they judge
each other by heartbeats only.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path

import msgpack

from simplepyq import SimplePyQ
from simplepyq.identity import HOST_ID_VARIABLE, Heartbeats, ProcessIdentity, is_dead
from simplepyq.storage.base import Owner
from tests.backends import is_postgres, raw_sql
from tests.soak import report, scaled
from tests.support import (
    LABELLED_DRAINER,
    all_running,
    enqueue_numbered,
    finish_all,
    needs_host_names,
    read_runs,
    spawn_on_host,
    spawn_python,
    wait_until,
)

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


@needs_host_names
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


@needs_host_names
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


# -- stalls that stop every heartbeat ----------------------------------------


def test_silence_of_another_process_counts_only_from_the_end_of_our_own_stall() -> None:
    lease, t = 3.0, 1000.0
    me = ProcessIdentity.current()
    beats = Heartbeats(every=lease / 3)

    def dead(last_beat: float, now: float) -> bool:
        other = Owner("far:1:x", "far-host", 1, None, last_beat)
        return is_dead(other, me, lease, now, beats.silent_since(now))

    beats.wrote(t, t + 0.01)
    beats.wrote(t + 1, t + 1.01)  # on time
    # While ours come on time, another silent for longer than the lease is dead.
    assert dead(t - 2.5, t + 1.02)
    # Our beat due at t+2 is held up: while it is overdue, nobody is judged by lease.
    assert beats.silent_since(t + 2.6) == t + 2.6
    assert not dead(t - 2.5, t + 2.6)
    # It is written at t+5, when the stall ends; the silence of others counts from then.
    beats.wrote(t + 2, t + 5)
    beats.wrote(t + 6, t + 6.01)
    beats.wrote(t + 7, t + 7.01)
    assert beats.silent_since(t + 7.5) == t + 5
    assert not dead(t - 2.5, t + 7.5)
    beats.wrote(t + 8, t + 8.01)
    assert dead(t - 2.5, t + 8.1)  # a full lease after the stall, still silent


def test_first_heartbeat_slow_to_write_counts_as_a_stall() -> None:
    beats = Heartbeats(every=1.0)
    beats.wrote(1000.0, 1002.0)
    assert beats.silent_since(1002.1) == 1002.0
    fresh = Heartbeats(every=1.0)
    fresh.wrote(1000.0, 1000.01)
    assert fresh.silent_since(1000.1) == 0.0


def test_heartbeat_held_up_by_a_lock_is_the_time_it_was_written_not_asked_for(
    store_path: str,
) -> None:
    with SimplePyQ(store_path) as q, ThreadPoolExecutor(1) as pool:
        store = q._store
        asked = time.time()
        with _store_stalled(store_path):
            beat = pool.submit(store.register_owner, "far:1:slow", "far-host", 1, None, asked)
            time.sleep(STALL_LEASE)  # the lock's length, not a wait for anything
            assert not beat.done()
        beat.result(timeout=30)
    ((written,),) = raw_sql(store_path, "SELECT heartbeat_at FROM simplepyq_owners")
    assert written >= asked + STALL_LEASE



STALL_LEASE = 1.0
STALL = 3.0
"""Seconds the store stays unwritable: three leases."""

# Takes SQLite's write lock and freezes itself holding it; rolls back when continued.
# argv: store.
FREEZE_HOLDING_THE_WRITE_LOCK = """
    import os, signal, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    os.kill(os.getpid(), signal.SIGSTOP)
    conn.execute("ROLLBACK")
"""


def test_stall_longer_than_the_lease_that_stopped_every_heartbeat_makes_no_task_run_twice(
    store_path: str, tmp_path: Path
) -> None:
    total = scaled(1000)
    ids = enqueue_numbered(store_path, total)
    log, signals = tmp_path / "runs.log", tmp_path / "signals"
    signals.mkdir()
    # On PostgreSQL a heartbeat that cannot get its lock fails (as in an outage) and
    # is tried again a third of a lease later; on SQLite it waits for the lock.
    busy_timeout = 0.5 if is_postgres(store_path) else 30.0
    children = [_spawn_with_host_id(f"stall-host-{label}", LABELLED_DRAINER, store_path,
                                    str(log), str(signals), str(label), str(STALL_LEASE),
                                    str(busy_timeout), "0.005")
                for label in (1, 2)]
    try:
        wait_until(lambda: all_running(children) and all(
            (signals / f"ready-{label}").exists() for label in (1, 2)), timeout=60)
        (signals / "go").touch()
        # Given both processes in the middle of the drain,
        wait_until(lambda: all_running(children) and all(
            count >= 20 for count in _runs_per_label(log, (1, 2)).values()), timeout=60)
        # when the store stays unwritable for three leases,
        stalled_at = time.time()
        with _store_stalled(store_path):
            time.sleep(STALL)  # the fault's length, not a wait for anything
        resumed_at = time.time()
        outputs = finish_all(children, timeout=180)
    finally:
        for child in children:
            child.kill()
            child.communicate()

    assert [child.returncode for child in children] == [0, 0], [err for _, err in outputs]
    # then no process took another's tasks: every task ran once, and both went on after.
    runs = read_runs(log)
    twice = {task_id: [run.pid for run in task_runs]
             for task_id, task_runs in runs.items() if len(task_runs) > 1}
    assert twice == {}, f"{len(twice)} task(s) ran more than once (by process label)"
    assert sorted(runs) == ids
    assert not [err for _, err in outputs if "recovered" in err]
    after = {run.pid for task_runs in runs.values() for run in task_runs
             if run.started > resumed_at}
    assert after == {1, 2}
    rows = raw_sql(store_path, "SELECT status, attempts, COUNT(*) FROM tasks GROUP BY 1, 2")
    assert rows == [("done", 1, total)]
    report("stall", tasks=total, stall=f"{resumed_at - stalled_at:.1f}s", lease=STALL_LEASE,
           duplicates=0)


@contextmanager
def _store_stalled(store_path: str) -> Iterator[None]:
    """While inside, nobody can write a heartbeat: on SQLite a process frozen (SIGSTOP)
    holding the write lock; on PostgreSQL a transaction holding the owners table
    locked (ACCESS EXCLUSIVE), as an outage would."""
    if is_postgres(store_path):
        import psycopg

        from tests.backends import split_location

        url, schema = split_location(store_path)
        with psycopg.connect(url, options=f"-c search_path={schema}") as conn:
            conn.execute("LOCK TABLE simplepyq_owners IN ACCESS EXCLUSIVE MODE")
            yield
            conn.rollback()
        return
    holder = spawn_python(FREEZE_HOLDING_THE_WRITE_LOCK, store_path)
    try:
        wait_until(lambda: _all_threads_stopped(holder.pid) or holder.poll() is not None,
                   timeout=30)
        assert holder.poll() is None, holder.communicate()[1]
        assert _write_locked(store_path)
        yield
    finally:
        holder.send_signal(signal.SIGCONT)
        _, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err


def _spawn_with_host_id(host_id: str, code: str, *args: str) -> subprocess.Popen[str]:
    """``spawn_python`` with ``SIMPLEPYQ_HOST_ID`` set for the child."""
    saved = os.environ.get(HOST_ID_VARIABLE)
    os.environ[HOST_ID_VARIABLE] = host_id
    try:
        return spawn_python(code, *args)
    finally:
        if saved is None:
            del os.environ[HOST_ID_VARIABLE]
        else:
            os.environ[HOST_ID_VARIABLE] = saved


def _runs_per_label(log: Path, labels: tuple[int, ...]) -> dict[int, int]:
    counts = dict.fromkeys(labels, 0)
    for line in _log_lines(log):
        if line.startswith("end "):
            counts[int(line.split()[2])] += 1
    return counts

