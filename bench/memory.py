"""Peak memory of a worker process as a function of how many tasks are queued.

Run: ``python bench/memory.py [counts...]`` (default 10,000 100,000 1,000,000).
For each count a store is filled beforehand, then a fresh process drains it with
one worker and reports its peak RSS. Claims are bounded batches, so the figure
must stop growing once SQLite's page caches are full.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from simplepyq import SimplePyQ

ROOT = Path(__file__).resolve().parent.parent
WORKER = """
import resource, sys
from simplepyq import SimplePyQ

with SimplePyQ(sys.argv[1]) as queue:
    queue.add_channel("c", lambda args: None)
    queue.run_until_complete()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def fill(path: Path, count: int) -> None:
    with SimplePyQ(path) as queue:
        queue.add_channel("c", print)
        for start in range(0, count, 100_000):
            queue.enqueue_many("c", range(min(100_000, count - start)))


def peak_mib(path: Path) -> int:
    out = subprocess.run([sys.executable, "-c", WORKER, str(path)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return int(out)


def main() -> None:
    counts = [int(arg) for arg in sys.argv[1:]] or [10_000, 100_000, 1_000_000]
    with tempfile.TemporaryDirectory() as directory:
        for count in counts:
            path = Path(directory) / f"{count}.db"
            fill(path, count)
            print(f"{count:>10,} queued: peak RSS of the worker {peak_mib(path)} MiB")


if __name__ == "__main__":
    main()
