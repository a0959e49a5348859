"""Torture: the faults of a real deployment, made to happen on purpose.

- A COMMIT whose answer is lost: a TCP proxy in front of PostgreSQL forwards a
  chosen COMMIT, lets the server answer, then drops the connection instead of
  passing the answer on. The transaction is committed; the client only sees its
  connection break. The queue must neither lose nor strand what that commit did:
  tasks it claimed go back to pending, outcomes it recorded are not recorded twice.
- A server restart (``pg_ctl restart -m immediate``) while workers drain, on a
  throwaway PostgreSQL cluster that the test starts itself (never the shared test
  server: other tests use it).
- kill -9 under limits and keys: worker processes of a channel with ``max_running``
  and ``rate_limit`` are SIGKILLed at random moments while keyed enqueues go on
  (both backends). Seen through a run log outside the store: no more runs at once
  than ``max_running``, a key taken again only once its holder finished, nothing
  wedged by the running tasks of the dead.

The first two need PostgreSQL; the restart also needs its binaries and root (the
server runs as the postgres user). Without them the tests are skipped, saying why,
except under CI, where they must run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import ClassVar, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import msgpack
import pytest

from simplepyq import SimplePyQ, Status, StoreError
from tests.backends import postgres_url, raw_sql
from tests.soak import SOAKING, report, scaled
from tests.support import finish_all, read_runs, spawn_python, wait_until
from tests.test_crash import Crew

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


def unavailable(reason: str) -> None:
    """Skip the test for ``reason``, or fail it under CI, which must run every torture test."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the torture tests, but {reason}")
    pytest.skip(reason)


# -- a proxy that loses the answer to a chosen COMMIT ------------------------------
@dataclass
class Transaction:
    """What the statements of one client's open transaction do, as far as the proxy cares."""

    kinds: set[str] = field(default_factory=set)
    explicit: bool = False
    """Begun by BEGIN: else each Sync ends (and commits) the statements before it."""


class CommitDropper:
    """A TCP proxy to PostgreSQL that reads the client's side of the protocol.

    It marks each transaction with the kinds of statement it ran (``claim``,
    ``record``, ``insert``, found in the statement text, including statements the
    driver prepared earlier under a name). The ``nth`` COMMIT of a transaction that
    ran every kind in ``kinds`` is forwarded (or the Sync that commits statements run
    outside a transaction, as a connection in autocommit runs them); once the server
    answers, both sockets are closed and the answer is lost.
    """

    MARKS: ClassVar[dict[str, bytes]] = {
        "claim": b"SKIP LOCKED", "record": b"unnest(", "insert": b"INSERT INTO tasks"}

    def __init__(self, target: tuple[str, int], kinds: set[str], nth: int) -> None:
        self.target = target
        self.kinds = kinds
        self.nth = nth
        self.matching = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            losing = threading.Event()
            threading.Thread(target=self._client_side, args=(client, server, losing),
                             daemon=True).start()
            threading.Thread(target=self._server_side, args=(server, client, losing),
                             daemon=True).start()

    def _server_side(self, server: socket.socket, client: socket.socket,
                     losing: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if losing.is_set():  # the answer to the chosen COMMIT: lose it
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)

    def _client_side(self, client: socket.socket, server: socket.socket,
                     losing: threading.Event) -> None:
        stream = _Reader(client)
        prepared: dict[bytes, set[str]] = {}
        transaction = Transaction()
        try:
            while True:  # untyped messages first: SSL/GSS requests, then the startup
                length = struct.unpack("!I", stream.read(4))[0]
                body = stream.read(length - 4)
                server.sendall(struct.pack("!I", length) + body)
                if struct.unpack("!I", body[:4])[0] not in (SSL_REQUEST, GSSENC_REQUEST):
                    break
            while True:
                kind = stream.read(1)
                length = struct.unpack("!I", stream.read(4))[0]
                body = stream.read(length - 4)
                if kind == b"P":  # Parse: statement name, then its text
                    name, text = body.split(b"\0")[:2]
                    transaction.explicit |= text.strip().upper().startswith(b"BEGIN")
                    marks = self._marks(text)
                    prepared[name] = marks
                    transaction.kinds |= marks
                elif kind == b"B":  # Bind: portal name, then the statement's name
                    transaction.kinds |= prepared.get(body.split(b"\0")[1], set())
                elif kind == b"S" and not transaction.explicit:  # an implicit commit
                    if self._chosen(transaction):
                        losing.set()
                    transaction = Transaction()
                elif kind == b"Q":
                    text = body.rstrip(b"\0").strip().upper()
                    transaction.kinds |= self._marks(body)
                    transaction.explicit |= text.startswith(b"BEGIN")
                    if text in (b"COMMIT", b"ROLLBACK"):
                        if text == b"COMMIT" and self._chosen(transaction):
                            losing.set()
                        transaction = Transaction()
                server.sendall(kind + struct.pack("!I", length) + body)
        except (OSError, EOFError):
            pass
        _close(client, server)

    def _marks(self, text: bytes) -> set[str]:
        return {kind for kind, mark in self.MARKS.items() if mark in text}

    def _chosen(self, transaction: Transaction) -> bool:
        if not self.kinds <= transaction.kinds:
            return False
        with self._lock:
            self.matching += 1
            chosen = self.matching == self.nth
            self.dropped += chosen
            return chosen


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            data = self._sock.recv(65536)
            if not data:
                raise EOFError
            self._buffer += data
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def _through(location: str, proxy: CommitDropper) -> str:
    """The store URL ``location`` with its host and port replaced by the proxy's."""
    parts = urlsplit(location)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


