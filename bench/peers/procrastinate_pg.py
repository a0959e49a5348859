"""procrastinate 3.x on PostgreSQL, used as its docs show: an ``App`` with a
``PsycopgConnector``, a task declared with ``@app.task``; ``defer`` enqueues one job
(synchronously, as a non-async application does; faster here than ``defer_async`` on an
event loop), ``batch_defer`` many in one statement, and ``run_worker_async`` runs the
worker in an event loop of its own thread. Its schema goes into the store's schema
through ``search_path``, as its docs show.

Best setting: the worker's ``concurrency`` (sub-workers, each fetching one job per
query) is the harness's worker count; listen/notify on (its default), so a new job
wakes an idle worker at once and ``fetch_job_polling_interval`` (5 s) is only the
fallback; the task is an ``async def``, which runs on the worker's loop (a plain
``def`` would be handed to a thread per job); ``delete_jobs="successful"``, which deletes
a job when it succeeds instead of marking it (about a quarter faster here than its
default, ``"never"``). Each job is still one fetch and one finish, each a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pg_common
import procrastinate
from common import Stop, Work, serve
from pg_common import Background, PgAdapter, Service

TASK = "work"
CHUNK = 10_000


def _app(path: str, work: Work | None = None) -> Any:
    """The application: one connector on the store's schema, the task registered."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=pg_common.conninfo(path)))

    async def run(args: Any) -> None:
        if work is not None:
            work(args)

    app.task(name=TASK)(run)
    return app


def _install(path: str) -> None:
    with _app(path).open() as app:
        app.schema_manager.apply_schema()


class Producer:
    def __init__(self, path: str) -> None:
        pg_common.prepare(path, "procrastinate_jobs", lambda: _install(path))
        self.app = _app(path).open()
        self.task = self.app.tasks[TASK]

    def put(self, args: Any) -> None:
        self.task.defer(args=args)

    def close(self) -> None:
        self.app.close()


class Worker:
    """The worker as an application embeds it (docs, "Launch a worker"): cancelling
    its task is the graceful stop."""

    def __init__(self, app: Any, workers: int) -> None:
        self.app = app
        self.workers = workers
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self.task = asyncio.create_task(self.app.run_worker_async(
            concurrency=self.workers, listen_notify=True, delete_jobs="successful",
            install_signal_handlers=False))
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def close(self) -> None:
        await self.app.close_async()


class Procrastinate(PgAdapter):
    UNFINISHED = ("SELECT count(*) FROM {schema}.procrastinate_jobs "
                  "WHERE status IN ('todo', 'doing')")

    def producer(self, path: str) -> Producer:
        return Producer(path)

    def prepare(self, path: str) -> None:
        pg_common.prepare(path, "procrastinate_jobs", lambda: _install(path))

    def put_many(self, path: str, items: list[int]) -> None:
        with _app(path).open() as app:
            app.tasks[TASK].batch_defer(*({"args": item} for item in items))

    def fill(self, path: str, n: int) -> None:
        self.prepare(path)
        with _app(path).open() as app:
            for start in range(0, n, CHUNK):
                app.tasks[TASK].batch_defer(
                    *({"args": i} for i in range(start, min(start + CHUNK, n))))
        pg_common.analyze(path)

    def ready(self, path: str, work: Work, workers: int) -> Callable[[], Stop]:
        self.prepare(path)

        async def open_worker() -> Service:
            app = _app(path, work)
            await app.open_async()
            return Worker(app, workers)

        return Background(open_worker, fast=False).start


if __name__ == "__main__":
    serve(Procrastinate(), {"drop": pg_common.drop})
