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

import logging
import os
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from simplepyq import SimplePyQ, StoreError
from tests.backends import is_postgres, raw_sql, split_location
from tests.support import wait_until


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


def _assert_all_done_once(q: SimplePyQ, ids: list[int], work: Gated) -> None:
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
        wait_until(lambda: sum(work.returned.values()) == 2)
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
