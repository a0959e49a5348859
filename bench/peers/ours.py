"""This repository's simplepyq (the harness puts the checkout first on PYTHONPATH).

Besides the shared workloads it runs the ones only simplepyq is measured on:
``deep_template`` (W4's store with a million finished rows), ``multiprocess``
(W5: several processes draining one file, counting lock errors that reach the caller)
and the Features table's: ``enqueue_keyed`` (W1 with a unique key per task),
``drain_max_running`` (W2 on a channel with ``max_running``), ``rate_limit`` (the start
rate under a limit, by ``bench/limits.py``) and ``flow`` (a chain, a group or the plain
drain they are compared with, by ``bench/workflows.py``).

The same script also measures simplepyq as it was at an earlier revision (the harness's
baseline column, from a virtualenv of its own): the shared workloads use only the API
that revision has.

With ``SIMPLEPYQ_BENCH_BACKEND=postgres`` each store is instead a schema of the
database at ``SIMPLEPYQ_BENCH_POSTGRES_URL``, named after the file the harness chose.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from common import Adapter, Counter, Stop, Work, _rate, op_drain, op_enqueue, serve

from simplepyq import SimplePyQ

CHANNEL = "work"
CHUNK = 10_000
POWER_SAFE = os.environ.get("SIMPLEPYQ_BENCH_POWER_SAFE") == "1"
POSTGRES = os.environ.get("SIMPLEPYQ_BENCH_BACKEND") == "postgres"
BENCH = Path(__file__).resolve().parent.parent
sys.path.append(str(BENCH))  # the one-purpose scripts the feature ops run: limits, workflows


def _open(path: str) -> SimplePyQ:
    """The queue as measured: default settings, or power_safe=True for that variant."""
    return SimplePyQ(_location(path), power_safe=POWER_SAFE)


def _location(path: str) -> str:
    """The store for the harness's ``path``: that file, or its schema on PostgreSQL."""
    if not POSTGRES:
        return path
    return f"{os.environ['SIMPLEPYQ_BENCH_POSTGRES_URL']}?schema={_schema(path)}"


def _schema(path: str) -> str:
    name = os.path.basename(path).removesuffix(".db")
    return "bench_" + "".join(c if c.isalnum() else "_" for c in name)[:50]


def drop(request: dict[str, Any]) -> dict[str, Any]:
    """Remove a PostgreSQL run's schema (the harness deletes files itself)."""
    if POSTGRES:
        import psycopg

        with psycopg.connect(os.environ["SIMPLEPYQ_BENCH_POSTGRES_URL"], autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{_schema(request["path"])}" CASCADE')
    return {"dropped": True}


def _noop(args: Any) -> None:
    """The producer's channel function: it never runs (the producer starts no workers)."""


class Shared:
    """One SimplePyQ object per path and process, as an application has: an enqueue
    wakes idle workers only through the object that runs them."""

    queues: ClassVar[dict[str, list[Any]]] = {}  # path -> [queue, users]

    @classmethod
    def open(cls, path: str, work: Work | None = None, workers: int = 1) -> SimplePyQ:
        entry = cls.queues.setdefault(path, [None, 0])
        if entry[0] is None:
            entry[0] = _open(path)
        queue: SimplePyQ = entry[0]
        entry[1] += 1
        if work is not None:
            queue.add_channel(CHANNEL, work, workers)
        elif CHANNEL not in queue.stats():
            queue.add_channel(CHANNEL, _noop)
        return queue

    @classmethod
    def release(cls, path: str) -> None:
        entry = cls.queues[path]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del cls.queues[path]


class Producer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.queue = Shared.open(path)

    def put(self, args: Any) -> None:
        self.queue.enqueue(CHANNEL, args)

    def close(self) -> None:
        Shared.release(self.path)


class KeyedProducer(Producer):
    """Each task is unique: its enqueue names a key of its own."""

    def put(self, args: Any) -> None:
        self.queue.enqueue(CHANNEL, args, key=str(args))


class Ours(Adapter):
    def __init__(self, keyed: bool = False, max_running: int | None = None) -> None:
        self.keyed = keyed  # each enqueue names a key of its own (unique tasks)
        self.max_running = max_running  # the drained channel's limit, if any

    def producer(self, path: str) -> Producer:
        return KeyedProducer(path) if self.keyed else Producer(path)

    def put_many(self, path: str, items: list[int]) -> None:
        with _open(path) as queue:
            queue.add_channel(CHANNEL, _noop)
            queue.enqueue_many(CHANNEL, items)

    def fill(self, path: str, n: int) -> None:
        with _open(path) as queue:
            queue.add_channel(CHANNEL, _noop)
            for start in range(0, n, CHUNK):
                queue.enqueue_many(CHANNEL, range(start, min(start + CHUNK, n)))

    def consume(self, path: str, work: Work, workers: int) -> Stop:
        Shared.open(path, work, workers).start()
        return lambda: Shared.release(path)

    def drain(self, path: str, n: int, workers: int, budget: float) -> dict[str, Any]:
        """``run_until_complete``: returns once every task is recorded done."""
        counter = Counter(n)
        # Passed only when set: the baseline's add_channel has no such argument.
        limit: dict[str, Any] = ({} if self.max_running is None
                                 else {"max_running": self.max_running})
        with _open(path) as queue:
            queue.add_channel(CHANNEL, counter.hit, workers, **limit)
            before = queue.stats()[CHANNEL]["done"]  # W4's store holds finished rows
            started = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                queue.run_until_complete(timeout=budget)
            elapsed = time.perf_counter() - started
            done = queue.stats()[CHANNEL]["done"] - before
        return {"done": done, "seconds": elapsed, "runs": counter.count}


def deep_template(request: dict[str, Any]) -> dict[str, Any]:
    """W4 set-up: a fresh store holding ``rows`` finished tasks, written by direct SQL.

    One task is run through the library so that the copies carry exactly the
    columns a finished task has; it is then copied ``rows - 1`` times in one
    INSERT ... SELECT, which takes seconds instead of the minutes enqueueing would.
    """
    path, rows = request["path"], request["rows"]
    with _open(path) as queue:
        queue.add_channel(CHANNEL, _noop)
        task_id = queue.enqueue(CHANNEL, None)
        queue.run_until_complete()
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    columns = ", ".join(row[1] for row in conn.execute("PRAGMA table_info(tasks)")
                        if row[1] != "id")
    with conn:
        conn.execute(
            f"WITH RECURSIVE copies(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM copies "
            f"WHERE k < ?) INSERT INTO tasks ({columns}) SELECT {columns} FROM tasks, copies "
            f"WHERE tasks.id = ?", (rows - 1, task_id))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"seconds": time.perf_counter() - started}


