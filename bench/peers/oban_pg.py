"""oban-py (the ``oban`` package, Python 3.12+) on PostgreSQL, used as its docs show: a
worker class declared with ``@worker(queue=...)`` whose ``new`` builds a job,
``oban.enqueue`` (one job) and ``oban.enqueue_many`` (a batch), and an ``Oban``
instance with ``queues`` run embedded (``start``/``stop``) in an event loop of its own
thread. It runs from ``bench/.peers312-venv``; its tables are installed with
``oban.schema.install`` into the store's schema, which is its ``prefix``.

Best setting: the queue's ``limit`` (jobs run at once, each fetch asking for the free
slots) is the harness's worker count; uvloop (as ``oban start``); listen/notify on
(always: an insert trigger wakes the queue; the stager's 1 s poll is the fallback);
``debounce_interval`` (the pause between fetches while jobs run) left at its 5 ms
default (1 and 0.1 ms were no faster). Finished jobs stay in the table, as Oban keeps
them. ``enqueue_many`` inserts its jobs one statement each, in one transaction (bulk
inserts are an Oban Pro feature).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pg_common
from common import Stop, Work, serve
from oban import Oban, worker
from oban.schema import install
from pg_common import Background, Loop, PgAdapter, Service

QUEUE = "work"
CHUNK = 10_000
_work: list[Work] = []  # the function the worker runs, set by the consuming process


class Run:
    """The worker: the consuming process's function, on the job's args (an ``async def``,
    as Oban runs ``process`` on its event loop)."""

    async def process(self, job: Any) -> None:
        if _work:
            _work[0](job.args["args"])


RUN: Any = worker(queue=QUEUE)(Run)


async def _oban(path: str, **options: Any) -> tuple[Any, Any]:
    """An Oban instance (client mode without queues) and its pool, on the store's schema."""
    pool = await Oban.create_pool(pg_common.conninfo(path))
    return Oban(pool=pool, prefix=pg_common.schema(path), **options), pool


class Client:
    """An Oban client, driven from synchronous code."""

    def __init__(self, path: str) -> None:
        self.loop = Loop(fast=True)
        self.oban, self.pool = self.loop.run(_oban(path))

    def close(self) -> None:
        self.loop.run(self.pool.close())
        self.loop.close()


def _install(path: str) -> None:
    client = Client(path)
    try:
        client.loop.run(install(client.pool, prefix=pg_common.schema(path)))
    finally:
        client.close()


class Producer:
    def __init__(self, path: str) -> None:
        pg_common.prepare(path, "oban_jobs", lambda: _install(path))
        self.client = Client(path)
        self.run = self.client.loop.run
        self.enqueue = self.client.oban.enqueue

    def put(self, args: Any) -> None:
        self.run(self.enqueue(RUN.new({"args": args})))

    def close(self) -> None:
        self.client.close()


class Worker:
    """Oban embedded in an application: ``start``, then ``stop`` (graceful)."""

    def __init__(self, oban: Any, pool: Any) -> None:
        self.oban = oban
        self.pool = pool
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        await self.oban.start()
        await self.stopping.wait()
        await self.oban.stop()

    def stop(self) -> None:
        self.stopping.set()

    async def close(self) -> None:
        await self.pool.close()


class ObanPy(PgAdapter):
    UNFINISHED = ("SELECT count(*) FROM {schema}.oban_jobs "
                  "WHERE state NOT IN ('completed', 'discarded', 'cancelled')")

    def producer(self, path: str) -> Producer:
        return Producer(path)

    def prepare(self, path: str) -> None:
        pg_common.prepare(path, "oban_jobs", lambda: _install(path))

    def put_many(self, path: str, items: list[int]) -> None:
        client = Client(path)
        try:
            client.loop.run(client.oban.enqueue_many([RUN.new({"args": i}) for i in items]))
        finally:
            client.close()

    def fill(self, path: str, n: int) -> None:
        self.prepare(path)
        client = Client(path)
        try:
            for start in range(0, n, CHUNK):
                client.loop.run(client.oban.enqueue_many(
                    [RUN.new({"args": i}) for i in range(start, min(start + CHUNK, n))]))
        finally:
            client.close()
        pg_common.analyze(path)

    def ready(self, path: str, work: Work, workers: int) -> Callable[[], Stop]:
        self.prepare(path)
        _work[:] = [work]

        async def open_worker() -> Service:
            return Worker(*await _oban(path, queues={QUEUE: workers}))

        return Background(open_worker, fast=True).start


if __name__ == "__main__":
    serve(ObanPy(), {"drop": pg_common.drop})
