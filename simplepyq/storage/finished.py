"""The finished-task counters, in the store's transactions (internal).

``simplepyq_finished`` holds, per channel, how many tasks ended done, failed and
cancelled in each minute, and a total row per channel into which housekeeping folds
the minutes older than a few hours (``fold_finished``). With it the dashboard counts
done tasks without reading them: they are most of a long-lived table, and counting
them took a full scan (``stats``).

Every transaction that ends tasks adds them before it commits: it tallies them here,
per channel, and writes one upsert per channel (``count_finished``), however many
tasks it ended. Triggers on the inserts and updates of tasks would count the same
and cost every task of every claim and record (measured: 80k more CPU instructions
per task on SQLite); this costs one statement per commit. Deleted done tasks are
counted (``removed``) by a trigger on deletes, which are rare and come from anywhere
(a purge, retention, a 0.1.3 process): the done tasks a store holds are those
counted done less those removed.

Each backend's ``count_finished`` says which row a transaction adds to: on SQLite,
the minute's (one writer at a time); on PostgreSQL, the minute's row of the server
process of its connection, so that two transactions running at once never wait for
each other's row lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

ENDS = ("done", "failed", "cancelled")
"""The statuses a task ends in, as counted (the columns of ``simplepyq_finished``)."""
_COLUMN = {status: index for index, status in enumerate(ENDS)}
_REMOVED = len(ENDS)


def minute_of(epoch: float) -> int:
    """The minute of a Unix time, as the counters number minutes (seconds // 60)."""
    return int(epoch // 60)


class Ended:
    """The tasks one transaction ended, per channel and status, waiting to be counted."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        """channel -> [done, failed, cancelled, removed]"""

    def __bool__(self) -> bool:
        return bool(self._counts)

    def add(self, channel: str, status: str, count: int = 1) -> None:
        """Count ``count`` tasks of ``channel`` that ended ``status``; a status that is no
        end (a retry made the task pending or delayed) counts nothing."""
        column = _COLUMN.get(status)
        if column is not None and count > 0:
            self._tally(channel)[column] += count

    def add_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Count each row of (channel, status), as statements that end tasks return them."""
        for channel, status in rows:
            self.add(str(channel), str(status))

    def left_done(self, channel: str, count: int = 1) -> None:
        """Count ``count`` done tasks of ``channel`` that are done no more (made to run
        again), as a delete of them would be counted."""
        if count > 0:
            self._tally(channel)[_REMOVED] += count

    def _tally(self, channel: str) -> list[int]:
        tally = self._counts.get(channel)
        if tally is None:
            tally = self._counts[channel] = [0, 0, 0, 0]
        return tally

    def write(self, conn: Any, q: dict[str, str], now: float) -> None:
        """Add what was counted to the counters of the minute of ``now``, in the caller's
        transaction (one statement per channel, in name order), and start again."""
        if not self._counts:
            return
        minute = minute_of(now)
        for channel, tally in sorted(self._counts.items()):
            conn.execute(q["count_finished"], (minute, channel, *tally))
        self._counts.clear()
