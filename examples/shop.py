"""A small application whose view enqueues a task: what ``test_shop.py`` tests.

``signup`` stands for a web view: it stores nothing itself and enqueues a welcome
email for a worker to send. The queue is made once, at import, as an application
makes it; its store is ``$SHOP_TASKS``, or ``shop_tasks.db`` in the current
directory.
"""

from __future__ import annotations

import os

from simplepyq import SimplePyQ

queue = SimplePyQ(os.environ.get("SHOP_TASKS", "shop_tasks.db"))
outbox: list[str] = []
"""The mails sent so far."""


def deliver(email: str) -> None:
    """Hand a mail to the mail server (here, to ``outbox``)."""
    outbox.append(email)


@queue.channel("email", backoff=60)
def send_welcome(args: dict[str, str]) -> str:
    deliver(args["email"])
    queue.enqueue("audit", {"event": "welcomed", "email": args["email"]})
    return f"sent to {args['email']}"


@queue.channel("audit")
def audit(args: dict[str, str]) -> None:
    """Keep a record of what was done (here, nothing more than the task itself)."""


def signup(email: str) -> dict[str, object]:
    """The view: validate, enqueue the welcome mail, answer at once."""
    if "@" not in email:
        return {"status": 400, "error": f"not an email address: {email!r}"}
    task_id = send_welcome.enqueue({"email": email}, retries=2)
    return {"status": 202, "task": task_id}
