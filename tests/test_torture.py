"""Torture: the faults of a real deployment, made to happen on purpose.

- A COMMIT whose answer is lost: a TCP proxy in front of PostgreSQL forwards a
  chosen COMMIT, lets the server answer, then drops the connection instead of
  passing the answer on. The transaction is committed; the client only sees its
  connection break. The queue must neither lose nor strand what that commit did:
  tasks it claimed go back to pending, outcomes it recorded are not recorded twice.
- A server restart (``pg_ctl restart -m immediate``) while workers drain, on a
  throwaway PostgreSQL cluster that the test starts itself (never the shared test
  server: other tests use it).

Both need PostgreSQL; the restart also needs its binaries and root (the server
runs as the postgres user). Without them the tests are skipped, saying why, except
under CI, where they must run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from simplepyq import SimplePyQ, StoreError
from tests.backends import postgres_url
from tests.support import wait_until

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


class CommitDropper:
    """A TCP proxy to PostgreSQL that reads the client's side of the protocol.

    It marks each transaction with the kinds of statement it ran (``claim``,
    ``record``, ``insert``, found in the statement text, including statements the
    driver prepared earlier under a name). The ``nth`` COMMIT of a transaction that
    ran every kind in ``kinds`` is forwarded; once the server answers, both sockets
    are closed and the answer is lost.
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
                    marks = self._marks(text)
                    prepared[name] = marks
                    transaction.kinds |= marks
                elif kind == b"B":  # Bind: portal name, then the statement's name
                    transaction.kinds |= prepared.get(body.split(b"\0")[1], set())
                elif kind == b"Q":
                    text = body.rstrip(b"\0").strip().upper()
                    transaction.kinds |= self._marks(body)
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
