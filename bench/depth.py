"""Drain rate with 1,000,000 finished rows in the table, as a ratio of the empty-table rate.

Run: ``python bench/depth.py [done_rows] [tasks]``. Prints both rates and their ratio;
a ratio near 1.0 shows that claiming does not slow down as finished rows pile up.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from simplepyq import SimplePyQ


def noop(args: object) -> None:
    """The task: nothing, so the queue's own cost is what is measured."""


def fill_done(path: str, rows: int) -> None:
    """Insert ``rows`` finished tasks directly, as a long-lived store would have."""
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO tasks (channel, args, status, retries, created_at, finished_at) "
            "VALUES ('work', x'c0', 'done', 0, 0, 0)",
            ((),) * rows,
        )


def drain_rate(path: str, tasks: int) -> float:
    """Tasks per second to run ``tasks`` no-op tasks with one worker."""
    with SimplePyQ(path) as queue:
        queue.add_channel("work", noop)
        queue.enqueue_many("work", [None] * tasks)
        started = time.perf_counter()
        queue.run_until_complete()
        return tasks / (time.perf_counter() - started)


def main() -> None:
    done_rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    tasks = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    directory = Path(tempfile.mkdtemp())
    empty, deep = str(directory / "empty.db"), str(directory / "deep.db")
    SimplePyQ(deep).close()
    fill_done(deep, done_rows)
    rates: dict[str, list[float]] = {"empty": [], "deep": []}
    for _ in range(3):
        rates["empty"].append(drain_rate(empty, tasks))
        rates["deep"].append(drain_rate(deep, tasks))
    median = {name: sorted(values)[1] for name, values in rates.items()}
    print(f"drain, empty table:          {median['empty']:8.0f} tasks/s")
    print(f"drain, {done_rows:>9,} done rows: {median['deep']:8.0f} tasks/s")
    print(f"ratio deep / empty:          {median['deep'] / median['empty']:8.2f}")


if __name__ == "__main__":
    main()
