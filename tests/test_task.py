"""The task model: the stored status strings, and Task built from a stored row.

Most tests build rows by hand; the last ones read them back from each backend,
whose drivers return their own types (bytes, floats, ints) for the same columns.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import msgpack
import pytest

from simplepyq import SimplePyQ, Status, Task, current_task
from simplepyq.storage.base import TASK_COLUMNS
from tests.backends import raw_sql


def _row(**overrides: object) -> tuple[object, ...]:
    """A row laid out as TASK_COLUMNS (what the store's ``get``/``list`` return)."""
    row: dict[str, object] = {
        "id": 7, "channel": "c", "args": msgpack.packb({"a": [1, 2]}), "status": "done",
        "retries": 2, "attempts": 1, "priority": 5, "result": msgpack.packb("ok"),
        "error": None, "created_at": 0.0, "delay_until": None, "started_at": 1.5,
        "finished_at": 2.25, "recoveries": 0, "history": None, "key": None,
        "time_limit": None, "cancel_requested": 0, "progress": None,
    }
    assert set(overrides) <= set(row)
    row.update(overrides)
    assert tuple(row) == TASK_COLUMNS
    return tuple(row.values())


# -- Status -----------------------------------------------------------------------------

def test_statuses_are_the_five_strings_stored_since_013_then_cancelled_and_blocked() -> None:
    assert [s.value for s in Status] == ["pending", "running", "delayed", "done", "failed",
                                         "cancelled", "blocked"]
    assert [s.name for s in Status] == ["PENDING", "RUNNING", "DELAYED", "DONE", "FAILED",
                                        "CANCELLED", "BLOCKED"]


@pytest.mark.parametrize("text", ["pending", "running", "delayed", "done", "failed",
                                  "cancelled"])
def test_a_status_is_interchangeable_with_its_plain_string(text: str) -> None:
    status = Status(text)
    assert isinstance(status, str)
    assert status == text and text == status
    assert hash(status) == hash(text)
    assert {text: "found"}[status] == "found"
    assert status in {text} and text in {status}


@pytest.mark.parametrize("status", list(Status), ids=[status.value for status in Status])
def test_a_status_prints_as_its_stored_string_on_every_python(status: Status) -> None:
    text = status.value
    logged = "%s" % status  # noqa: UP031 (logging formats its arguments so)
    assert (str(status), f"{status}", logged, format(status)) == (text,) * 4
    assert f"{status:>8}|{status:.3}" == f"{text:>8}|{text:.3}"
    assert repr(status) == f"<Status.{status.name}: {text!r}>"  # repr still says what it is


def test_an_unknown_status_string_is_not_a_status() -> None:
    with pytest.raises(ValueError, match="'archived'"):
        Status("archived")
    assert "Done" not in {status.value for status in Status}


# -- Task.from_row ----------------------------------------------------------------------

def test_task_from_row_keeps_the_plain_fields() -> None:
    task = Task.from_row(_row(error="Traceback: boom", key="invoice-42", time_limit=2.5,
                              cancel_requested=1))
    assert (task.id, task.channel, task.status, task.error) == (7, "c", "done", "Traceback: boom")
    assert (task.retries, task.attempts, task.priority) == (2, 1, 5)
    assert (task.key, task.time_limit, task.cancel_requested) == ("invoice-42", 2.5, True)


def test_a_row_without_task_control_reads_as_no_key_no_limit_no_cancel_no_progress() -> None:
    task = Task.from_row(_row(cancel_requested=None))
    assert (task.key, task.time_limit, task.cancel_requested, task.progress) == (
        None, None, False, None)


@pytest.mark.parametrize(("stored", "limit"), [(3, 3.0), (0.25, 0.25), (None, None),
                                               ("5", None), (b"5", None)])
def test_a_stored_time_limit_reads_as_float_seconds_and_anything_else_as_none(
    stored: object, limit: float | None
) -> None:
    task = Task.from_row(_row(time_limit=stored))
    assert task.time_limit == limit
    assert limit is None or type(task.time_limit) is float


@pytest.mark.parametrize("stored", [0, 1, False, True])
def test_cancel_requested_reads_as_a_bool_from_either_backend(stored: object) -> None:
    assert Task.from_row(_row(cancel_requested=stored)).cancel_requested is bool(stored)


@pytest.mark.parametrize("value", [None, 0, -3, 2.5, "text", b"\x00bytes", [1, [2, 3]],
                                   {"nested": {"map": [True, None]}}, {1: "int key"}])
def test_task_from_row_decodes_args_result_and_progress(value: object) -> None:
    task = Task.from_row(_row(args=msgpack.packb(value, use_bin_type=True),
                              result=msgpack.packb([value], use_bin_type=True),
                              progress=msgpack.packb({"p": value}, use_bin_type=True)))
    assert task.args == value
    assert task.result == [value]
    assert task.progress == {"p": value}


def test_missing_args_result_and_progress_are_none() -> None:
    task = Task.from_row(_row(args=None, result=None, progress=None))
    assert task.args is None and task.result is None and task.progress is None


@pytest.mark.parametrize("blob", [b"\xc1", b"\xc1\xc1", b"\x92\x01", b"\x01\x02", b""])
def test_undecodable_blobs_are_kept_as_raw_bytes(blob: bytes) -> None:
    task = Task.from_row(_row(args=blob, result=blob, progress=blob))
    assert (task.args, task.result, task.progress) == (blob, blob, blob)
    assert type(task.args) is bytes and type(task.progress) is bytes


def test_known_status_strings_become_status_members() -> None:
    assert [Task.from_row(_row(status=s.value)).status for s in Status] == list(Status)
    assert all(type(Task.from_row(_row(status=s.value)).status) is Status for s in Status)


@pytest.mark.parametrize("stored", ["archived", "PENDING", ""])
def test_unknown_status_strings_are_kept_unchanged(stored: str) -> None:
    task = Task.from_row(_row(status=stored))
    assert task.status == stored
    assert not task.finished


def test_null_counters_read_as_zero_and_null_times_as_none() -> None:
    task = Task.from_row(_row(retries=None, attempts=None, priority=None, created_at=None,
                              delay_until=None, started_at=None, finished_at=None))
    assert (task.retries, task.attempts, task.priority) == (0, 0, 0)
    assert (task.created_at, task.run_at, task.started_at, task.finished_at) == (
        None, None, None, None)


def test_epoch_seconds_become_aware_utc_datetimes() -> None:
    task = Task.from_row(_row(created_at=0.0, delay_until=4102444800, started_at=1.5,
                              finished_at=1_700_000_000.25))
    assert task.created_at == datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert task.run_at == datetime(2100, 1, 1, tzinfo=timezone.utc)
    assert task.started_at == datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=timezone.utc)
    assert task.finished_at == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=timezone.utc)
    for moment in (task.created_at, task.run_at, task.started_at, task.finished_at):
        assert moment is not None and moment.utcoffset() == timedelta(0)
        assert moment.tzinfo is timezone.utc


