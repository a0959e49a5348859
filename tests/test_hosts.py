"""Hosts sharing a store: one is killed, and only its started tasks run again, after its lease.

Three worker processes, each under a host name of its own (``unshare --uts``, as
in test_leases), drain one store. They can judge each other only by heartbeats,
so the dead one's tasks must come back exactly when its last heartbeat is a
lease old, while the live ones' tasks, running just as long, are never taken.

The hosts start together (each says it is ready, then waits for "go"), so all of
them share the quick tasks. The moment of the kill is chosen, not random: "held"
tasks log their start and then wait for a release file, so once every worker of
every host holds one, the test SIGKILLs one host, waits until the survivors
recover its tasks, enqueues more work and releases the rest. Every run logs
"start ID PID TIME" and "end ID PID TIME" to one O_APPEND file outside the store
(the format of test_crash).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import msgpack

from simplepyq import SimplePyQ
from tests.backends import raw_sql
from tests.soak import report, scaled
from tests.support import Run, finish_all, needs_host_names, read_runs, spawn_on_host, wait_until

pytestmark = needs_host_names

LEASE = 2.0
"""Long enough that a survivor's heartbeat (every LEASE/3) is never late on a busy CI box."""
HOSTS = ("simplepyq-host-a", "simplepyq-host-b", "simplepyq-host-c")
VICTIM = HOSTS[1]
WORKERS = 2
HELD = 9
"""More held tasks than worker slots (3 x 2): every slot ends up holding one."""

# Drains channel "c" with WORKERS workers and the lease LEASE until every task is
# finished, starting once every host is ready (so that all of them share the work).
# A task's args are [kind, its id]: "quick" tasks take 2 ms, "held" tasks wait for
# the release file. argv: store, log file, directory of the ready/go/release files,
# lease, workers.
WORKER = """
    import os, pathlib, socket, sys, time
    from simplepyq import SimplePyQ

    log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    signals = pathlib.Path(sys.argv[3])

    def until(path):
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.005)

    def work(args):
        kind, task_id = args
        os.write(log, f"start {task_id} {os.getpid()} {time.time()!r}\\n".encode())
        if kind == "held":
            until(signals / "release")
        else:
            time.sleep(0.002)
        os.write(log, f"end {task_id} {os.getpid()} {time.time()!r}\\n".encode())
        return task_id

    with SimplePyQ(sys.argv[1], lease=float(sys.argv[4]), poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=int(sys.argv[5]))
        (signals / f"ready-{socket.gethostname()}").touch()
        until(signals / "go")
        q.run_until_complete(timeout=300)
"""


def _enqueue(store_path: str, kind: str, count: int) -> list[int]:
    """Enqueue ``count`` tasks whose args name their own id; their ids."""
    with SimplePyQ(store_path) as q:
        q.add_channel("c", lambda args: args)
        first = int(raw_sql(store_path, "SELECT COALESCE(MAX(id), 0) FROM tasks")[0][0]) + 1
        numbers = list(range(first, first + count))
        ids = q.enqueue_many("c", [[kind, number] for number in numbers])
    assert ids == numbers, "ids are drawn in order, so each task's args name its id"
    return [int(task_id) for task_id in ids]


def _in_flight(log: Path) -> dict[int, set[int]]:
    """Per pid, the tasks it has started and not ended, as the log says so far."""
    flying: dict[int, set[int]] = {}
    if log.exists():
        for task_id, runs in read_runs(log).items():
            for run in runs:
                if not run.ended:
                    flying.setdefault(run.pid, set()).add(task_id)
    return flying


