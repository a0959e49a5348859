"""Quick start: enqueue tasks, run them with retries and a deferral, then show the results.

Run it with ``python examples/quickstart.py``; it keeps its store in a temporary
directory, removed when it ends.
"""

from __future__ import annotations

import os
import tempfile

from simplepyq import DelayException, SimplePyQ

attempts: dict[int, int] = {}


def resize(args: dict[str, int]) -> str:
    """Pretend to resize an image; the first try on odd sizes hits a transient error."""
    size = args["size"]
    attempts[size] = attempts.get(size, 0) + 1
    if size % 2 and attempts[size] == 1:
        raise ConnectionError(f"storage unavailable for size {size}")
    return f"resized to {size}x{size}"


rate_limited: set[str] = set()


def notify(args: dict[str, str]) -> str:
    """Pretend to call a rate-limited API: told to wait once, the task defers itself."""
    user = args["user"]
    if user not in rate_limited:
        rate_limited.add(user)
        raise DelayException(0.2)  # does not use up a retry
    return f"notified {user}"


def main() -> None:
    with tempfile.TemporaryDirectory() as directory, \
            SimplePyQ(os.path.join(directory, "tasks.db")) as queue:
        queue.add_channel("resize", resize, max_workers=2)
        queue.add_channel("notify", notify)

        ids = queue.enqueue_many("resize", [{"size": n} for n in (64, 65, 128)], retries=1)
        ids.append(queue.enqueue("notify", {"user": "ada"}))
        queue.run_until_complete()

        for task_id in ids:
            task = queue.get_task(task_id)
            assert task is not None
            print(f"task {task.id} [{task.channel}] {task.status.upper()} after "
                  f"{task.attempts} attempt(s): {task.result!r}")
        print("counts per channel:", queue.stats())


if __name__ == "__main__":
    main()