@pytest.fixture
def dropper(store_path: str, request: pytest.FixtureRequest) -> Iterator[CommitDropper]:
    """A proxy to the test's PostgreSQL server; parametrized indirectly with (kinds, nth)."""
    kinds, nth = request.param
    parts = urlsplit(store_path)
    proxy = CommitDropper((parts.hostname or "127.0.0.1", parts.port or 5432), kinds, nth)
    yield proxy
    proxy.close()


class Counted:
    """A channel function that counts the runs of each task."""

    def __init__(self) -> None:
        self.runs: Counter[int] = Counter()
        self._lock = threading.Lock()

    def __call__(self, number: int) -> int:
        with self._lock:
            self.runs[number] += 1
        return number


@pytest.mark.postgres_only
@pytest.mark.parametrize("dropper", [({"claim", "record"}, 3)], indirect=True)
def test_commit_whose_answer_is_lost_strands_no_claimed_task_and_runs_none_twice(
    store_path: str, dropper: CommitDropper, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="simplepyq")
    work = Counted()
    with SimplePyQ(_through(store_path, dropper), poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=2)
        ids = q.enqueue_many("c", range(2000))
        q.start()
        # Without the audit, the tasks that the lost commit claimed would stay running
        # under this live process, in no worker's hand, until it exits.
        q.run_until_complete(timeout=60)
        tasks = q.tasks(limit=3000)
    assert dropper.dropped == 1
    assert [(t.id, t.status) for t in tasks] == [(task_id, "done") for task_id in ids]
    # The lost commit had recorded its outcomes, and claimed tasks no worker got: each
    # ran once, and no outcome was called "taken from this worker".
    assert work.runs == Counter(range(2000))
    assert not any("taken from this worker" in r.getMessage() for r in caplog.records
                   if r.levelno >= logging.WARNING)
    assert any("returned" in r.getMessage() and "answer was lost" in r.getMessage()
               for r in caplog.records)


@pytest.mark.postgres_only
@pytest.mark.parametrize("dropper", [({"insert"}, 1)], indirect=True)
def test_enqueue_whose_commit_answer_is_lost_says_the_task_may_be_stored(
    store_path: str, dropper: CommitDropper
) -> None:
    with SimplePyQ(_through(store_path, dropper)) as q:
        q.declare("c")
        with pytest.raises(StoreError, match="may have been committed or not"):
            q.enqueue("c", "hello")
        assert dropper.dropped == 1
        # ... and here it was: look before enqueuing again.
        assert [(t.channel, t.args) for t in q.tasks()] == [("c", "hello")]


# -- a server restart -----------------------------------------------------------------
def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)])
    if not found:
        unavailable("no PostgreSQL server binaries under /usr/lib/postgresql")
    return found[-1].parent


