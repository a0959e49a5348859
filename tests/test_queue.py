"""The public facade: channels, enqueueing, inspection, maintenance and the errors of each."""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import simplepyq
from simplepyq import SimplePyQ, Status, StoreError, Task
from tests.backends import is_postgres, raw_sql
from tests.support import run_python, spawn_python

NO_TASKS = {"pending": 0, "running": 0, "delayed": 0, "done": 0, "failed": 0, "cancelled": 0,
            "blocked": 0}


def _count(store_path: str, where: str = "1=1") -> int:
    """How many rows of ``tasks`` match ``where``, read behind the library's back."""
    [(count,)] = raw_sql(store_path, f"SELECT COUNT(*) FROM tasks WHERE {where}")
    return int(count)


def _add_chunk(store_path: str) -> int:
    """How many tasks the store's backend inserts per statement in ``enqueue_many``."""
    if is_postgres(store_path):
        from simplepyq.storage import postgres

        return postgres.ADD_CHUNK
    from simplepyq.storage import sqlite

    return sqlite.ADD_CHUNK


def _store_exists(store_path: str) -> bool:
    """Whether the store's file (SQLite) or schema (PostgreSQL) has been created."""
    if is_postgres(store_path):
        # current_schema() is NULL while the search path names no existing schema.
        return raw_sql(store_path, "SELECT current_schema()") != [(None,)]
    return os.path.exists(store_path)


def _writing_transactions(store_path: str) -> int:
    """How many transactions have written to the store, as far as the backend shows it.

    SQLite: the commits in the write-ahead log (see ``_commits``). PostgreSQL: the
    distinct transactions that wrote the rows of ``tasks`` now there (each row's xmin).
    """
    if is_postgres(store_path):
        [(count,)] = raw_sql(store_path, "SELECT COUNT(DISTINCT xmin::text) FROM tasks")
        return int(count)
    return _commits(store_path)


def _commits(store_path: str) -> int:
    """How many transactions the write-ahead log holds (frames marked as a commit).

    WAL format: a 32-byte header (page size at offset 8, salts at 16), then frames
    of a 24-byte header and one page; a frame ending a transaction stores the
    database size (non-zero) at offset 4. Frames with other salts are stale.
    """
    data = Path(store_path + "-wal").read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    commits, offset = 0, 32
    while offset + 24 + page_size <= len(data) and data[offset + 8:offset + 16] == salts:
        commits += struct.unpack(">I", data[offset + 4:offset + 8])[0] != 0
        offset += 24 + page_size
    return commits


