"""The published simplepyq 0.1.3, run from the peers' virtualenv (never this checkout).

Its own API: ``add_channel``, ``enqueue``, ``start``/``stop``. Idle workers look for
new rows once a second; with several workers a task can run more than once, which
the ``runs`` figure shows.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgpack
from common import Adapter, Stop, Work, count_rows, serve

from simplepyq import SimplePyQ

CHANNEL = "work"


def _noop(args: Any) -> None:
    """The producer's channel function: it never runs (the producer starts no workers)."""


class Producer:
    def __init__(self, path: str) -> None:
        self.queue = SimplePyQ(path)
        self.queue.add_channel(CHANNEL, _noop)

    def put(self, args: Any) -> None:
        self.queue.enqueue(CHANNEL, args)

    def close(self) -> None:
        """0.1.3 opens a connection per call; there is nothing to close."""


class Simplepyq013(Adapter):
    def producer(self, path: str) -> Producer:
        return Producer(path)

    def fill(self, path: str, n: int) -> None:
        """The rows 0.1.3's enqueue writes, inserted in one transaction."""
        SimplePyQ(path)
        with sqlite3.connect(path) as conn:
            conn.executemany("INSERT INTO tasks (channel, args, retries) VALUES (?, ?, 0)",
                             ((CHANNEL, msgpack.packb(i)) for i in range(n)))
        conn.close()

    def consume(self, path: str, work: Work, workers: int) -> Stop:
        queue = SimplePyQ(path)
        queue.add_channel(CHANNEL, work, workers)
        queue.start()

        def stop() -> None:
            queue.stop()

        return stop

    def unfinished(self, path: str) -> int:
        return count_rows(path, "SELECT COUNT(*) FROM tasks WHERE status != 'done'")


if __name__ == "__main__":
    serve(Simplepyq013())
