"""CPU instructions per task, counted by valgrind's callgrind: a figure noise cannot move.

Run: ``python bench/instructions.py`` (about a minute), or with ``--source DIR`` to
count the simplepyq package found in ``DIR`` instead of this checkout's, e.g. another
revision: ``git archive <rev> simplepyq | tar -x -C DIR``.

Three scenarios, on SQLite, each the harness's own adapter operation
(``bench/peers/ours.py``): one-call enqueues (W1), one ``enqueue_many`` call (W1b),
and a drain of no-op tasks by one worker (W2; the store is filled beforehand by a
process that is not counted). Each runs under ``valgrind --tool=callgrind`` in a fresh
process at two sizes; the difference of the two totals over the difference of the
sizes is the count per task, with the start-up (the interpreter, the imports, opening
the store) cancelled out. The totals are of every thread of the process.

An instruction count does not depend on how fast the machine runs, as wall time does,
so a regression of a few percent shows in one run. Only where the library itself acts
on time can it move: a draining worker sizes its claims by the time its tasks took, and
its housekeeper and the watch on the log wake on timers and on the file's writes. Under
callgrind a task takes about 75 times as long, so a process that other processes keep
off the CPU, or that waits for the disk, claims smaller batches and wakes more often:
the drain counted 123k per task on a quiet machine and 142k with four busy processes
on two cores. So the runs go one at a time, each store is on tmpfs (``/dev/shm``) and,
where allowed (root), each counted process runs at real-time priority (``SCHED_FIFO``),
which keeps it on a core of its own: then the drain's figure moves by under 1% from
run to run, loaded or not, and the enqueues' by under 0.1%. The table says whether
these held.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = ROOT / "bench" / "peers" / "ours.py"
SIZES = (1000, 6000)
SCENARIOS = {
    "enqueue": "one-call enqueue",
    "enqueue_many": "enqueue_many",
    "drain": "drain, 1 worker, no-op tasks",
}
NO_BUDGET = 1e9
"""The adapter's time budget: no limit, so that every run does all its tasks."""
TMPFS = Path("/dev/shm")
WARM_UP = 10
"""Tasks of a run before the counted ones, which writes the bytecode caches they read."""
DRAIN_RUNS = 2
"""Counts of each drain size, the lowest kept: a drain acts on time, and a run that a
timer caught doing more (at 906af25, once 900M more instructions for 1,000 tasks,
which made the figure negative) is the one to leave out."""


def available() -> bool:
    """Whether valgrind is installed (Debian: ``apt-get install valgrind``)."""
    return shutil.which("valgrind") is not None


def on_tmpfs() -> bool:
    """Whether the stores can live on tmpfs, where no commit waits for the disk."""
    return TMPFS.is_dir() and os.access(TMPFS, os.W_OK)


