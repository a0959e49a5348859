"""Who runs the workers: this process's identity, and whether another one is still alive.

Crash recovery needs to tell a dead process from a slow one. On the same host the
process table answers at once; a pid can be reused, so its start time is kept too.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from simplepyq.storage.base import Owner


@dataclass(frozen=True)
class ProcessIdentity:
    """Identifies one running queue instance: host, pid and that pid's start time."""

    owner: str
    host: str
    pid: int
    pid_start: str | None

    @classmethod
    def current(cls) -> ProcessIdentity:
        """A fresh identity for a queue instance in this process (unique per instance)."""
        host = socket.gethostname()
        pid = os.getpid()
        return cls(f"{host}:{pid}:{uuid.uuid4().hex[:12]}", host, pid, process_start(pid))


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
    """True if ``pid`` on this host is still the process that was started at ``pid_start``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    fields = _proc_stat(pid)
    if not fields:
        return True  # no /proc here: the signal check is all there is
    if fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    return pid_start is None or len(fields) <= 19 or fields[19] == pid_start


def is_dead(owner: Owner, me: ProcessIdentity, lease: float, now: float) -> bool:
    """True if the instance ``owner`` can no longer finish its running tasks, as judged by
    ``me``: on this host by its process, elsewhere by a heartbeat older than ``lease``."""
    if owner.owner == me.owner:
        return False
    if owner.pid is None:
        return True  # never registered, or gave itself up: nobody runs these
    if owner.host == me.host:
        return not is_alive_here(owner.pid, owner.pid_start)
    return owner.heartbeat_at is None or owner.heartbeat_at < now - lease
