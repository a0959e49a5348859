"""Faults under a running queue: a full disk, a read-only file, a lock held long, a deleted file.

Each must give the caller a clear ``StoreError`` (and write nothing of that call)
or be a logged, retried failure on the worker side; once the fault is gone every
committed task runs, exactly once, and no task is marked done that did not run.
The full disk is a small tmpfs mounted for the test, and the read-only file is
made immutable with ``chattr +i``; both need root, and are skipped without it.
The full disk, the read-only file and the deleted file are faults of a SQLite
file; the lock held long happens on either backend (see ``_locked_for_writes``).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from simplepyq import SimplePyQ, StoreError, policy
from simplepyq.batches import GROUP_WINDOW, Outbox
from simplepyq.failing import RepeatedFailure
from simplepyq.storage import open_store
from simplepyq.storage.base import Outcome
from tests.backends import is_postgres, raw_sql, split_location
from tests.support import ROOT, wait_until


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of its own, unmounted after the test."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {mounted.stderr}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


class Gated:
    """A channel function that counts its runs and holds each until the gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started: Counter[int] = Counter()
        self.returned: Counter[int] = Counter()
        self._lock = threading.Lock()

    def __call__(self, number: int) -> int:
        with self._lock:
            self.started[number] += 1
        self.gate.wait(60)
        with self._lock:
            self.returned[number] += 1
        return number


def _count(store_path: Path | str) -> int:
    (count,), = raw_sql(str(store_path), "SELECT COUNT(*) FROM tasks")
    return int(count)


@contextmanager
def _locked_for_writes(store_path: str) -> Iterator[None]:
    """Another connection holds the store's write lock until the block ends; readers go on.

    In SQLite that is a transaction begun IMMEDIATE; in PostgreSQL, one holding every
    table of the store in EXCLUSIVE mode, which lets plain SELECTs through and stops
    every write (and every FOR UPDATE).
    """
    if not is_postgres(store_path):
        with closing(sqlite3.connect(store_path, isolation_level=None)) as blocker:
            blocker.execute("BEGIN IMMEDIATE")
            yield
            blocker.execute("COMMIT")
        return
    import psycopg

    url, schema = split_location(store_path)
    with psycopg.connect(url, options=f"-c search_path={schema}") as blocker:
        blocker.execute("LOCK TABLE tasks, simplepyq_owners, simplepyq_channels "
                        "IN EXCLUSIVE MODE")
        yield
        blocker.commit()


def _assert_all_done_once(q: SimplePyQ, ids: Sequence[int], work: Gated) -> None:
    tasks = [q.get_task(task_id) for task_id in ids]
    assert [(t.status, t.result, t.attempts) for t in tasks if t] == [
        ("done", t.args, 1) for t in tasks if t]
    assert len(tasks) == len(ids)
    assert work.started == work.returned == Counter(range(len(ids)))


def test_full_disk_refuses_enqueues_clearly_and_workers_finish_once_space_returns(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store_path = small_disk / "tasks.db"
    work = Gated()
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=2)
        ids = q.enqueue_many("c", range(20))
        q.start()
        wait_until(lambda: sum(work.started.values()) == 2)
        filler = _fill(small_disk)

        with pytest.raises(StoreError, match="full") as refused:
            q.enqueue_many("c", [b"x" * 4096] * 1000)  # 4 MB: more than the whole disk
        assert str(store_path) in str(refused.value)
        assert _count(store_path) == 20
        with pytest.raises(StoreError, match="full"):
            SimplePyQ(small_disk / "another.db")

        work.gate.set()  # the two running tasks end while the disk is full
        # (Others may run too: a WAL that a failed write left long has room to reuse.)
        wait_until(lambda: sum(work.returned.values()) >= 2)
        filler.unlink()
        q.run_until_complete(timeout=60)
        _assert_all_done_once(q, ids, work)
    # Whatever failed on the worker side was logged by the library, never raised.
    assert all(record.name == "simplepyq" for record in caplog.records
               if record.levelno >= logging.WARNING)


