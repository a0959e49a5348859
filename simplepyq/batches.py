"""Batching (internal): claimed tasks waiting for a worker, and outcomes waiting for a commit.

A commit per task per state change would bound a queue to the disk's commit rate.
So a worker claims a batch sized to a few milliseconds of the channel's measured
work, and the outcomes of finished tasks share one commit, made together with the
next claim. Both waits are bounded: an outcome waits at most ``GROUP_WINDOW`` for
company, and a claimed task that no worker of this process starts within
``HOLD_LIMIT`` is released for other processes to take. While commits fail, the
outcomes wait longer between tries (``RETRY_FIRST`` up to ``RETRY_LONGEST``). The
``Ledger`` knows which claimed tasks this process holds, so that after a commit
whose fate is unknown the claimed tasks that nobody holds can be told apart.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from simplepyq.storage.base import Claimed, Outcome

BATCH_SECONDS = 0.005
"""How much work, at the channel's measured pace, one claim takes per worker."""
MAX_BATCH = 256
GROUP_WINDOW = 0.002
"""The longest a finished task's outcome waits for others to share its commit."""
HOLD_LIMIT = 0.1
"""A claimed task not started this long is released, so a busy process holds no work hostage."""
RETRY_FIRST = 0.01
"""Seconds before outcomes whose commit failed are tried again; doubled at each failure."""
RETRY_LONGEST = 1.0
"""The longest pause between tries to commit outcomes while the store keeps failing."""
RECHECK = 1.0
"""Seconds after a commit whose fate is unknown that orphans are looked for once more: the
server may finish that commit after the client has seen its connection break."""


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
    """Outcomes of finished tasks that are not committed yet, in the order they came.

    An outcome is waiting until a committer ``take``s it, then in flight until the
    committer says it was ``settled`` or gives it back with ``restore``. While
    commits keep failing, the next try waits longer each time (``RETRY_FIRST``
    doubling up to ``RETRY_LONGEST``), so a full disk or a server down is not
    hammered; the first commit that works makes outcomes due at once again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._in_flight = 0
        self._since = 0.0
        self._retry_at = 0.0
        self._failures = 0

    def add(self, outcome: Outcome) -> bool:
        """Keep ``outcome`` for the next commit; True if it is the only one waiting."""
        with self._lock:
            first = not self._outcomes
            if first:
                self._since = time.monotonic()
            self._outcomes.append(outcome)
            return first

    def take(self) -> list[Outcome]:
        """Every waiting outcome, for one commit; they are in flight until ``settled``
        or ``restore``d."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
            self._in_flight += len(outcomes)
            return outcomes

    def settled(self, outcomes: list[Outcome]) -> None:
        """A commit that took ``outcomes`` (perhaps none) went through: the store works."""
        with self._lock:
            self._in_flight -= len(outcomes)
            self._failures = 0
            self._retry_at = 0.0

    def restore(self, outcomes: list[Outcome]) -> None:
        """Put back outcomes whose commit failed, ahead of newer ones, to be tried again
        after a pause that grows with each failure in a row (a failed commit that carried
        no outcome does not count)."""
        if not outcomes:
            return
        with self._lock:
            self._in_flight -= len(outcomes)
            self._failures += 1
            pause = min(RETRY_FIRST * 2 ** min(self._failures - 1, 30), RETRY_LONGEST)
            self._retry_at = time.monotonic() + pause
            if not self._outcomes:
                self._since = time.monotonic()
            self._outcomes[:0] = outcomes

    def pausing(self, now: float) -> bool:
        """Whether commits failed lately and the pause before the next try lasts at ``now``."""
        return self._retry_at > now

    def due_in(self, now: float) -> float | None:
        """Seconds until the oldest waiting outcome must be committed; None if none waits."""
        with self._lock:
            if not self._outcomes:
                return None
            return max(self._since + GROUP_WINDOW - now, self._retry_at - now, 0.0)

    def unsettled(self) -> int:
        """How many outcomes are not committed yet: waiting, or in a commit under way."""
        with self._lock:
            return len(self._outcomes) + self._in_flight


class Ledger:
    """Which tasks this process holds, for telling orphans from its own work after a
    commit whose fate is unknown (the connection was lost while it committed).

    A task is held from the claim that hands it to this process until its outcome
    is committed or it is released: in a ``Hand``, being run, or in the ``Outbox``.
    Every store call that claims, records or releases runs inside ``call()``;
    ``audit()`` waits until none is under way and keeps new ones out while it runs,
    so a claim half done is never taken for an orphan. Holding too much is harmless
    (an audit leaves those tasks alone); holding too little is not.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: set[int] = set()
        self._doubted: set[int] = set()
        self._audits_due: list[float] = []
        self._calls = 0
        self._auditing = False

    @contextmanager
    def call(self) -> Iterator[None]:
        """Run a store call that changes which tasks are held (never inside ``audit``)."""
        with self._cond:
            while self._auditing:
                self._cond.wait()
            self._calls += 1
        try:
            yield
        finally:
            with self._cond:
                self._calls -= 1
                if not self._calls and self._auditing:
                    self._cond.notify_all()

    def hold(self, task_ids: Iterable[int]) -> None:
        with self._cond:
            self._held.update(task_ids)

    def drop(self, task_ids: Iterable[int]) -> set[int]:
        """Hold these tasks no longer; those of them whose outcome was in doubt."""
        with self._cond:
            ids = set(task_ids)
            self._held.difference_update(ids)
            if not self._doubted:
                return set()
            doubted = ids & self._doubted
            self._doubted.difference_update(ids)
            return doubted

    def unknown(self, outcome_ids: Iterable[int], now: float) -> None:
        """A commit's fate is unknown: the outcomes it carried (``outcome_ids``) may be
        recorded already, and what it claimed or released is not known. Audit now, and
        once more ``RECHECK`` later in case the server was still committing it."""
        with self._cond:
            self._doubted.update(outcome_ids)
            self._audits_due.extend((now, now + RECHECK))

    def audit_due(self, now: float) -> bool:
        """Whether an audit is owed by ``now`` (monotonic time)."""
        if not self._audits_due:  # the common case, without taking the lock
            return False
        with self._cond:
            return any(due <= now for due in self._audits_due)

    @contextmanager
    def audit(self) -> Iterator[list[int]]:
        """The ids held, with no store call under way until the block ends; a block that
        ends without an exception settles the audits that were due when it began."""
        with self._cond:
            while self._auditing:
                self._cond.wait()
            self._auditing = True
            while self._calls:
                self._cond.wait()
            began = time.monotonic()
            held = sorted(self._held)
        try:
            yield held
            with self._cond:
                self._audits_due = [due for due in self._audits_due if due > began]
        finally:
            with self._cond:
                self._auditing = False
                self._cond.notify_all()
