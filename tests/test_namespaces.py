"""Host identity: processes judge each other by pid only where they share a process table.

Containers that share a host name (``--network host``, pods with ``hostNetwork``)
each have a PID namespace of their own, where the other's pids mean nothing: they
must judge each other by heartbeats, as processes on other hosts do. The
namespaces here are real (``unshare --pid --fork --mount-proc``, which needs
root); where they cannot be made the test is skipped, except under CI, where it
fails. ``SIMPLEPYQ_HOST_ID`` replaces the host name and namespace entirely.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgpack
import pytest

from simplepyq import SimplePyQ
from simplepyq.identity import (
    HOST_ID_VARIABLE,
    ProcessIdentity,
    host_id,
    is_dead,
    pid_namespace,
    process_start,
)
from simplepyq.storage.base import Owner
from tests.backends import raw_sql
from tests.soak import report, scaled
from tests.support import (
    LABELLED_DRAINER,
    ROOT,
    all_running,
    enqueue_numbered,
    finish_all,
    needs_host_names,
    read_runs,
    spawn_on_host,
    spawn_python,
    wait_until,
)

LEASE = 5.0
"""Long enough that a live worker's heartbeat (every LEASE/3) is never late, even on a
busy two-core box running the whole suite; nothing here waits for a lease to pass."""

# -- the judgement itself ------------------------------------------------------


def test_identity_names_the_pid_namespace_beside_the_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(HOST_ID_VARIABLE, raising=False)
    namespace = pid_namespace()
    if namespace is None:
        pytest.skip("no /proc/self/ns/pid here: the host name is the whole host id")
    me = ProcessIdentity.current()
    assert me.host == f"{socket.gethostname()}/pidns-{namespace}"
    assert me.owner.startswith(f"{me.host}:{os.getpid()}:")
    assert os.readlink("/proc/self/ns/pid") == f"pid:[{namespace}]"


def test_process_of_another_pid_namespace_is_judged_by_its_heartbeat_not_by_this_hosts_pids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(HOST_ID_VARIABLE, raising=False)
    me = ProcessIdentity.current()
    now = time.time()
    lease = 30.0
    gone, here = _a_pid_nobody_has(), os.getpid()
    same_name_other_namespace = f"{socket.gethostname()}/pidns-1"
    assert same_name_other_namespace != me.host
    # Its pid is no process here, but it beat a moment ago: alive.
    assert not is_dead(Owner("a", same_name_other_namespace, gone, None, now), me, lease, now)
    # Its pid is a live process here (this one), but it stopped beating: dead.
    assert is_dead(Owner("b", same_name_other_namespace, here, process_start(here), now - 60),
                   me, lease, now)
    # Where the host id is the same, the pid decides, whatever the heartbeat says.
    assert is_dead(Owner("c", me.host, gone, None, now), me, lease, now)
    assert not is_dead(Owner("d", me.host, here, process_start(here), now - 3600),
                       me, lease, now)


def test_owner_row_of_an_older_version_with_a_bare_host_name_is_judged_by_its_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(HOST_ID_VARIABLE, raising=False)
    if pid_namespace() is None:
        pytest.skip("no /proc/self/ns/pid here: a bare host name is this host's id")
    me = ProcessIdentity.current()
    now = time.time()
    old_row = Owner("old", socket.gethostname(), _a_pid_nobody_has(), None, now - 5)
    assert not is_dead(old_row, me, 30.0, now)
    assert is_dead(old_row, me, 30.0, now + 30)


def test_host_id_variable_replaces_host_name_and_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(HOST_ID_VARIABLE, "  rack-7-box-3 ")
    assert host_id() == "rack-7-box-3"
    me = ProcessIdentity.current()
    assert (me.host, me.owner.split(":")[0]) == ("rack-7-box-3", "rack-7-box-3")
    monkeypatch.setenv(HOST_ID_VARIABLE, "")  # set but empty: as if unset
    assert host_id().split("/")[0] == socket.gethostname()


@needs_host_names
def test_processes_given_one_host_id_judge_each_other_by_pid_under_other_host_names(
    store_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", lambda args: None)
        (task_id,) = q.enqueue_many("c", ["job"])
    monkeypatch.setenv(HOST_ID_VARIABLE, "one-box")  # for this process and the child
    started = tmp_path / "started"
    child = spawn_on_host("simplepyq-other-name", """
        import pathlib, sys, threading
        from simplepyq import SimplePyQ

        def block(args):
            pathlib.Path(sys.argv[2]).touch()
            threading.Event().wait()

        q = SimplePyQ(sys.argv[1])
        q.add_channel("c", block)
        q.run_until_complete(timeout=120)
    """, store_path, str(started))
    try:
        wait_until(lambda: started.exists() or child.poll() is not None, timeout=30)
        assert child.poll() is None, child.communicate()[1]
        ((owner, host),) = raw_sql(store_path, "SELECT owner, host FROM simplepyq_owners")
        assert (host, owner.split(":")[1]) == ("one-box", str(child.pid))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.communicate()
    # lease=3600: only the pid check can recover it within the timeout.
    with SimplePyQ(store_path, lease=3600) as q:
        q.add_channel("c", lambda args: f"rerun {args}")
        q.start()
        task = q.wait(task_id, timeout=20)
    assert (task.status, task.result, task.attempts) == ("done", "rerun job", 2)


# -- real processes in PID namespaces of their own ----------------------------


def test_workers_in_other_pid_namespaces_under_one_host_name_run_each_task_once(
    store_path: str, tmp_path: Path
) -> None:
    _needs_pid_namespaces()
    total = scaled(2000)
    ids = enqueue_numbered(store_path, total)
    log, signals = tmp_path / "runs.log", tmp_path / "signals"
    signals.mkdir()
    # The first is pid 1 of its namespace; the second starts after other processes
    # there, so the two pids differ and each is a pid the other's namespace may not have.
    children = [_spawn_in_pid_namespace(LABELLED_DRAINER, store_path, str(log), str(signals),
                                        str(label), str(LEASE), "30", "0.002", pids_before=burn)
                for label, burn in ((1, 0), (2, 40))]
    try:
        wait_until(lambda: all_running(children) and all(
            (signals / f"ready-{label}").exists() for label in (1, 2)), timeout=60)
        hosts = {}
        for label in (1, 2):
            host, pid = (signals / f"ready-{label}").read_text().split()
            hosts[label] = (host, int(pid))
        (signals / "go").touch()
        outputs = finish_all(children, timeout=180)
    finally:
        for child in children:
            child.kill()
            child.communicate()

    assert [(child.returncode, err) for child, (_, err) in zip(children, outputs, strict=True)
            ] == [(0, "")] * 2
    # Given one host name and two PID namespaces (each with pids the other lacks),
    (host_1, pid_1), (host_2, pid_2) = hosts[1], hosts[2]
    assert host_1.split("/")[0] == host_2.split("/")[0] == socket.gethostname()
    assert len({host_1, host_2, ProcessIdentity.current().host}) == 3
    assert (pid_1, pid_2 > 40) == (1, True)
    # every task ran once, and both processes took part.
    runs = read_runs(log)
    twice = {task_id: len(task_runs) for task_id, task_runs in runs.items() if len(task_runs) > 1}
    assert twice == {}, f"{len(twice)} task(s) ran more than once"
    assert sorted(runs) == ids
    assert {run.pid for task_runs in runs.values() for run in task_runs} == {1, 2}
    rows = raw_sql(store_path, "SELECT status, attempts, COUNT(*) FROM tasks GROUP BY 1, 2")
    assert rows == [("done", 1, total)]
    assert all(msgpack.unpackb(result) == task_id for task_id, result
               in raw_sql(store_path, "SELECT id, result FROM tasks"))
    report("namespaces", tasks=total, processes=2, duplicates=0, lost=0)


def _needs_pid_namespaces() -> None:
    """Skip the test where PID namespaces cannot be made here (fail it under CI)."""
    probe = None
    if shutil.which("unshare") is not None:
        probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                                "true"], capture_output=True, text=True, check=False)
    if probe is not None and probe.returncode == 0:
        return
    reason = ("needs `unshare --pid --fork --mount-proc` (root) to run workers in PID "
              "namespaces of their own" + (f": {probe.stderr.strip()}" if probe else ""))
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PID namespace tests, but this one {reason}")
    pytest.skip(reason)


def _spawn_in_pid_namespace(code: str, *args: str, pids_before: int) -> subprocess.Popen[str]:
    """Start a child interpreter running ``code`` (dedented) in a PID namespace of its own
    with its own /proc, under this host name, after ``pids_before`` short-lived processes
    there (0: the interpreter is the namespace's pid 1). Killing it kills the namespace."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop(HOST_ID_VARIABLE, None)
    burn = f'i=0; while [ $i -lt {pids_before} ]; do /bin/true; i=$((i+1)); done; "$0" "$@"'
    command = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
               *(["sh", "-c", burn] if pids_before else []),
               sys.executable, "-c", textwrap.dedent(code), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)



def _a_pid_nobody_has() -> int:
    """The pid of a child that has ended and been reaped: no process has it now."""
    child = spawn_python("pass")
    child.communicate(timeout=30)
    return child.pid


def test_process_whose_proc_shows_another_pid_namespace_keeps_no_start_time() -> None:
    _needs_pid_namespaces()
    # Without --mount-proc the namespace sees this host's /proc, where its own pid 1
    # is another process: the start time read there would be that process's.
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c",
         "import os; from simplepyq.identity import ProcessIdentity, is_alive_here\n"
         "me = ProcessIdentity.current()\n"
         "print(os.getpid(), os.readlink('/proc/self') != str(os.getpid()), me.pid_start,"
         " is_alive_here(1, 'no such start'))"],
        capture_output=True, text=True, check=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout.split()
    assert out == ["1", "True", "None", "True"]