def _real_time() -> None:
    """In the counted process before it starts: real-time priority, if allowed."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))


def real_time_allowed() -> bool:
    """Whether this user may run a process at real-time priority (root may)."""
    done = subprocess.run([sys.executable, "-c", "import os; os.sched_setscheduler(0, "
                           "os.SCHED_FIFO, os.sched_param(1))"], capture_output=True, check=False)
    return done.returncode == 0


def conditions() -> str:
    """How the counted processes run here, for the tables."""
    where = "stores on tmpfs" if on_tmpfs() else "stores on disk (no /dev/shm)"
    how = ("each process alone at real-time priority" if real_time_allowed()
           else "each process alone, at normal priority (real-time not allowed)")
    return f"{where}, {how}"


def total(out: Path) -> int:
    """The instructions counted in a callgrind output file (its ``totals:`` line)."""
    for line in out.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def request(scenario: str, path: Path, n: int) -> dict[str, Any]:
    """The adapter request that runs ``scenario`` with ``n`` tasks on the store ``path``."""
    if scenario == "enqueue":
        return {"op": "enqueue", "path": str(path), "n": n, "budget": NO_BUDGET}
    if scenario == "enqueue_many":
        return {"op": "enqueue_many", "path": str(path), "n": n}
    return {"op": "drain", "path": str(path), "n": n, "workers": 1, "budget": NO_BUDGET}


def count(source: Path, scenario: str, n: int, workdir: Path, counted: bool = True) -> int:
    """Instructions one fresh process takes for ``scenario`` with ``n`` tasks, running
    the simplepyq in ``source`` with this Python, on a fresh store in ``workdir``; with
    ``counted`` False, the same run without valgrind (a warm-up), and 0."""
    path, out = workdir / f"{scenario}-{n}.db", workdir / f"{scenario}-{n}.callgrind"
    env = {key: value for key, value in os.environ.items()  # SQLite, default settings
           if not key.startswith("SIMPLEPYQ_BENCH_") and key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(source)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")  # compiled once, by the warm-up
    adapter = [sys.executable, str(ADAPTER)]
    valgrind = ["valgrind", "--tool=callgrind", "--collect-atstart=yes",
                f"--callgrind-out-file={out}"]
    try:
        if scenario == "drain":
            subprocess.run([*adapter, json.dumps({"op": "fill", "path": str(path), "n": n})],
                           env=env, cwd=workdir, capture_output=True, check=True, timeout=600)
        done = subprocess.run([*(valgrind if counted else []), *adapter,
                               json.dumps(request(scenario, path, n))],
                              env=env, cwd=workdir, capture_output=True, text=True,
                              check=False, timeout=900,
                              preexec_fn=_real_time if counted else None)
        result = (done.stdout.strip().splitlines() or ["{}"])[-1]
        if done.returncode != 0 or json.loads(result).get("done") != n:
            raise RuntimeError(f"{scenario} of {n} under callgrind failed: "
                               f"{(done.stderr.strip().splitlines() or [result])[-1]}")
        return total(out) if counted else 0
    finally:
        out.unlink(missing_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def per_task(source: Path, sizes: tuple[int, int] = SIZES,
             log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Instructions per task of each scenario: (count at the larger size - count at the
    smaller) ÷ (the difference of the sizes), each count a fresh process."""
    small, large = sizes
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="simplepyq-instructions-",
                                     dir=TMPFS if on_tmpfs() else None) as folder:
        for scenario in SCENARIOS:
            count(source, scenario, WARM_UP, Path(folder), counted=False)
            runs = DRAIN_RUNS if scenario == "drain" else 1
            counts = [min(count(source, scenario, n, Path(folder)) for _ in range(runs))
                      for n in (small, large)]
            figures[scenario] = (counts[1] - counts[0]) / (large - small)
            if log is not None:
                log(f"{SCENARIOS[scenario]:<30} {counts[0]:>14,} ({small:,} tasks) "
                    f"{counts[1]:>14,} ({large:,}) → {figures[scenario] / 1000:.1f}k per task")
    return figures


def thousands(value: float) -> str:
    """Instructions as the tables show them: ``123.4k``."""
    return f"{value / 1000:.1f}k"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="directory holding the simplepyq package to count "
                        "(default: this checkout)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="the two task counts, comma-separated (default %(default)s)")
    args = parser.parse_args()
    small, large = (int(n) for n in args.sizes.split(","))
    if not large > small > 0:
        parser.error(f"--sizes needs two task counts, the second larger: {args.sizes!r}")
    if not available():
        parser.error("valgrind is not installed (Debian: apt-get install -y valgrind)")
    if not (args.source / "simplepyq").is_dir():
        parser.error(f"no simplepyq package in {args.source}")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    figures = per_task(args.source.resolve(), (small, large), log)
    print(f"simplepyq in {args.source}: instructions per task, callgrind, SQLite, "
          f"(count at {large:,} tasks - count at {small:,}) ÷ {large - small:,}; "
          f"{conditions()}\n")
    print("| scenario | instructions per task |")
    print("|---|---|")
    for scenario, label in SCENARIOS.items():
        print(f"| {label} | {thousands(figures[scenario])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