@pytest.mark.parametrize(("status", "finished"), [("pending", False), ("running", False),
                                                  ("delayed", False), ("done", True),
                                                  ("failed", True), ("cancelled", True)])
def test_only_done_failed_and_cancelled_tasks_are_finished(status: str, finished: bool) -> None:
    assert Task.from_row(_row(status=status)).finished is finished


def test_task_is_frozen() -> None:
    task = Task.from_row(_row())
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.status = "pending"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.args = None  # type: ignore[misc]
    assert task == Task.from_row(_row())
    assert dataclasses.replace(task, retries=0).retries == 0 and task.retries == 2


# -- rows as each backend returns them ----------------------------------------------------

def test_a_task_read_back_from_the_store_has_the_same_types_on_every_backend(
    queue: SimplePyQ,
) -> None:
    def echo(args: object) -> object:
        context = current_task()
        assert context is not None
        context.set_progress({"done": 3, "of": b"\x00three"})
        return {"echo": args}

    queue.add_channel("c", echo)
    task_id = queue.enqueue("c", [1, "two", b"\x00three"], retries=2, priority=5,
                            key="k-1", time_limit=30)
    queue.run_until_complete(timeout=30)
    task = queue.get_task(task_id)

    assert task is not None
    assert type(task.id) is int and task.id == task_id
    assert type(task.status) is Status and task.status == "done"
    args = [1, "two", b"\x00three"]
    assert (task.args, task.result) == (args, {"echo": args})
    assert (task.retries, task.attempts, task.priority, task.error) == (2, 1, 5, None)
    assert (task.key, task.time_limit, task.cancel_requested) == ("k-1", 30.0, False)
    assert type(task.time_limit) is float and type(task.cancel_requested) is bool
    assert task.progress == {"done": 3, "of": b"\x00three"}
    assert task.created_at is not None and task.started_at is not None
    assert task.finished_at is not None and task.run_at is None
    assert task.created_at <= task.started_at <= task.finished_at
    assert all(moment.tzinfo is timezone.utc
               for moment in (task.created_at, task.started_at, task.finished_at))


@pytest.mark.parametrize("blob", [b"\xc1", b"\x92\x01", b""])
def test_an_undecodable_stored_blob_reads_back_as_raw_bytes_on_every_backend(
    queue: SimplePyQ, store_path: str, blob: bytes
) -> None:
    queue.add_channel("c", print)
    task_id = queue.enqueue("c", "replaced below")
    raw_sql(store_path, "UPDATE tasks SET args = ?, result = ? WHERE id = ?",
            (blob, blob, task_id))
    task = queue.get_task(task_id)
    assert task is not None
    assert (task.args, task.result) == (blob, blob)
    assert type(task.args) is bytes and type(task.result) is bytes
