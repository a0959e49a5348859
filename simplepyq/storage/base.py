"""The storage contract: what the queue asks of a backend, in the queue's own words.

Each method is one transaction. Backends know rows and bytes, not task functions:
encoding args, deciding retries and telling dead processes from live ones happen
above this line, so every backend shares those rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from simplepyq.policy import Decision

TASK_COLUMNS = (
    "id", "channel", "args", "status", "retries", "attempts", "priority",
    "result", "error", "created_at", "delay_until", "started_at", "finished_at",
)
"""The order of columns in the rows that ``get``/``list`` return (see ``Task.from_row``)."""


class Claimed(NamedTuple):
    """A task a worker now owns: enough to run it and record its outcome."""

    id: int
    args: bytes | None
    retries: int
    attempts: int


@dataclass(frozen=True)
class Owner:
    """A queue instance that holds ``running`` tasks, as it registered itself."""

    owner: str
    host: str | None
    pid: int | None
    pid_start: str | None
    heartbeat_at: float | None


class Store(Protocol):
    """A place where tasks live, shared by every process that opens the same location."""

    location: str

    # -- channels ------------------------------------------
    def register_channel(self, name: str, now: float) -> None:
        """Remember that ``name`` is a channel, so other processes may enqueue to it."""

    def known_channels(self) -> set[str]:
        """Every channel registered by any process sharing this store."""

    # -- the task life cycle -------------------------------
    def add(self, channel: str, payloads: Sequence[bytes], retries: int,
            run_at: float | None, priority: int, now: float, register: bool) -> list[int]:
        """Insert tasks in one transaction and return their ids, in order.

        With ``register`` the channel is (re)registered in the same transaction;
        otherwise it must be registered already, or ``UnknownChannelError`` is raised
        and nothing is written.
        """

    def claim(self, channel: str, owner: str, limit: int, now: float) -> list[Claimed]:
        """Atomically mark up to ``limit`` due tasks of ``channel`` running for ``owner``.

        Delayed tasks that have come due become pending first. Highest priority
        first, then oldest. A task is returned to one caller only.
        """

    def record(self, task_id: int, owner: str, decision: Decision) -> bool:
        """Apply ``decision`` to a task ``owner`` still runs; False if it no longer does."""

    def next_due(self, channels: Iterable[str]) -> float | None:
        """The earliest ``delay_until`` among delayed tasks of ``channels``, if any."""

    def count_unfinished(self, channels: Iterable[str]) -> int:
        """How many tasks of ``channels`` are pending, delayed or running."""

    def change_token(self) -> int:
        """A number that changes whenever another connection commits (a cheap poll)."""

    # -- liveness and recovery -----------------------------
    def register_owner(self, owner: str, host: str, pid: int, pid_start: str | None,
                       now: float) -> None:
        """Announce a live queue instance, or renew its heartbeat (re-registering it
        if it was given up for dead)."""

    def unregister_owner(self, owner: str) -> None:
        """Forget ``owner``: it has stopped and holds no running task."""

    def running_owners(self) -> list[Owner]:
        """The owners of ``running`` tasks, with what they registered (None if unknown)."""

    def recover(self, owners: Sequence[str | None], note: str, now: float) -> int:
        """Return the running tasks of dead ``owners`` to pending; forget those owners."""

    # -- inspection ----------------------------------------
    def get(self, task_id: int) -> tuple[Any, ...] | None:
        """One task's row, laid out as TASK_COLUMNS."""

    def list(self, channel: str | None, status: str | None, limit: int) -> list[tuple[Any, ...]]:
        """Rows of tasks, oldest first, optionally of one channel and/or one status."""

    def stats(self) -> dict[str, dict[str, int]]:
        """Task counts per channel and status."""

    # -- maintenance ---------------------------------------
    def clear_failed(self, channel: str | None) -> int:
        """Delete failed tasks; return how many."""

    def requeue_failed(self, channel: str | None, retries: int | None) -> int:
        """Make failed tasks pending again, optionally with new retries; return how many."""

    def remove_channel(self, name: str) -> int:
        """Forget a channel and delete all its tasks; return how many tasks."""

    def purge(self, channel: str | None, finished_before: float) -> int:
        """Delete done and failed tasks that finished before the given time; return how many."""

    def close(self) -> None:
        """Release every connection; the store is unusable afterwards."""
