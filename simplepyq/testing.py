"""Running tasks in tests: the drain, the eager mode's runs, and an isolated queue.

Both the drain and the eager mode run tasks through the path workers take (args
through msgpack and back, the row claimed, the outcome recorded with its hooks and
dependents), one at a time in the calling thread: a test sees what production
would store, in an order it can rely on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from simplepyq.errors import StoreError
from simplepyq.scheduler import Scheduler
from simplepyq.storage.base import Store

if TYPE_CHECKING:
    from simplepyq.queue import SimplePyQ
    from simplepyq.task import Task

MAX_RUNS = 10_000
"""How many runs a drain makes at most, unless told otherwise: a task that defers or
enqueues itself without end must fail the test, not hang it."""


def drain(scheduler: Scheduler, store: Store, names: Sequence[str], due: bool,
          max_runs: int) -> list[int]:
    """Run the runnable tasks of channels ``names`` in the calling thread, one at a time,
    until none is left; the id of each run, in order (a retried task once per run).

    The channels are looked at in order, each time from the first: a task enqueued
    by a task, or released by its end, runs in the same drain. With ``due``, delayed
    tasks are made due whenever nothing else is left. ``RuntimeError`` once
    ``max_runs`` runs are made and another task could run (it stays pending).
    """
    runs: list[int] = []
    here = scheduler.enter_here()
    try:
        while True:
            task, name = None, ""
            for name in names:
                task = scheduler.claim_here(name)
                if task is not None:
                    break
            if task is None:
                if due and store.make_due(names, time.time()):
                    continue
                return runs
            if len(runs) >= max_runs:
                scheduler.release_here(task)
                raise RuntimeError(
                    f"drain stopped after {max_runs} runs with tasks still to run (task "
                    f"{task.id} of channel {name!r} is next): does a task defer or enqueue "
                    "itself without end? Give max_runs to allow more")
            scheduler.run_here(name, task, here)
            runs.append(task.id)
    finally:
        if not scheduler.leave_here(here):
            raise StoreError("the outcomes of tasks the drain ran could not be recorded; "
                             "those tasks will run again")


@contextmanager
def isolated(queue: SimplePyQ, *, eager: bool = False) -> Iterator[SimplePyQ]:
    """``queue`` itself, on a fresh store in memory for the duration (its channels
    registered there), eager if ``eager``: for a test of code that enqueues into an
    application's queue. Its own store and mode come back afterwards, untouched.

    Refused (``RuntimeError``) while its workers run: stop them first.
    """
    with queue._isolated(eager) as same:
        yield same


def enqueued(queue: SimplePyQ, channel: str | None = None) -> list[Task]:
    """Every task stored in ``queue`` (of ``channel``, if given), in the order they were
    enqueued, whatever their status: for assertions on what the code under test
    enqueued."""
    total = sum(sum(counts.values()) for name, counts in queue.stats().items()
                if channel in (None, name))
    return queue.tasks(channel, limit=total) if total else []
