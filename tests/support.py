"""Shared test helpers: bounded waits, real child processes running queues (under other
host names too), and the run log they write outside the store."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from simplepyq import SimplePyQ
from tests.backends import raw_sql

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("simplepyq")
"""The console script, installed next to the interpreter by ``pip install -e .``."""


def wait_until(predicate: Callable[[], T | None], timeout: float = 10.0,
               interval: float = 0.002) -> T:
    """Return the first truthy ``predicate()`` value; fail the test if none comes in ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def spawn_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start a real child interpreter running ``code`` (dedented), with this checkout importable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: what it forks can be killed with it
    )


def run_python(code: str, *args: str, timeout: float = 60.0) -> str:
    """Run ``code`` in a child interpreter to completion; return its stdout, failing on error.
    A child still running after ``timeout`` is killed, with its process group, so that no
    test leaves one behind."""
    child = spawn_python(code, *args)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise
    assert child.returncode == 0, f"child failed ({child.returncode}):\n{err}"
    return out


def all_running(children: Sequence[subprocess.Popen[str]]) -> bool:
    """True while every child runs; fails the test with its stderr if one has ended."""
    for child in children:
        assert child.poll() is None, child.communicate()[1]
    return True


def enqueue_numbered(store: str, total: int) -> list[int]:
    """Enqueue ``total`` tasks on channel "c" of a new store, each task's args its own id
    (so that a run log can name tasks by their args); the ids, 1 to ``total``."""
    with SimplePyQ(store) as q:
        q.add_channel("c", lambda args: args)
        ids = q.enqueue_many("c", range(1, total + 1))
    assert ids == list(range(1, total + 1))
    return [int(task_id) for task_id in ids]


def finish_all(children: Sequence[subprocess.Popen[str]],
               timeout: float = 90.0) -> list[tuple[str, str]]:
    """Wait for every child at once; their (stdout, stderr). Kills any left on the way out."""
    try:
        with ThreadPoolExecutor(len(children)) as pool:
            return list(pool.map(lambda child: child.communicate(timeout=timeout), children))
    finally:
        for child in children:
            child.kill()
            child.communicate()


# -- runs witnessed outside the store ---------------------
@dataclass
class Run:
    """One execution of a task as the log tells it."""

    pid: int
    started: float
    ended: bool = False


def read_runs(log: Path) -> dict[int, list[Run]]:
    """Each task's runs in the order they started, from the append-only log."""
    runs: dict[int, list[Run]] = defaultdict(list)
    open_runs: dict[tuple[int, int], Run] = {}
    for line in log.read_text().splitlines():
        kind, task, pid, when = line.split()
        key = (int(task), int(pid))
        if kind == "start":
            assert key not in open_runs, f"task {task} started twice at once in pid {pid}"
            run = open_runs[key] = Run(int(pid), float(when))
            runs[int(task)].append(run)
        else:
            open_runs.pop(key).ended = True
    for task_runs in runs.values():
        task_runs.sort(key=lambda run: run.started)
    return runs


# -- other host names -------------------------------------
def can_use_another_host_name() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--uts", "hostname", "simplepyq-probe-host"],
                           capture_output=True, check=False)
    return probe.returncode == 0


needs_host_names = pytest.mark.skipif(
    not can_use_another_host_name(),
    reason="needs `unshare --uts` (root) to run a worker under another host name")


