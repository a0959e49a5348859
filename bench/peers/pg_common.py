"""What the PostgreSQL peers (procrastinate, pgqueuer, oban-py) share.

Each store the harness names by a file path is a schema of its own in the database
at ``SIMPLEPYQ_BENCH_POSTGRES_URL``, named from that path as simplepyq-postgres's
are: created by the first process that uses it, with the library's tables installed
into it, and dropped by the harness's ``drop`` request when the run is over.

The three are asyncio libraries. ``Loop`` runs their coroutines for the harness's
synchronous calls (an enqueue, a count), and ``Background`` runs a worker in an
event loop of its own thread, opened (connections, pools) before the drain's clock
starts and started by the returned callable, as simplepyq's queue is opened before
``run_until_complete``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

import psycopg
from common import Adapter, Stop, Work

URL = "SIMPLEPYQ_BENCH_POSTGRES_URL"
T = TypeVar("T")


def url() -> str:
    """The server's URL, set by the harness (it runs no PostgreSQL peer without it)."""
    return os.environ[URL]


def schema(path: str) -> str:
    """The schema that stands for the harness's file ``path`` (a valid identifier)."""
    name = os.path.basename(path).removesuffix(".db")
    return "bench_" + "".join(c if c.isalnum() else "_" for c in name)[:50].lower()


def conninfo(path: str) -> str:
    """A libpq connection string whose sessions see only that schema (search_path)."""
    return psycopg.conninfo.make_conninfo(url(), options=f"-c search_path={schema(path)}")


def prepare(path: str, table: str, install: Callable[[], None]) -> None:
    """Create the store's schema, and ``install`` the library into it unless ``table``
    (one of the library's tables) is already there: the first process installs."""
    with psycopg.connect(url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema(path)}"')
        row = conn.execute("SELECT to_regclass(%s)", (f"{schema(path)}.{table}",)).fetchone()
    if row is None or row[0] is None:
        install()


def analyze(path: str) -> None:
    """Gather the planner's statistics on the store's tables after a fill, as autovacuum
    soon would on a live server: without them procrastinate's fetch took about 7 ms a
    job with 10k queued, against 0.5 ms."""
    with psycopg.connect(url(), autocommit=True) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s",
                              (schema(path),)).fetchall()
        for (table,) in tables:
            conn.execute(f'ANALYZE "{schema(path)}"."{table}"')


def drop(request: dict[str, Any]) -> dict[str, Any]:
    """The harness's clean-up after a run: the store's schema and all it holds."""
    with psycopg.connect(url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema(request["path"])}" CASCADE')
    return {"dropped": True}


class Count:
    """``unfinished`` for the drains: one count query on a connection kept open."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.conn: psycopg.Connection[Any] | None = None

    def __call__(self, path: str) -> int:
        if self.conn is None:
            self.conn = psycopg.connect(url(), autocommit=True)
        row = self.conn.execute(self.sql.format(schema=schema(path))).fetchone()
        return int(row[0]) if row else 0


class PgAdapter(Adapter):
    """A PostgreSQL peer: ``ready`` opens its worker, which ``consume`` starts, and
    ``unfinished`` counts with ``UNFINISHED``, its own query (``{schema}`` for the
    store's schema)."""

    UNFINISHED = ""

    def __init__(self) -> None:
        self.count = Count(self.UNFINISHED)

    def consume(self, path: str, work: Work, workers: int) -> Stop:
        return self.ready(path, work, workers)()

    def unfinished(self, path: str) -> int:
        return self.count(path)


def new_loop(fast: bool) -> asyncio.AbstractEventLoop:
    """uvloop's event loop when ``fast`` (what pgqueuer's and oban's own runners use),
    else asyncio's."""
    if fast:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


class Loop:
    """An event loop owned by the calling thread: ``run`` awaits one coroutine."""

    def __init__(self, fast: bool) -> None:
        self.loop = new_loop(fast)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.close()


class Service(Protocol):
    """A library's worker, opened in the background loop: ``run`` until ``stop``."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    async def close(self) -> None: ...


class Background:
    """An event loop in a thread of its own, holding one opened ``Service``."""

    def __init__(self, open_service: Callable[[], Awaitable[Service]], fast: bool) -> None:
        self.loop = new_loop(fast)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def opened() -> Service:
            return await open_service()

        self.service = asyncio.run_coroutine_threadsafe(opened(), self.loop).result(60)

    def start(self) -> Stop:
        """Start the service's workers; the returned stop ends them and the loop."""
        running = asyncio.run_coroutine_threadsafe(self.service.run(), self.loop)

        def stop() -> None:
            self.loop.call_soon_threadsafe(self.service.stop)
            running.result(60)
            asyncio.run_coroutine_threadsafe(self.service.close(), self.loop).result(60)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()

        return stop
