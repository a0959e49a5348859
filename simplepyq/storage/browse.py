"""Browsing the store and acting on one task (internal): the verbs a dashboard needs,
written once for both backends, as ``QueryStore`` writes the others.

A listing is a page read by keyset: tasks (or workflows) with ids below a bound,
newest first, so that a page costs the same however deep it is, and nothing is
counted or skipped over to find it. Each action on one task is one transaction
whose statement decides whether the task's state allows it, so that a task that
changed meanwhile (claimed, ended, requeued by another process) is refused, not
overwritten: the caller then shows the task as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from simplepyq.storage import dependents
from simplepyq.storage.queries import QueryStore

NO_BOUND = 2**63 - 1
"""The ``before`` of a first page: above every id a task can have (64 bits)."""


class BrowseStore(QueryStore):
    """The browsing verbs of the store contract (see ``Store``), on a backend's ``Q``.

    A backend may choose how a page of one status is found (``_status_filter``), and
    say how other processes learn that a task can run now (``_runnable_now``).
    """

    Q: ClassVar[dict[str, str]]

    def recent(self, channel: str | None, status: str | None, key: str | None,
               before: int | None, limit: int) -> list[tuple[Any, ...]]:
        values = {"channel": channel, "status": status, "key": key,
                  "before": NO_BOUND if before is None else before, "limit": limit}

        def read(conn: Any) -> list[tuple[Any, ...]]:
            # (With a key, the index of keys serves any page.)
            status_filter = None if status is None else \
                "recent_status" if key is not None else self._status_filter(conn, values)
            statement = _recent_statement(self.Q, channel is not None, status_filter,
                                          key is not None)
            return [tuple(row) for row in conn.execute(statement, values).fetchall()]

        return self._read(read)

    def _status_filter(self, conn: Any, values: dict[str, Any]) -> str:
        """The name of the filter that finds a page of one status (of one channel, if
        ``values`` names one) soonest, looked for in the caller's read; by default the
        plain equality, and the planner chooses with its statistics."""
        return "recent_status"

    def requeue(self, task_id: int, retries: int | None) -> str | None:
        values = {"id": task_id, "retries": retries}

        def requeue(conn: Any) -> str | None:
            row = conn.execute(self.Q["requeue"], values).fetchone()
            if row is None:
                return None
            dependents.restore(conn, self.Q, self._ids, [task_id])
            self._runnable_now(conn, str(row[0]))
            return str(row[0])

        return self._write(requeue)

    def delete(self, task_id: int) -> bool:
        def delete(conn: Any) -> bool:
            if conn.execute(self.Q["lock_task"], {"id": task_id}).fetchone() is None:
                return False
            if conn.execute(self.Q["delete_task"], {"id": task_id}).fetchone() is None:
                return False  # it runs, or a blocked task waits for it
            ids = self._ids([task_id])
            for forget in ("forget_flows_of", "forget_edges_of", "forget_ticks_of"):
                conn.execute(self.Q[forget], {"ids": ids})
            return True

        return self._write(delete)

    def run_now(self, task_id: int, now: float) -> str | None:
        def hurry(conn: Any) -> str | None:
            row = conn.execute(self.Q["run_now"], {"id": task_id, "now": now}).fetchone()
            if row is None:
                return None
            self._runnable_now(conn, str(row[0]))
            return str(row[0])

        return self._write(hurry, notify=False)

    def _runnable_now(self, conn: Any, channel: str) -> None:
        """Tell other processes, in the caller's transaction, that a task of ``channel``
        can run now, where the backend can say so; by default the commit itself is
        what they hear of (SQLite's watch on its log)."""

    def running_by_owner(self) -> dict[str, int]:
        return self._read(lambda c: {str(owner): int(count) for owner, count
                                     in c.execute(self.Q["running_by_owner"])})

    def recent_workflows(self, before: int | None, limit: int
                         ) -> list[tuple[int, dict[str, int]]]:
        values = {"before": NO_BOUND if before is None else before, "limit": limit}

        def read(conn: Any) -> list[tuple[int, dict[str, int]]]:
            page: dict[int, dict[str, int]] = {}
            for workflow, status, count in conn.execute(self.Q["recent_workflows"], values):
                counts = page.setdefault(int(workflow), {})
                if status is not None:  # (None: a workflow row whose task is gone)
                    counts[str(status)] = int(count)
            return sorted(page.items(), reverse=True)

        return self._read(read)


def _recent_statement(q: dict[str, str], channel: bool, status_filter: str | None,
                      key: bool) -> str:
    """``recent_tasks`` with the filters asked for, the status's as named (a few string
    joins: the drivers cache the statements they prepare by their text)."""
    chosen: Sequence[str | None] = (
        "recent_channel" if channel else None, status_filter, "recent_key" if key else None)
    return q["recent_tasks"].replace("{filters}", " ".join(
        q[name] for name in chosen if name is not None))
