"""huey 3.x with SqliteHuey, used as its docs show: a ``@huey.task()`` function, called to
enqueue, run by huey's own consumer with thread workers, started in this process.

Settings are huey's defaults (WAL; each worker polls an empty queue after 0.1 s,
backing off by 1.15× up to 10 s; the scheduler thread runs too).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from common import Adapter, Stop, Work, serve
from huey import SqliteHuey

TASK = "work"


def _open(path: str, work: Work | None = None) -> tuple[Any, Any]:
    huey = SqliteHuey(filename=path)

    def run(args: Any) -> None:
        # Defined here so that every process registers it under the same module name.
        if work is not None:
            work(args)

    return huey, huey.task(name=TASK)(run)


class Producer:
    def __init__(self, path: str) -> None:
        self.huey, self.task = _open(path)

    def put(self, args: Any) -> None:
        self.task(args)

    def close(self) -> None:
        self.huey.storage.close()


class Huey(Adapter):
    def producer(self, path: str) -> Producer:
        return Producer(path)

    def fill(self, path: str, n: int) -> None:
        """The rows huey's enqueue writes, inserted in one transaction."""
        huey, task = _open(path)
        rows = [(huey.name, huey.serialize_task(task.s(i)), 0) for i in range(n)]
        huey.storage.close()
        with sqlite3.connect(path) as conn:
            conn.executemany("INSERT INTO task (queue, data, priority) VALUES (?, ?, ?)", rows)
        conn.close()

    def consume(self, path: str, work: Work, workers: int) -> Stop:
        huey, _task = _open(path, work)
        consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=False)
        consumer.start()

        def stop() -> None:
            consumer.stop(graceful=True)
            huey.storage.close()

        return stop

    def unfinished(self, path: str) -> int:
        # huey deletes a task's row when a worker takes it; the run counter covers the rest.
        return 0


if __name__ == "__main__":
    serve(Huey())
