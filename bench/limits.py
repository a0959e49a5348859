"""The start rate a channel achieves under its rate limit, on SQLite and PostgreSQL.

Run: ``python bench/limits.py`` (about a minute), or ``--windows N`` for longer runs.
PostgreSQL is measured too when ``SIMPLEPYQ_BENCH_POSTGRES_URL`` names a database (each
run gets a fresh schema, dropped afterwards), as for ``bench/run.py``.

A channel limited to 100/s and to 1000/s is drained of no-op tasks by 1 process and by
3 processes of 4 worker threads each, started together on one fresh store. Every task
appends its start time to a log outside the store. With ``WINDOWS`` windows' worth of
tasks plus one, the limit lets the last one start ``WINDOWS`` periods after the first,
so the achieved rate is ``WINDOWS * N / (last start - first start)``, and its ratio to
the limit should be close to 1 (the goal: at least 0.9). Also shown: the most
tasks claimed in any one-second window (the store's claim times, which the limit
counts) over the limit, at most 1.00 if the limit holds; and how long after its claim
a task started (p50 / p99). The limit lets tasks through in bursts, one a period, and a
burst's tasks wait for a free worker thread: that delay is why the tests check the
start times over windows a little shorter than the period (tests/test_limits.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = "SIMPLEPYQ_BENCH_POSTGRES_URL"
LIMITS = (100, 1000)
PROCESSES = (1, 3)
WORKERS = 4

# Drains channel "c" with WORKERS threads once a line comes on stdin; each task appends
# "ARGS TIME" (its args are its number) to the log. argv: store, log, workers.
CHILD = """
import os, sys, time
from simplepyq import SimplePyQ

log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

def work(args):
    os.write(log, f"{args} {time.time()!r}\\n".encode())

with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
    q.add_channel("c", work, max_workers=int(sys.argv[3]))
    print("ready", flush=True)
    sys.stdin.readline()
    q.run_until_complete(timeout=600)
"""


@contextmanager
def store(backend: str, directory: Path) -> Iterator[str]:
    """A fresh store: a file in ``directory``, or a new schema of the PostgreSQL database."""
    if backend == "sqlite":
        yield str(directory / f"{uuid.uuid4().hex}.db")
        return
    url, schema = os.environ[POSTGRES_URL], "bench_limits_" + uuid.uuid4().hex[:12]
    try:
        yield f"{url}{'&' if '?' in url else '?'}schema={schema}"
    finally:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def busiest(times: list[float], length: float = 1.0) -> int:
    """The most of ``times`` (sorted) in any window [t, t + length)."""
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= length:
            first += 1
        most = max(most, last - first + 1)
    return most


def measure(location: str, directory: Path, limit: int, processes: int,
            windows: int, source: Path = ROOT) -> tuple[float, float, float, float]:
    """Drain ``windows * limit + 1`` tasks of a channel limited to ``limit``/s with
    ``processes`` × WORKERS, running the simplepyq in ``source``; (achieved ÷ limit,
    busiest second of claims ÷ limit, and the p50 and p99 of the delays from claim to
    start in ms). Also run by the harness's adapter (``bench/peers/ours.py``) for its
    Features table."""
    from simplepyq import SimplePyQ

    tasks = windows * limit + 1
    with SimplePyQ(location) as queue:
        queue.add_channel("c", print, rate_limit=f"{limit}/s")
        queue.enqueue_many("c", range(tasks))
    log = directory / f"{uuid.uuid4().hex}.log"
    env = dict(os.environ, PYTHONPATH=str(source))
    children = [subprocess.Popen([sys.executable, "-c", CHILD, location, str(log), str(WORKERS)],
                                 env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for _ in range(processes)]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            if child.wait(timeout=windows * 10 + 60) != 0:
                raise RuntimeError(f"a worker process exited with {child.returncode}")
    finally:
        for child in children:
            child.kill()
            child.wait()
    started = {int(number): float(moment) for number, moment
               in (line.split() for line in log.read_text().splitlines())}
    if len(started) != tasks:
        raise RuntimeError(f"{len(started)} starts logged for {tasks} tasks")
    with SimplePyQ(location) as queue:
        claimed = {task.args: task.started_at.timestamp()
                   for task in queue.tasks("c", limit=tasks) if task.started_at is not None}
    starts = sorted(started.values())
    achieved = (tasks - 1) / (starts[-1] - starts[0])
    delays = sorted((started[number] - claimed[number]) * 1000 for number in claimed)
    return (achieved / limit, busiest(sorted(claimed.values())) / limit,
            delays[len(delays) // 2], delays[int(len(delays) * 0.99)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=3,
                        help="periods of the limit each run lasts (default 3)")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs per figure; the median is shown (default 1)")
    options = parser.parse_args()
    backends = ["sqlite", *(["postgres"] if os.environ.get(POSTGRES_URL) else [])]
    if len(backends) == 1:
        print(f"({POSTGRES_URL} is not set: SQLite only)")
    print(f"{options.windows} windows per run, median of {options.runs} run(s); "
          f"{WORKERS} workers per process; ratios are of the limit\n")
    print("| backend | limit | processes × workers | achieved/s | achieved ÷ limit "
          "| busiest 1 s of claims ÷ limit | claim → start p50 / p99 (ms) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        for backend in backends:
            for limit in LIMITS:
                for processes in PROCESSES:
                    figures = []
                    for _ in range(options.runs):
                        with store(backend, directory) as location:
                            figures.append(measure(location, directory, limit, processes,
                                                   options.windows))
                    ratio, claimed, p50, p99 = (statistics.median(column)
                                                for column in zip(*figures, strict=True))
                    print(f"| {backend} | {limit}/s | {processes} × {WORKERS} "
                          f"| {ratio * limit:.0f} | {ratio:.3f} | {claimed:.2f} "
                          f"| {p50:.1f} / {p99:.1f} |", flush=True)


if __name__ == "__main__":
    main()
