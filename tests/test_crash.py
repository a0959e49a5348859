"""kill -9 at random moments: nothing is lost, and only killed runs are ever repeated.

Worker processes drain one store (a SQLite file, or a PostgreSQL schema) while the
test SIGKILLs them at random moments (starting up, claiming, mid-task, committing an
outcome) and starts replacements.
Every run of a task appends "start" and "end" lines to one O_APPEND log outside
the store, one write per line, so the log is a witness the store cannot rewrite.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import msgpack

from simplepyq import SimplePyQ
from tests.backends import raw_sql
from tests.soak import SOAKING, report, scaled
from tests.support import read_runs, spawn_python, wait_until

# Drains channel "c" with 4 workers; each run logs "start ID PID TIME" and
# "end ID PID TIME". Tasks take 0-9 ms so that kills land mid-task too. argv: store, log file.
WORKER = """
    import os, sys, time
    from simplepyq import SimplePyQ

    log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def work(task_id):
        os.write(log, f"start {task_id} {os.getpid()} {time.time()!r}\\n".encode())
        time.sleep(0.001 * (task_id % 10))
        os.write(log, f"end {task_id} {os.getpid()} {time.time()!r}\\n".encode())
        return task_id

    with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=4)
        q.run_until_complete(timeout=600)
"""


@dataclass
class Crew:
    """The worker processes of one test, and when each killed one was killed."""

    store: str
    log: Path
    live: list[subprocess.Popen[str]] = field(default_factory=list)
    killed_at: dict[int, float] = field(default_factory=dict)
    started: int = 0
    exited: list[subprocess.Popen[str]] = field(default_factory=list)

    def spawn(self) -> None:
        self.live.append(spawn_python(WORKER, self.store, str(self.log)))
        self.started += 1

    def kill_one(self, rng: random.Random) -> None:
        child = self.live.pop(rng.randrange(len(self.live)))
        self.killed_at[child.pid] = time.time()  # taken before the kill: the rerun comes after
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)

    def reap_finished(self) -> None:
        for child in [c for c in self.live if c.poll() is not None]:
            self.live.remove(child)
            self.exited.append(child)
            _, err = child.communicate(timeout=60)
            assert child.returncode == 0, f"worker {child.pid} failed:\n{err}"

    def all_finished(self) -> bool:
        """Reap the workers that exited; whether none is left running."""
        self.reap_finished()
        return not self.live

    def kill_all(self) -> None:
        for child in self.live:
            child.kill()
            child.communicate(timeout=60)


def test_workers_killed_at_random_moments_lose_nothing_and_rerun_only_killed_runs(
    store_path: str, tmp_path: Path
) -> None:
    total, kills, width = scaled(2000), scaled(15), 3
    rng = random.Random(20240611 if not SOAKING else None)
    with SimplePyQ(store_path) as q:
        q.add_channel("c", lambda args: args)
        ids = q.enqueue_many("c", range(1, total + 1))
    assert ids == list(range(1, total + 1))  # so each task's args are its id

    crew = Crew(store_path, tmp_path / "runs.log")
    try:
        for _ in range(width):
            crew.spawn()
        # Kill while there is work left; a kill may land before a child even opens the store.
        while len(crew.killed_at) < kills and _unfinished(store_path) > 0:
            time.sleep(rng.uniform(0.02, 0.3))
            crew.reap_finished()
            if crew.live:
                crew.kill_one(rng)
            crew.spawn()
        # The survivors and replacements finish the work and return from run_until_complete.
        wait_until(crew.all_finished, timeout=300, interval=0.05)
    finally:
        crew.kill_all()

    runs = read_runs(crew.log)
    rows = raw_sql(store_path, "SELECT id, status, result, error FROM tasks")
    assert len(rows) == total
    assert {task_id for task_id, *_ in rows} == set(ids)
    # Every task is done, but for those failed by the crash-loop rule: three processes
    # that ran it were killed in a row, the last two while it ran alone. At this kill
    # rate (one every 0.02-0.3 s, mostly just after a process started, when it runs the
    # recovered tasks one by one) that can happen by chance; every run of such a task
    # was in a process the test killed.
    looped = {task_id for task_id, status, _, error in rows
              if status == "failed" and "times in a row while running it" in (error or "")}
    assert {status for task_id, status, *_ in rows if task_id not in looped} == {"done"}, (
        "lost or stuck tasks")
    assert all(msgpack.unpackb(result) == task_id for task_id, status, result, _ in rows
               if status == "done")
    for task_id in looped:
        assert all(run.pid in crew.killed_at for run in runs[task_id]), (
            f"task {task_id} failed as a crash loop, but a live process ran it")

    repeated = 0
    for task_id in sorted(set(ids) - looped):
        executions = runs[task_id]
        assert executions, f"task {task_id} is done but never ran"
        *earlier, last = executions
        assert last.ended, f"task {task_id}: its recorded run never ended"
        for before, after in pairwise(executions):
            # Ran again only because the process of the earlier run was killed,
            # and only after that kill: never two runs of one task at a time.
            assert before.pid in crew.killed_at, (
                f"task {task_id} ran again after run by live pid {before.pid}")
            assert after.started >= crew.killed_at[before.pid]
        repeated += len(earlier)
    mid_task = sum(1 for task_id in set(ids) - looped for run in runs[task_id] if not run.ended)
    report("crash", tasks=total, kills=len(crew.killed_at), processes=crew.started,
           reruns=repeated, killed_mid_task=mid_task,
           killed_after_end_before_commit=repeated - mid_task, duplicates=0, lost=0,
           failed_as_crash_loops=len(looped))
    assert len(crew.killed_at) >= min(kills, 3)  # the test did kill


def _unfinished(store_path: str) -> int:
    (count,), = raw_sql(store_path,
                        "SELECT COUNT(*) FROM tasks WHERE status NOT IN ('done', 'failed')")
    return int(count)


def test_the_log_is_written_one_whole_line_per_write(tmp_path: Path) -> None:
    """The witness itself: concurrent O_APPEND writers never interleave within a line."""
    log = tmp_path / "witness.log"
    code = """
        import os, sys
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        for n in range(2000):
            os.write(fd, f"start {n} {os.getpid()} 1.0\\n".encode())
    """
    writers = [spawn_python(code, str(log)) for _ in range(3)]
    for writer in writers:
        writer.communicate(timeout=60)
        assert writer.returncode == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 6000
    assert all(len(line.split()) == 4 for line in lines)
    assert os.path.getsize(log) == sum(len(line) + 1 for line in lines)
