"""Testing code that enqueues, two ways: the eager mode, and the drain.

Run it with ``python -m pytest examples/test_shop.py``. ``isolated`` puts the
application's own queue on a fresh store in memory for each test, so that nothing
reaches the real store and no test sees another's tasks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import shop

from simplepyq import SimplePyQ, Status
from simplepyq.testing import enqueued, isolated


@pytest.fixture
def eager_queue() -> Iterator[SimplePyQ]:
    """The shop's queue, eager: each enqueue runs its task before it returns."""
    shop.outbox.clear()
    with isolated(shop.queue, eager=True) as queue:
        yield queue


@pytest.fixture
def queue() -> Iterator[SimplePyQ]:
    """The shop's queue, holding its tasks until the test drains it."""
    shop.outbox.clear()
    with isolated(shop.queue) as queue:
        yield queue


def test_signup_sends_the_welcome_mail(eager_queue: SimplePyQ) -> None:
    answer = shop.signup("ada@example.com")
    assert answer["status"] == 202
    assert shop.outbox == ["ada@example.com"]
    task = eager_queue.get_task(answer["task"])  # type: ignore[arg-type]
    assert task is not None and task.status is Status.DONE
    assert task.result == "sent to ada@example.com"
    assert [t.args for t in enqueued(eager_queue, "audit")] == [
        {"event": "welcomed", "email": "ada@example.com"}]


def test_signup_enqueues_the_mail_and_the_drain_sends_it(queue: SimplePyQ) -> None:
    shop.signup("ada@example.com")
    assert shop.outbox == []  # enqueued, not sent yet
    assert [t.args for t in enqueued(queue, "email")] == [{"email": "ada@example.com"}]
    ran = queue.drain()
    assert [(t.channel, t.status) for t in ran] == [("email", Status.DONE),
                                                    ("audit", Status.DONE)]
    assert shop.outbox == ["ada@example.com"]


def test_a_bad_address_enqueues_nothing(queue: SimplePyQ) -> None:
    assert shop.signup("not-an-address")["status"] == 400
    assert enqueued(queue) == []


def test_a_failed_send_is_retried_after_its_backoff(queue: SimplePyQ,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = iter([ConnectionError("mail server down")])
    deliver = shop.deliver

    def down_once(email: str) -> None:
        error = next(outcomes, None)
        if error is not None:
            raise error
        deliver(email)

    monkeypatch.setattr(shop, "deliver", down_once)
    shop.signup("ada@example.com")
    first = queue.drain()
    assert first[0].status is Status.DELAYED  # waiting out the channel's 60 s backoff
    assert "ConnectionError: mail server down" in (first[0].history[0].error or "")
    again = queue.drain(due=True)  # treat the delayed retry as due now
    assert [(t.channel, t.status) for t in again] == [("email", Status.DONE),
                                                      ("audit", Status.DONE)]
    assert shop.outbox == ["ada@example.com"]