def test_hosts_share_a_store_and_only_the_killed_hosts_started_tasks_rerun_after_its_lease(
    store_path: str, tmp_path: Path
) -> None:
    before_ids = _enqueue(store_path, "quick", scaled(300))
    held_ids = _enqueue(store_path, "held", HELD)
    log, signals = tmp_path / "runs.log", tmp_path / "signals"
    signals.mkdir()
    release = signals / "release"
    children = {host: spawn_on_host(host, WORKER, store_path, str(log), str(signals),
                                    str(LEASE), str(WORKERS)) for host in HOSTS}
    host_of = {child.pid: host for host, child in children.items()}
    victim = children[VICTIM]
    survivors = [child for host, child in children.items() if host != VICTIM]
    try:
        wait_until(lambda: _alive(children) and all(
            (signals / f"ready-{host}").exists() for host in HOSTS), timeout=60, interval=0.01)
        (signals / "go").touch()

        # Given every worker of every host in the middle of a held task,
        def every_slot_holds_a_task() -> bool:
            flying = _in_flight(log)
            return _alive(children) and all(
                len(flying.get(child.pid, ())) == WORKERS and flying[child.pid] <= set(held_ids)
                for child in children.values())

        wait_until(every_slot_holds_a_task, timeout=60, interval=0.01)
        holder = {task_id: host_of[pid] for pid, ids in _in_flight(log).items() for task_id in ids}
        victims_runs = {task_id for task_id, host in holder.items() if host == VICTIM}
        survivors_runs = set(holder) - victims_runs

        # when one host is killed,
        killed_at = time.time()  # taken before the kill: every rerun must start after it
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
        # Its last heartbeat is final now; read at once, as it is a lease old (and its
        # owner row gone with its tasks) only 2/3 of a lease from now at the earliest.
        beats = raw_sql(store_path,
                        "SELECT owner, heartbeat_at FROM simplepyq_owners WHERE host LIKE ?",
                        (f"{VICTIM}/%",))  # its host id: host name / PID namespace
        assert len(beats) == 1, f"the killed host's owner row was not there to read: {beats}"
        ((owner, last_beat),) = beats
        assert last_beat <= killed_at

        # then the survivors take back its tasks once that heartbeat is a lease old,
        wait_until(lambda: not raw_sql(store_path, "SELECT id FROM tasks WHERE owner = ?",
                                       (owner,)), timeout=LEASE * 5 + 30, interval=0.01)
        assert time.time() >= last_beat + LEASE
        recovered = raw_sql(store_path, "SELECT id, status, error FROM tasks WHERE id IN "
                            f"({', '.join('?' * len(victims_runs))})", sorted(victims_runs))
        assert [(status, VICTIM in (error or "")) for _, status, error in recovered] == [
            ("pending", True)] * len(victims_runs)
        # while theirs, running for just as long on other hosts, stay theirs;
        theirs = raw_sql(store_path, "SELECT id, status, owner FROM tasks WHERE id IN "
                         f"({', '.join('?' * len(survivors_runs))}) ORDER BY id",
                         sorted(survivors_runs))
        assert [(task_id, status, str(their_owner).split(":")[0].split("/")[0])
                for task_id, status, their_owner in theirs] == [
            (task_id, "running", holder[task_id]) for task_id in sorted(survivors_runs)]
        assert len(survivors_runs) == WORKERS * (len(HOSTS) - 1)
        # and they go on to finish that, the recovered tasks and work enqueued now.
        after_ids = _enqueue(store_path, "quick", scaled(100))
        release.touch()
        outputs = finish_all(survivors, timeout=120)
    finally:
        release.touch()
        for child in children.values():
            child.kill()
            child.communicate()

    assert [(child.returncode, err) for child, (_, err) in zip(survivors, outputs, strict=True)
            ] == [(0, "")] * len(survivors)

    # No task lost, none left running, each result its own.
    all_ids = before_ids + held_ids + after_ids
    rows = raw_sql(store_path, "SELECT id, status, result, attempts FROM tasks ORDER BY id")
    assert [(task_id, status) for task_id, status, _, _ in rows] == [
        (task_id, "done") for task_id in all_ids]
    assert all(msgpack.unpackb(result) == task_id for task_id, _, result, _ in rows)

    # Every task ran exactly once, but those the victim had started: they ran once
    # more, after the kill and after its last heartbeat was a lease old.
    runs = read_runs(log)
    started_by_victim = {task_id for task_id, task_runs in runs.items()
                         if any(run.pid == victim.pid for run in task_runs)}
    assert victims_runs <= started_by_victim
    for task_id in all_ids:
        task_runs = runs[task_id]
        assert task_runs, f"task {task_id} is done but never ran"
        assert task_runs[-1].ended, f"task {task_id}: its recorded run never ended"
        assert all(run.started < killed_at for run in task_runs if run.pid == victim.pid)
        if task_id not in started_by_victim:
            assert len(task_runs) == 1, f"task {task_id} ran again: {_hosts(task_runs, host_of)}"
            continue
        assert len(task_runs) <= 2, f"task {task_id}: {_hosts(task_runs, host_of)}"
        if len(task_runs) == 2:
            first, second = task_runs
            assert first.pid == victim.pid
            assert second.started >= killed_at
            assert second.started >= last_beat + LEASE, (
                f"task {task_id} rerun {second.started - last_beat:.3f}s after the last "
                f"heartbeat of its dead owner, before the lease of {LEASE}s")
    # The tasks it was in the middle of did run again (outcomes the victim finished
    # may have been recorded before the kill: those ran once).
    assert all(len(runs[task_id]) == 2 for task_id in victims_runs)
    assert all(len(runs[task_id]) == 1 for task_id in survivors_runs)
    attempts = {task_id: tries for task_id, _, _, tries in rows}
    assert [attempts[task_id] for task_id in sorted(victims_runs | survivors_runs)] == [
        2 if task_id in victims_runs else 1 for task_id in sorted(victims_runs | survivors_runs)]
    hosts_used = Counter(host_of[run.pid] for task_runs in runs.values() for run in task_runs)
    assert set(hosts_used) == set(HOSTS)
    reruns = [task_runs[-1].started for task_runs in runs.values() if len(task_runs) > 1]
    report("hosts", tasks=len(all_ids), hosts=len(HOSTS), runs_per_host=dict(hosts_used),
           reran=len(reruns), victim_in_flight=len(victims_runs),
           first_rerun_after_last_beat=f"{min(reruns) - last_beat:.2f}s", duplicates=0, lost=0)


def _alive(children: dict[str, subprocess.Popen[str]]) -> bool:
    """True while every child runs; fails the test with its stderr if one has ended."""
    for child in children.values():
        assert child.poll() is None, child.communicate()[1]
    return True


def _hosts(task_runs: list[Run], host_of: dict[int, str]) -> list[str]:
    return [f"{host_of.get(run.pid, run.pid)}@{run.started:.3f}" for run in task_runs]
