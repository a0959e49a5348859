"""What workflows cost, on SQLite and PostgreSQL: a plain drain against the same drain
before workflows existed, a group of 10,000 with its callback, a chain of 1,000 steps.

Run: ``python bench/workflows.py`` (a few minutes), ``--runs N`` for more runs per
figure. PostgreSQL is measured too when ``SIMPLEPYQ_BENCH_POSTGRES_URL`` names a
database, as for ``bench/run.py``.

- Plain drain: 20,000 no-op tasks drained by one worker, in the CPU seconds of the
  draining process, with this checkout and with ``--baseline`` (a git revision, by
  default the last one before workflows), interleaved run by run. A task with no
  dependents must not pay for the feature: the ratio should be at least 0.95.
- A group of 10,000 no-op members and a callback that receives their 10,000
  results, against a plain drain of 10,000 (4 workers each): the group's overhead.
- A chain of 1,000 no-op steps, each receiving the result of the one before, against
  a plain drain of 1,000 tasks run one after another by one worker.

Every figure is the median of ``--runs`` fresh processes on fresh stores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simplepyq import SimplePyQ

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
POSTGRES_URL = "SIMPLEPYQ_BENCH_POSTGRES_URL"
BASELINE = "6951407"
"""The last revision before workflows."""

# argv: store, workload, size, workers. Prints the seconds measured.
CHILD = """
import sys
from workflows import timed

print(timed(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))[0])
"""


def timed(location: str, workload: str, size: int, workers: int,
          timeout: float = 600) -> tuple[float, int]:
    """Run ``workload`` of ``size`` no-op tasks on the store at ``location``, in this
    process: the seconds it took and how many of its tasks were done by then (all,
    unless ``timeout`` came first). "drain-cpu" counts the process's CPU seconds of a
    drain of tasks enqueued beforehand; "drain", "group" and "chain" count wall seconds
    from storing the tasks until the last one is done. Also run by the harness's
    adapter (``bench/peers/ours.py``) for its Features table."""
    from simplepyq import SimplePyQ

    with SimplePyQ(location, poll_interval=0.01) as q:
        q.add_channel("c", _echo, max_workers=workers)
        if workload == "drain-cpu":
            q.enqueue_many("c", range(size))
        clock = time.process_time if workload == "drain-cpu" else time.perf_counter
        began = clock()
        last = None if workload == "drain-cpu" else _store(q, workload, size)
        try:
            q.run_until_complete(timeout=timeout)
        except TimeoutError:
            return clock() - began, q.stats()["c"]["done"]
        seconds = clock() - began
        if last is not None:  # the workflow's last task got what it was owed
            task = q.get_task(last)
            expected = list(range(size)) if workload == "group" else 0
            assert task is not None and task.result == expected, (workload, task)
    return seconds, size


def _echo(args: Any) -> Any:
    return args


def _store(q: SimplePyQ, workload: str, size: int) -> int | None:
    """Store the tasks of ``workload``: a plain batch, a group and its callback, or a
    chain; the id of the task that ends a workflow."""
    if workload == "drain":
        q.enqueue_many("c", range(size))
        return None
    from simplepyq import Step

    if workload == "group":
        flow = q.group([Step("c", n) for n in range(size)], then=Step("c"))
    elif workload == "chain":
        flow = q.chain(Step("c", 0), *[Step("c") for _ in range(size - 1)])
    else:
        raise ValueError(f"unknown workload {workload!r}; known: drain, drain-cpu, group, "
                         "chain")
    return flow.task_ids[-1]


def stores(backend: str, directory: Path) -> str:
    """A fresh store: a file in ``directory``, or a new schema of the PostgreSQL database."""
    if backend == "sqlite":
        return str(directory / f"{uuid.uuid4().hex}.db")
    url = os.environ[POSTGRES_URL]
    return f"{url}{'&' if '?' in url else '?'}schema=bench_flows_{uuid.uuid4().hex[:12]}"


def drop(location: str) -> None:
    if "schema=" in location:
        import psycopg

        url, schema = location.split("?")[0], location.rsplit("schema=", 1)[1]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def measure(source: Path, backend: str, directory: Path, workload: str, size: int,
            workers: int) -> float:
    """Seconds one fresh process took for ``workload`` with the simplepyq in ``source``."""
    location = stores(backend, directory)
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, location, workload, str(size),
                               str(workers)], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{BENCH}"},
                              timeout=900)
        return float(done.stdout.split()[-1])
    finally:
        drop(location)


def baseline_tree(revision: str, directory: Path) -> Path:
    """The package as it was at ``revision``, extracted under ``directory``."""
    tree = directory / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "simplepyq"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", default=BASELINE,
                        help="the git revision the plain drain is compared with")
    args = parser.parse_args()
    backends = ["sqlite", *(["postgres"] if os.environ.get(POSTGRES_URL) else [])]
    print("| backend | figure | this checkout | compared with | ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        directory = Path(workdir)
        before = baseline_tree(args.baseline, directory)
        for backend in backends:
            now, then = [], []
            for _ in range(args.runs):  # interleaved: both see the same machine
                now.append(measure(ROOT, backend, directory, "drain-cpu", 20_000, 1))
                then.append(measure(before, backend, directory, "drain-cpu", 20_000, 1))
            ratio = statistics.median(b / a for a, b in zip(now, then, strict=True))
            speed, before_speed = 20_000 / statistics.median(now), 20_000 / statistics.median(then)
            print(f"| {backend} | plain drain of 20k, 1 worker (tasks per CPU s) | "
                  f"{speed:,.0f} | {before_speed:,.0f} ({args.baseline}) | {ratio:.3f} |")
            for workload, size, workers, label in (
                    ("group", 10_000, 4, "group of 10k + callback, 4 workers"),
                    ("chain", 1_000, 1, "chain of 1,000 steps, 1 worker")):
                flow = statistics.median(measure(ROOT, backend, directory, workload, size,
                                                 workers) for _ in range(args.runs))
                plain = statistics.median(measure(ROOT, backend, directory, "drain", size,
                                                  workers) for _ in range(args.runs))
                print(f"| {backend} | {label} (tasks/s) | {size / flow:,.0f} | "
                      f"{size / plain:,.0f} (plain drain) | {plain / flow:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
