"""Tests of the Flask example, with Flask's test client: the view's task drained, and
run by workers in the app's process.

Run it with ``python -m pytest examples/test_flask_app.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import flask_app
import pytest

from simplepyq import SimplePyQ
from simplepyq.testing import enqueued, isolated


@pytest.fixture
def queue() -> Iterator[SimplePyQ]:
    """The app's queue, on a store of its own in memory for the test."""
    with isolated(flask_app.queue) as queue:
        yield queue
        queue.stop()


def test_signup_enqueues_a_welcome_mail_that_the_drain_sends(queue: SimplePyQ) -> None:
    client = flask_app.create_app(workers=False).test_client()
    answer = client.post("/signup", data={"email": "ada@example.com"})
    assert answer.status_code == 202
    assert [task.args for task in enqueued(queue, "email")] == [{"email": "ada@example.com"}]
    queue.drain()
    shown = client.get(f"/tasks/{answer.json['task']}")  # type: ignore[index]
    assert shown.json == {"status": "done", "result": "welcome mail sent to ada@example.com"}


def test_a_bad_address_is_refused_and_enqueues_nothing(queue: SimplePyQ) -> None:
    client = flask_app.create_app(workers=False).test_client()
    assert client.post("/signup", data={"email": "ada"}).status_code == 400
    assert enqueued(queue) == []


def test_workers_started_by_the_app_send_the_mail(queue: SimplePyQ) -> None:
    client = flask_app.create_app().test_client()
    task_id = client.post("/signup", data={"email": "bob@example.com"}).json["task"]  # type: ignore[index]
    assert queue.wait(task_id, timeout=10).result == "welcome mail sent to bob@example.com"