@contextmanager
def _immutable(*paths: str) -> Iterator[None]:
    """Make files unwritable, even through open descriptors and even for root (chattr +i)."""
    made: list[str] = []
    try:
        for path in paths:
            done = subprocess.run(["chattr", "+i", path], capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                pytest.skip(f"cannot make {path} immutable with chattr: {done.stderr}")
            made.append(path)
        yield
    finally:
        for path in made:
            subprocess.run(["chattr", "-i", path], check=True)


@pytest.mark.sqlite_only
def test_store_made_read_only_refuses_enqueues_clearly_and_workers_finish_once_writable(
    store_path: str,
) -> None:
    work = Gated()
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=2)
        ids = q.enqueue_many("c", range(10))
        q.start()
        wait_until(lambda: sum(work.started.values()) == 2)
        with _immutable(store_path, store_path + "-wal"):
            with pytest.raises(StoreError) as refused:
                q.enqueue("c", 99)
            assert store_path in str(refused.value)
            assert q.get_task(ids[0]) is not None  # reading still works
            work.gate.set()  # the two running tasks end while nothing can be written
            wait_until(lambda: sum(work.returned.values()) == 2)
        q.run_until_complete(timeout=60)
        _assert_all_done_once(q, ids, work)
    assert _count(store_path) == 10


def test_start_with_the_store_locked_past_busy_timeout_raises_and_starts_nothing(
    store_path: str,
) -> None:
    work = Gated()
    work.gate.set()
    with SimplePyQ(store_path, poll_interval=0.01, busy_timeout=0.2) as q:
        q.add_channel("c", work)
        ids = q.enqueue_many("c", range(3))
        with _locked_for_writes(store_path), \
                pytest.raises(StoreError, match=r"busy_timeout=0\.2"):
            q.start()
        assert work.started == Counter()
        q.run_until_complete(timeout=60)
        _assert_all_done_once(q, ids, work)


