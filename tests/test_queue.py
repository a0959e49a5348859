"""The public facade: channels, enqueueing, inspection, maintenance and the errors of each."""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import simplepyq
from simplepyq import SimplePyQ, Status, StoreError
from tests.support import run_python, spawn_python


def _count(store_path: str, where: str = "1") -> int:
    with sqlite3.connect(store_path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM tasks WHERE {where}").fetchone()[0])


# -- channels ---------------------------------------------------------------------------

def test_adding_a_channel_twice_is_an_error(queue: SimplePyQ) -> None:
    queue.add_channel("email", print)
    with pytest.raises(ValueError, match="email"):
        queue.add_channel("email", print)


def test_channel_decorator_registers_and_returns_the_function(queue: SimplePyQ) -> None:
    @queue.channel("email", max_workers=2)
    def send(args: str) -> str:
        return f"sent {args}"

    assert send("x") == "sent x"
    task_id = queue.enqueue("email", "hi")
    queue.run_until_complete(timeout=10)
    assert queue.wait(task_id, timeout=1).result == "sent hi"


@pytest.mark.parametrize(
    ("name", "func", "workers", "error", "named"),
    [
        ("c", "not callable", 1, TypeError, "str"),
        (42, print, 1, TypeError, "int"),
        ("", print, 1, ValueError, "''"),
        ("  ", print, 1, ValueError, "'  '"),
        ("c", print, 0, ValueError, "0"),
        ("c", print, -3, ValueError, "-3"),
        ("c", print, 1.5, TypeError, "float"),
    ],
)
def test_bad_channel_arguments_are_refused_naming_the_value(
    queue: SimplePyQ, name: object, func: object, workers: object,
    error: type[Exception], named: str,
) -> None:
    with pytest.raises(error, match=named):
        queue.add_channel(name, func, max_workers=workers)  # type: ignore[arg-type]
    assert queue.stats() == {}


# -- enqueueing ------------------------------------------------------------------------------

def test_enqueue_returns_increasing_ids_and_stores_plain_status_strings(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.add_channel("c", print)
    ids = [queue.enqueue("c", {"n": n}, retries=2) for n in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert _count(store_path, "status='pending' AND retries=2") == 3


@pytest.mark.parametrize(("retries", "error"), [(-1, ValueError), (True, TypeError),
                                                 ("2", TypeError), (1.0, TypeError)])
def test_bad_retries_are_refused_and_nothing_is_written(
    queue: SimplePyQ, store_path: str, retries: object, error: type[Exception]
) -> None:
    queue.add_channel("c", print)
    with pytest.raises(error, match="retries"):
        queue.enqueue("c", None, retries=retries)  # type: ignore[arg-type]
    assert _count(store_path) == 0


def test_enqueue_many_returns_ids_in_order(queue: SimplePyQ) -> None:
    queue.add_channel("c", print)
    ids = queue.enqueue_many("c", ({"n": n} for n in range(5)))
    assert [queue.get_task(i).args for i in ids] == [{"n": n} for n in range(5)]  # type: ignore[union-attr]
    assert ids == list(range(ids[0], ids[0] + 5))


@pytest.mark.parametrize(("value", "type_name"), [({1, 2}, "set"), (object(), "object"),
                                                  ({"deep": [1, {"x": 1j}]}, "complex")])
def test_unencodable_args_raise_naming_the_type_and_write_nothing(
    queue: SimplePyQ, store_path: str, value: object, type_name: str
) -> None:
    queue.add_channel("c", print)
    queue.enqueue("c", "kept")
    with pytest.raises(TypeError, match=type_name):
        queue.enqueue("c", value)
    with pytest.raises(TypeError, match=type_name):
        queue.enqueue_many("c", ["fine", "also fine", value])
    assert _count(store_path) == 1


def test_unknown_channel_is_refused_listing_the_known_ones(queue: SimplePyQ) -> None:
    queue.add_channel("email", print)
    queue.add_channel("resize", print)
    with pytest.raises(ValueError, match=r"'emial'.*email, resize"):
        queue.enqueue("emial", None)


def test_channel_registered_by_another_instance_accepts_tasks(store_path: str) -> None:
    with SimplePyQ(store_path) as worker, SimplePyQ(store_path) as web:
        worker.add_channel("email", print)
        assert web.enqueue("email", "from the web app") > 0


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
        task_id = q.enqueue("resize", {"path": "a.png"})
        assert q.get_task(task_id).channel == "resize"  # type: ignore[union-attr]


@pytest.mark.parametrize("delay", [30, 0.5, timedelta(minutes=1)])
def test_delayed_task_is_stored_delayed_until_its_time(queue: SimplePyQ, delay: object) -> None:
    queue.add_channel("c", print)
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)  # type: ignore[arg-type]
    before = datetime.now(timezone.utc)
    task = queue.get_task(queue.enqueue("c", None, delay=delay))  # type: ignore[arg-type]
    after = datetime.now(timezone.utc)
    assert task is not None and task.status == Status.DELAYED
    assert task.run_at is not None
    assert before + timedelta(seconds=seconds) <= task.run_at <= after + timedelta(seconds=seconds)


def test_task_can_be_enqueued_for_an_absolute_time(queue: SimplePyQ) -> None:
    queue.add_channel("c", print)
    when = datetime(2100, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    task = queue.get_task(queue.enqueue("c", None, run_at=when))
    assert task is not None
    assert (task.status, task.run_at) == ("delayed", when)


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"delay": 1, "run_at": datetime(2100, 1, 1)}, ValueError, "not both"),
        ({"delay": -1}, ValueError, "-1"),
        ({"delay": float("nan")}, ValueError, "nan"),
        ({"delay": "soon"}, TypeError, "str"),
        ({"run_at": "2100-01-01"}, TypeError, "str"),
        ({"priority": "high"}, TypeError, "priority"),
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


def test_higher_priority_runs_first_and_equals_in_enqueue_order(queue: SimplePyQ) -> None:
    order: list[str] = []
    queue.add_channel("c", order.append, max_workers=1)
    queue.enqueue("c", "low-1", priority=-1)
    queue.enqueue("c", "normal-1")
    queue.enqueue("c", "high-1", priority=5)
    queue.enqueue("c", "normal-2")
    queue.enqueue("c", "high-2", priority=5)
    queue.run_until_complete(timeout=10)
    assert order == ["high-1", "high-2", "normal-1", "normal-2", "low-1"]


# -- inspection --------------------------------------------------------------------------------

def test_get_task_describes_the_stored_task(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda args: args["n"] * 2)
    before = datetime.now(timezone.utc)
    task_id = queue.enqueue("c", {"n": 21}, retries=4, priority=3)
    pending = queue.get_task(task_id)
    assert pending is not None
    assert (pending.id, pending.channel, pending.args, pending.status) == (
        task_id, "c", {"n": 21}, "pending")
    assert (pending.retries, pending.attempts, pending.priority) == (4, 0, 3)
    assert pending.result is None and pending.error is None
    assert pending.created_at is not None and pending.created_at >= before - timedelta(seconds=1)
    assert pending.started_at is None and pending.finished_at is None
    queue.run_until_complete(timeout=10)
    done = queue.get_task(task_id)
    assert done is not None
    assert (done.status, done.result, done.attempts) == ("done", 42, 1)
    assert done.started_at is not None and done.finished_at is not None
    assert done.created_at <= done.started_at <= done.finished_at  # type: ignore[operator]
    assert queue.get_task(999_999) is None


def test_tasks_lists_by_channel_status_and_limit(queue: SimplePyQ) -> None:
    queue.add_channel("a", print)
    queue.add_channel("b", print)
    a_ids = queue.enqueue_many("a", range(3))
    b_ids = queue.enqueue_many("b", range(2), delay=3600)
    assert [t.id for t in queue.tasks()] == a_ids + b_ids
    assert [t.id for t in queue.tasks(channel="b")] == b_ids
    assert [t.id for t in queue.tasks(status="delayed")] == b_ids
    assert [t.id for t in queue.tasks(channel="a", status=Status.PENDING, limit=2)] == a_ids[:2]
    assert queue.tasks(channel="a", status="done") == []
    with pytest.raises(ValueError, match="'bogus'"):
        queue.tasks(status="bogus")


def test_stats_counts_every_status_of_every_known_channel(queue: SimplePyQ) -> None:
    queue.add_channel("work", lambda n: 1 / n)
    queue.add_channel("idle", print)
    queue.enqueue_many("work", [1, 2, 0])
    queue.run_until_complete(timeout=10)
    queue.enqueue("work", 5, delay=3600)
    queue.enqueue("work", 5)
    assert queue.stats() == {
        "idle": {"pending": 0, "running": 0, "delayed": 0, "done": 0, "failed": 0},
        "work": {"pending": 1, "running": 0, "delayed": 1, "done": 2, "failed": 1},
    }


# -- maintenance ----------------------------------------------------------------------------

def _store_with_failures(store_path: str) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("a", lambda args: 1 / 0)
        q.add_channel("b", lambda args: 1 / 0)
        q.add_channel("ok", print)
        q.enqueue_many("a", range(3))
        q.enqueue_many("b", range(2))
        q.enqueue("ok", "fine")
        q.run_until_complete(timeout=10)


def test_clear_failed_works_without_registering_the_channel(store_path: str) -> None:
    _store_with_failures(store_path)
    with SimplePyQ(store_path) as maintenance:
        assert maintenance.clear_failed("a") == 3
        assert maintenance.clear_failed() == 2
        assert maintenance.clear_failed() == 0
    assert _count(store_path) == 1


def test_requeue_failed_works_without_registering_the_channel(store_path: str) -> None:
    _store_with_failures(store_path)
    with SimplePyQ(store_path) as maintenance:
        assert maintenance.requeue_failed("b", retries=4) == 2
        assert maintenance.requeue_failed() == 3
    assert _count(store_path, "status='pending' AND channel='b' AND retries=4") == 2
    assert _count(store_path, "status='pending' AND channel='a' AND retries=0") == 3


def test_requeued_task_runs_again(queue: SimplePyQ) -> None:
    calls: list[int] = []

    def fails_once(args: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first")
        return "second"

    queue.add_channel("c", fails_once)
    task_id = queue.enqueue("c", None)
    queue.run_until_complete(timeout=10)
    assert queue.requeue_failed(retries=1) == 1
    queue.run_until_complete(timeout=10)
    assert queue.wait(task_id, timeout=1).result == "second"


def test_remove_channel_deletes_its_tasks_and_forgets_it(store_path: str) -> None:
    _store_with_failures(store_path)
    with SimplePyQ(store_path) as maintenance:
        assert maintenance.remove_channel("a") == 3
        assert maintenance.remove_channel("nothing-here") == 0
        with pytest.raises(ValueError, match="unknown channel 'a'"):
            maintenance.enqueue("a", None)
        assert "a" not in maintenance.stats()
    assert _count(store_path, "channel='a'") == 0
    assert _count(store_path) == 3


def test_purge_deletes_only_tasks_finished_before_the_cutoff(store_path: str) -> None:
    _store_with_failures(store_path)
    with SimplePyQ(store_path) as q:
        q.enqueue("ok", "still pending")
        assert q.purge(timedelta(days=1)) == 0
        assert q.purge(0, channel="b") == 2
        assert q.purge(older_than=0) == 4
        assert [t.status for t in q.tasks()] == ["pending"]
        with pytest.raises(ValueError, match="older_than"):
            q.purge(-5)


# -- the store -------------------------------------------------------------------------------

def test_closed_queue_refuses_calls(store_path: str) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", print)
        q.start()
    with pytest.raises(StoreError, match="closed"):
        q.enqueue("c", None)


def test_store_in_a_missing_directory_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "tasks.db"
    with pytest.raises(FileNotFoundError, match=r"tasks\.db"):
        SimplePyQ(path)
    assert not path.parent.exists()


def test_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = b"these are my notes, not a database\n" * 100
    path.write_bytes(content)
    with pytest.raises(StoreError, match=r"notes\.txt"):
        SimplePyQ(path)
    assert path.read_bytes() == content


@pytest.mark.parametrize(("location", "error"), [(":memory:", ValueError), ("", ValueError),
                                                 ("postgresql://u:p@db/x", ValueError)])
def test_locations_that_are_not_files_are_refused(location: str, error: type[Exception]) -> None:
    with pytest.raises(error, match="file"):
        SimplePyQ(location)


def test_directory_is_refused_as_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory"):
        SimplePyQ(tmp_path)


def test_store_runs_in_wal_mode(queue: SimplePyQ, store_path: str) -> None:
    with sqlite3.connect(store_path) as conn:
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


# -- logging and the public names -----------------------------------------------------------

def test_failures_are_logged_and_nothing_is_printed(
    queue: SimplePyQ, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    queue.add_channel("c", lambda args: 1 / 0)
    with caplog.at_level(logging.WARNING, logger="simplepyq"):
        task_id = queue.enqueue("c", None)
        queue.run_until_complete(timeout=10)
    assert capsys.readouterr() == ("", "")
    assert any(str(task_id) in r.getMessage() and "ZeroDivisionError" in r.getMessage()
               for r in caplog.records if r.name == "simplepyq")


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


def test_public_names_are_exported() -> None:
    assert sorted(simplepyq.__all__) == sorted(
        ["Backoff", "DelayException", "SimplePyQ", "Status", "StoreError", "Task", "__version__"])
    for name in simplepyq.__all__:
        assert getattr(simplepyq, name) is not None
