"""Moving up: ``simplepyq copy`` moves a SQLite store's unfinished and failed tasks into another.

The source is always a SQLite file; the target is each backend in turn (``store_path``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from simplepyq import SimplePyQ, Status, policy
from simplepyq.storage import open_store
from simplepyq.storage.base import Outcome
from tests.backends import split_location
from tests.support import ROOT, SCRIPT, spawn_python, wait_until

BLOCKED_WORKER = """
    import pathlib, sys, time
    from simplepyq import SimplePyQ
    q = SimplePyQ(sys.argv[1], poll_interval=0.01)
    def block(args):
        pathlib.Path(sys.argv[2]).touch()
        time.sleep(3600)
    q.add_channel("mail", block)
    q.start()
    time.sleep(3600)
"""
"""A worker of the store argv[1] whose mail task touches argv[2] and then never ends."""


def copy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), "copy", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def fail(args: object) -> None:
    raise RuntimeError(f"cannot send {args}")


@pytest.fixture
def source(tmp_path: Path) -> str:
    """A SQLite store with one task of every status: done, failed, pending (with a key and
    a time limit), delayed and cancelled."""
    path = str(tmp_path / "old.db")
    with SimplePyQ(path) as q:
        q.add_channel("mail", fail)
        q.add_channel("resize", lambda args: args)
        q.enqueue("mail", "to@example.com")
        q.enqueue("resize", {"w": 1})
        q.run_until_complete(timeout=30)
        q.enqueue("mail", {"to": "a@b.c", "body": b"\x00\xff"}, retries=3, priority=7,
                  key="mail-1", time_limit=60)
        q.enqueue("resize", [640, 480], delay=3600)
        q.cancel(q.enqueue("resize", "cancelled"))
    return path


def test_copy_moves_unfinished_and_failed_tasks_with_their_fields_and_leaves_done_ones(
    source: str, store_path: str
) -> None:
    before = {task.status: task for task in SimplePyQ(source).tasks()}

    result = copy("--from", source, "--to", store_path, "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["copied"] == {"failed": 1, "pending": 1, "delayed": 1}
    assert report["removed"] == 3
    with SimplePyQ(store_path) as target:
        copied = {task.status: task for task in target.tasks()}
        assert set(copied) == {Status.FAILED, Status.PENDING, Status.DELAYED}
        for status, task in copied.items():
            old = before[status]
            assert (task.channel, task.args, task.retries, task.attempts, task.priority,
                    task.error, task.created_at, task.run_at, task.key, task.time_limit) == (
                old.channel, old.args, old.retries, old.attempts, old.priority,
                old.error, old.created_at, old.run_at, old.key, old.time_limit)
        assert (copied[Status.PENDING].key, copied[Status.PENDING].time_limit) == ("mail-1", 60)
        assert set(target.known_channels()) == {"mail", "resize"}
    with SimplePyQ(source) as left:  # finished ones stay: done and cancelled
        assert [task.status for task in left.tasks()] == [Status.DONE, Status.CANCELLED]


def test_copy_sets_the_channel_limits_of_the_source_in_the_target(
    source: str, store_path: str
) -> None:
    with SimplePyQ(source) as old:
        old.set_limits("mail", rate_limit="10/m", max_running=2)
        old.set_limits("resize", max_running=5)
    with SimplePyQ(store_path) as target:
        target.declare("resize")
        target.set_limits("resize", rate_limit="3/s")

    assert copy("--from", source, "--to", store_path).returncode == 0

    with SimplePyQ(store_path) as target:
        assert (str(target.limits("mail")), str(target.limits("resize"))) == (
            "rate 10/m, at most 2 running", "rate 3/s, at most 5 running")


def test_copied_tasks_run_in_the_target(source: str, store_path: str) -> None:
    assert copy("--from", source, "--to", store_path).returncode == 0
    with SimplePyQ(store_path, poll_interval=0.01) as target:
        target.add_channel("mail", lambda args: args)
        target.add_channel("resize", lambda args: args)
        target.requeue_failed()
        mail = target.tasks(channel="mail")
        target.start()
        finished = [target.wait(task.id, timeout=30) for task in mail]
        assert sorted((task.status, str(task.result)) for task in finished) == [
            (Status.DONE, "to@example.com"),
            (Status.DONE, str({"to": "a@b.c", "body": b"\x00\xff"}))]
        assert target.stats()["resize"]["delayed"] == 1  # not due for an hour


def test_copy_with_keep_leaves_the_source_as_it_was(source: str, store_path: str) -> None:
    before = SimplePyQ(source).tasks()

    result = copy("--from", source, "--to", store_path, "--keep")

    assert result.returncode == 0, result.stderr
    assert "3 task(s) copied" in result.stdout
    assert SimplePyQ(source).tasks() == before


def test_copy_refuses_while_a_live_worker_runs_tasks_of_the_source(
    source: str, store_path: str, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    worker = spawn_python(BLOCKED_WORKER, source, str(started))
    try:
        wait_until(started.exists, timeout=30)
        before = SimplePyQ(source).tasks()

        result = copy("--from", source, "--to", store_path)

        assert result.returncode == 1
        assert "stop them first" in result.stderr
        assert SimplePyQ(source).tasks() == before
        assert SimplePyQ(store_path).tasks() == []
    finally:
        worker.kill()
        worker.communicate()


def test_copy_refuses_a_source_with_blocked_tasks_and_copies_once_they_are_cancelled(
    source: str, store_path: str
) -> None:
    from simplepyq import Step

    with SimplePyQ(source) as q:
        first, blocked = q.chain(Step("resize", "a"), Step("resize")).task_ids
        before = q.tasks()

    result = copy("--from", source, "--to", store_path)

    assert result.returncode == 1
    assert f"has blocked tasks (task {blocked} is one)" in result.stderr
    assert SimplePyQ(source).tasks() == before and SimplePyQ(store_path).tasks() == []
    with SimplePyQ(source) as q:
        q.cancel(first)  # and, with it, what waits for it
    assert copy("--from", source, "--to", store_path).returncode == 0


def test_a_task_left_running_by_a_killed_worker_is_copied_as_pending(
    source: str, store_path: str, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    worker = spawn_python(BLOCKED_WORKER, source, str(started))
    wait_until(started.exists, timeout=30)
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    assert SimplePyQ(source).stats()["mail"]["running"] == 1

    result = copy("--from", source, "--to", store_path, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["copied"] == {"failed": 1, "pending": 1, "delayed": 1}
    mail = SimplePyQ(store_path).tasks(channel="mail", status="pending")
    assert [(task.args, task.started_at) for task in mail] == [
        ({"to": "a@b.c", "body": b"\x00\xff"}, None)]


def test_a_copied_task_never_shares_its_key_with_an_unfinished_task_of_the_target(
    source: str, store_path: str
) -> None:
    with SimplePyQ(store_path) as target:
        target.add_channel("mail", print)
        held = target.enqueue("mail", "already here", key="mail-1")

    result = copy("--from", source, "--to", store_path, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["copied"] == {"failed": 1, "pending": 1, "delayed": 1}
    with SimplePyQ(store_path) as target:
        holders = [task.id for task in target.tasks(channel="mail")
                   if task.key == "mail-1" and not task.finished]
        assert holders == [held]
        assert target.enqueue("mail", "again", key="mail-1") == held


def test_a_task_whose_cancel_was_requested_before_its_worker_was_killed_is_copied_cancelled(
    source: str, store_path: str, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    worker = spawn_python(BLOCKED_WORKER, source, str(started))
    wait_until(started.exists, timeout=30)
    with SimplePyQ(source) as q:
        [running] = q.tasks(channel="mail", status="running")
        assert q.cancel(running.id) is True  # the task sleeps on: it never checks
    worker.send_signal(signal.SIGKILL)
    worker.communicate()

    result = copy("--from", source, "--to", store_path, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["copied"] == {"failed": 1, "cancelled": 1, "delayed": 1}
    with SimplePyQ(store_path) as target:
        [copied] = target.tasks(channel="mail", status="cancelled")
        assert (copied.args, copied.key) == ({"to": "a@b.c", "body": b"\x00\xff"}, "mail-1")
        assert copied.finished_at is not None  # so that purge deletes it in time
        assert target.tasks(status="pending") == []  # as recovery would have done: not rerun


def test_forget_deletes_only_tasks_still_as_they_were_read(store_path: str) -> None:
    store = open_store(store_path, busy_timeout=30)
    try:
        store.add("c", [b"\xa1a", b"\xa1b"], 0, None, 0, time.time(), register=True)
        rows = store.list(None, "pending", 10)
        claimed = store.exchange("someone", [], "c", 1, time.time()).claimed

        assert store.forget(rows) == 1

        left = store.list(None, None, 10)
        assert [(row[0], row[3]) for row in left] == [(claimed[0].id, "running")]
        done = policy.succeeded(0, None, time.time())
        store.exchange("someone", [Outcome(claimed[0].id, done)], None, 0, time.time())
    finally:
        store.close()


def test_copy_refuses_a_missing_source_and_the_same_store_twice(
    tmp_path: Path, store_path: str
) -> None:
    missing = copy("--from", str(tmp_path / "nope.db"), "--to", store_path)
    same = copy("--from", store_path, "--to", store_path)

    assert missing.returncode == 1
    assert "nope.db" in missing.stderr
    assert same.returncode == 2
    assert "same store" in same.stderr


@pytest.mark.postgres_only
def test_copy_refuses_a_missing_postgresql_schema_and_never_prints_a_password(
    source: str, store_path: str
) -> None:
    url, schema = split_location(store_path)
    scheme, rest = url.split("://", 1)
    secret = f"{scheme}://postgres:s3cret-word@{rest.split('@', 1)[-1]}?schema={schema}"

    missing = copy("--from", secret, "--to", source)
    copied = copy("--from", source, "--to", secret)

    assert missing.returncode == 1
    assert "there is no task store" in missing.stderr
    assert copied.returncode == 0, copied.stderr
    for output in (missing.stdout, missing.stderr, copied.stdout, copied.stderr):
        assert "s3cret-word" not in output
    assert "postgres:***@" in copied.stdout