def test_lock_held_past_busy_timeout_refuses_enqueues_and_workers_wait_it_out(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    work = Gated()
    with SimplePyQ(store_path, poll_interval=0.01, busy_timeout=0.2) as q:
        q.add_channel("c", work, max_workers=2)
        ids = q.enqueue_many("c", range(10))
        q.start()
        wait_until(lambda: sum(work.started.values()) == 2)
        with _locked_for_writes(store_path):
            with pytest.raises(StoreError, match=r"busy_timeout=0\.2"):
                q.enqueue("c", 99)
            work.gate.set()  # the two running tasks end, and cannot record it yet
            # The workers log that they cannot write, and try again.
            wait_until(lambda: any(r.levelno >= logging.ERROR for r in caplog.records),
                       timeout=30)
            assert [t.status for t in q.tasks()].count("pending") == 8  # reads go on
        q.run_until_complete(timeout=60)
        _assert_all_done_once(q, ids, work)
    assert _count(store_path) == 10


@pytest.mark.sqlite_only
def test_store_file_deleted_while_running_is_reported_not_written_to_a_ghost(
    store_path: str,
) -> None:
    work = Gated()
    work.gate.set()
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("c", work)
        q.enqueue_many("c", range(3))
        q.run_until_complete(timeout=30)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(store_path + suffix):
                os.unlink(store_path + suffix)
        # A task "stored" in a deleted file would vanish with the process: refuse it.
        with pytest.raises(StoreError, match="deleted"):
            q.enqueue("c", 3)


# -- a failure that repeats is logged once, then counted --------------------------
class FakeClock:
    """A monotonic clock that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeated_failure_logs_its_traceback_once_then_counts_repeats_at_growing_intervals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    step = RepeatedFailure("recording task outcomes", clock=clock)
    caplog.set_level(logging.INFO, logger="simplepyq")
    for _ in range(10_000):  # one failure every 10 ms for 100 s
        try:
            raise StoreError("database or disk is full")
        except StoreError as exc:
            step.failed(exc)
        clock.now += 0.01
    step.succeeded()
    lines = [record for record in caplog.records if record.name == "simplepyq"]
    # The first with its traceback, then one line after 1, 2, 4, ... 64 s, then recovery.
    assert len(lines) <= 2 + math.ceil(math.log2(100)) + 1
    assert lines[0].levelno == logging.ERROR and lines[0].exc_info is not None
    assert "recording task outcomes failed" in lines[0].getMessage()
    summaries = [record.getMessage() for record in lines[1:-1]]
    assert summaries and all("still failing" in line and "database or disk is full" in line
                             for line in summaries)
    counted = [int(re.search(r"failing: (\d+) time", line).group(1))  # type: ignore[union-attr]
               for line in summaries]
    assert abs(counted[0] - 100) <= 1 and counted == sorted(counted)  # 1 s of them, then more
    assert "after 10000 failure(s)" in lines[-1].getMessage()
    assert all(record.exc_info is None for record in lines[1:])


def test_repeated_failure_starts_over_after_it_recovers(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    step = RepeatedFailure("step", clock=clock)
    for _ in range(2):
        try:
            raise OSError("down")
        except OSError as exc:
            step.failed(exc)
            step.failed(exc)
        step.succeeded()
        step.succeeded()  # a success with no failure before says nothing
    messages = [record.getMessage() for record in caplog.records]
    assert [m.split(";")[0].split(",")[0] for m in messages] == [
        "step failed", "step works again", "step failed", "step works again"]


def test_housekeeping_failing_many_times_a_second_logs_a_few_lines_that_count_them(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="simplepyq")
    # A heartbeat every 10 ms, each failing after busy_timeout while writes are locked out.
    with SimplePyQ(store_path, poll_interval=0.005, lease=0.03, busy_timeout=0.05) as q:
        q.add_channel("c", str)
        q.start()
        with _locked_for_writes(store_path):
            wait_until(lambda: any("still failing" in r.getMessage() for r in caplog.records),
                       timeout=30)
        recovered = wait_until(lambda: next((r.getMessage() for r in caplog.records
                                             if "works again" in r.getMessage()), None))
        lines = [r for r in caplog.records if r.getMessage().startswith("housekeeping step")]
    failures = int(re.search(r"after (\d+) failure", recovered).group(1))  # type: ignore[union-attr]
    assert failures >= 10  # it was tried again and again ...
    assert len(lines) <= 4  # ... and said so in a few lines: first, summaries, recovery
    assert lines[0].exc_info is not None and "register" in lines[0].getMessage()


# -- what a stop cannot commit -----------------------------------------------------
def test_settle_reports_outcomes_it_cannot_commit_and_commits_them_once_it_can(
    store_path: str,
) -> None:
    work = Gated()
    with SimplePyQ(store_path, poll_interval=0.01, busy_timeout=0.05) as q:
        q.add_channel("c", work, max_workers=2)
        ids = q.enqueue_many("c", range(2))
        q.start()
        wait_until(lambda: sum(work.started.values()) == 2)
        scheduler = q._scheduler  # settle is what stop() calls; tested here on its own
        assert scheduler is not None
        with _locked_for_writes(store_path):
            work.gate.set()
            wait_until(lambda: sum(work.returned.values()) == 2)
            began = time.monotonic()
            assert scheduler.settle(began + 0.5) is False
            assert time.monotonic() - began >= 0.5  # it kept trying until the deadline
            assert scheduler.settle(None) is False
            assert [t.status for t in q.tasks()] == ["running", "running"]
        assert scheduler.settle(time.monotonic() + 30) is True
        _assert_all_done_once(q, ids, work)


# -- a full disk -------------------------------------------------------------------
def test_queue_works_again_by_itself_once_space_is_freed_after_the_disk_was_full(
    small_disk: Path,
) -> None:
    with SimplePyQ(small_disk / "tasks.db", poll_interval=0.01) as q:
        q.add_channel("c", str, max_workers=2)
        for _ in range(12):  # a WAL of about 1 MB: SQLite checkpoints only past 4 MB
            q.enqueue_many("c", range(50))
            q.run_until_complete(timeout=30)
        filler = _fill(small_disk)
        with pytest.raises(StoreError, match="full"):
            q.enqueue_many("c", range(50))
        os.truncate(filler, os.path.getsize(filler) - 200_000)
        # Each round writes about 80 kB to the WAL, more than the 200 kB freed: the WAL
        # must start over, not eat the freed space and fail every write again.
        for _ in range(8):
            q.enqueue_many("c", range(50))
            q.run_until_complete(timeout=30)
        assert {t.status for t in q.tasks(limit=10_000)} == {"done"}


WORKER_APP = """
import os, pathlib, time
from simplepyq import SimplePyQ

q = SimplePyQ(os.environ["APP_DB"], poll_interval=0.01)
runs = pathlib.Path(os.environ["APP_RUNS"])
gate = pathlib.Path(os.environ["APP_GATE"])


def work(args):
    number, _padding = args
    with runs.open("a") as log:
        log.write(f"{number}\\n")
    while not gate.exists():
        time.sleep(0.01)
    return number


q.add_channel("c", work, max_workers=2)
"""


def test_worker_stopped_on_a_full_disk_exits_non_zero_and_its_unrecorded_tasks_run_again(
    small_disk: Path, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text(WORKER_APP)
    runs, gate = tmp_path / "runs.log", tmp_path / "gate"
    store = small_disk / "tasks.db"
    env = dict(os.environ, APP_DB=str(store), APP_RUNS=str(runs), APP_GATE=str(gate),
               PYTHONPATH=os.pathsep.join([str(app), str(ROOT)]))
    with SimplePyQ(store) as q:
        q.add_channel("c", str)
        # 600 kB in the WAL that the database file would need room for: once the disk
        # is full, no checkpoint can make room for the outcomes either.
        ids = q.enqueue_many("c", [(n, "x" * 120_000) for n in range(5)])
    command = [sys.executable, "-m", "simplepyq", "worker", "app:q"]
    worker = subprocess.Popen(command, cwd=app, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: runs.exists() and len(runs.read_text().split()) == 2, timeout=30)
        filler = _fill(small_disk)
        gate.touch()  # both tasks end while nothing can be written
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=90)
    finally:
        worker.kill()
    assert worker.returncode not in (0, None), err
    assert "could not be recorded" in err
    filler.unlink()
    ran_first = [int(n) for n in runs.read_text().split()]
    with SimplePyQ(store) as q:
        # No outcome was committed: the tasks are not shown done, they run again.
        assert [q.get_task(ids[n]).status for n in ran_first] == ["running"] * 2  # type: ignore[union-attr]
    drained = subprocess.run([*command, "--burst"], cwd=app, env=env, capture_output=True,
                             text=True, timeout=90, check=False)
    assert drained.returncode == 0, drained.stderr
    with SimplePyQ(store) as q:
        tasks = [q.get_task(task_id) for task_id in ids]
    assert [(t.status, t.attempts) for t in tasks if t] == [
        ("done", 2 if n in ran_first else 1) for n in range(5)]
    assert Counter(int(n) for n in runs.read_text().split()) == Counter(
        {n: 2 if n in ran_first else 1 for n in range(5)})


def test_outcomes_whose_commit_keeps_failing_are_tried_again_less_and_less_often() -> None:
    outbox = Outbox()
    outbox.add(Outcome(1, policy.succeeded(0, None, time.time())))
    pauses = []
    for _ in range(10):
        outcomes = outbox.take()
        outbox.restore(outcomes)  # the commit failed
        pauses.append(outbox.due_in(time.monotonic()) or 0.0)
    assert pauses[0] <= 0.011 and pauses[-1] >= 0.9  # from 10 ms up to about a second
    assert all(b >= a * 1.5 for a, b in itertools.pairwise(pauses) if b < 0.9)
    assert max(pauses) <= 1.0
    outbox.settled(outbox.take())  # a commit that went through: due at once again
    outbox.add(Outcome(2, policy.succeeded(0, None, time.time())))
    assert outbox.due_in(time.monotonic() + GROUP_WINDOW) == 0.0
    assert outbox.unsettled() == 1


# -- after a commit whose fate is unknown ------------------------------------------
def test_reconcile_returns_the_owners_running_tasks_it_does_not_hold_as_if_never_claimed(
    store_path: str,
) -> None:
    with SimplePyQ(store_path) as q:
        q.declare("c")
        ids = q.enqueue_many("c", range(4))
    store = open_store(store_path, 30.0, False)
    try:
        mine = store.exchange("me", [], "c", 3, time.time()).claimed
        theirs = store.exchange("other", [], "c", 1, time.time()).claimed
        held = [mine[0].id]
        assert store.reconcile("me", held) == 2
        assert store.reconcile("me", held) == 0  # again: nothing more to return
    finally:
        store.close()
    with SimplePyQ(store_path) as q:
        tasks = {t.id: (t.status, t.attempts) for t in q.tasks()}
    assert tasks == {ids[0]: ("running", 1), ids[1]: ("pending", 0), ids[2]: ("pending", 0),
                     theirs[0].id: ("running", 1)}


def test_outcomes_are_not_retried_every_few_milliseconds_while_the_store_refuses_them(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="simplepyq")
    work = Gated()
    with SimplePyQ(store_path, poll_interval=0.005, busy_timeout=0.05) as q:
        q.add_channel("c", work)
        ids = q.enqueue_many("c", range(1))
        q.start()
        wait_until(lambda: work.started)
        with _locked_for_writes(store_path):
            work.gate.set()  # its outcome waits, and the housekeeper tries to commit it
            wait_until(lambda: any("recording task outcomes failed" in r.getMessage()
                                   for r in caplog.records))
            time.sleep(2)  # the length of the outage, not a synchronisation
        q.run_until_complete(timeout=30)
        _assert_all_done_once(q, ids, work)
    recovered = next(r.getMessage() for r in caplog.records
                     if r.getMessage().startswith("recording task outcomes works again"))
    tries = int(re.search(r"after (\d+) failure", recovered).group(1))  # type: ignore[union-attr]
    # After 10 ms, then 20, 40 ... up to 1 s: about 8 tries in 2 s, not one per pass of
    # the housekeeper (one per busy_timeout: about 40).
    assert tries <= 12
