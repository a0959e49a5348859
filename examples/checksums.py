"""Checksum every file under a directory with four threads, resumably.

    python examples/checksums.py DIR

Its store is ``checksums.db`` in the current directory (or ``$CHECKSUMS_DB``). The
first run enqueues one task per file, then works through them. A run that is
stopped (Ctrl-C, a crash, a reboot) leaves the tasks it did not finish in the
store, and the next run goes on with those instead of starting again. Every run
ends by printing the checksums in ``sha256sum``'s format, and the files it could
not read. The tutorial "A script that works through a batch" builds it step by step.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

from simplepyq import Backoff, SimplePyQ, Status

queue = SimplePyQ(os.environ.get("CHECKSUMS_DB", "checksums.db"))


@queue.channel("checksum", max_workers=4, backoff=Backoff(0.1, factor=2))
def checksum(path: str) -> str:
    """The SHA-256 of one file, in hexadecimal."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_under(directory: str) -> list[str]:
    """Every file under ``directory``, sorted, as paths starting with it."""
    found: list[str] = []
    for parent, folders, names in os.walk(directory):
        folders.sort()
        found.extend(os.path.join(parent, name) for name in sorted(names))
    return found


def enqueue_or_resume(directory: str) -> None:
    """Enqueue a task per file, unless an earlier run left tasks to finish."""
    counts = queue.stats().get("checksum", {})
    unfinished = sum(counts.get(status, 0) for status in ("pending", "delayed", "running"))
    if unfinished:
        print(f"resuming: {unfinished} file(s) left by an earlier run", file=sys.stderr)
    elif not any(counts.values()):
        ids = queue.enqueue_many("checksum", files_under(directory), retries=2)
        print(f"enqueued {len(ids)} file(s)", file=sys.stderr)


def report() -> int:
    """Print each file's checksum, then the failures; the number of failures."""
    total = sum(queue.stats()["checksum"].values())
    tasks = queue.tasks("checksum", limit=total)
    for task in tasks:
        if task.status is Status.DONE:
            print(f"{task.result}  {task.args}")
    failed = [task for task in tasks if task.status is Status.FAILED]
    for task in failed:
        reason = (task.error or "").strip().splitlines()[-1]
        print(f"FAILED {task.args} after {task.attempts} attempt(s): {reason}",
              file=sys.stderr)
    return len(failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Checksum every file under a directory.")
    parser.add_argument("directory")
    options = parser.parse_args(argv)
    enqueue_or_resume(options.directory)
    queue.run_until_complete(progress=True)
    return 1 if report() else 0


if __name__ == "__main__":
    sys.exit(main())
