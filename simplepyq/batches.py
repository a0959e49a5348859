"""Batching (internal): claimed tasks waiting for a worker, and outcomes waiting for a commit.

A commit per task per state change would bound a queue to the disk's commit rate.
So a worker claims a batch sized to a few milliseconds of the channel's measured
work, and the outcomes of finished tasks share one commit, made together with the
next claim. Both waits are bounded: an outcome waits at most ``GROUP_WINDOW`` for
company, and a claimed task that no worker of this process starts within
``HOLD_LIMIT`` is released for other processes to take.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

from simplepyq.storage.base import Claimed, Outcome

BATCH_SECONDS = 0.005
"""How much work, at the channel's measured pace, one claim takes per worker."""
MAX_BATCH = 256
GROUP_WINDOW = 0.002
"""The longest a finished task's outcome waits for others to share its commit."""
HOLD_LIMIT = 0.1
"""A claimed task not started this long is released, so a busy process holds no work hostage."""


class Pace:
    """How long a channel's tasks take, learned from their runs (a moving average)."""

    def __init__(self) -> None:
        self.seconds: float | None = None

    def ran(self, seconds: float) -> None:
        known = self.seconds
        self.seconds = seconds if known is None else 0.8 * known + 0.2 * seconds


class Hand:
    """The tasks of one channel that this process has claimed but not started yet."""

    def __init__(self, workers: int, pace: Pace) -> None:
        self._workers = workers
        self._pace = pace
        self._lock = threading.Lock()
        self._tasks: deque[Claimed] = deque()
        self._held_since = 0.0
        self.refilling = threading.Lock()
        """Held by the one worker claiming for this channel, so others wait for its batch."""

    def take(self) -> Claimed | None:
        """The next claimed task, highest priority first, or None if none is held."""
        with self._lock:
            return self._tasks.popleft() if self._tasks else None

    def put(self, tasks: Sequence[Claimed]) -> None:
        with self._lock:
            if not self._tasks:
                self._held_since = time.monotonic()
            self._tasks.extend(tasks)

    def wanted(self) -> int:
        """How many tasks the next claim should take: about BATCH_SECONDS per worker."""
        seconds = self._pace.seconds
        if seconds is None:
            return self._workers
        per_worker = BATCH_SECONDS / max(seconds, 1e-6)
        return max(1, min(MAX_BATCH, int(per_worker * self._workers)))

    def stale(self, now: float) -> bool:
        """Whether the oldest held task has waited past HOLD_LIMIT for a worker."""
        with self._lock:
            return bool(self._tasks) and now - self._held_since >= HOLD_LIMIT

    def empty(self) -> list[Claimed]:
        """Give up every held task; the tasks given up."""
        with self._lock:
            tasks = list(self._tasks)
            self._tasks.clear()
        return tasks


class Outbox:
    """Outcomes of finished tasks that are not committed yet, in the order they came."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._since = 0.0

    def add(self, outcome: Outcome) -> bool:
        """Keep ``outcome`` for the next commit; True if it is the only one waiting."""
        with self._lock:
            first = not self._outcomes
            if first:
                self._since = time.monotonic()
            self._outcomes.append(outcome)
            return first

    def take(self) -> list[Outcome]:
        """Every waiting outcome, for one commit."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
            return outcomes

    def restore(self, outcomes: list[Outcome]) -> None:
        """Put back outcomes whose commit failed, ahead of newer ones, to be tried again."""
        if not outcomes:
            return
        with self._lock:
            if not self._outcomes:
                self._since = time.monotonic()
            self._outcomes[:0] = outcomes

    def due_in(self, now: float) -> float | None:
        """Seconds until the oldest waiting outcome must be committed; None if none waits."""
        with self._lock:
            if not self._outcomes:
                return None
            return max(self._since + GROUP_WINDOW - now, 0.0)
