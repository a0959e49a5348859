"""Crash recovery: tasks of dead processes run again; tasks of live ones are never taken.

The crashes are real: child interpreters are killed with SIGKILL mid-task. Remote
hosts are simulated by writing their rows in ``simplepyq_owners`` with raw SQL.
Every test runs on both backends, but the one about PostgreSQL's row locks: how a
recovery and a claim of the same owner, on two connections, follow each other.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import msgpack
import pytest

from simplepyq import SimplePyQ, Task, policy
from simplepyq.storage.base import Outcome, Owner
from tests.backends import blocked_by, raw_sql, split_location
from tests.support import finish_all, spawn_python, wait_until

# Runs channel "c" with N workers whose task marks that it started, then blocks forever.
# argv: store, directory for "started" marks, N.
BLOCKED_FOREVER = """
    import pathlib, sys, threading
    from simplepyq import SimplePyQ

    def block(args):
        pathlib.Path(sys.argv[2], str(args)).touch()
        threading.Event().wait()

    q = SimplePyQ(sys.argv[1])
    q.add_channel("c", block, max_workers=int(sys.argv[3]))
    q.run_until_complete(timeout=120)  # the test kills it long before; no orphan outlives this
"""

# Runs channel "c"; its task marks that it started and returns once a release file exists.
# argv: store, "started" mark, release file. lease=3600: it heartbeats only at start.
BLOCKED_UNTIL_RELEASED = """
    import pathlib, sys, time
    from simplepyq import SimplePyQ

    def until_released(args):
        pathlib.Path(sys.argv[2]).touch()
        while not pathlib.Path(sys.argv[3]).exists():
            time.sleep(0.01)
        return "finished by its own process"

    with SimplePyQ(sys.argv[1], lease=3600) as q:
        q.add_channel("c", until_released)
        q.run_until_complete(timeout=60)
"""

# Drains channel "c" with 4 workers, appending "task_id pid" per run to a log file.
# argv: store, log file. The args of every task are its own id.
DRAINER = """
    import os, sys
    from simplepyq import SimplePyQ

    log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def work(task_id):
        os.write(log, f"{task_id} {os.getpid()}\\n".encode())

    with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=4)
        q.run_until_complete(timeout=60)
