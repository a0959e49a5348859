"""The task model: stored status strings and Task built from a row."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import msgpack
import pytest

from simplepyq import Status, Task


def _row(**overrides: object) -> tuple[object, ...]:
    row: dict[str, object] = {
        "id": 7, "channel": "c", "args": msgpack.packb({"a": [1, 2]}), "status": "done",
        "retries": 2, "attempts": 1, "priority": 5, "result": msgpack.packb("ok"),
        "error": None, "created_at": 0.0, "delay_until": None, "started_at": 1.5,
        "finished_at": 2.25,
    }
    row.update(overrides)
    return tuple(row.values())


def test_statuses_are_the_strings_stored_since_013() -> None:
    assert [s.value for s in Status] == ["pending", "running", "delayed", "done", "failed"]
    assert Status.FAILED == "failed"
    assert "delayed" in {Status.DELAYED}


def test_task_from_row_decodes_args_result_and_times() -> None:
    task = Task.from_row(_row())
    assert (task.id, task.channel, task.args, task.result) == (7, "c", {"a": [1, 2]}, "ok")
    assert (task.status, task.retries, task.attempts, task.priority) == ("done", 2, 1, 5)
    assert task.created_at == datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert task.finished_at == datetime(1970, 1, 1, 0, 0, 2, 250000, tzinfo=timezone.utc)
    assert task.run_at is None
    assert task.finished


def test_undecodable_blobs_are_kept_as_raw_bytes() -> None:
    task = Task.from_row(_row(args=b"\xc1\xc1", result=b"\xc1"))
    assert (task.args, task.result) == (b"\xc1\xc1", b"\xc1")


def test_row_with_nulls_and_unknown_status_still_makes_a_task() -> None:
    task = Task.from_row(_row(args=None, status="archived", retries=None, attempts=None,
                              priority=None, result=None, created_at=None, started_at=None,
                              finished_at=None))
    assert (task.args, task.status, task.retries, task.attempts, task.priority) == (
        None, "archived", 0, 0, 0)
    assert task.created_at is None and task.started_at is None and task.finished_at is None
    assert not task.finished


def test_task_is_immutable() -> None:
    task = Task.from_row(_row())
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.status = "pending"  # type: ignore[misc]
