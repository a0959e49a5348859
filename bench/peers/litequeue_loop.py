"""litequeue: ``put``; each of N threads opens its own LiteQueue on the file (one
connection cannot run concurrent transactions) and loops ``pop`` → run → ``done``.

litequeue has no blocking get, so an idle worker polls; here every 50 ms, the same
as simplepyq's default ``poll_interval``. litequeue sets ``synchronous=NORMAL``: its
commits are not fsynced one by one, unlike the others'.
"""

from __future__ import annotations

import threading
from typing import Any

from common import Adapter, Stop, Work, serve, start_threads
from litequeue import LiteQueue

POLL = 0.05


class Producer:
    def __init__(self, path: str) -> None:
        self.queue = LiteQueue(path)

    def put(self, args: Any) -> None:
        self.queue.put(repr(args))

    def close(self) -> None:
        self.queue.conn.close()


class Litequeue(Adapter):
    def producer(self, path: str) -> Producer:
        return Producer(path)

    def fill(self, path: str, n: int) -> None:
        """``put`` × n inside one transaction."""
        producer = Producer(path)
        producer.queue.conn.execute("BEGIN")
        for i in range(n):
            producer.put(i)
        producer.queue.conn.execute("COMMIT")
        producer.close()

    def consume(self, path: str, work: Work, workers: int) -> Stop:
        def loop(stopping: threading.Event) -> None:
            queue = LiteQueue(path)
            while not stopping.is_set():
                message = queue.pop()
                if message is None:
                    stopping.wait(POLL)
                    continue
                work(message.data)
                queue.done(message.message_id)
            queue.conn.close()

        return start_threads(loop, workers)

    def unfinished(self, path: str) -> int:
        queue = LiteQueue(path)
        try:
            return int(queue.qsize())
        finally:
            queue.conn.close()


if __name__ == "__main__":
    serve(Litequeue())
