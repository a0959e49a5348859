"""The application's queue and its channels: what the web process and the workers
both import.

The store is ``$WEBAPP_DB``, or ``webapp_tasks.db`` in the current directory. A
worker process runs these channels with ``simplepyq worker webapp.tasks:queue``.
"""

from __future__ import annotations

import os

from simplepyq import SimplePyQ, current_task

queue = SimplePyQ(os.environ.get("WEBAPP_DB", "webapp_tasks.db"))


@queue.channel("report", max_workers=2, time_limit=60)
def build_report(args: dict[str, int]) -> dict[str, int]:
    """Add up a month's orders (made up here from the month's number)."""
    month = args["month"]
    task = current_task()
    total = 0
    for day in range(1, 29):
        total += (month * 7 + day) % 13  # your database query goes here
        if task is not None:
            task.set_progress({"day": day, "of": 28})
    return {"month": month, "days": 28, "total": total}