class LockErrors(logging.Handler):
    """Counts log records of the library that mention a locked database."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "locked" in record.getMessage().lower():
            self.count += 1


def multiprocess_child(request: dict[str, Any]) -> dict[str, Any]:
    """One of W5's processes: waits for "go", then drains with ``workers`` threads."""
    handler = LockErrors()
    logging.getLogger("simplepyq").addHandler(handler)
    counter = Counter(0)
    locked = 0
    other: list[str] = []
    with _open(request["path"]) as queue:
        queue.add_channel(CHANNEL, counter.hit, request["workers"])
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.time()
        deadline = time.perf_counter() + request["budget"]
        while time.perf_counter() < deadline:
            try:
                queue.run_until_complete(timeout=max(deadline - time.perf_counter(), 0.001))
                break
            except TimeoutError:
                break
            except Exception as error:  # what reaches user code is what is counted
                if "locked" in str(error).lower():
                    locked += 1
                else:
                    other.append(repr(error))
        finished = time.time()
    return {"started": started, "finished": finished, "runs": counter.count,
            "locked_errors": locked, "locked_logged": handler.count, "other_errors": other}


def multiprocess(request: dict[str, Any]) -> dict[str, Any]:
    """W5: ``processes`` processes × ``workers`` threads drain the ``n`` tasks of one file."""
    child_request = json.dumps({"op": "multiprocess_child", "path": request["path"],
                                "workers": request["workers"], "budget": request["budget"]})
    children = [subprocess.Popen([sys.executable, sys.argv[0], child_request],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(request["processes"])]
    for child in children:
        assert child.stdout is not None
        child.stdout.readline()
    go = time.time()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=request["budget"] + 60)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    with _open(request["path"]) as queue:
        counts = queue.stats()[CHANNEL]
    n = request["n"]
    elapsed = max(report["finished"] for report in reports) - go
    return {"value": counts["done"] / elapsed, "done": counts["done"], "n": n,
            "seconds": elapsed, "partial": counts["done"] < n, "failed": counts["failed"],
            "runs": sum(report["runs"] for report in reports),
            "locked_errors": sum(report["locked_errors"] for report in reports),
            "locked_logged": sum(report["locked_logged"] for report in reports),
            "other_errors": [e for report in reports for e in report["other_errors"]]}


def enqueue_keyed(request: dict[str, Any]) -> dict[str, Any]:
    """Features: W1's one-call enqueues, each with a key of its own (``key=``)."""
    return op_enqueue(Ours(keyed=True), request)


def drain_max_running(request: dict[str, Any]) -> dict[str, Any]:
    """Features: W2's drain, on a channel with ``max_running``."""
    return op_drain(Ours(max_running=request["max_running"]), request)


def rate_limit(request: dict[str, Any]) -> dict[str, Any]:
    """Features: the start rate a channel limited to ``limit``/s achieves, drained by
    ``processes`` × 4 workers (``bench/limits.py``); the value is tasks started per s."""
    import limits

    import simplepyq

    path, limit = request["path"], request["limit"]
    source = Path(simplepyq.__file__).resolve().parent.parent
    ratio, busiest, p50, p99 = limits.measure(_location(path), Path(path).parent, limit,
                                              request["processes"], request["windows"],
                                              source)
    return {"value": ratio * limit, "busiest": busiest, "p50": p50, "p99": p99}


def flow(request: dict[str, Any]) -> dict[str, Any]:
    """Features: a chain or a group with its callback of ``n`` no-op tasks, or the plain
    drain they are compared with (``bench/workflows.py``), timed from storing the tasks
    until the last is done; stops at the budget."""
    import workflows

    n = request["n"]
    seconds, done = workflows.timed(_location(request["path"]), request["workload"], n,
                                    request["workers"], timeout=request["budget"])
    return _rate(done, n, seconds)


if __name__ == "__main__":
    serve(Ours(), {"deep_template": deep_template, "multiprocess": multiprocess,
                   "multiprocess_child": multiprocess_child, "drop": drop,
                   "enqueue_keyed": enqueue_keyed, "drain_max_running": drain_max_running,
                   "rate_limit": rate_limit, "flow": flow})