def spawn_on_host(host: str, code: str, *args: str) -> subprocess.Popen[str]:
    """Start a child interpreter running ``code`` (dedented) under the host name ``host``,
    in a UTS namespace of its own; ``exec`` keeps the pid, so it is the interpreter's."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$0" "$@"',
               sys.executable, "-c", textwrap.dedent(code), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


# Drains channel "c" with 2 workers, each task taking TASK_SECONDS, once the file "go"
# appears in the signal directory (after it wrote "ready-LABEL" there, holding its host
# id and pid). Each run logs "start ID LABEL TIME" and "end ID LABEL TIME" (LABEL names
# the process: pids repeat across namespaces); a task's args are its id.
# argv: store, log, signal directory, label, lease, busy_timeout, task seconds.
LABELLED_DRAINER = """
    import os, pathlib, sys, time
    from simplepyq import SimplePyQ
    from simplepyq.identity import host_id

    log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    signals, label, task_seconds = pathlib.Path(sys.argv[3]), sys.argv[4], float(sys.argv[7])

    def work(task_id):
        os.write(log, f"start {task_id} {label} {time.time()!r}\\n".encode())
        time.sleep(task_seconds)
        os.write(log, f"end {task_id} {label} {time.time()!r}\\n".encode())
        return task_id

    with SimplePyQ(sys.argv[1], lease=float(sys.argv[5]), busy_timeout=float(sys.argv[6]),
                   poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=2)
        (signals / f"ready-{label}").write_text(f"{host_id()} {os.getpid()}")
        deadline = time.monotonic() + 120
        while not (signals / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        q.run_until_complete(timeout=300)
"""


def tasks_to_upgrade(location: str) -> tuple[int, int]:
    """For an upgrade test: a pending and a failed task of channel "kept" (their ids)."""
    with SimplePyQ(location) as q:
        q.add_channel("kept", lambda args: args * 2)
        pending, failed = q.enqueue_many("kept", [21, "fails"])
    raw_sql(location, "UPDATE tasks SET status = 'failed', error = 'boom' WHERE id = ?",
            (failed,))
    return pending, failed


def check_task_control_after_upgrade(location: str, pending: int, failed: int) -> None:
    """After an upgrade to task control: the tasks of ``tasks_to_upgrade`` are as they were,
    with no key, time limit, cancel or progress, and limits, keys and cancel work."""
    with SimplePyQ(location) as q:
        q.add_channel("kept", lambda args: args * 2)
        old = q.get_task(failed)
        assert old is not None and (old.status, old.error, old.args) == ("failed", "boom",
                                                                         "fails")
        assert (old.key, old.time_limit, old.cancel_requested, old.progress) == (
            None, None, False, None)
        assert str(q.limits("kept")) == "no limits"
        assert str(q.set_limits("kept", rate_limit="5/s", max_running=2)) == (
            "rate 5/s, at most 2 running")
        keyed = q.enqueue("kept", 1, key="k")
        assert q.enqueue("kept", 2, key="k") == keyed  # the unique index is back
        assert q.cancel(keyed) is True
        q.run_until_complete(timeout=30)
        assert q.get_task(pending).result == 42  # type: ignore[union-attr]
        assert q.get_task(keyed).status == "cancelled"  # type: ignore[union-attr]


class InThread:
    """A call run in a thread of its own; ``result()`` waits for what it returned."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._value = call()
        except BaseException as exc:  # handed to the test by result()
            self._error = exc

    def running(self) -> bool:
        return self._thread.is_alive()

    def result(self) -> Any:
        self._thread.join(60)
        assert not self._thread.is_alive(), "the call never returned"
        if self._error is not None:
            raise self._error
        return self._value


def died_running(location: str, channel: str, max_recoveries: int) -> int | None:
    """A process claims the next task of ``channel`` and dies before it records anything;
    another process recovers it (back to pending, or failed by the crash-loop rule if
    that makes ``max_recoveries``). The id of the task, if there was one."""
    from simplepyq.storage import open_store
    from simplepyq.storage.base import Owner

    owner = f"dead-{os.getpid()}-{time.monotonic_ns()}"
    store = open_store(location, 30.0)
    try:
        claimed = store.exchange(owner, [], channel, 1, time.time()).claimed
        store.recover([Owner(owner, None, None, None, None)], "its process died",
                      time.time(), max_recoveries)
    finally:
        store.close()
    return claimed[0].id if claimed else None


class Collected:
    """A child process whose stdout and stderr lines are collected as they come, by a
    thread each (so that a child writing much never blocks on a full pipe)."""

    def __init__(self, command: Sequence[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
                         for stream, lines in [(self.process.stdout, self.out),
                                               (self.process.stderr, self.err)]]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def finish(self, read_for: float = 10.0) -> int:
        """Its exit code, once it has exited and its output is read (for up to
        ``read_for`` seconds: longer only if a process it left holds the output open)."""
        code = self.process.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=read_for)
        return code

    def close(self) -> None:
        """Kill it if it still runs, and close its output once read: a test that failed
        while it ran leaves no process and no open pipe behind."""
        if self.process.poll() is None:
            self.process.kill()
        self.finish(read_for=5)
        self.close_output()

    def close_output(self) -> None:
        """Close the streams whose reader is done (closing one a thread still reads
        would wait for that thread forever)."""
        for reader, stream in zip(self._readers, (self.process.stdout, self.process.stderr),
                                  strict=True):
            if stream is not None and not reader.is_alive():
                stream.close()

