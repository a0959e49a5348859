"""Tests of the Django example, with Django's test client: the view's task drained.

Run it with ``python -m pytest examples/test_django_app.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")
django.setup()

from django.test import Client  # noqa: E402 (after Django is set up)
from django_app import tasks  # noqa: E402

from simplepyq import SimplePyQ  # noqa: E402
from simplepyq.testing import enqueued, isolated  # noqa: E402


@pytest.fixture
def queue() -> Iterator[SimplePyQ]:
    """The project's queue, on a store of its own in memory for the test."""
    with isolated(tasks.queue) as queue:
        yield queue


def test_signup_enqueues_a_welcome_mail_that_the_drain_sends(queue: SimplePyQ) -> None:
    client = Client()
    answer = client.post("/signup", {"email": "ada@example.com"})
    assert answer.status_code == 202
    assert [task.args for task in enqueued(queue, "email")] == [{"email": "ada@example.com"}]
    queue.drain()
    shown = client.get(f"/tasks/{answer.json()['task']}")
    assert shown.json() == {"status": "done", "result": "welcome mail sent to ada@example.com"}


def test_a_bad_address_is_refused_and_enqueues_nothing(queue: SimplePyQ) -> None:
    assert Client().post("/signup", {"email": "ada"}).status_code == 400
    assert enqueued(queue) == []