"""

REMOTE_HOST = "far-away-host"


def _nothing(args: object) -> None:
    """A channel function for queues that only enqueue."""


def _enqueue(store_path: str, *args_list: object) -> list[int]:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", _nothing)
        return [int(task_id) for task_id in q.enqueue_many("c", args_list)]


@contextmanager
def _blocked_child(store_path: str, tmp_path: Path, started: int,
                   workers: int = 1) -> Iterator[subprocess.Popen[str]]:
    """A child process running ``started`` tasks of channel "c" that never end.

    Yields once they have all started; on exit kills the child (if the test did
    not) and reaps it.
    """
    marks = tmp_path / "started"
    marks.mkdir()
    child = spawn_python(BLOCKED_FOREVER, store_path, str(marks), str(workers))
    try:
        wait_until(lambda: len(list(marks.iterdir())) >= started or child.poll() is not None,
                   timeout=30)
        assert child.poll() is None, child.communicate()[1]
        yield child
    finally:
        child.kill()
        child.communicate(timeout=30)


def _rerun_with_lease_3600(store_path: str, task_id: int) -> tuple[Task, list[str | None]]:
    """Run channel "c" to completion in this process; the task and its error as each run saw it."""
    errors_seen: list[str | None] = []
    with SimplePyQ(store_path, lease=3600) as q:

        def rerun(args: object) -> str:
            errors_seen.append(q.get_task(task_id).error)  # type: ignore[union-attr]
            return f"rerun {args}"

        q.add_channel("c", rerun)
        q.run_until_complete(timeout=30)
        task = q.get_task(task_id)
    assert task is not None
    return task, errors_seen


def test_task_killed_mid_run_is_run_again_at_once_by_the_next_process(
    store_path: str, tmp_path: Path
) -> None:
    (task_id,) = _enqueue(store_path, "job")
    with _blocked_child(store_path, tmp_path, started=1) as child:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)

    # lease=3600: only the dead-pid check on this host can recover it within the timeout.
    task, errors_seen = _rerun_with_lease_3600(store_path, task_id)

    assert (task.status, task.result, task.attempts) == ("done", "rerun job", 2)
    (note,) = errors_seen  # the error field as the second run found it
    assert note is not None
    assert note.startswith("recovered")
    assert f":{child.pid}:" in note  # names the dead worker


def test_task_of_a_killed_process_not_yet_reaped_is_recovered(
    store_path: str, tmp_path: Path
) -> None:
    (task_id,) = _enqueue(store_path, "zombie")
    with _blocked_child(store_path, tmp_path, started=1) as child:
        child.send_signal(signal.SIGKILL)
        wait_until(lambda: _proc_state(child.pid) == "Z", timeout=10)

        task, _ = _rerun_with_lease_3600(store_path, task_id)

        assert _proc_state(child.pid) == "Z"  # recovered while the pid still exists
    assert (task.status, task.result, task.attempts) == ("done", "rerun zombie", 2)


def test_run_until_complete_after_a_crash_returns_with_every_task_done(
    store_path: str, tmp_path: Path
) -> None:
    ids = _enqueue(store_path, "a", "b", "c", "d")
    with _blocked_child(store_path, tmp_path, started=2, workers=2) as child:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert _statuses(store_path) == Counter({"running": 2, "pending": 2})

    with SimplePyQ(store_path) as q:  # the default lease (30 s) outlasts the timeout
        q.add_channel("c", lambda args: args)
        q.run_until_complete(timeout=20)
        tasks = [q.get_task(task_id) for task_id in ids]

    assert [(t.status, t.result) for t in tasks if t] == [
        ("done", "a"), ("done", "b"), ("done", "c"), ("done", "d")]
    assert sorted(t.attempts for t in tasks if t) == [1, 1, 2, 2]


def test_task_of_a_live_process_is_never_taken_however_long_it_runs(
    store_path: str, tmp_path: Path
) -> None:
    (task_id,) = _enqueue(store_path, "long")
    started, release = tmp_path / "started", tmp_path / "release"
    child = spawn_python(BLOCKED_UNTIL_RELEASED, store_path, str(started), str(release))
    try:
        wait_until(lambda: started.exists() or child.poll() is not None, timeout=30)
        assert child.poll() is None, child.communicate()[1]
        assert _status_and_owner_pid(store_path, task_id) == ("running", child.pid)
        lease = 0.2
        with SimplePyQ(store_path, lease=lease, poll_interval=0.01) as q:
            q.add_channel("canary", lambda args: "recovered")
            q.start()
            # Each canary is a task of a dead remote owner, written after the previous
            # one was recovered, so each proves one more recovery sweep. Sweeps come at
            # most every lease/3: 15 of them span more than 4 leases.
            for number in range(15):
                canary = _insert_running_task(store_path, "canary", f"far:{number}:dead",
                                              heartbeat_at=time.time() - 3600)
                assert q.wait(canary, timeout=10).result == "recovered"
                assert _status_and_owner_pid(store_path, task_id) == ("running", child.pid)
            # Its heartbeat is older than our lease: only the live pid protects it.
            assert _heartbeat_of_pid(store_path, child.pid) < time.time() - lease

            release.touch()
            task = q.wait(task_id, timeout=30)
        assert (task.status, task.result, task.attempts) == (
            "done", "finished by its own process", 1)
    finally:
        release.touch()
        _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err


def test_task_of_another_host_is_recovered_only_once_its_heartbeat_is_older_than_the_lease(
    store_path: str,
) -> None:
    lease = 30.0
    SimplePyQ(store_path).close()  # creates the store
    fresh_id = _insert_running_task(store_path, "c", "far:1:fresh", heartbeat_at=time.time())
    stale_id = _insert_running_task(store_path, "c", "far:2:stale",
                                    heartbeat_at=time.time() - lease - 5)
    ids = {"fresh": fresh_id, "stale": stale_id}
    errors_seen: dict[str, str | None] = {}
    with SimplePyQ(store_path, lease=lease, poll_interval=0.01) as q:

        def run(args: str) -> str:
            errors_seen[args] = q.get_task(ids[args]).error  # type: ignore[union-attr]
            return f"ran {args}"

        q.add_channel("c", run)
        q.start()  # sweeps once before returning: it judged both remote owners

        stale = q.wait(stale_id, timeout=10)
        assert _status_and_owner(store_path, fresh_id) == ("running", "far:1:fresh")

        raw_sql(store_path, "UPDATE simplepyq_owners SET heartbeat_at = ? WHERE owner = ?",
                (time.time() - lease - 1, "far:1:fresh"))
        fresh = q.wait(fresh_id, timeout=30)

    assert (stale.status, stale.result, stale.attempts) == ("done", "ran stale", 2)
    assert (fresh.status, fresh.result, fresh.attempts) == ("done", "ran fresh", 2)
    assert "far:2:stale" in (errors_seen["stale"] or "")
    assert "far:1:fresh" in (errors_seen["fresh"] or "")


def test_running_task_without_an_owner_is_recovered_at_start(store_path: str) -> None:
    (task_id,) = _enqueue(store_path, "orphan")
    # As 0.1.3 leaves a crashed task in a SQLite file: running, with no owner.
    raw_sql(store_path, "UPDATE tasks SET status = 'running', owner = NULL WHERE id = ?",
            (task_id,))
    with SimplePyQ(store_path, lease=3600) as q:
        q.add_channel("other", _nothing)
        q.start()  # no worker here runs channel "c": the task waits, recovered
        recovered = q.get_task(task_id)
        q.add_channel("c", lambda args: f"ran {args}")
        done = q.wait(task_id, timeout=10)
    assert recovered is not None
    assert recovered.status == "pending"
    assert (recovered.error or "").startswith("recovered")
    assert (done.status, done.result, done.attempts) == ("done", "ran orphan", 1)


def test_worker_given_up_for_dead_cannot_overwrite_the_rerun(store_path: str) -> None:
    (task_id,) = _enqueue(store_path, "x")
    with SimplePyQ(store_path) as q:
        store = q._store
        (claimed,) = store.exchange("ghost", [], "c", 1, time.time()).claimed
        ghost = Owner("ghost", None, None, None, None)  # as judged: no row, no heartbeat
        assert store.recover([ghost], "recovered: test", time.time(), 3) == 1
        (again,) = store.exchange("heir", [], "c", 1, time.time()).claimed
        done = Outcome(task_id, policy.succeeded(0, None, time.time()))
        assert store.exchange("ghost", [done], None, 0, time.time()).dropped == [task_id]
        assert store.exchange("heir", [done], None, 0, time.time()).dropped == []
        assert (claimed.id, again.id) == (task_id, task_id)
        assert q.get_task(task_id).attempts == 2  # type: ignore[union-attr]


def test_owner_that_wrote_a_heartbeat_after_it_was_judged_dead_keeps_its_tasks(
    store_path: str,
) -> None:
    (task_id,) = _enqueue(store_path, "x")
    with SimplePyQ(store_path) as q:
        store = q._store
        store.register_owner("far:1:frozen", REMOTE_HOST, 1, None, time.time())
        (claimed,) = store.exchange("far:1:frozen", [], "c", 1, time.time()).claimed
        raw_sql(store_path, "UPDATE simplepyq_owners SET heartbeat_at = ?",
                (time.time() - 3600,))
        (judged,) = store.running_owners()  # by a heartbeat an hour old: dead
        # It wakes up and beats before the recovery commits:
        store.register_owner("far:1:frozen", REMOTE_HOST, 1, None, time.time())
        kept = store.recover([judged], "recovered: test", time.time(), 3)
        after_beat = _status_and_owner(store_path, task_id)
        (judged_again,) = store.running_owners()  # and, were it silent again, ...
        raw_sql(store_path, "UPDATE simplepyq_owners SET heartbeat_at = ?",
                (time.time() - 3600,))
        (silent,) = store.running_owners()
        taken = store.recover([silent], "recovered: test", time.time(), 3)
    assert (claimed.id, kept, after_beat) == (task_id, 0, ("running", "far:1:frozen"))
    assert judged_again.heartbeat_at is not None and judged.heartbeat_at is not None
    assert judged_again.heartbeat_at > judged.heartbeat_at
    assert taken == 1
    assert _status_and_owner(store_path, task_id) == ("pending", None)
    assert raw_sql(store_path, "SELECT owner FROM simplepyq_owners") == []


def test_claim_by_an_owner_given_up_for_dead_writes_its_owner_row_again_in_its_transaction(
    store_path: str,
) -> None:
    first, second = _enqueue(store_path, "first", "second")
    with SimplePyQ(store_path) as q:
        store = q._store
        store.register_owner("far:1:back", REMOTE_HOST, 7, "123", time.time(), renew_after=30)
        store.exchange("far:1:back", [], "c", 1, time.time())
        (judged,) = store.running_owners()
        assert store.recover([judged], "recovered: test", time.time(), 3) == 1
        assert raw_sql(store_path, "SELECT owner FROM simplepyq_owners") == []
        # It was only frozen: it wakes up and claims before its next heartbeat.
        before = time.time()
        (claimed,) = store.exchange("far:1:back", [], "c", 1, time.time()).claimed
        (owner,) = store.running_owners()
    assert claimed.id == first
    assert _status_and_owner(store_path, second) == ("pending", None)
    # Its new task runs under a registered owner with a fresh heartbeat, not under an
    # owner without a row (which the next sweep would take for dead at once).
    assert (owner.owner, owner.host, owner.pid, owner.pid_start) == (
        "far:1:back", REMOTE_HOST, 7, "123")
    assert owner.heartbeat_at is not None and owner.heartbeat_at >= before


def test_claim_renews_a_heartbeat_older_than_renew_after_and_leaves_a_younger_one(
    store_path: str,
) -> None:
    _enqueue(store_path, "a", "b")
    with SimplePyQ(store_path) as q:
        store = q._store
        store.register_owner("far:1:late", REMOTE_HOST, 1, None, time.time(), renew_after=5)
        young = time.time() - 1
        raw_sql(store_path, "UPDATE simplepyq_owners SET heartbeat_at = ?", (young,))
        store.exchange("far:1:late", [], "c", 1, time.time())
        after_young = raw_sql(store_path, "SELECT heartbeat_at FROM simplepyq_owners")
        old = time.time() - 10
        raw_sql(store_path, "UPDATE simplepyq_owners SET heartbeat_at = ?", (old,))
        before = time.time()
        store.exchange("far:1:late", [], "c", 1, time.time())
        after_old = raw_sql(store_path, "SELECT heartbeat_at FROM simplepyq_owners")
    assert after_young == [(young,)]  # a claim writes nothing more when it need not
    ((renewed,),) = after_old
    assert renewed >= before


@pytest.mark.postgres_only
def test_recovery_waits_for_a_claim_in_flight_and_takes_back_what_it_claimed(
    store_path: str,
) -> None:
    import psycopg

    first, second = _enqueue(store_path, "first", "second")
    url, schema = split_location(store_path)
    with SimplePyQ(store_path) as q, ThreadPoolExecutor(2) as pool, \
            psycopg.connect(url, options=f"-c search_path={schema}") as blocker:
        store = q._store
        store.register_owner("far:1:o", REMOTE_HOST, 1, None, time.time(), renew_after=3600)
        store.exchange("far:1:o", [], "c", 1, time.time())
        (judged,) = store.running_owners()
        # A third connection holds the first task's row, so that the claim below
        # stops after it has taken its owner row, while recording that task's outcome.
        blocker.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (first,))
        done = Outcome(first, policy.succeeded(0, None, time.time()))
        claim = pool.submit(store.exchange, "far:1:o", [done], "c", 1, time.time())
        claimer = wait_until(lambda: blocked_by(store_path, blocker.info.backend_pid))
        # Given a claim in flight, a recovery of the same owner (judged by the same
        # heartbeat) waits for it,
        recovery = pool.submit(store.recover, [judged], "recovered: test", time.time(), 3)
        wait_until(lambda: blocked_by(store_path, claimer))
        blocker.rollback()
        exchanged = claim.result(timeout=30)
        recovered = recovery.result(timeout=30)
    # and then takes back the task the claim took as well: none is left running
    # under an owner that no longer exists.
    assert ([task.id for task in exchanged.claimed], exchanged.dropped) == ([second], [])
    assert recovered == 1
    assert [_status_and_owner(store_path, task_id) for task_id in (first, second)] == [
        ("done", None), ("pending", None)]
    assert raw_sql(store_path, "SELECT owner FROM simplepyq_owners") == []


def test_processes_sharing_a_store_run_each_task_exactly_once(
    store_path: str, tmp_path: Path
) -> None:
    total = 3000
    with SimplePyQ(store_path) as q:
        q.add_channel("c", _nothing)
        ids = q.enqueue_many("c", range(1, total + 1))
    assert ids == list(range(1, total + 1))  # so each task's args are its id
    logs = [tmp_path / f"child{number}.log" for number in range(3)]
    children = [spawn_python(DRAINER, store_path, str(log)) for log in logs]
    outputs = finish_all(children, timeout=90)
    errors = [err for _, err in outputs]

    assert [child.returncode for child in children] == [0, 0, 0], errors
    assert not [err for err in errors if "database is locked" in err]
    runs: Counter[int] = Counter()
    for child, log in zip(children, logs, strict=True):
        for line in log.read_text().splitlines() if log.exists() else []:
            task_id, pid = map(int, line.split())
            assert pid == child.pid
            runs[task_id] += 1
    assert runs == Counter(ids)
    assert raw_sql(store_path, "SELECT status, attempts, COUNT(*) FROM tasks GROUP BY 1, 2") \
        == [("done", 1, total)]


# -- raw rows --------------------------------------------------------------


def _insert_running_task(store_path: str, channel: str, owner: str, heartbeat_at: float) -> int:
    """A task of ``channel`` running on another host, whose owner last beat at ``heartbeat_at``.

    Its args are the last part of ``owner`` ("far:1:fresh" -> "fresh").
    """
    raw_sql(store_path, "INSERT INTO simplepyq_owners (owner, host, pid, pid_start, "
            "heartbeat_at) VALUES (?, ?, 1, NULL, ?)", (owner, REMOTE_HOST, heartbeat_at))
    ((task_id,),) = raw_sql(
        store_path,
        "INSERT INTO tasks (channel, args, status, retries, attempts, owner, created_at, "
        "started_at) VALUES (?, ?, 'running', 0, 1, ?, ?, ?) RETURNING id",
        (channel, msgpack.packb(owner.split(":")[2]), owner, time.time(), heartbeat_at))
    return int(task_id)


def _status_and_owner(store_path: str, task_id: int) -> tuple[str, str | None]:
    ((status, owner),) = raw_sql(store_path, "SELECT status, owner FROM tasks WHERE id = ?",
                                 (task_id,))
    return status, owner


def _status_and_owner_pid(store_path: str, task_id: int) -> tuple[str, int | None]:
    ((status, pid),) = raw_sql(
        store_path,
        "SELECT t.status, o.pid FROM tasks AS t "
        "LEFT JOIN simplepyq_owners AS o ON o.owner = t.owner WHERE t.id = ?", (task_id,))
    return status, pid


def _heartbeat_of_pid(store_path: str, pid: int) -> float:
    ((beat,),) = raw_sql(store_path, "SELECT heartbeat_at FROM simplepyq_owners WHERE pid = ?",
                         (pid,))
    return float(beat)


def _statuses(store_path: str) -> Counter[str]:
    rows = raw_sql(store_path, "SELECT status, COUNT(*) FROM tasks GROUP BY status")
    return Counter({status: int(count) for status, count in rows})


def _proc_state(pid: int) -> str | None:
    """The state letter in /proc/PID/stat (Z for a zombie), None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
