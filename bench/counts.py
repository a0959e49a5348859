"""What the dashboard's counts cost on a big store: ``stats()`` against ``counts()``.

Run: ``python bench/counts.py`` (about a minute), or ``--tasks N`` for another size.
PostgreSQL is measured too when ``SIMPLEPYQ_BENCH_POSTGRES_URL`` names a database (each
run gets a fresh schema, dropped afterwards), as for ``bench/run.py``.

A fresh store is filled, in bulk and behind the library's back, with ``--tasks`` done
tasks of two channels (and the counters row that counting them as they ended would
have left), 100 failed ones and 1,000 pending ones enqueued the usual way; on
PostgreSQL the table is then vacuumed and analysed, as autovacuum would. ``stats()``
counts every row (exact, a full scan); ``counts()`` reads the partial indexes of the
statuses a table holds few of, and the counters for done tasks. Each is timed
``--runs`` times, warm; the table shows the best and the median, and checks that both
give the same figures.

With ``--delete N`` it also times a purge of N of those done tasks, with the trigger
that counts deleted done tasks and, on a second store filled alike, without it (as
before the counters), ``--delete-runs`` times each: what the trigger costs deletes.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from limits import POSTGRES_URL, store  # (a fresh store, on either backend)

from simplepyq import SimplePyQ

CHANNELS = ("mail", "resize")
PENDING = 1_000
FAILED = 100
DAY = 86_400.0

# Done tasks numbered 1..:count of channel :channel; the first :old finished two days
# ago (a purge of what is older than a day takes them), the others an hour ago.
FILL_SQLITE = """
WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO tasks (channel, args, status, retries, attempts, priority, result, created_at,
                   started_at, finished_at)
SELECT :channel, x'c0', :status, 0, 1, 0, x'c0', :now - 3 * 86400, :now - 3 * 86400,
       CASE WHEN i <= :old THEN :now - 2 * 86400 ELSE :now - 3600 END
FROM n
"""
FILL_POSTGRES = """
INSERT INTO tasks (channel, args, status, retries, attempts, priority, result, created_at,
                   started_at, finished_at)
SELECT %(channel)s, '\\xc0'::bytea, %(status)s, 0, 1, 0, '\\xc0'::bytea,
       %(now)s - 3 * 86400, %(now)s - 3 * 86400,
       CASE WHEN i <= %(old)s THEN %(now)s - 2 * 86400 ELSE %(now)s - 3600 END