@pytest.fixture
def local_time_is_utc_plus_0530(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the local time zone 5h30 ahead of UTC (a POSIX TZ rule: no tz database needed)."""
    monkeypatch.setenv("TZ", "IST-05:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- channels ---------------------------------------------------------------------------

def test_adding_a_channel_twice_in_one_process_is_refused_naming_it(queue: SimplePyQ) -> None:
    queue.add_channel("email", print)
    with pytest.raises(ValueError, match="'email'"):
        queue.add_channel("email", len)


def test_another_instance_on_the_same_store_may_add_the_same_channel(store_path: str) -> None:
    with SimplePyQ(store_path) as first, SimplePyQ(store_path) as second:
        first.add_channel("email", print)
        second.add_channel("email", print)
        assert list(second.stats()) == ["email"]


def test_channel_decorator_registers_and_returns_a_task_function_that_calls_it(
    queue: SimplePyQ,
) -> None:
    def send(args: str) -> str:
        return f"sent {args}"

    decorated = queue.channel("email", max_workers=2)(send)
    assert decorated("you") == "sent you" and decorated.__wrapped__ is send  # type: ignore[attr-defined]
    assert (decorated.channel, decorated.func) == ("email", send)
    assert queue.stats() == {"email": NO_TASKS}
    with pytest.raises(ValueError, match="'email'"):
        queue.add_channel("email", send)
    task_id = queue.enqueue("email", "hi")
    queue.run_until_complete(timeout=10)
    assert queue.wait(task_id, timeout=5).result == "sent hi"


@pytest.mark.parametrize(
    ("name", "func", "workers", "backoff", "error", "named"),
    [
        ("c", "not callable", 1, 0, TypeError, "str"),
        ("c", None, 1, 0, TypeError, "NoneType"),
        (42, print, 1, 0, TypeError, "int"),
        (None, print, 1, 0, TypeError, "NoneType"),
        ("", print, 1, 0, ValueError, "''"),
        ("  ", print, 1, 0, ValueError, "'  '"),
        ("c", print, 0, 0, ValueError, "0"),
        ("c", print, -3, 0, ValueError, "-3"),
        ("c", print, 1.5, 0, TypeError, "float"),
        ("c", print, "2", 0, TypeError, "str"),
        ("c", print, True, 0, TypeError, "bool"),
        ("c", print, 1, -1, ValueError, "-1"),
        ("c", print, 1, "soon", TypeError, "str"),
    ],
)
def test_bad_channel_arguments_are_refused_naming_the_value(
    queue: SimplePyQ, name: object, func: object, workers: object, backoff: object,
    error: type[Exception], named: str,
) -> None:
    with pytest.raises(error, match=named):
        queue.add_channel(name, func, max_workers=workers, backoff=backoff)  # type: ignore[arg-type]
    assert queue.stats() == {}


def test_channel_decorator_refuses_bad_arguments_by_the_time_it_decorates(
    queue: SimplePyQ,
) -> None:
    with pytest.raises(ValueError, match="0"):
        @queue.channel("c", max_workers=0)
        def work(args: object) -> None: ...

    assert queue.stats() == {}


# -- enqueueing -------------------------------------------------------------------------

def test_enqueue_returns_increasing_ids_and_stores_pending_as_a_plain_string(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.add_channel("c", print)
    ids = [queue.enqueue("c", {"n": n}, retries=2) for n in range(3)]
    assert all(isinstance(task_id, int) for task_id in ids)
    assert ids == sorted(set(ids))
    stored = raw_sql(store_path, "SELECT status, retries FROM tasks ORDER BY id")
    assert stored == [("pending", 2)] * 3
    assert {type(status) for status, _ in stored} == {str}  # not bytes, not an enum's repr


@pytest.mark.parametrize(("retries", "error"), [(-1, ValueError), (True, TypeError),
                                                ("2", TypeError), (1.0, TypeError),
                                                (None, TypeError)])
def test_bad_retries_are_refused_naming_them_and_nothing_is_written(
    queue: SimplePyQ, store_path: str, retries: object, error: type[Exception]
) -> None:
    queue.add_channel("c", print)
    with pytest.raises(error, match="retries"):
        queue.enqueue("c", None, retries=retries)  # type: ignore[arg-type]
    with pytest.raises(error, match="retries"):
        queue.enqueue_many("c", [1, 2], retries=retries)  # type: ignore[arg-type]
    assert _count(store_path) == 0


@pytest.mark.parametrize(("kwargs", "named"), [({"retries": 2**63}, "retries"),
                                               ({"priority": 2**63}, "priority"),
                                               ({"priority": -(2**63) - 1}, "priority")],
                         ids=["retries", "priority", "negative-priority"])
def test_integers_too_large_for_the_store_are_refused_naming_the_argument(
    queue: SimplePyQ, store_path: str, kwargs: dict[str, int], named: str
) -> None:
    queue.add_channel("c", print)
    with pytest.raises(ValueError, match=named):
        queue.enqueue("c", None, **kwargs)  # type: ignore[arg-type]
    assert _count(store_path) == 0


def test_integers_at_the_limits_of_64_bits_are_stored_exactly(
    queue: SimplePyQ, store_path: str
) -> None:
    failed_once: set[str] = set()

    def fails_the_first_time(name: str) -> str:
        if name not in failed_once:
            failed_once.add(name)
            raise RuntimeError(f"{name}: first run")
        return name

    queue.add_channel("c", fails_the_first_time)
    bottom = queue.enqueue("c", "bottom", priority=-(2**63))
    queue.run_until_complete(timeout=10)
    assert queue.requeue_failed(retries=2**40) == 1
    top = queue.enqueue("c", "top", retries=2**63 - 1, priority=2**63 - 1)
    assert raw_sql(store_path, "SELECT id, retries, priority FROM tasks ORDER BY id") == [
        (bottom, 2**40, -(2**63)), (top, 2**63 - 1, 2**63 - 1)]
    queue.run_until_complete(timeout=10)  # top fails once, using one of its retries
    assert [(t.id, t.status, t.retries, t.priority) for t in queue.tasks()] == [
        (bottom, "done", 2**40, -(2**63)), (top, "done", 2**63 - 2, 2**63 - 1)]


@pytest.mark.parametrize("count_of", [lambda chunk: 1, lambda chunk: 5, lambda chunk: chunk,
                                      lambda chunk: 2 * chunk + 7],
                         ids=["one", "few", "one-insert", "several-inserts"])
def test_enqueue_many_returns_the_ids_in_order(
    queue: SimplePyQ, store_path: str, count_of: Callable[[int], int]
) -> None:
    count = count_of(_add_chunk(store_path))
    queue.add_channel("c", print)
    queue.enqueue("c", "before")
    ids = queue.enqueue_many("c", ({"n": n} for n in range(count)))
    assert ids == list(range(ids[0], ids[0] + count))
    stored = {task.id: task.args for task in queue.tasks("c", limit=count + 1)}
    assert [stored[i] for i in ids] == [{"n": n} for n in range(count)]


def test_enqueue_many_writes_every_task_in_one_transaction(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.add_channel("c", print)
    before = _writing_transactions(store_path)
    for n in range(3):
        queue.enqueue("c", n)
    assert _writing_transactions(store_path) == before + 3  # the count sees each transaction
    queue.enqueue_many("c", range(200))
    assert _writing_transactions(store_path) == before + 4
    assert _count(store_path) == 203


def test_enqueue_many_of_nothing_writes_nothing(queue: SimplePyQ, store_path: str) -> None:
    queue.add_channel("c", print)
    assert queue.enqueue_many("c", []) == []
    assert _count(store_path) == 0


@pytest.mark.parametrize(("value", "type_name"), [(range(3), "range"), (object(), "object"),
                                                  ({"deep": [1, {"x": 1j}]}, "complex")])
def test_unencodable_args_raise_naming_the_type_and_write_nothing(
    queue: SimplePyQ, store_path: str, value: object, type_name: str
) -> None:
    queue.add_channel("c", print)
    queue.enqueue("c", "kept")
    with pytest.raises(TypeError, match=type_name):
        queue.enqueue("c", value)
    with pytest.raises(TypeError, match=rf"#2.*{type_name}"):
        queue.enqueue_many("c", ["fine", "also fine", value, "never reached"])
    assert _count(store_path) == 1


@pytest.mark.parametrize(("args_list", "named"), [
    ("abc", "str 'abc'"), (b"xy", "bytes b'xy'"), (bytearray(b"xy"), "bytearray"),
    ({"a": 1}, "mapping (dict)"), (5, "int 5"), (None, "NoneType None"),
], ids=["str", "bytes", "bytearray", "dict", "int", "none"])
def test_enqueue_many_refuses_what_is_not_a_collection_of_args_naming_its_type(
    queue: SimplePyQ, store_path: str, args_list: object, named: str
) -> None:
    queue.add_channel("c", print)
    with pytest.raises(TypeError, match=r"args_list must be an iterable of args") as refused:
        queue.enqueue_many("c", args_list)  # type: ignore[arg-type]
    assert named in str(refused.value)
    assert _count(store_path) == 0


class _HashableList(list):  # type: ignore[type-arg]
    """A list that can be a dict key here, but would be read back as a list, which cannot."""

    def __hash__(self) -> int:  # type: ignore[override]
        return 0


@pytest.mark.parametrize(("args", "part"), [
    ({_HashableList([1, 2]): "x"}, "the dict key [1, 2]"),
    ([{"ok": 1}, {"k": {_HashableList(): 0}}], "the dict key []"),
], ids=["list-key", "nested-empty-list-key"])
def test_args_that_could_not_be_read_back_are_refused_at_enqueue_and_write_nothing(
    queue: SimplePyQ, store_path: str, args: object, part: str
) -> None:
    queue.add_channel("c", print)
    with pytest.raises(TypeError, match=re.escape(part) + ".* read back as a list"):
        queue.enqueue("c", args)
    with pytest.raises(TypeError, match=r"#1 for channel 'c'.*" + re.escape(part)):
        queue.enqueue_many("c", ["fine", args])
    assert _count(store_path) == 0


def _contains_itself() -> list[object]:
    value: list[object] = []
    value.append(value)
    return value


def _nested_100_000_deep() -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(100_000):
        value = {"k": value}
    return value


@pytest.mark.parametrize(("make", "said"), [(_contains_itself, "contains itself"),
                                            (_nested_100_000_deep, "more than 1024 deep")],
                         ids=["cycle", "deep"])
def test_args_that_contain_themselves_or_nest_too_deep_are_refused_fast(
    queue: SimplePyQ, store_path: str, make: Callable[[], object], said: str
) -> None:
    queue.add_channel("c", print)
    args = make()
    began = time.process_time()
    with pytest.raises(TypeError, match=said):
        queue.enqueue("c", args)
    assert time.process_time() - began < 2.0  # (it takes milliseconds)
    assert _count(store_path) == 0


def _returns_what_it_is_told(kind: str) -> object:
    return {"cycle": _contains_itself, "deep": _nested_100_000_deep}.get(kind, lambda: kind)()


def test_a_task_returning_a_value_that_cannot_be_stored_fails_saying_why_and_the_worker_runs_on(
    queue: SimplePyQ,
) -> None:
    queue.add_channel("c", _returns_what_it_is_told)  # one worker, so the same thread
    ids = queue.enqueue_many("c", ["cycle", "deep", "after"])
    queue.run_until_complete(timeout=60)
    cycle, deep, after = (queue.get_task(task_id) for task_id in ids)
    assert cycle is not None and cycle.status == "failed" and cycle.error is not None
    assert "the task's return value cannot be stored: it contains itself" in cycle.error
    assert deep is not None and deep.status == "failed" and deep.error is not None
    assert "more than 1024 deep" in deep.error
    assert after is not None and (after.status, after.result) == ("done", "after")


def test_a_process_whose_task_returned_a_value_containing_itself_exits_promptly_and_quietly(
    store_path: str,
) -> None:
    child = spawn_python("""
        import json
        import sys
        import time
        from simplepyq import SimplePyQ

        def task(args):
            value = []
            value.append(value)
            return value

        q = SimplePyQ(sys.argv[1], poll_interval=0.01)
        q.add_channel("c", task)
        q.enqueue("c", None)
        q.run_until_complete(timeout=30)
        [task] = q.tasks("c")
        q.close()
        print(json.dumps([task.status, task.error, time.process_time()]))
    """, store_path)
    try:
        out, err = child.communicate(timeout=90)
    finally:
        child.kill()
    assert child.returncode == 0, err[-2000:]
    status, error, cpu = json.loads(out)
    assert status == "failed"
    assert "the task's return value cannot be stored: it contains itself" in error
    assert cpu < 5.0  # (under a second; the search for the culprit took ~9 s)
    assert len(err) < 10_000  # a log line at most, not a traceback of a thousand frames


def test_unknown_channel_is_refused_listing_the_known_ones(queue: SimplePyQ) -> None:
    with pytest.raises(ValueError, match=r"'email'.*known channels: none"):
        queue.enqueue("email", None)
    queue.add_channel("email", print)
    queue.add_channel("resize", print)
    with pytest.raises(ValueError, match=r"'emial'.*email, resize"):
        queue.enqueue("emial", None)
    with pytest.raises(ValueError, match=r"'emial'.*email, resize"):
        queue.enqueue_many("emial", [None])


def test_channel_registered_by_another_instance_accepts_tasks(store_path: str) -> None:
    with SimplePyQ(store_path) as worker, SimplePyQ(store_path) as web:
        worker.add_channel("email", print)
        task_id = web.enqueue("email", "from the web app")
        assert web.get_task(task_id).channel == "email"  # type: ignore[union-attr]
        web.add_channel("email", print)  # it was not registered in `web` by enqueueing


def test_channel_registered_by_another_process_accepts_tasks(store_path: str) -> None:
    run_python(
        """
        import sys
        from simplepyq import SimplePyQ
        with SimplePyQ(sys.argv[1]) as q:
            q.add_channel("resize", print)
        """,
        store_path,
    )
    with SimplePyQ(store_path) as q:
        ids = q.enqueue_many("resize", [{"path": "a.png"}, {"path": "b.png"}])
        assert [t.args["path"] for t in q.tasks(channel="resize")] == ["a.png", "b.png"]
        assert [t.id for t in q.tasks(channel="resize")] == ids
        q.add_channel("resize", print)  # enqueueing did not register it here


@pytest.mark.parametrize("delay", [30, 0.5, timedelta(minutes=1, milliseconds=250)])
def test_delayed_task_is_stored_delayed_until_its_time(
    queue: SimplePyQ, store_path: str, delay: float | timedelta
) -> None:
    queue.add_channel("c", print)
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    before = datetime.now(timezone.utc)
    task = queue.get_task(queue.enqueue("c", None, delay=delay))
    after = datetime.now(timezone.utc)
    assert task is not None and task.status == Status.DELAYED
    assert task.run_at is not None
    wait, rounding = timedelta(seconds=seconds), timedelta(milliseconds=1)
    assert before + wait - rounding <= task.run_at <= after + wait + rounding
    assert _count(store_path, "status='delayed'") == 1


def test_task_can_be_enqueued_for_an_absolute_time(queue: SimplePyQ) -> None:
    queue.add_channel("c", print)
    when = datetime(2100, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    ids = queue.enqueue_many("c", [1, 2], run_at=when)
    assert [(t.status, t.run_at) for t in queue.tasks()] == [("delayed", when)] * 2
    assert [t.id for t in queue.tasks(status="delayed")] == ids


@pytest.mark.usefixtures("local_time_is_utc_plus_0530")
def test_naive_run_at_means_local_time(queue: SimplePyQ) -> None:
    queue.add_channel("c", print)
    task = queue.get_task(queue.enqueue("c", None, run_at=datetime(2100, 1, 2, 3, 4, 5)))
    assert task is not None
    assert task.run_at == datetime(2100, 1, 1, 21, 34, 5, tzinfo=timezone.utc)


def test_run_at_in_the_past_is_due_at_once(queue: SimplePyQ) -> None:
    queue.add_channel("c", print)
    task = queue.get_task(queue.enqueue("c", None, run_at=datetime(2000, 1, 1,
                                                                    tzinfo=timezone.utc)))
    assert task is not None and task.status == Status.PENDING


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"delay": 1, "run_at": datetime(2100, 1, 1)}, ValueError, "not both"),
        ({"delay": -1}, ValueError, "-1"),
        ({"delay": timedelta(seconds=-5)}, ValueError, "delay"),
        ({"delay": float("nan")}, ValueError, "nan"),
        ({"delay": "soon"}, TypeError, "str"),
        ({"run_at": "2100-01-01"}, TypeError, "str"),
        ({"run_at": 4102444800}, TypeError, "int"),
        ({"priority": "high"}, TypeError, "priority"),
        ({"priority": 1.5}, TypeError, "priority"),
    ],
)
def test_bad_timing_or_priority_is_refused(
    queue: SimplePyQ, store_path: str, kwargs: dict[str, object],
    error: type[Exception], named: str,
) -> None:
    queue.add_channel("c", print)
    with pytest.raises(error, match=named):
        queue.enqueue("c", None, **kwargs)  # type: ignore[arg-type]
    assert _count(store_path) == 0


@pytest.mark.parametrize("delay", [1e12, timedelta.max])
def test_delay_too_far_in_the_future_to_show_as_a_date_is_refused(
    queue: SimplePyQ, store_path: str, delay: float | timedelta
) -> None:
    queue.add_channel("c", print)
    with pytest.raises(ValueError, match="delay"):
        queue.enqueue("c", None, delay=delay)
    assert _count(store_path) == 0
    assert queue.tasks() == []


def test_higher_priority_runs_first_and_equals_in_enqueue_order(queue: SimplePyQ) -> None:
    order: list[str] = []
    queue.add_channel("c", order.append, max_workers=1)
    queue.enqueue("c", "low-1", priority=-1)
    queue.enqueue("c", "normal-1")
    queue.enqueue("c", "high-1", priority=5)
    queue.enqueue_many("c", ["normal-2", "normal-3"])
    queue.enqueue("c", "high-2", priority=5)
    queue.run_until_complete(timeout=10)
    assert order == ["high-1", "high-2", "normal-1", "normal-2", "normal-3", "low-1"]


# -- inspection -------------------------------------------------------------------------

def test_get_task_describes_the_stored_task(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda args: args["n"] * 2)
    before = datetime.now(timezone.utc)
    task_id = queue.enqueue("c", {"n": 21, "tags": ["x", "y"]}, retries=4, priority=3)
    after = datetime.now(timezone.utc)
    pending = queue.get_task(task_id)
    assert isinstance(pending, Task)
    assert (pending.id, pending.channel, pending.args, pending.status) == (
        task_id, "c", {"n": 21, "tags": ["x", "y"]}, Status.PENDING)
    assert (pending.retries, pending.attempts, pending.priority) == (4, 0, 3)
    assert pending.result is None and pending.error is None
    assert pending.created_at is not None
    assert before - timedelta(seconds=1) <= pending.created_at <= after + timedelta(seconds=1)
    assert pending.run_at is None and pending.started_at is None and pending.finished_at is None
    assert not pending.finished
    queue.run_until_complete(timeout=10)
    done = queue.get_task(task_id)
    assert done is not None
    assert (done.status, done.result, done.attempts, done.retries) == ("done", 42, 1, 4)
    assert done.started_at is not None and done.finished_at is not None
    assert done.created_at <= done.started_at <= done.finished_at  # type: ignore[operator]
    assert done.finished


def test_get_task_of_an_unknown_id_is_none(queue: SimplePyQ) -> None:
    assert queue.get_task(999_999) is None
    with pytest.raises(TypeError, match="str"):
        queue.get_task("1")  # type: ignore[arg-type]


def test_wait_refuses_a_missing_task_and_times_out_on_an_unfinished_one(
    queue: SimplePyQ,
) -> None:
    queue.add_channel("c", print)
    with pytest.raises(ValueError, match="999999"):
        queue.wait(999_999, timeout=5)
    task_id = queue.enqueue("c", None)  # no worker runs in this test
    with pytest.raises(TimeoutError, match=str(task_id)):
        queue.wait(task_id, timeout=0.05)


_BAD_TIMEOUTS = [("5", TypeError), (True, TypeError), (timedelta(seconds=5), TypeError),
                 (-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError)]
_BAD_TIMEOUT_IDS = ["str", "bool", "timedelta", "negative", "nan", "inf"]


@pytest.mark.parametrize(("timeout", "error"), _BAD_TIMEOUTS, ids=_BAD_TIMEOUT_IDS)
def test_wait_refuses_a_bad_timeout_naming_it(
    queue: SimplePyQ, timeout: object, error: type[Exception]
) -> None:
    queue.add_channel("c", print)
    task_id = queue.enqueue("c", None)
    with pytest.raises(error, match=r"^timeout .*" + re.escape(repr(timeout))):
        queue.wait(task_id, timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize(("timeout", "error"), _BAD_TIMEOUTS, ids=_BAD_TIMEOUT_IDS)
def test_run_until_complete_refuses_a_bad_timeout_before_it_starts_anything(
    queue: SimplePyQ, timeout: object, error: type[Exception]
) -> None:
    ran: list[object] = []
    queue.add_channel("c", ran.append)
    task_id = queue.enqueue("c", "not run")
    with pytest.raises(error, match=r"^timeout .*" + re.escape(repr(timeout))):
        queue.run_until_complete(timeout=timeout)  # type: ignore[arg-type]
    task = queue.get_task(task_id)
    assert task is not None and task.status == "pending"
    queue.close()  # (would wait for a worker, had one started)
    assert ran == []


@pytest.mark.parametrize(("timeout", "error"), _BAD_TIMEOUTS, ids=_BAD_TIMEOUT_IDS)
def test_stop_refuses_a_bad_timeout_and_leaves_the_workers_running(
    queue: SimplePyQ, timeout: object, error: type[Exception]
) -> None:
    queue.add_channel("c", lambda args: args)
    queue.start()
    with pytest.raises(error, match=r"^timeout .*" + re.escape(repr(timeout))):
        queue.stop(timeout=timeout)  # type: ignore[arg-type]
    task_id = queue.enqueue("c", "still served")
    assert queue.wait(task_id, timeout=30).result == "still served"
    assert queue.stop(timeout=30) is True


def test_a_timeout_of_zero_or_none_is_accepted_everywhere(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda args: args)
    task_id = queue.enqueue("c", "x")
    with pytest.raises(TimeoutError):
        queue.wait(task_id, timeout=0)
    queue.run_until_complete(timeout=None)
    assert queue.wait(task_id, timeout=None).status == "done"
    assert queue.stop(timeout=0) is True


def test_the_status_in_waits_timeout_message_is_the_stored_string(queue: SimplePyQ) -> None:
    queue.add_channel("c", print)
    task_id = queue.enqueue("c", None)  # no worker runs in this test
    with pytest.raises(TimeoutError) as timed_out:
        queue.wait(task_id, timeout=0.01)
    assert f"task {task_id} was still pending after" in str(timed_out.value)
    task = queue.get_task(task_id)
    assert task is not None and f"{task.status}" == str(task.status) == "pending"


def test_tasks_lists_by_channel_status_and_limit(queue: SimplePyQ) -> None:
    queue.add_channel("a", print)
    queue.add_channel("b", print)
    a_ids = queue.enqueue_many("a", range(3))
    b_ids = queue.enqueue_many("b", range(2), delay=3600)
    assert [t.id for t in queue.tasks()] == a_ids + b_ids
    assert [t.id for t in queue.tasks(channel="b")] == b_ids
    assert [t.id for t in queue.tasks(status="delayed")] == b_ids
    assert [t.id for t in queue.tasks(channel="a", status=Status.PENDING, limit=2)] == a_ids[:2]
    assert [t.id for t in queue.tasks(limit=4)] == (a_ids + b_ids)[:4]
    assert queue.tasks(limit=0) == []
    assert queue.tasks(channel="a", status="done") == []
    assert queue.tasks(channel="nobody") == []


@pytest.mark.parametrize(("kwargs", "error", "named"),
                         [({"status": "bogus"}, ValueError, "'bogus'"),
                          ({"status": "PENDING"}, ValueError, "'PENDING'"),
                          ({"limit": -1}, ValueError, "-1"),
                          ({"limit": "10"}, TypeError, "limit"),
                          ({"channel": 3}, TypeError, "int")])
def test_tasks_refuses_bad_filters_naming_them(
    queue: SimplePyQ, kwargs: dict[str, object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        queue.tasks(**kwargs)  # type: ignore[arg-type]


def test_stats_counts_every_status_of_every_known_channel(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.add_channel("work", lambda n: 1 / n)
    queue.add_channel("idle", print)
    queue.enqueue_many("work", [1, 2, 0])
    queue.run_until_complete(timeout=10)
    queue.enqueue("work", 5, delay=3600)
    waited_for = queue.enqueue("work", 5)
    assert queue.cancel(queue.enqueue("work", 6)) is True
    queue.enqueue("work", 7, depends_on=[waited_for])
    expected = {
        "idle": NO_TASKS,
        "work": {"pending": 1, "running": 0, "delayed": 1, "done": 2, "failed": 1,
                 "cancelled": 1, "blocked": 1},
    }
    assert queue.stats() == expected
    with SimplePyQ(store_path) as elsewhere:  # registered nothing itself
        assert elsewhere.stats() == expected


# -- maintenance ------------------------------------------------------------------------

def _store_with_failures(store_path: str) -> None:
    """3 failed tasks in channel 'a', 2 in 'b', 1 done in 'ok'; the instance is then closed."""
    with SimplePyQ(store_path) as q:
        q.add_channel("a", lambda args: 1 / 0)
        q.add_channel("b", lambda args: 1 / 0)
        q.add_channel("ok", print)
        q.enqueue_many("a", range(3))
        q.enqueue_many("b", range(2))
        q.enqueue("ok", "fine")
        q.run_until_complete(timeout=10)
    assert _count(store_path, "status='failed'") == 5


def test_clear_failed_works_without_registering_the_channel(store_path: str) -> None:
    _store_with_failures(store_path)
    with SimplePyQ(store_path) as maintenance:
        assert maintenance.clear_failed("a") == 3
        assert maintenance.clear_failed("ok") == 0
        assert maintenance.clear_failed() == 2
        assert maintenance.clear_failed() == 0
    assert _count(store_path) == 1
    assert _count(store_path, "status='done' AND channel='ok'") == 1


def test_requeue_failed_works_without_registering_the_channel(store_path: str) -> None:
    _store_with_failures(store_path)
    with SimplePyQ(store_path) as maintenance:
        assert maintenance.requeue_failed("b", retries=4) == 2
        assert maintenance.requeue_failed() == 3
        assert maintenance.requeue_failed() == 0
        assert all(t.finished_at is None for t in maintenance.tasks(status="pending"))
    assert _count(store_path, "status='pending' AND channel='b' AND retries=4") == 2
    assert _count(store_path, "status='pending' AND channel='a' AND retries=0") == 3
    assert _count(store_path, "status='done'") == 1


def test_requeued_tasks_run_again(store_path: str) -> None:
    _store_with_failures(store_path)
    with SimplePyQ(store_path) as maintenance:
        assert maintenance.requeue_failed("a", retries=1) == 3
    with SimplePyQ(store_path) as fixed:
        fixed.add_channel("a", lambda n: n * 10)
        fixed.run_until_complete(timeout=10)
        assert sorted(t.result for t in fixed.tasks(channel="a")) == [0, 10, 20]
        assert {t.status for t in fixed.tasks(channel="a")} == {"done"}


def test_remove_channel_deletes_its_tasks_and_forgets_it(store_path: str) -> None:
    _store_with_failures(store_path)
    with SimplePyQ(store_path) as maintenance:
        assert maintenance.remove_channel("a") == 3
        assert maintenance.remove_channel("nothing-here") == 0
        with pytest.raises(ValueError, match="unknown channel 'a'"):
            maintenance.enqueue("a", None)
        assert sorted(maintenance.stats()) == ["b", "ok"]
    assert _count(store_path, "channel='a'") == 0
    assert _count(store_path) == 3


def test_removed_channel_is_forgotten_where_it_was_added_and_may_be_added_again(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.add_channel("c", print)
    queue.enqueue_many("c", [1, 2])
    assert queue.remove_channel("c") == 2
    with pytest.raises(ValueError, match="unknown channel 'c'"):
        queue.enqueue("c", None)
    assert queue.stats() == {}
    queue.add_channel("c", print)
    assert queue.enqueue("c", 3) > 0
    assert _count(store_path) == 1


def test_channel_removed_elsewhere_is_refused_where_it_was_only_enqueued_to(
    store_path: str,
) -> None:
    with SimplePyQ(store_path) as worker:
        worker.add_channel("email", print)
    with SimplePyQ(store_path) as web, SimplePyQ(store_path) as maintenance:
        web.enqueue("email", "first")
        assert maintenance.remove_channel("email") == 1
        with pytest.raises(ValueError, match="unknown channel 'email'"):
            web.enqueue("email", "second")
    assert _count(store_path) == 0


def test_a_channel_of_this_process_removed_elsewhere_is_registered_again_by_an_enqueue(
    store_path: str,
) -> None:
    with SimplePyQ(store_path) as worker, SimplePyQ(store_path) as maintenance:
        worker.add_channel("email", print)
        assert maintenance.remove_channel("email") == 0
        task_id = worker.enqueue("email", "again")
        assert maintenance.get_task(task_id).status is Status.PENDING  # type: ignore[union-attr]
        assert "email" in maintenance.stats()


def test_purge_deletes_only_tasks_finished_before_the_cutoff(store_path: str) -> None:
    _store_with_failures(store_path)
    with SimplePyQ(store_path) as q:
        waiting = [q.enqueue("ok", "still pending"), q.enqueue("a", "later", delay=3600)]
        assert q.purge(timedelta(days=1)) == 0
        assert q.purge(3600) == 0
        assert q.purge(0, channel="b") == 2
        assert q.purge(older_than=0) == 4
        assert q.purge(older_than=0) == 0
        assert [(t.id, t.status) for t in q.tasks()] == [(waiting[0], "pending"),
                                                         (waiting[1], "delayed")]


def _fails(args: object) -> None:
    raise RuntimeError("no")


@pytest.mark.parametrize(
    "delete",
    [
        pytest.param(lambda q, store_path: q.purge(0), id="purge"),
        pytest.param(lambda q, store_path: q.clear_failed(), id="clear_failed"),
        pytest.param(lambda q, store_path: q.remove_channel("bad"), id="remove_channel"),
        pytest.param(lambda q, store_path: raw_sql(store_path, "DELETE FROM tasks"),
                     id="behind-the-library"),  # as a 0.1.3 process or a hand would
    ],
)
@pytest.mark.parametrize(
    "insert",
    [
        pytest.param(lambda q: [q.enqueue("ok", 3)], id="enqueue"),
        pytest.param(lambda q: q.enqueue_many("ok", [3, 4, 5]), id="enqueue_many"),
        pytest.param(lambda q: [q.enqueue("ok", 3, key="k")], id="key"),
        pytest.param(lambda q: list(q.chain(simplepyq.Step("ok", 3), simplepyq.Step("ok"))
                                    .task_ids), id="chain"),
    ],
)
def test_a_task_id_is_never_given_again_even_after_the_newest_tasks_are_deleted(
    store_path: str, delete: Callable[[SimplePyQ, str], object],
    insert: Callable[[SimplePyQ], list[int]],
) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("ok", print)
        q.add_channel("bad", _fails)
        q.enqueue("ok", 1)
        newest = q.enqueue("bad", 2)  # fails: the newest task, and a finished one
        q.drain()
        delete(q, store_path)
        assert q.get_task(newest) is None
        ids = insert(q)  # the first insert since: none may take a deleted id
        ids += q.enqueue_many("ok", [6, 7])
    assert min(ids) > newest
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert ids[-2:] == [ids[-2], ids[-2] + 1]  # a batch's ids follow each other


@pytest.mark.parametrize(
    ("call", "error", "named"),
    [
        pytest.param(lambda q: q.purge(-5), ValueError, "older_than", id="negative-age"),
        pytest.param(lambda q: q.purge("1 day"), TypeError, "older_than", id="text-age"),
        pytest.param(lambda q: q.purge(0, channel=7), TypeError, "int", id="purge-channel"),
        pytest.param(lambda q: q.requeue_failed(retries=-1), ValueError, "retries",
                     id="negative-retries"),
        pytest.param(lambda q: q.requeue_failed(retries="3"), TypeError, "retries",
                     id="text-retries"),
        pytest.param(lambda q: q.clear_failed(""), ValueError, "''", id="empty-channel"),
        pytest.param(lambda q: q.remove_channel(None), TypeError, "NoneType", id="no-channel"),
    ],
)
def test_bad_maintenance_arguments_are_refused_and_touch_nothing(
    store_path: str, call: object, error: type[Exception], named: str
) -> None:
    _store_with_failures(store_path)
    with SimplePyQ(store_path) as q, pytest.raises(error, match=named):
        call(q)  # type: ignore[operator]
    assert _count(store_path) == 6
    assert _count(store_path, "status='failed'") == 5


# -- the store --------------------------------------------------------------------------

def test_context_manager_closes_the_store_and_stops_the_workers(store_path: str) -> None:
    before = set(threading.enumerate())
    with SimplePyQ(store_path) as q:
        q.add_channel("c", lambda n: n + 1, max_workers=3)
        q.start()
        assert q.wait(q.enqueue("c", 1), timeout=10).result == 2
        started = set(threading.enumerate()) - before
        assert len(started) >= 3
    assert [t.name for t in started if t.is_alive()] == []
    with pytest.raises(StoreError, match="closed"):
        q.get_task(1)
    with pytest.raises(StoreError, match="closed"):
        q.enqueue("c", None)
    with pytest.raises(StoreError, match="closed"):
        q.stats()


def test_an_error_in_the_with_block_propagates_and_the_queue_is_closed(
    store_path: str,
) -> None:
    q = SimplePyQ(store_path)

    def use_and_fail() -> None:
        with q:
            q.add_channel("c", print)
            raise RuntimeError("application failure")

    with pytest.raises(RuntimeError, match="application"):
        use_and_fail()
    with pytest.raises(StoreError, match="closed"):
        q.tasks()


@pytest.mark.sqlite_only  # about files
def test_store_in_a_missing_directory_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "tasks.db"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        SimplePyQ(path)
    assert not path.parent.exists()


@pytest.mark.sqlite_only  # about files
def test_file_that_is_not_a_database_is_refused_naming_it_and_left_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notes.txt"
    content = b"these are my notes, not a database\n" * 200
    path.write_bytes(content)
    with pytest.raises(StoreError, match=re.escape(str(path))):
        SimplePyQ(path)
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def _everything_in(store_path: str) -> object:
    """All there is to see of a store: its file and its directory's listing (SQLite), or
    its schema's tables and the rows of ``tasks`` (PostgreSQL)."""
    if is_postgres(store_path):
        return (raw_sql(store_path, "SELECT table_name FROM information_schema.tables "
                                    "WHERE table_schema = current_schema() ORDER BY 1"),
                raw_sql(store_path, "SELECT * FROM tasks ORDER BY 1"))
    return Path(store_path).read_bytes(), sorted(os.listdir(Path(store_path).parent))


def test_database_of_another_application_is_refused_and_left_alone(store_path: str) -> None:
    if is_postgres(store_path):
        schema = store_path.rpartition("schema=")[2]
        raw_sql(store_path, f'CREATE SCHEMA "{schema}"')
    raw_sql(store_path, "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT)")
    raw_sql(store_path, "INSERT INTO tasks (id, title) VALUES (1, 'buy milk')")
    before = _everything_in(store_path)
    with pytest.raises(StoreError, match=re.escape(store_path)):
        SimplePyQ(store_path)
    assert _everything_in(store_path) == before
    assert raw_sql(store_path, "SELECT id, title FROM tasks") == [(1, "buy milk")]


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"],
                         ids=["scheme-postgresql", "scheme-postgres"])