class Cluster:
    """A PostgreSQL cluster of the test's own, run as the postgres user."""

    def __init__(self) -> None:
        if os.geteuid() != 0 or shutil.which("su") is None:
            unavailable("needs root to run a PostgreSQL server of its own as user postgres")
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="simplepyq-torture-"))
        shutil.chown(self.dir, "postgres")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(f"'{self.bin}/initdb' -D '{self.dir}/data' -A trust -U postgres "
                          "--no-sync -E UTF8")
        self._as_postgres(f"'{self.bin}/pg_ctl' -D '{self.dir}/data' -l '{self.dir}/log' -w "
                          f"start -o \"-p {self.port} -k '{self.dir}' "
                          "-c listen_addresses=127.0.0.1 -c max_connections=50\"")

    def restart_immediately(self) -> None:
        """Kill the server without a shutdown checkpoint and start it again (crash recovery)."""
        self._as_postgres(f"'{self.bin}/pg_ctl' -D '{self.dir}/data' -l '{self.dir}/log' "
                          "-m immediate -w restart")

    def remove(self) -> None:
        self._as_postgres(f"'{self.bin}/pg_ctl' -D '{self.dir}/data' -m immediate -w stop",
                          check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _as_postgres(self, command: str, check: bool = True) -> None:
        done = subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", f"cd / && {command}"],
                              capture_output=True, text=True, timeout=120, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{command} failed: {done.stdout}{done.stderr}")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    postgres_url()  # a run without PostgreSQL skips every PostgreSQL test alike
    own = Cluster()
    yield own
    own.remove()


def test_server_restarted_mid_drain_strands_no_task_and_reruns_only_lost_outcomes(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="simplepyq")
    work = Counted()
    total = 3000
    with SimplePyQ(cluster.url, poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=4)
        q.enqueue_many("c", range(total))
        q.start()
        for share in (4, 2):  # restart a quarter of the way, and again half way
            wait_until(lambda: sum(work.runs.values()) >= total // share, timeout=60)  # noqa: B023
            cluster.restart_immediately()
        q.run_until_complete(timeout=90)
        tasks = q.tasks(limit=total + 1)
    assert sorted(t.args for t in tasks) == list(range(total))  # none lost
    assert {t.status for t in tasks} == {"done"}  # none stranded
    # A task runs twice only where the restart lost what had been written of its run
    # (a claim, or an outcome) and the library said so.
    said = {int(n) for r in caplog.records
            for n in re.findall(r"\d+", r.getMessage().rsplit(":", 1)[-1].split(" and ")[0])
            if "taken from this worker" in r.getMessage() or "recorded already" in r.getMessage()}
    by_id = {t.id: t.args for t in tasks}
    twice = {number for number, runs in work.runs.items() if runs > 1}
    assert twice <= {by_id[task_id] for task_id in said if task_id in by_id}
    assert set(work.runs) == set(range(total))


# -- kill -9 under limits and keys ------------------------------------------------
# Runs channel "c" with 4 workers, whatever limits the store holds for it, once the
# file GO exists (it starts claiming at once: only its run_until_complete waits).
# Each run logs "start N PID TIME" and "end N PID TIME" (N: the task's args); it takes
# 0-27 ms, or, in mode "block", never ends. argv: store, log, GO, mode ("drain"/"block").
LIMITED_WORKER = """
    import os, pathlib, sys, time
    from simplepyq import SimplePyQ

    log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    go, block = pathlib.Path(sys.argv[3]), sys.argv[4] == "block"

    def work(number):
        os.write(log, f"start {number} {os.getpid()} {time.time()!r}\\n".encode())
        time.sleep(3600 if block else 0.003 * (number % 10))
        os.write(log, f"end {number} {os.getpid()} {time.time()!r}\\n".encode())
        return number

    with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=4)
        q.start()
        deadline = time.monotonic() + 600
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        q.run_until_complete(timeout=60)
"""
MAX_RUNNING = 3
RATE = "40/0.2s"
"""The limits of the torture's channel: each holds the channel back at times (3 runs
of 13.5 ms on average allow about 220 starts a second, the rate 200)."""


@dataclass
class LimitedCrew(Crew):
    """The crash test's crew, running LIMITED_WORKER: draining once ``go`` exists. It
    kills a process that runs tasks when there is one, so that the limits must do
    without the slots those tasks hold until they are recovered."""

    go: Path = Path()

    def spawn(self) -> None:
        self.live.append(spawn_python(LIMITED_WORKER, self.store, str(self.log), str(self.go),
                                      "drain"))
        self.started += 1

    def kill_one(self, rng: random.Random) -> None:
        running = {int(pid) for pid, in raw_sql(
            self.store, "SELECT DISTINCT o.pid FROM tasks AS t JOIN simplepyq_owners AS o "
                        "ON o.owner = t.owner WHERE t.status = 'running'")}
        child = rng.choice([c for c in self.live if c.pid in running] or self.live)
        self.live.remove(child)
        self.killed_at[child.pid] = time.time()  # taken before the kill: the rerun comes after
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)


class Call(NamedTuple):
    """One keyed enqueue, as its caller saw it (times from ``time.time()``)."""

    number: int
    key: str
    task_id: int
    created: bool
    began: float
    returned: float


def _enqueue_keyed(store_path: str, calls: int, keys: int, go: Path) -> list[Call]:
    """Enqueue tasks 0 .. calls-1 (args: the number) with keys k0 .. k(keys-1) in turn,
    each twice in a row (the second call finds the first's task, unless it ran already),
    each round of the keys once at most half of them are unfinished (so that some are
    free again); then create ``go``. What each call returned."""
    made = []
    with SimplePyQ(store_path) as q:
        for number in range(calls):
            if number % (2 * keys) == 0:
                wait_until(lambda: _unfinished(store_path) <= keys // 2, timeout=60,
                           interval=0.01)
            key, began = f"k{number // 2 % keys}", time.time()
            task_id = q.enqueue("c", number, key=key)
            made.append(Call(number, key, task_id, task_id.created, began, time.time()))
    go.touch()
    return made


def _run_intervals(log: Path, killed_at: dict[int, float]) -> dict[int, list[tuple[float, float]]]:
    """Each task's runs as (start, end), in the order they ended, from the log; a run that
    never ended lasted until its process was killed (the time taken just before the kill)."""
    started: dict[tuple[int, str], float] = {}
    intervals: dict[int, list[tuple[float, float]]] = {}
    for line in log.read_text().splitlines():
        kind, text, pid, when = line.split()
        if kind == "start":
            started[int(text), pid] = float(when)
        else:
            intervals.setdefault(int(text), []).append(
                (started.pop((int(text), pid)), float(when)))
    for (number, pid), began in started.items():
        assert int(pid) in killed_at, f"a run of live process {pid} never ended"
        intervals.setdefault(number, []).append((began, max(began, killed_at[int(pid)])))
    return intervals


def _most_at_once(runs: dict[int, list[tuple[float, float]]]) -> int:
    """The most runs under way at one moment (one that ends as another starts: not both)."""
    intervals = [interval for each in runs.values() for interval in each]
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = running = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def _doubly_held_keys(store_path: str) -> list[tuple[str, str]]:
    """(channel, key) held by more than one unfinished task: what must never be."""
    return [(str(channel), str(key)) for channel, key in raw_sql(
        store_path, "SELECT channel, key FROM tasks WHERE key IS NOT NULL "
                    "AND status IN ('pending', 'delayed', 'running', 'blocked') "
                    "GROUP BY channel, key HAVING COUNT(*) > 1")]


def test_workers_killed_under_limits_and_keyed_enqueues_never_exceed_or_wedge_them(
    store_path: str, tmp_path: Path
) -> None:
    calls, keys, kills, width = scaled(400), 40, scaled(8), 3
    rng = random.Random(20240917 if not SOAKING else None)
    with SimplePyQ(store_path) as q:
        q.add_channel("c", lambda args: args, max_running=MAX_RUNNING, rate_limit=RATE)
    crew = LimitedCrew(store_path, tmp_path / "runs.log", go=tmp_path / "enqueued")
    made: list[Call] = []
    enqueuer = threading.Thread(
        target=lambda: made.extend(_enqueue_keyed(store_path, calls, keys, crew.go)))
    try:
        for _ in range(width):
            crew.spawn()
        enqueuer.start()
        while len(crew.killed_at) < kills and (enqueuer.is_alive() or _unfinished(store_path)):
            time.sleep(rng.uniform(0.02, 0.3))  # a random moment to kill at
            crew.reap_finished()
            if crew.live:
                crew.kill_one(rng)
            crew.spawn()
            assert not _doubly_held_keys(store_path)
        enqueuer.join(120)
        # The survivors and replacements finish the work: run_until_complete returns
        # in each (it gives up after 60 s, failing its process, if a limit wedged).
        wait_until(crew.all_finished, timeout=120, interval=0.05)
    finally:
        crew.kill_all()
    assert len(made) == calls, "the enqueuer failed"

    rows = {msgpack.unpackb(args): (int(task_id), str(status), key, error, finished_at)
            for task_id, args, status, key, error, finished_at in raw_sql(
                store_path, "SELECT id, args, status, key, error, finished_at FROM tasks")}
    runs = read_runs(crew.log)
    # Every task ran to the end, but those failed by the crash-loop rule (see
    # test_crash): every run of such a task was in a process the test killed.
    looped = {number for number, (_, status, _, error, _) in rows.items()
              if status == Status.FAILED and "times in a row while running it" in (error or "")}
    assert {row[1] for number, row in rows.items() if number not in looped} == {Status.DONE}
    for number in looped:
        assert all(run.pid in crew.killed_at for run in runs[number])
    reruns = 0
    for number in set(rows) - looped:
        *earlier, last = runs[number]
        assert last.ended, f"task {number}: its recorded run never ended"
        for before, after in pairwise(runs[number]):  # again only after a kill
            assert before.pid in crew.killed_at and after.started >= crew.killed_at[before.pid]
        reruns += len(earlier)

    # Keys: each call made a task only once the key's last holder had finished (its
    # last run ended, and it was recorded), and otherwise returned that holder; every
    # task was made by one call.
    intervals = _run_intervals(crew.log, crew.killed_at)
    assert sorted(call.number for call in made if call.created) == sorted(rows)
    holders: dict[str, Call] = {}
    for call in made:
        holder = holders.get(call.key)
        if not call.created:
            assert holder is not None and call.task_id == holder.task_id, call
            continue
        task_id, _, key, _, _ = rows[call.number]
        assert (task_id, key) == (call.task_id, call.key)
        if holder is not None:  # finished (committed) before this call returned
            assert rows[holder.number][4] <= call.returned, (holder, call)
            assert max(end for _, end in intervals[holder.number]) <= call.returned
        holders[call.key] = call

    # max_running, seen from outside: never more runs at once than it allows.
    most = _most_at_once(intervals)
    report("crash under limits", tasks=len(rows), enqueues=calls,
           found_holders=sum(not call.created for call in made), kills=len(crew.killed_at),
           processes=crew.started, reruns=reruns, most_running_at_once=most,
           max_running=MAX_RUNNING, failed_as_crash_loops=len(looped))
    assert most <= MAX_RUNNING
    assert len(crew.killed_at) >= min(kills, 3)  # the test did kill
    # Both ways happened: calls that found a holder, and keys made again once free.
    assert len(rows) > keys and any(not call.created for call in made)


def _unfinished(store_path: str) -> int:
    [(count,)] = raw_sql(store_path, "SELECT COUNT(*) FROM tasks WHERE status NOT IN "
                                     "('done', 'failed', 'cancelled')")
    return int(count)


def test_a_killed_process_holding_every_running_slot_does_not_wedge_the_channel(
    store_path: str, tmp_path: Path
) -> None:
    """Its running tasks count toward max_running until they are recovered, and not after:
    the next process recovers them and runs everything, within max_running. Until
    then they hold their keys."""
    log, go = tmp_path / "runs.log", tmp_path / "go"
    go.touch()
    with SimplePyQ(store_path) as q:
        q.add_channel("c", lambda args: args, max_running=2)
        q.enqueue_many("c", range(6), keys=[f"k{n}" for n in range(6)])
    stuck = spawn_python(LIMITED_WORKER, store_path, str(log), str(go), "block")
    try:
        # Four workers, two slots: two tasks run (and never end), the others wait.
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, timeout=60)
        running = raw_sql(store_path, "SELECT id, key FROM tasks WHERE status = 'running'")
        assert len(running) == 2
        killed_at = time.time()
    finally:
        stuck.kill()
        stuck.communicate(timeout=60)
    with SimplePyQ(store_path) as q:
        task_id, key = running[0]
        again = q.enqueue("c", "again", key=key)
        assert again == task_id and not again.created
    drainer = spawn_python(LIMITED_WORKER, store_path, str(log), str(go), "drain")
    [(_, err)] = finish_all([drainer], timeout=120)

    assert drainer.returncode == 0, err  # run_until_complete gave up after 60 s: wedged
    assert raw_sql(store_path, "SELECT status, COUNT(*) FROM tasks GROUP BY status") == [
        ("done", 6)]
    runs = read_runs(log)
    assert sorted(len(runs[n]) for n in range(6)) == [1, 1, 1, 1, 2, 2]  # the killed two again
    assert _most_at_once(_run_intervals(log, {stuck.pid: killed_at})) <= 2
