# test_signup.py: run it with  python -m pytest test_signup.py
from collections.abc import Iterator

import pytest

from simplepyq import SimplePyQ, Status
from simplepyq.testing import enqueued, isolated

queue = SimplePyQ("app_tasks.db")  # the application's queue, as it makes it
sent: list[str] = []


@queue.channel("email")
def send_welcome(args: dict[str, str]) -> str:
    sent.append(args["to"])
    return "sent"


def signup(email: str) -> int:  # the view under test
    return send_welcome.enqueue({"to": email})


@pytest.fixture
def tasks() -> Iterator[SimplePyQ]:
    sent.clear()
    with isolated(queue) as q:
        yield q


def test_signup_enqueues_a_welcome_mail_that_the_drain_sends(tasks: SimplePyQ) -> None:
    task_id = signup("ada@example.com")
    assert [t.args for t in enqueued(tasks, "email")] == [{"to": "ada@example.com"}]
    assert sent == []  # enqueued, not run yet
    assert [t.id for t in tasks.drain()] == [task_id]
    assert sent == ["ada@example.com"]
    assert tasks.get_task(task_id).status is Status.DONE  # type: ignore[union-attr]


def test_signup_in_eager_mode_sends_before_it_returns(tasks: SimplePyQ) -> None:
    tasks.eager = True
    signup("bob@example.com")
    assert sent == ["bob@example.com"]
