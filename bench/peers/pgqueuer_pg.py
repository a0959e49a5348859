"""pgqueuer on PostgreSQL, used as its docs show: ``Queries.enqueue`` (one job, or lists
for a batch in one statement) and a ``PgQueuer`` over one asyncpg connection with an
``@pgq.entrypoint`` function, run by ``pgq.run`` in an event loop of its own thread.
Its objects live in the store's schema through ``PGQUEUER_SCHEMA``; its tables are
installed with ``Queries.install`` and tuned with ``optimize_autovacuum`` (``pgq
install`` and ``pgq autovac``, the docs' checklist), durability left ``durable``.

Best setting: asyncpg (the driver its docs find fastest; a little faster than its
synchronous psycopg ``SyncQueries`` for one-call enqueues too), uvloop (as ``pgq run``);
one QueueManager fetching ``BATCH`` jobs per dequeue (500: the fastest of 10, its default,
to 2,000 tried), with ``max_concurrent_tasks`` unset: pgqueuer cannot cap the jobs it runs
at once below twice its batch size, so the 1- and 4-worker drains run the same way (a
fetched batch's jobs are asyncio tasks of one thread). Listen/notify is always on;
``dequeue_timeout`` (30 s) is only the fallback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import asyncpg
import pg_common
from common import Stop, Work, serve
from pg_common import Background, Loop, PgAdapter, Service
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.domain.settings import db_settings
from pgqueuer.models import Job
from pgqueuer.queries import Queries

ENTRYPOINT = "work"
BATCH = 500
CHUNK = 10_000


def _use_schema(path: str) -> None:
    """pgqueuer reads its schema from the environment, once (cleared here)."""
    os.environ["PGQUEUER_SCHEMA"] = pg_common.schema(path)
    db_settings.cache_clear()


def _payload(args: Any) -> bytes:
    return json.dumps(args).encode()


class Client:
    """One asyncpg connection and its ``Queries``, driven from synchronous code."""

    def __init__(self, path: str) -> None:
        _use_schema(path)
        self.loop = Loop(fast=True)
        self.conn = self.loop.run(asyncpg.connect(pg_common.url()))
        self.queries = Queries(AsyncpgDriver(self.conn))

    def enqueue(self, items: list[Any]) -> None:
        self.loop.run(self.queries.enqueue(
            [ENTRYPOINT] * len(items), [_payload(item) for item in items], [0] * len(items)))

    def close(self) -> None:
        self.loop.run(self.conn.close())
        self.loop.close()


def _install(path: str) -> None:
    client = Client(path)
    try:
        client.loop.run(client.queries.install())
        client.loop.run(client.queries.optimize_autovacuum())
    finally:
        client.close()


class Producer:
    def __init__(self, path: str) -> None:
        pg_common.prepare(path, "pgqueuer", lambda: _install(path))
        self.client = Client(path)
        self.queries = self.client.queries
        self.run = self.client.loop.run

    def put(self, args: Any) -> None:
        self.run(self.queries.enqueue(ENTRYPOINT, _payload(args)))

    def close(self) -> None:
        self.client.close()


class Worker:
    """A ``PgQueuer`` over its own connection (the docs: never a pool for the
    QueueManager); ``shutdown`` is its graceful stop."""

    def __init__(self, conn: Any, work: Work) -> None:
        self.conn = conn
        self.pgq = PgQueuer.from_asyncpg_connection(conn)

        async def run(job: Job) -> None:
            work(json.loads(job.payload) if job.payload else None)

        self.pgq.entrypoint(ENTRYPOINT)(run)

    async def run(self) -> None:
        await self.pgq.run(batch_size=BATCH)

    def stop(self) -> None:
        self.pgq.shutdown.set()

    async def close(self) -> None:
        await self.conn.close()


class Pgqueuer(PgAdapter):
    # pgqueuer moves a finished job out of its queue table (into pgqueuer_log).
    UNFINISHED = "SELECT count(*) FROM {schema}.pgqueuer"

    def producer(self, path: str) -> Producer:
        return Producer(path)

    def prepare(self, path: str) -> None:
        pg_common.prepare(path, "pgqueuer", lambda: _install(path))

    def put_many(self, path: str, items: list[int]) -> None:
        client = Client(path)
        try:
            client.enqueue(items)
        finally:
            client.close()

    def fill(self, path: str, n: int) -> None:
        self.prepare(path)
        client = Client(path)
        try:
            for start in range(0, n, CHUNK):
                client.enqueue(list(range(start, min(start + CHUNK, n))))
        finally:
            client.close()
        pg_common.analyze(path)

    def ready(self, path: str, work: Work, workers: int) -> Callable[[], Stop]:
        self.prepare(path)
        _use_schema(path)

        async def open_worker() -> Service:
            return Worker(await asyncpg.connect(pg_common.url()), work)

        return Background(open_worker, fast=True).start


if __name__ == "__main__":
    serve(Pgqueuer(), {"drop": pg_common.drop})
