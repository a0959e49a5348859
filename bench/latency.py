"""Enqueue-to-start latency (same process and from another process), the time from a
task's end in one process to ``wait()`` returning in another, and idle CPU use.

Run: ``python bench/latency.py``. Prints p50/p99 in milliseconds, and the CPU
time a started, idle queue uses per second of wall time (its own threads).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time

from simplepyq import SimplePyQ

SAMPLES = 200


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p50 = ordered[len(ordered) // 2] * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"


def same_process(path: str) -> list[float]:
    """Time from calling enqueue() to the function starting, with one idle worker."""
    started = threading.Event()
    stamp: list[float] = []

    def mark(args: object) -> None:
        stamp.append(time.perf_counter())
        started.set()

    samples = []
    with SimplePyQ(path) as queue:
        queue.add_channel("same", mark)
        queue.start()
        for _ in range(SAMPLES):
            started.clear()
            before = time.perf_counter()
            queue.enqueue("same", None)
            started.wait(5)
            samples.append(stamp[-1] - before)
            time.sleep(0.002)  # let the worker go idle again: idle latency is measured
    return samples


CHILD = """
import sys, time
from simplepyq import SimplePyQ
with SimplePyQ(sys.argv[1]) as q:
    for _ in range(int(sys.argv[2])):
        line = sys.stdin.readline()
        q.enqueue("cross", time.time())
        sys.stdout.write("ok\\n"); sys.stdout.flush()
"""


def other_process(path: str, count: int = 60) -> list[float]:
    """Time from another process's enqueue to the function starting here."""
    samples: list[float] = []
    started = threading.Event()

    def mark(sent: float) -> None:
        samples.append(time.time() - sent)
        started.set()

    with SimplePyQ(path) as queue:
        queue.add_channel("cross", mark)
        queue.start()
        child = subprocess.Popen([sys.executable, "-c", CHILD, path, str(count)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdin is not None and child.stdout is not None
        for _ in range(count):
            started.clear()
            time.sleep(random.uniform(0, 0.1))  # enqueue at any moment of the poll cycle
            child.stdin.write("go\n")
            child.stdin.flush()
            child.stdout.readline()
            started.wait(5)
        child.wait(10)
    return samples


WORKER = """
import sys, time
from simplepyq import SimplePyQ
with SimplePyQ(sys.argv[1]) as q:
    q.add_channel("waited", lambda args: time.time())
    q.start()
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()
"""


def waited_elsewhere(path: str, count: int = 60) -> list[float]:
    """Time from a task's end in a worker process to ``wait()`` returning in this one,
    which runs no worker: the task returns the time it ended."""
    samples: list[float] = []
    with SimplePyQ(path) as queue:
        queue.declare("waited")
        worker = subprocess.Popen([sys.executable, "-c", WORKER, path],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdout.readline()
        for _ in range(count):
            time.sleep(random.uniform(0, 0.1))  # at any moment of the poll cycle
            task = queue.wait(queue.enqueue("waited", None), timeout=10)
            samples.append(time.time() - task.result)
        worker.stdin.write("stop\n")
        worker.stdin.flush()
        worker.wait(10)
    return samples


def idle_cpu(path: str, seconds: float = 3.0) -> float:
    """Process CPU seconds per wall second while a started queue has nothing to do."""
    with SimplePyQ(path) as queue:
        queue.add_channel("idle", print, max_workers=4)
        queue.start()
        time.sleep(0.2)
        before_cpu, before_wall = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        return (time.process_time() - before_cpu) / (time.perf_counter() - before_wall)


def main() -> None:
    directory = tempfile.mkdtemp()
    print("same process:   ", _percentiles(same_process(os.path.join(directory, "a.db"))))
    print("other process:  ", _percentiles(other_process(os.path.join(directory, "b.db"))))
    print("wait() elsewhere:", _percentiles(waited_elsewhere(os.path.join(directory, "d.db"))))
    print(f"idle CPU:        {idle_cpu(os.path.join(directory, 'c.db')) * 100:.2f} % of a core")


if __name__ == "__main__":
    main()
