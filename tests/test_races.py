"""Many processes racing on one store: every task runs exactly once, and nobody sees a lock.

Four processes of four workers each drain one store while a fifth keeps
enqueuing (single tasks and batches). Each run appends "ID PID" to an O_APPEND
log; every process must exit cleanly with nothing on stderr.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from simplepyq import SimplePyQ
from tests.backends import raw_sql
from tests.soak import report, scaled
from tests.support import finish_all, spawn_python

# Runs channel "c" with 4 workers until the enqueuer has finished and every task
# is done. argv: store, log file, the enqueuer's "finished" mark.
DRAINER = """
    import os, pathlib, sys, time
    from simplepyq import SimplePyQ

    log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def work(task_id):
        os.write(log, f"{task_id} {os.getpid()}\\n".encode())
        return task_id

    with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=4)
        q.start()
        deadline = time.monotonic() + 600
        while not pathlib.Path(sys.argv[3]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        q.run_until_complete(timeout=600)
"""

# Enqueues tasks numbered FIRST..LAST (args = number) in single enqueues and in
# batches, then creates the "finished" mark. argv: store, first, last, mark.
ENQUEUER = """
    import pathlib, sys
    from simplepyq import SimplePyQ

    first, last = int(sys.argv[2]), int(sys.argv[3])
    with SimplePyQ(sys.argv[1]) as q:
        number = first
        while number <= last:
            if number % 3:
                q.enqueue("c", number)
                number += 1
            else:
                batch = list(range(number, min(number + 50, last + 1)))
                q.enqueue_many("c", batch)
                number += len(batch)
    pathlib.Path(sys.argv[4]).touch()
"""


def test_four_processes_of_four_workers_run_each_task_once_while_another_enqueues(
    store_path: str, tmp_path: Path
) -> None:
    total = scaled(4000)
    upfront = total // 2
    with SimplePyQ(store_path) as q:
        q.add_channel("c", lambda args: args)
        q.enqueue_many("c", range(1, upfront + 1))
    log, mark = tmp_path / "runs.log", tmp_path / "enqueued"
    children = [spawn_python(DRAINER, store_path, str(log), str(mark)) for _ in range(4)]
    children.append(spawn_python(ENQUEUER, store_path, str(upfront + 1), str(total), str(mark)))
    outputs = finish_all(children, timeout=600)

    # Nothing reached user code or the log: no "database is locked", no StoreError.
    assert [(child.returncode, err) for child, (_, err) in zip(children, outputs, strict=True)] \
        == [(0, "")] * len(children)
    pids = {child.pid for child in children[:4]}
    runs: Counter[int] = Counter()
    for line in log.read_text().splitlines():
        number, pid = map(int, line.split())
        assert pid in pids
        runs[number] += 1
    duplicates = sum(count - 1 for count in runs.values())
    lost = total - len(runs)
    report("races", tasks=total, processes=len(children), workers=16, duplicates=duplicates,
           lost=lost)
    assert runs == Counter(range(1, total + 1))
    assert raw_sql(store_path, "SELECT status, attempts, COUNT(*) FROM tasks GROUP BY 1, 2") \
        == [("done", 1, total)]
    assert raw_sql(store_path, "SELECT COUNT(DISTINCT args) FROM tasks") == [(total,)]
