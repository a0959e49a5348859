"""The workloads, written once against a small adapter interface each library implements.

An adapter script (``ours.py``, ``huey_sqlite.py``, ...) subclasses ``Adapter`` with
that library's idiomatic calls and ends with ``serve(TheAdapter())``. The harness
(``bench/run.py``) runs it as ``python <adapter>.py '<json request>'``; the script
prints one JSON object on its last line of stdout. Every timed operation takes a
``budget`` in seconds: a library too slow to finish in time stops there and reports
the rate over what it did, flagged ``partial``, so one slow peer cannot eat the run.
"""

from __future__ import annotations

import json
import random
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

Work = Callable[[Any], None]
Stop = Callable[[], None]


class Unsupported(Exception):
    """The library has no way to do this workload; the harness prints it as '—'."""


class Producer(Protocol):
    """A handle that enqueues one task per ``put``; ``close`` releases it."""

    def put(self, args: Any) -> None: ...

    def close(self) -> None: ...


class Adapter:
    """One library's idiomatic use. Override what the library can do; the rest is '—'."""

    def producer(self, path: str) -> Producer:
        """A handle enqueuing tasks into the store at ``path``, one call each."""
        raise Unsupported

    def put_many(self, path: str, items: list[int]) -> None:
        """Enqueue all ``items`` with the library's batch API (timed as one call)."""
        raise Unsupported

    def prepare(self, path: str) -> None:
        """Set up the store before a timed batch enqueue (untimed): a PostgreSQL peer
        creates its schema here. By default there is nothing to do."""

    def fill(self, path: str, n: int) -> None:
        """Put ``n`` tasks in the store as fast as possible (untimed set-up for drains)."""
        producer = self.producer(path)
        try:
            for i in range(n):
                producer.put(i)
        finally:
            producer.close()

    def consume(self, path: str, work: Work, workers: int) -> Stop:
        """Start ``workers`` threads running ``work(args)`` for each task; return a stop."""
        raise Unsupported

    def ready(self, path: str, work: Work, workers: int) -> Callable[[], Stop]:
        """What ``consume`` sets up before its workers start (connections, pools), done
        before a drain's clock starts; the returned callable starts them."""
        return lambda: self.consume(path, work, workers)

    def unfinished(self, path: str) -> int:
        """How many tasks the store does not yet record as finished."""
        raise Unsupported

    def drain(self, path: str, n: int, workers: int, budget: float) -> dict[str, Any]:
        """Run the ``n`` tasks already in the store; the time until all are recorded done.

        The clock runs from starting the workers until every task has run and the
        store records none unfinished (so an acknowledgement after the function is
        included).
        """
        counter = Counter(n)
        start = self.ready(path, counter.hit, workers)
        started = time.perf_counter()
        stop = start()
        deadline = started + budget
        done = 0
        if counter.reached.wait(budget):
            left = self.unfinished(path)
            while left and time.perf_counter() < deadline:
                time.sleep(0.001)
                left = self.unfinished(path)
            done = n - left
        elapsed = time.perf_counter() - started
        runs = counter.count
        stop()
        return {"done": done or min(runs, n), "seconds": elapsed, "runs": runs}


class Counter:
    """Counts task runs from any thread; ``reached`` is set at the ``target``-th run."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.reached = threading.Event()
        self._lock = threading.Lock()

    def hit(self, args: Any) -> None:
        with self._lock:
            self.count += 1
            if self.count >= self.target:
                self.reached.set()


# -- the workloads ----------------------------------------------------------------
def op_enqueue(adapter: Adapter, request: dict[str, Any]) -> dict[str, Any]:
    """W1: ``n`` enqueues, one call each (stops early at the budget)."""
    n, budget = request["n"], request["budget"]
    producer = adapter.producer(request["path"])
    done = 0
    started = time.perf_counter()
    deadline = started + budget
    try:
        while done < n:
            producer.put(done)
            done += 1
            if done % 100 == 0 and time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - started
    finally:
        producer.close()
    return _rate(done, n, elapsed)


def op_enqueue_many(adapter: Adapter, request: dict[str, Any]) -> dict[str, Any]:
    """W1b: ``n`` tasks through the library's batch API, one call."""
    n = request["n"]
    items = list(range(n))
    adapter.prepare(request["path"])
    started = time.perf_counter()
    adapter.put_many(request["path"], items)
    return _rate(n, n, time.perf_counter() - started)


def op_fill(adapter: Adapter, request: dict[str, Any]) -> dict[str, Any]:
    """Set-up for drains: ``n`` pending tasks, written by a process of its own."""
    started = time.perf_counter()
    adapter.fill(request["path"], request["n"])
    return {"seconds": time.perf_counter() - started}


