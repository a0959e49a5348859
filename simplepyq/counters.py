"""Finished-task counters: how many tasks ended done, failed and cancelled, per channel
and minute (a throughput chart) and in total since the store began counting (a
Prometheus counter, which survives restarts and deletes).

The store keeps them in the very transactions that end tasks (see
``storage/finished.py``), at no cost to a task's own statements. A process running
workers folds the minutes older than ``KEPT_MINUTES`` into each channel's total every
``FOLD_EVERY`` seconds, so that the counters stay a few hundred rows however long the
store lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from simplepyq.storage.finished import minute_of

FOLD_EVERY = 300.0
"""Seconds between the housekeeper's folds."""
KEPT_MINUTES = 120
"""Minutes kept one by one (``SimplePyQ.finished`` shows the last of them); older ones
are folded into the totals."""


@dataclass(frozen=True)
class FinishedMinute:
    """How many tasks of a channel ended in one minute, as ``SimplePyQ.finished`` lists
    them: by the time of the commit that ended them."""

    channel: str
    minute: datetime
    """The start of the minute (aware, UTC)."""
    done: int
    """Tasks that ended done in that minute."""
    failed: int
    """Tasks that ended failed (no retry left, or a crash loop)."""
    cancelled: int
    """Tasks that ended cancelled (by ``cancel``, or with an upstream that failed)."""

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> FinishedMinute:
        """One row of ``Store.finished``: (channel, minute number, done, failed, cancelled)."""
        channel, minute, done, failed, cancelled = row
        return cls(str(channel), datetime.fromtimestamp(int(minute) * 60, tz=timezone.utc),
                   int(done), int(failed), int(cancelled))


def since(minutes: int, now: float) -> int:
    """The first minute of the last ``minutes`` minutes at ``now`` (the current one counts)."""
    return minute_of(now) - minutes + 1


def fold_before(now: float) -> int:
    """The minute before which a fold at ``now`` folds (``Store.fold_finished``): the
    last ``KEPT_MINUTES`` are kept one by one."""
    return minute_of(now) - KEPT_MINUTES
