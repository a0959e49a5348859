"""Automatic retention: finished tasks deleted once older than the age kept for them.

Opt-in, per queue (``SimplePyQ(keep_done=..., keep_failed=...)``): the housekeeper of
a process running workers walks the table by windows of ids, from where it stopped,
and deletes what has expired in small transactions. Reading a window takes no write
lock; each delete checks every row again, so that a task requeued or needed by a
blocked dependent since the read is kept. A claim waits at most for one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from simplepyq.storage.base import Store

EVERY = 5.0
"""Seconds between the housekeeper's retention steps."""
WINDOW = 5_000
"""Task ids read per look."""
BATCH = 500
"""Tasks deleted per transaction."""
WINDOWS_PER_STEP = 4
"""Windows a housekeeping step walks: it stays short, whatever the table's size."""


@dataclass(frozen=True)
class Retention:
    """How long finished tasks are kept, in seconds (None: forever)."""

    keep_done: float | None = None
    keep_failed: float | None = None
    """For failed and cancelled tasks."""

    @property
    def active(self) -> bool:
        return self.keep_done is not None or self.keep_failed is not None

    def cutoffs(self, now: float) -> tuple[float | None, float | None]:
        """The finish times before which done, and failed or cancelled, tasks go."""
        return (None if self.keep_done is None else now - self.keep_done,
                None if self.keep_failed is None else now - self.keep_failed)


class Sweeper:
    """Walks a store's tasks by id, a few windows a step, deleting the expired ones."""

    def __init__(self, store: Store, retention: Retention) -> None:
        self._store = store
        self._retention = retention
        self._next = 0
        """The first id of the next window; back to 0 after the last."""

    def step(self, now: float, windows: int = WINDOWS_PER_STEP) -> tuple[int, bool]:
        """Walk up to ``windows`` windows: how many tasks were deleted, and whether the
        walk reached the end of the table (and starts again from the first id)."""
        done_before, failed_before = self._retention.cutoffs(now)
        top = self._store.max_task_id()
        deleted = 0
        for _ in range(windows):
            start, self._next = self._next, self._next + WINDOW
            found = self._store.expired(start, self._next, done_before, failed_before)
            for first in range(0, len(found), BATCH):
                deleted += self._store.prune(found[first:first + BATCH], done_before,
                                             failed_before)
            if self._next > top:
                self._next = 0
                return deleted, True
        return deleted, False

    def sweep(self, now: float) -> int:
        """Walk the whole table once, from its first id; how many tasks were deleted."""
        self._next, deleted = 0, 0
        while True:
            count, ended = self.step(now, windows=1)
            deleted += count
            if ended:
                return deleted