def test_unreachable_database_is_refused_naming_it_without_its_password(scheme: str) -> None:
    # Port 1 on the loopback interface: refused at once, with no name to resolve.
    with pytest.raises(StoreError, match=re.escape("127.0.0.1:1/tasks")) as refused:
        SimplePyQ(f"{scheme}://user:s3cret@127.0.0.1:1/tasks", busy_timeout=5)
    assert "s3cret" not in str(refused.value)


@pytest.mark.sqlite_only  # about files
def test_directory_is_refused_as_a_store_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=re.escape(str(tmp_path)) + ".*directory"):
        SimplePyQ(tmp_path)


@pytest.mark.parametrize(("location", "named"), [
    (None, "not None (an environment variable that is not set?)"),
    (123, "not int 123"),
    (b"x.db", "not bytes b'x.db'; decode it to a str"),
    (bytearray(b"x.db"), "not bytearray"),
], ids=["none", "int", "bytes", "bytearray"])
def test_a_store_location_that_is_not_a_str_or_path_is_refused_before_anything_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: object, named: str
) -> None:
    monkeypatch.chdir(tmp_path)  # where a file named after the value would appear
    with pytest.raises(TypeError, match=r"^store_path must be a str or a path") as refused:
        SimplePyQ(location)  # type: ignore[arg-type]
    assert named in str(refused.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("location", "hint"), [
    ("mysql://app:s3cret@db.example.com/tasks", ""),
    ("redis+tls://cache:6379/0", ""),
    ("sqlite:///tasks.db", "; for SQLite give the file's path itself, e.g. 'tasks.db'"),
    ("sqlite:////var/lib/app/tasks.db", ", e.g. '/var/lib/app/tasks.db'"),
    ("file:///tmp/tasks.db", ", e.g. '/tmp/tasks.db'"),
    ("PostgreSQL://app@db/tasks", "; write the scheme in lower case: postgresql://"),
], ids=["mysql", "redis", "sqlalchemy-relative", "sqlalchemy-absolute", "file", "upper-case"])
def test_a_url_of_an_unsupported_scheme_is_refused_naming_it_and_the_supported_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str, hint: str
) -> None:
    monkeypatch.chdir(tmp_path)
    scheme = location.partition("://")[0]
    with pytest.raises(ValueError, match=(
        rf"^store_path '{re.escape(scheme)}://\.\.\.': the scheme '{re.escape(scheme)}' is not "
        r"supported; a store is a SQLite file's path, or a postgresql:// \(or postgres://\) URL"
    )) as refused:
        SimplePyQ(location)
    assert str(refused.value).endswith(hint)
    assert "s3cret" not in str(refused.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.sqlite_only  # about files
def test_a_path_object_and_a_file_name_with_a_colon_are_store_locations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with SimplePyQ(tmp_path / "as-path.db") as queue:
        assert queue.store_path == str(tmp_path / "as-path.db")
    (tmp_path / "a:").mkdir()
    with SimplePyQ("a:/b.db"):  # no "://": a relative path like any other
        pass
    assert (tmp_path / "a:" / "b.db").exists()


@pytest.mark.parametrize(("setting", "error"), [({"poll_interval": 0}, ValueError),
                                                ({"lease": -1}, ValueError),
                                                ({"busy_timeout": "30"}, TypeError)])
def test_bad_timing_settings_are_refused_before_the_store_is_created(
    store_path: str, setting: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error, match=next(iter(setting))):
        SimplePyQ(store_path, **setting)  # type: ignore[arg-type]
    assert not _store_exists(store_path)
    SimplePyQ(store_path).close()
    assert _store_exists(store_path)  # so the check above can tell


@pytest.mark.sqlite_only
def test_store_runs_in_wal_mode(queue: SimplePyQ, store_path: str) -> None:
    with closing(sqlite3.connect(store_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_queue_methods_are_safe_from_many_threads(queue: SimplePyQ) -> None:
    queue.add_channel("c", print)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for n in range(50):
                queue.enqueue("c", n)
                queue.stats()
                queue.tasks(limit=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert queue.stats()["c"]["pending"] == 300


# -- logging and the public names -------------------------------------------------------

def test_failures_are_logged_not_printed_and_the_traceback_is_stored(
    queue: SimplePyQ, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    queue.add_channel("divide", lambda args: 1 / 0)
    with caplog.at_level(logging.DEBUG, logger="simplepyq"):
        task_id = queue.enqueue("divide", None)
        queue.run_until_complete(timeout=10)
    assert capsys.readouterr() == ("", "")
    failures = [r for r in caplog.records
                if r.name == "simplepyq" and r.levelno >= logging.WARNING]
    assert len(failures) == 1
    message = failures[0].getMessage()
    assert str(task_id) in message and "'divide'" in message and "ZeroDivisionError" in message
    task = queue.get_task(task_id)
    assert task is not None and task.status == "failed"
    assert task.error is not None
    assert "Traceback" in task.error and "ZeroDivisionError" in task.error


def test_nothing_is_printed_when_the_application_configured_no_logging(store_path: str) -> None:
    child = spawn_python(
        """
        import sys
        from simplepyq import SimplePyQ
        with SimplePyQ(sys.argv[1]) as q:
            q.add_channel("c", lambda args: 1 / 0)
            q.enqueue("c", None)
            q.run_until_complete(timeout=10)
        """,
        store_path,
    )
    assert child.communicate(timeout=60) == ("", "")
    assert child.returncode == 0
    assert _count(store_path, "status='failed'") == 1


def test_public_names_are_exactly_those_listed_and_each_is_importable() -> None:
    assert sorted(simplepyq.__all__) == sorted(
        ["Attempt", "Backoff", "DelayException", "FinishedMinute", "Limits", "Links", "Periodic",
         "Rate", "SimplePyQ", "Status", "Step", "StoreError", "Task", "TaskCancelled",
         "TaskContext", "TaskFunction",
         "TaskId", "TaskTimeout", "Worker", "Workflow", "WorkflowStatus", "__version__",
         "current_task"])
    for name in simplepyq.__all__:
        namespace: dict[str, object] = {}
        exec(f"from simplepyq import {name}", namespace)
        assert namespace[name] is getattr(importlib.import_module("simplepyq"), name)
    assert isinstance(simplepyq.__version__, str)
    public = {name for name in vars(simplepyq)
              if not name.startswith("_") and name[0].isupper()}
    assert public == set(simplepyq.__all__) - {"__version__", "current_task"}
    assert callable(simplepyq.current_task)
