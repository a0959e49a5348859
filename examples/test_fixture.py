"""The ``simplepyq_queue`` fixture: a fresh queue in memory for each test, for code
that takes its queue as an argument.

Run it with ``python -m pytest examples/test_fixture.py``.
"""

from __future__ import annotations

from simplepyq import SimplePyQ, Status, TaskId


def schedule_reminders(queue: SimplePyQ, users: list[str]) -> list[TaskId]:
    """The code under test: one reminder per user, each an hour from now."""
    return queue.enqueue_many("remind", [{"user": user} for user in users], delay=3600)


def test_reminders_wait_an_hour_then_run(simplepyq_queue: SimplePyQ) -> None:
    reminded: list[str] = []
    simplepyq_queue.add_channel("remind", lambda args: reminded.append(args["user"]))

    ids = schedule_reminders(simplepyq_queue, ["ada", "bob"])
    assert simplepyq_queue.drain() == []  # nothing is due yet
    ran = simplepyq_queue.drain(due=True)  # as if the hour had passed
    assert [task.id for task in ran] == ids
    assert all(task.status is Status.DONE for task in ran)
    assert reminded == ["ada", "bob"]
