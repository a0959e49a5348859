"""persist-queue's SQLiteAckQueue: ``put``; N threads share one queue object and loop
``get`` → run → ``ack``, as its README shows for multi-threaded consumers.

``get(timeout=...)`` wakes at once on a ``put`` in the same process; work put by
another process is found when the wait times out, here after 50 ms (the same as
simplepyq's default ``poll_interval``; persist-queue's own tick is 10 s).
"""

from __future__ import annotations

import pickle
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from common import Adapter, Stop, Work, count_rows, serve, start_threads
from persistqueue import SQLiteAckQueue
from persistqueue.exceptions import Empty
from persistqueue.sqlackqueue import AckStatus

POLL = 0.05


_shared: dict[str, list[Any]] = {}  # path -> [queue, users]


def _open(path: str) -> Any:
    """One queue object per path and process, shared by producer and workers: its
    ``put`` wakes the workers' ``get`` only through the object's own event."""
    entry = _shared.setdefault(path, [None, 0])
    if entry[0] is None:
        entry[0] = SQLiteAckQueue(path, multithreading=True)
    entry[1] += 1
    return entry[0]


def _release(path: str) -> None:
    entry = _shared[path]
    entry[1] -= 1
    if entry[1] == 0:
        entry[0].close()
        del _shared[path]


def _db(path: str) -> str:
    return str(Path(path) / "data.db")


class Producer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.queue = _open(path)

    def put(self, args: Any) -> None:
        self.queue.put(args)

    def close(self) -> None:
        _release(self.path)


class PersistQueue(Adapter):
    def producer(self, path: str) -> Producer:
        return Producer(path)

    def fill(self, path: str, n: int) -> None:
        """The rows ``put`` writes, inserted in one transaction."""
        _open(path)
        _release(path)
        now = time.time()
        with sqlite3.connect(_db(path)) as conn:
            conn.executemany(
                "INSERT INTO ack_queue_default (data, timestamp, status) VALUES (?, ?, ?)",
                ((pickle.dumps(i), now, AckStatus.inited) for i in range(n)))
        conn.close()

    def consume(self, path: str, work: Work, workers: int) -> Stop:
        queue = _open(path)

        def loop(stopping: threading.Event) -> None:
            while not stopping.is_set():
                try:
                    item = queue.get(block=True, timeout=POLL, raw=True)
                except Empty:
                    continue
                work(item["data"])
                queue.ack(id=item["pqid"])

        return start_threads(loop, workers, lambda: _release(path))

    def unfinished(self, path: str) -> int:
        return count_rows(_db(path), "SELECT COUNT(*) FROM ack_queue_default WHERE status < ?",
                          (AckStatus.acked,))


if __name__ == "__main__":
    serve(PersistQueue())
