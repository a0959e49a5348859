"""Who runs the workers: this process's identity, and whether another one is still alive.

Crash recovery needs to tell a dead process from a slow one. Where two processes
see the same process table the table answers at once; a pid can be reused, so its
start time is kept too. A host name alone does not say that: containers sharing a
host name (``--network host``) each have a PID namespace of their own, where the
other's pids mean nothing. So the host part of an identity is the host name plus
the PID namespace (or ``SIMPLEPYQ_HOST_ID`` where the user sets it), and processes
whose host parts differ judge each other by their heartbeats alone.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass

from simplepyq.storage.base import Owner

HOST_ID_VARIABLE = "SIMPLEPYQ_HOST_ID"
"""The environment variable that, when set, is the host part of every identity in the
process, instead of the host name and PID namespace."""


@dataclass(frozen=True)
class ProcessIdentity:
    """Identifies one running queue instance: host, pid and that pid's start time.

    ``host`` names the process table ``pid`` belongs to (see ``host_id``).
    """

    owner: str
    host: str
    pid: int
    pid_start: str | None

    @classmethod
    def current(cls) -> ProcessIdentity:
        """A fresh identity for a queue instance in this process (unique per instance)."""
        host = host_id()
        pid = os.getpid()
        start = process_start(pid) if _proc_is_ours() else None
        return cls(f"{host}:{pid}:{uuid.uuid4().hex[:12]}", host, pid, start)


def host_id() -> str:
    """The host part of this process's identity: processes with the same one see each
    other's pids, so that a dead one is known at once by its pid.

    ``SIMPLEPYQ_HOST_ID`` when set (not empty), as it is; otherwise the host name and,
    on Linux, the PID namespace (``myhost/pidns-4026531836``): two containers with one
    host name but PID namespaces of their own get different ids.
    """
    chosen = os.environ.get(HOST_ID_VARIABLE, "").strip()
    if chosen:
        return chosen
    name = socket.gethostname()
    namespace = pid_namespace()
    return name if namespace is None else f"{name}/pidns-{namespace}"


def pid_namespace() -> str | None:
    """The number of this process's PID namespace (Linux), or None where there is none."""
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return None
    found = re.fullmatch(r"pid:\[(\d+)\]", link)
    return found.group(1) if found else None


def _proc_is_ours() -> bool:
    """Whether /proc shows this process's PID namespace (a container that shares the
    host's /proc would read another process under each of its pids)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), or None where it cannot be read."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else None


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name; empty where there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def is_alive_here(pid: int, pid_start: str | None) -> bool:
    """True if ``pid`` of this process table is still the process started at ``pid_start``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    fields = _proc_stat(pid) if _proc_is_ours() else []
    if not fields:
        return True  # no /proc of ours here: the signal check is all there is
    if fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    return pid_start is None or len(fields) <= 19 or fields[19] == pid_start


def is_dead(owner: Owner, me: ProcessIdentity, lease: float, now: float,
            silent_since: float = 0.0) -> bool:
    """True if the instance ``owner`` can no longer finish its running tasks, as judged by
    ``me``: by its process where both have the same host id (one process table), else
    by a heartbeat older than ``lease`` (rows of older versions, whose host is a bare
    host name, are judged so too). Silence before ``silent_since`` does not count
    (see ``Heartbeats``)."""
    if owner.owner == me.owner:
        return False
    if owner.pid is None:
        return True  # never registered, or gave itself up: nobody runs these
    if owner.host == me.host:
        return not is_alive_here(owner.pid, owner.pid_start)
    return max(owner.heartbeat_at or 0.0, silent_since) < now - lease


class Heartbeats:
    """An instance's own heartbeats, as a record of when it could write to the store.

    Another instance is judged dead when it has not written its heartbeat for a
    lease: that is fair only while it could have written. A stall that held up our
    own heartbeat (another process frozen holding SQLite's write lock, PostgreSQL
    down or locked) held up everyone's, so the silence of others counts only from
    the end of our last stall, and not at all while we are in one.
    """

    def __init__(self, every: float) -> None:
        self._late = every * 1.5
        """A heartbeat this long after the one before it (or this slow to write) was held up."""
        self._last: float | None = None
        self._resumed = 0.0

    def wrote(self, began: float, ended: float) -> None:
        """A heartbeat was written: attempted at ``began``, committed at ``ended`` (wall
        clock). If it was late, or slow to write, a stall ended at ``ended``."""
        since = began if self._last is None else self._last
        if ended - since > self._late:
            self._resumed = ended
        self._last = ended

    def silent_since(self, now: float) -> float:
        """When the silence of others began to count, as of ``now``: the end of our last
        stall, or ``now`` itself while our heartbeat is overdue (we are in a stall)."""
        if self._last is None or now - self._last > self._late:
            return now
        return self._resumed
