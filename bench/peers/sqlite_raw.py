"""Not a queue library: the floor of what Python's sqlite3 allows, for reference.

A ``tasks`` table with a partial index on pending rows, WAL, ``synchronous=NORMAL``
(simplepyq's default: commits survive a crash of the process, not a power cut).
Enqueue is one INSERT and commit; the batch is one ``executemany`` and commit; each
worker thread (own connection) claims one row (``UPDATE ... RETURNING``, one commit)
and marks it done (one commit), polling every 50 ms when it finds nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from common import Adapter, Stop, Work, count_rows, serve, start_threads

POLL = 0.05
SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, args INTEGER, status TEXT);
CREATE INDEX IF NOT EXISTS tasks_pending ON tasks (id) WHERE status = 'pending';
"""
CLAIM = ("UPDATE tasks SET status = 'running' WHERE id = (SELECT id FROM tasks "
         "WHERE status = 'pending' ORDER BY id LIMIT 1) RETURNING id, args")


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


class Producer:
    def __init__(self, path: str) -> None:
        self.conn = _connect(path)

    def put(self, args: Any) -> None:
        self.conn.execute("INSERT INTO tasks (args, status) VALUES (?, 'pending')", (args,))

    def close(self) -> None:
        self.conn.close()


class Sqlite(Adapter):
    def producer(self, path: str) -> Producer:
        return Producer(path)

    def put_many(self, path: str, items: list[int]) -> None:
        conn = _connect(path)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO tasks (args, status) VALUES (?, 'pending')",
                         ((item,) for item in items))
        conn.execute("COMMIT")
        conn.close()

    def fill(self, path: str, n: int) -> None:
        self.put_many(path, list(range(n)))

    def consume(self, path: str, work: Work, workers: int) -> Stop:
        def loop(stopping: threading.Event) -> None:
            conn = _connect(path)
            while not stopping.is_set():
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(CLAIM).fetchone()
                conn.execute("COMMIT")
                if row is None:
                    stopping.wait(POLL)
                    continue
                work(row[1])
                conn.execute("UPDATE tasks SET status = 'done' WHERE id = ?", (row[0],))
            conn.close()

        return start_threads(loop, workers)

    def unfinished(self, path: str) -> int:
        return count_rows(path, "SELECT COUNT(*) FROM tasks WHERE status != 'done'")


if __name__ == "__main__":
    serve(Sqlite())
