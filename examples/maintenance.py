"""A maintenance script: look at a store, requeue what failed for a reason that has
passed, delete what is old, and say whether some tasks have nobody to run them.

    python examples/maintenance.py [--db STORE] [--requeue ERROR ...] [--purge-days N]

It imports none of the tasks' code: a maintenance script works on the store
alone, whatever process defined the channels. The store is ``--db``, or
``$SIMPLEPYQ_DB`` as for the ``simplepyq`` command. It exits 1 when some channel
has unfinished tasks but no live worker, so that cron or a monitoring check can
tell. The tutorial "Maintenance scripts and the command line" explains it.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta

from simplepyq import SimplePyQ, Status

UNFINISHED = ("pending", "delayed", "running")


def requeue_failed_by(queue: SimplePyQ, errors: set[str], retries: int) -> list[int]:
    """Make pending again each failed task whose exception is named in ``errors``
    (``ConnectionError``, say); their ids."""
    failed = sum(counts["failed"] for counts in queue.stats().values())
    requeued = []
    for task in queue.tasks(status=Status.FAILED, limit=failed) if failed else []:
        last_line = (task.error or "").strip().splitlines()[-1:] or [""]
        if last_line[0].split(":")[0] in errors and queue.requeue(task.id, retries=retries):
            requeued.append(task.id)
    return requeued


def stranded(queue: SimplePyQ) -> list[str]:
    """The channels with unfinished tasks that no live process runs."""
    live = queue.live_workers()
    return [name for name, counts in queue.stats().items()
            if any(counts[status] for status in UNFINISHED) and not live.get(name)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Look after a simplepyq store.")
    parser.add_argument("--db", default=os.environ.get("SIMPLEPYQ_DB"),
                        help="the store: a file, or a postgresql:// URL ($SIMPLEPYQ_DB)")
    parser.add_argument("--requeue", action="append", default=[], metavar="ERROR",
                        help="requeue failed tasks that raised this exception (repeatable)")
    parser.add_argument("--retries", type=int, default=0,
                        help="retries to give the requeued tasks (default 0: one run)")
    parser.add_argument("--purge-days", type=float, default=30,
                        help="delete tasks finished more than this many days ago")
    options = parser.parse_args(argv)
    if not options.db:
        parser.error("give --db, or set $SIMPLEPYQ_DB")
    if "://" not in options.db and not os.path.exists(options.db):
        parser.error(f"no store at {options.db}")  # opening it would create an empty one

    with SimplePyQ(options.db) as queue:
        for channel, counts in sorted(queue.stats().items()):
            shown = ", ".join(f"{count} {status}" for status, count in counts.items() if count)
            print(f"{channel}: {shown or 'empty'}")
        for task_id in requeue_failed_by(queue, set(options.requeue), options.retries):
            print(f"requeued task {task_id}")
        purged = queue.purge(timedelta(days=options.purge_days))
        print(f"purged {purged} task(s) finished more than {options.purge_days:g} days ago")
        nobody = stranded(queue)
        for channel in nobody:
            print(f"channel {channel} has unfinished tasks but no live worker", file=sys.stderr)
        return 1 if nobody else 0


if __name__ == "__main__":
    sys.exit(main())