FROM generate_series(1, %(count)s) AS n (i)
"""
COUNTED = {
    "sqlite": "INSERT INTO simplepyq_finished (minute, channel, writer, done, failed) "
              "VALUES (0, :channel, '', :done, :failed)",
    "postgres": "INSERT INTO simplepyq_finished (minute, channel, writer, done, failed) "
                "VALUES (0, %(channel)s, '', %(done)s, %(failed)s)",
}
NO_TRIGGER = {
    "sqlite": "DROP TRIGGER simplepyq_done_removed",
    "postgres": "DROP TRIGGER simplepyq_done_removed ON tasks",
}


def run_sql(backend: str, location: str, statements: list[tuple[str, dict[str, Any]]]) -> None:
    """Run statements on the store behind the library's back, in one transaction (then,
    on PostgreSQL, VACUUM ANALYZE tasks)."""
    if backend == "sqlite":
        import sqlite3

        with closing(sqlite3.connect(location)) as conn, conn:
            for statement, values in statements:
                conn.execute(statement, values)
        return
    import psycopg

    base, _, query = location.partition("?")
    schema = dict(pair.split("=", 1) for pair in query.split("&"))["schema"]
    params = "&".join(pair for pair in query.split("&") if not pair.startswith("schema="))
    url = f"{base}?{params}" if params else base
    with psycopg.connect(url, options=f"-c search_path={schema}") as pg:
        for statement, values in statements:
            pg.execute(statement, values)
        pg.commit()
        pg.autocommit = True
        pg.execute("VACUUM ANALYZE tasks")


def fill(backend: str, location: str, tasks: int, old: int, counting: bool = True) -> None:
    """``tasks`` done tasks (``old`` of them past a day), FAILED failed, PENDING pending."""
    with SimplePyQ(location) as q:
        for name in CHANNELS:
            q.add_channel(name, print)
        if not counting:
            run_sql(backend, location, [(NO_TRIGGER[backend], {})])
        now = time.time()
        fill_sql = FILL_SQLITE if backend == "sqlite" else FILL_POSTGRES
        shares = [tasks - tasks // 2, tasks // 2]
        statements = []
        for name, share in zip(CHANNELS, shares, strict=True):
            statements.append((fill_sql, {"channel": name, "status": "done", "count": share,
                                          "old": min(old, share) if name == CHANNELS[0]
                                          else max(old - shares[0], 0), "now": now}))
            statements.append((COUNTED[backend], {"channel": name, "done": share,
                                                  "failed": FAILED // 2}))
            statements.append((fill_sql, {"channel": name, "status": "failed",
                                          "count": FAILED // 2, "old": 0, "now": now}))
        run_sql(backend, location, statements)
        q.enqueue_many(CHANNELS[0], range(PENDING))


def timed(call: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    """Seconds each of ``runs`` calls took, and what the last returned."""
    times, value = [], None
    for _ in range(runs):
        began = time.perf_counter()
        value = call()
        times.append(time.perf_counter() - began)
    return times, value


def milliseconds(times: list[float]) -> str:
    return f"{min(times) * 1000:.1f} / {statistics.median(times) * 1000:.1f}"


def compare_counts(backend: str, directory: Path, tasks: int, runs: int) -> None:
    with store(backend, directory) as location:
        began = time.perf_counter()
        fill(backend, location, tasks, old=0)
        filled = time.perf_counter() - began
        with SimplePyQ(location) as q:
            stats_times, stats = timed(q.stats, runs)
            counts_times, counts = timed(q.counts, runs)
        same = "yes" if stats == counts else "NO"
        print(f"| {backend} | {tasks:,} | {filled:.1f} | {milliseconds(stats_times)} "
              f"| {milliseconds(counts_times)} | {same} |", flush=True)


def compare_deletes(backend: str, directory: Path, tasks: int, delete: int,
                    runs: int) -> None:
    """Purge ``delete`` of ``tasks`` done tasks without the counting trigger and with it,
    ``runs`` times each, alternately (the machine's load changes alike for both)."""
    figures: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(runs):
        for counting in (False, True):
            with store(backend, directory) as location:
                fill(backend, location, tasks, old=delete, counting=counting)
                with SimplePyQ(location) as q:
                    (seconds,), deleted = timed(functools.partial(q.purge, DAY), 1)
                    assert deleted == delete, deleted
                    if counting:
                        assert q.counts() == q.stats()
                figures[counting].append(seconds)
    before, after = min(figures[False]), min(figures[True])
    print(f"| {backend} | {delete:,} of {tasks:,} | {before:.3f} | {after:.3f} "
          f"| {(after / before - 1) * 100:+.0f}% |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000,
                        help="done tasks in the store (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=5,
                        help="timed calls of each (default 5)")
    parser.add_argument("--delete", type=int, default=0,
                        help="also time a purge of this many done tasks, with and "
                             "without the trigger that counts them (default: not)")
    parser.add_argument("--delete-runs", type=int, default=3,
                        help="purges timed with and without it; the best shown (default 3)")
    options = parser.parse_args()
    backends = ["sqlite", *(["postgres"] if os.environ.get(POSTGRES_URL) else [])]
    if len(backends) == 1:
        print(f"({POSTGRES_URL} is not set: SQLite only)")
    print(f"milliseconds, best / median of {options.runs} warm calls\n")
    print("| backend | done tasks | fill (s) | stats() ms | counts() ms | same figures |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for backend in backends:
            compare_counts(backend, Path(folder), options.tasks, options.runs)
        if options.delete:
            print(f"\nseconds, best of {options.delete_runs} purges each\n")
            print("| backend | purged | without the trigger (s) | with it (s) | cost |")
            print("|---|---|---|---|---|")
            for backend in backends:
                compare_deletes(backend, Path(folder), options.tasks, options.delete,
                                options.delete_runs)


if __name__ == "__main__":
    main()