def op_drain(adapter: Adapter, request: dict[str, Any]) -> dict[str, Any]:
    """W2/W4: drain the tasks a fill left; also the peak RSS of this worker process."""
    n = request["n"]
    outcome = adapter.drain(request["path"], n, request["workers"], request["budget"])
    result = _rate(outcome["done"], n, outcome["seconds"])
    result["runs"] = outcome["runs"]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def op_latency_same(adapter: Adapter, request: dict[str, Any]) -> dict[str, Any]:
    """W3: enqueue → function start, enqueued in this process, to an idle worker."""
    started_at: list[float] = []
    started = threading.Event()

    def mark(args: Any) -> None:
        started_at.append(time.perf_counter())
        started.set()

    stop = adapter.consume(request["path"], mark, 1)
    producer = adapter.producer(request["path"])
    samples: list[float] = []
    deadline = time.perf_counter() + request["budget"]
    try:
        time.sleep(0.2)  # let the worker settle into its idle wait
        while len(samples) < request["samples"] and time.perf_counter() < deadline:
            started.clear()
            before = time.perf_counter()
            producer.put(0)
            if not started.wait(_wait_limit(deadline, samples)):
                break
            samples.append(started_at[-1] - before)
            time.sleep(random.uniform(0.002, 0.05))  # idle again, at any point of a poll cycle
    finally:
        producer.close()
        stop()
    return _latency(samples)


def op_latency_other(adapter: Adapter, request: dict[str, Any],
                     script: str) -> dict[str, Any]:
    """W3: enqueue → function start, enqueued by another process, to an idle worker."""
    samples: list[float] = []
    started = threading.Event()

    def mark(sent: Any) -> None:
        samples.append(time.time() - float(sent))
        started.set()

    path = request["path"]
    stop = adapter.consume(path, mark, 1)
    child = subprocess.Popen(
        [sys.executable, script, json.dumps({"op": "enqueue_child", "path": path})],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    deadline = time.perf_counter() + request["budget"]
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the enqueuing child did not start")
        while len(samples) < request["samples"] and time.perf_counter() < deadline:
            started.clear()
            time.sleep(random.uniform(0.0, 0.1))  # enqueue at any moment of a poll cycle
            child.stdin.write("go\n")
            child.stdin.flush()
            child.stdout.readline()
            if not started.wait(_wait_limit(deadline, samples)):
                break
    finally:
        child.stdin.close()
        child.wait(30)
        stop()
    return _latency(samples)


def op_enqueue_child(adapter: Adapter, request: dict[str, Any]) -> dict[str, Any]:
    """The other process of W3: enqueues its wall-clock time on each line of stdin."""
    producer = adapter.producer(request["path"])
    try:
        print("ready", flush=True)
        for _line in sys.stdin:
            producer.put(time.time())
            print("ok", flush=True)
    finally:
        producer.close()
    return {}


OPS: dict[str, Callable[[Adapter, dict[str, Any]], dict[str, Any]]] = {
    "enqueue": op_enqueue,
    "enqueue_many": op_enqueue_many,
    "fill": op_fill,
    "drain": op_drain,
    "latency_same": op_latency_same,
    "enqueue_child": op_enqueue_child,
}


def serve(adapter: Adapter, extra: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]
          | None = None) -> None:
    """Run the request given as argv[1] and print the result as one JSON line."""
    request: dict[str, Any] = json.loads(sys.argv[1])
    op = request["op"]
    try:
        if extra and op in extra:
            result = extra[op](request)
        elif op == "latency_other":
            result = op_latency_other(adapter, request, sys.argv[0])
        elif op in OPS:
            result = OPS[op](adapter, request)
        else:
            raise Unsupported
    except Unsupported:
        result = {"unsupported": True}
    if op != "enqueue_child":
        print(json.dumps(result), flush=True)


# -- helpers -------------------------------------------------------------------
def start_threads(loop: Callable[[threading.Event], None], count: int,
                  cleanup: Callable[[], None] | None = None) -> Stop:
    """Start ``count`` threads running ``loop(stopping)``; the stop sets it and joins them."""
    stopping = threading.Event()
    threads = [threading.Thread(target=loop, args=(stopping,)) for _ in range(count)]
    for thread in threads:
        thread.start()

    def stop() -> None:
        stopping.set()
        for thread in threads:
            thread.join()
        if cleanup is not None:
            cleanup()

    return stop


def count_rows(path: str, sql: str, params: tuple[Any, ...] = ()) -> int:
    """The single integer ``sql`` selects from the SQLite file at ``path``."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _wait_limit(deadline: float, samples: list[float]) -> float:
    """How long to wait for the next start: the budget left, but the first sample is
    always waited for (up to 5 s), so a library slower than the budget still has one."""
    return max(deadline - time.perf_counter(), 0.0 if samples else 5.0)


def _rate(done: int, n: int, seconds: float) -> dict[str, Any]:
    return {"value": done / seconds if seconds > 0 else 0.0, "done": done, "n": n,
            "seconds": seconds, "partial": done < n}


def _latency(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"value": None, "samples": 0, "partial": True}
    return {"value": percentile(samples, 0.5) * 1000, "p99": percentile(samples, 0.99) * 1000,
            "samples": len(samples)}
