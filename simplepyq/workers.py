"""The queue instances registered in a store, as ``SimplePyQ.workers()`` shows them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from simplepyq.identity import ProcessIdentity, is_dead
from simplepyq.storage.base import Owner


@dataclass(frozen=True)
class Worker:
    """One queue instance that registered itself in the store to run workers: a
    ``SimplePyQ`` whose workers run, or ran. One that stopped cleanly is gone; one
    whose process died stays listed, not ``alive``, until the housekeeping of a live
    instance finds it dead (within a second or so), recovers the tasks it left
    running and forgets it.

    ``owner`` names it in the store (the ``running`` tasks it holds carry that name),
    ``host`` and ``pid`` say where it runs, ``channels`` which channels it runs
    workers for. ``heartbeat_at`` is when it last wrote its heartbeat (aware UTC;
    None if unknown). ``alive`` is judged as crash recovery judges it (see
    ``SimplePyQ.live_workers``): on this host by its process, elsewhere by a
    heartbeat younger than the lease. ``running`` is how many tasks it runs now.
    """

    owner: str
    host: str
    pid: int
    channels: tuple[str, ...]
    heartbeat_at: datetime | None
    alive: bool
    running: int


def workers_of(owners: Iterable[Owner], running: Mapping[str, int], me: ProcessIdentity,
           lease: float, now: float) -> list[Worker]:
    """The ``owners`` registered in a store as workers, judged alive or not by ``me`` at
    ``now``, with their counts of ``running`` tasks; by host, then pid."""
    workers = [Worker(owner=owner.owner, host=owner.host or "", pid=owner.pid or 0,
                      channels=owner.channels, heartbeat_at=_when(owner.heartbeat_at),
                      alive=not is_dead(owner, me, lease, now),
                      running=running.get(owner.owner, 0))
               for owner in owners]
    return sorted(workers, key=lambda worker: (worker.host, worker.pid, worker.owner))


def _when(epoch: object) -> datetime | None:
    """A stored heartbeat as an aware UTC time; None where there is none (or a row
    written by hand holds something else)."""
    if not isinstance(epoch, (int, float)):
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc)
