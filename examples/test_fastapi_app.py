"""Tests of the FastAPI example, with FastAPI's TestClient: the lifespan starts and
stops the workers, and an endpoint awaits a task's result.

Run it with ``python -m pytest examples/test_fastapi_app.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import fastapi_app
import pytest
from fastapi.testclient import TestClient

from simplepyq import SimplePyQ
from simplepyq.testing import enqueued, isolated


@pytest.fixture
def queue() -> Iterator[SimplePyQ]:
    """The app's queue, on a store of its own in memory for the test."""
    with isolated(fastapi_app.queue) as queue:
        yield queue


def test_the_lifespan_runs_the_workers_and_an_endpoint_awaits_the_result(
        queue: SimplePyQ) -> None:
    with TestClient(fastapi_app.app) as client:  # the lifespan starts the workers
        assert queue.running
        answer = client.post("/thumbnails", json={"path": "cat.jpg"})
        assert answer.status_code == 202
        shown = client.get(f"/thumbnails/{answer.json()['task']}", params={"wait": 10})
        assert shown.json() == {"status": "done", "result": {
            "path": "cat.jpg", "thumbnail": "cat.jpg.thumb.jpg", "size": 128}}
    assert not queue.running  # ... and stops them


def test_without_workers_the_task_waits_for_a_worker_elsewhere(
        queue: SimplePyQ, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPLEPYQ_WORKERS", "none")
    with TestClient(fastapi_app.app) as client:
        task_id = client.post("/thumbnails", json={"path": "dog.jpg", "size": 64}).json()["task"]
        assert client.get(f"/thumbnails/{task_id}").json() == {"status": "pending",
                                                               "result": None}
        assert [task.args for task in enqueued(queue)] == [{"path": "dog.jpg", "size": 64}]
        assert client.get("/thumbnails/999").status_code == 404
