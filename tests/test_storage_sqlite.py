"""The SQLite backend: schema, WAL, locking, indexes and the change counter."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from simplepyq import SimplePyQ, StoreError
from simplepyq.storage.sqlite import SCHEMA_VERSION, Q


def test_new_store_has_the_current_schema_in_wal_mode(queue: SimplePyQ, store_path: str) -> None:
    with sqlite3.connect(store_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"tasks", "simplepyq_channels", "simplepyq_owners", "tasks_claim"} <= tables


def test_reopening_a_store_keeps_its_tasks(store_path: str) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", print)
        task_id = q.enqueue("c", {"keep": True})
    with SimplePyQ(store_path) as again, SimplePyQ(store_path) as third:
        assert again.get_task(task_id).args == {"keep": True}  # type: ignore[union-attr]
        assert third.stats()["c"]["pending"] == 1


def test_writer_waits_for_a_lock_held_shorter_than_the_busy_timeout(store_path: str) -> None:
    with SimplePyQ(store_path, busy_timeout=30) as q:
        q.add_channel("c", print)
        blocker = sqlite3.connect(store_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        calling = threading.Event()
        result: list[int] = []

        def enqueue() -> None:
            calling.set()
            result.append(q.enqueue("c", "after the lock"))

        writer = threading.Thread(target=enqueue)
        writer.start()
        assert calling.wait(10)
        assert result == []  # cannot have written while the lock is held
        blocker.execute("COMMIT")
        blocker.close()
        writer.join(30)
        assert len(result) == 1
        assert q.get_task(result[0]).args == "after the lock"  # type: ignore[union-attr]


def test_lock_held_past_the_busy_timeout_is_reported_and_writes_nothing(store_path: str) -> None:
    with SimplePyQ(store_path, busy_timeout=0.2) as q:
        q.add_channel("c", print)
        blocker = sqlite3.connect(store_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match=r"locked.*busy_timeout=0\.2"):
                q.enqueue_many("c", range(10))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert q.stats()["c"]["pending"] == 0
        assert len(q.enqueue_many("c", range(10))) == 10


def test_claim_reads_only_pending_tasks_whatever_the_number_of_finished_rows(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.add_channel("c", lambda args: f"ran {args}")
    with sqlite3.connect(store_path) as conn:
        conn.executemany(
            "INSERT INTO tasks (channel, args, status, created_at, finished_at) "
            "VALUES ('c', x'c0', 'done', 0, 0)",
            ((),) * 1_000_000,
        )
        conn.execute("ANALYZE")
        plan = " ".join(str(row[-1]) for row in conn.execute(
            "EXPLAIN QUERY PLAN " + Q["claim_candidates"], {"channel": "c", "limit": 1}))
        due_plan = " ".join(str(row[-1]) for row in conn.execute(
            "EXPLAIN QUERY PLAN " + Q["promote_due"], {"channel": "c", "now": 0}))
    assert "USING INDEX tasks_claim" in plan and "SCAN" not in plan
    assert "USING INDEX tasks_due" in due_plan and "SCAN" not in due_plan
    task_id = queue.enqueue("c", "needle")
    queue.run_until_complete(timeout=30)
    assert queue.wait(task_id, timeout=1).result == "ran needle"


def test_change_token_moves_only_when_another_connection_commits(
    queue: SimplePyQ, store_path: str
) -> None:
    store = queue._store
    first = store.change_token()
    assert store.change_token() == first
    with sqlite3.connect(store_path) as conn:
        conn.execute("INSERT INTO simplepyq_channels (name) VALUES ('other')")
    assert store.change_token() != first


def test_concurrent_openers_of_a_new_file_all_succeed(store_path: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_and_enqueue(n: int) -> None:
        try:
            start.wait(10)
            with SimplePyQ(store_path) as q:
                q.add_channel(f"c{n}", print)
                q.enqueue(f"c{n}", n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_enqueue, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with SimplePyQ(store_path) as q:
        assert sum(s["pending"] for s in q.stats().values()) == 6


def test_store_from_a_newer_version_is_refused(store_path: str) -> None:
    SimplePyQ(store_path).close()
    with sqlite3.connect(store_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        SimplePyQ(store_path)

