"""What SQLite itself allows for one-call enqueues, next to what simplepyq reaches.

Run: ``python bench/floor.py [tasks] [rounds]``. Three loops of one commit per task,
interleaved over several rounds (median shown), all in WAL with synchronous=NORMAL:

- a one-column table with no index: the commit rate of Python's sqlite3 here;
- raw inserts of one task row into simplepyq's own table, by the statement the
  library runs (one ``INSERT OR IGNORE ... VALUES`` that checks the channel and
  names the id, committed on its own): the row and its claim index entry, two
  pages per commit;
- ``SimplePyQ.enqueue``.

The last two are close: the table's shape, not the library, bounds one-call enqueues.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from simplepyq import SimplePyQ
from simplepyq.storage.sqlite import Q


def _timed(tasks: int, one: Callable[[int], None]) -> float:
    started = time.perf_counter()
    for number in range(tasks):
        one(number)
    return tasks / (time.perf_counter() - started)


def bare_table(path: Path, tasks: int) -> float:
    """Commits per second of one row into a table with one column and no index."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE t (a BLOB)")

    def one(number: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (a) VALUES (?)", (b"\x01",))
        conn.execute("COMMIT")

    try:
        return _timed(tasks, one)
    finally:
        conn.close()


def task_table(path: Path, tasks: int) -> float:
    """Commits per second of one task row into simplepyq's table, as ``enqueue`` writes it."""
    SimplePyQ(path).close()  # the library creates its schema
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(Q["register_channel"], {"name": "c", "now": 0.0})

    def one(number: int) -> None:
        conn.execute(Q["add_one"], ("c", "pending", 0, None, 0, 0.0, None, b"\x01"))

    try:
        return _timed(tasks, one)
    finally:
        conn.close()


def library(path: Path, tasks: int) -> float:
    """Tasks per second through ``SimplePyQ.enqueue``, one call each."""
    with SimplePyQ(path) as queue:
        queue.add_channel("c", print)

        def one(number: int) -> None:
            queue.enqueue("c", number)

        return _timed(tasks, one)


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    loops = {"one-column table, no index": bare_table,
             "simplepyq's table, raw sqlite3": task_table,
             "SimplePyQ.enqueue": library}
    rates: dict[str, list[float]] = {name: [] for name in loops}
    with tempfile.TemporaryDirectory() as directory:
        for round_number in range(rounds):
            for name, loop in loops.items():
                path = Path(directory) / f"{round_number}-{len(rates[name])}-{loop.__name__}.db"
                rates[name].append(loop(path, tasks))
    for name, found in rates.items():
        print(f"{name:32} {statistics.median(found):9,.0f} commits/s")
    ratio = statistics.median(rates["SimplePyQ.enqueue"]) / statistics.median(
        rates["simplepyq's table, raw sqlite3"])
    print(f"{'enqueue ÷ raw on the same table':32} {ratio:9.2f}")


if __name__ == "__main__":
    main()
