"""Automatic retention: finished tasks older than the age kept for them are deleted.

Opt-in per queue (``keep_done``, ``keep_failed`` for failed and cancelled tasks). A
process running workers deletes them as it runs, in small transactions; unfinished
tasks, and a done task whose result a blocked task will receive, are never deleted.
Ages are made old by setting ``finished_at`` behind the library's back.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from simplepyq import SimplePyQ, Status, Step
from simplepyq import retention as retention_module
from tests.backends import raw_sql
from tests.support import run_python, wait_until

DAY = 86400.0


def fail(args: Any) -> None:
    raise RuntimeError(f"cannot {args}")


def _age(store_path: str, task_ids: list[int], days: float) -> None:
    """Make these tasks look finished ``days`` ago."""
    for task_id in task_ids:
        raw_sql(store_path, "UPDATE tasks SET finished_at = ? WHERE id = ?",
                (time.time() - days * DAY, task_id))


def _ids(store_path: str) -> set[int]:
    return {int(row[0]) for row in raw_sql(store_path, "SELECT id FROM tasks")}


@pytest.fixture
def aged(store_path: str) -> dict[str, list[int]]:
    """A store with tasks of every kind, finished ones 10 days ago or just now:
    ``old_done``, ``old_failed`` (failed and cancelled), ``young`` (finished now),
    ``unfinished`` (pending, delayed, blocked), ``needed`` (done 10 days ago, its result
    awaited by a blocked task)."""
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("ok", lambda args: args)
        q.add_channel("bad", fail)
        old_done = q.enqueue_many("ok", range(3))
        old_failed = [q.enqueue("bad", "x"), q.enqueue("ok", "cancelled")]
        q.cancel(old_failed[1])
        young = [q.enqueue("ok", "young"), q.enqueue("bad", "young")]
        q.declare("later", "someday")
        needed, waits_for, blocked = q.group(
            [Step("ok", "needed"), Step("later", "not run here")],
            then=Step("later")).task_ids  # it receives both members' results
        q.run_until_complete(timeout=60, channels=["ok", "bad"])
        unfinished = [q.enqueue("someday", "pending"),
                      q.enqueue("someday", "delayed", delay=3600), waits_for, blocked]
    _age(store_path, [*old_done, *old_failed, needed], days=10)
    return {"old_done": list(old_done), "old_failed": list(old_failed), "young": list(young),
            "unfinished": list(unfinished), "needed": [needed]}


def test_retention_deletes_exactly_the_finished_tasks_past_their_age(
    store_path: str, aged: dict[str, list[int]]
) -> None:
    with SimplePyQ(store_path, keep_done=timedelta(days=7),
                   keep_failed=timedelta(days=30)) as q:
        assert q.apply_retention() == 3  # the done ones: failed ones are kept 30 days
    kept = {*aged["old_failed"], *aged["young"], *aged["unfinished"], *aged["needed"]}
    assert _ids(store_path) == kept

    with SimplePyQ(store_path, keep_done=7 * DAY, keep_failed=7 * DAY) as q:
        assert q.apply_retention() == 2
        assert q.apply_retention() == 0  # nothing left to delete
    assert _ids(store_path) == {*aged["young"], *aged["unfinished"], *aged["needed"]}


def test_a_done_task_whose_result_a_blocked_task_awaits_is_kept_until_it_is_released(
    store_path: str, aged: dict[str, list[int]]
) -> None:
    with SimplePyQ(store_path, keep_done=DAY) as q:
        q.apply_retention()
        assert q.get_task(aged["needed"][0]) is not None
        q.add_channel("later", lambda args: args)
        q.run_until_complete(timeout=60)  # the blocked task receives the result, then ends
        assert q.get_task(aged["unfinished"][-1]).result == ["needed", "not run here"]  # type: ignore[union-attr]
        q.apply_retention()
        assert q.get_task(aged["needed"][0]) is None


def test_retention_runs_by_itself_in_a_process_running_workers_while_they_drain(
    store_path: str, aged: dict[str, list[int]]
) -> None:
    with SimplePyQ(store_path, poll_interval=0.01, keep_done=DAY, keep_failed=DAY) as q:
        q.add_channel("ok", lambda args: args, max_workers=4)
        fresh = q.enqueue_many("ok", range(2000))
        q.start()
        gone = {*aged["old_done"], *aged["old_failed"]}
        wait_until(lambda: not gone & _ids(store_path), timeout=60)
        q.run_until_complete(timeout=60)
        assert all(task.status == Status.DONE for task in q.tasks("ok", limit=5000)
                   if task.id in set(fresh))
    assert _ids(store_path) == {*aged["young"], *aged["unfinished"], *aged["needed"], *fresh}


def test_more_expired_tasks_than_a_batch_in_more_windows_than_a_step_all_go(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.add_channel("ok", lambda args: args)
    count = retention_module.BATCH * 3 + 7
    ids = queue.enqueue_many("ok", range(count))
    queue.run_until_complete(timeout=60)
    raw_sql(store_path, "UPDATE tasks SET finished_at = ?", (time.time() - 2 * DAY,))
    queue.set_retention(keep_done=DAY)
    assert queue.apply_retention() == count
    assert not _ids(store_path) & set(ids)


@pytest.mark.parametrize(("keywords", "message"), [
    ({"keep_done": 0}, "keep_done must be more than 0 seconds"),
    ({"keep_failed": -1}, "keep_failed"),
    ({"keep_done": "7d"}, "keep_done must be a number of seconds or a timedelta"),
])
def test_bad_ages_are_refused_naming_them(
    store_path: str, keywords: dict[str, Any], message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        SimplePyQ(store_path, **keywords)
    with SimplePyQ(store_path) as q, pytest.raises((TypeError, ValueError), match=message):
        q.set_retention(**keywords)


def test_apply_retention_without_ages_is_refused(queue: SimplePyQ) -> None:
    with pytest.raises(ValueError, match="keeps finished tasks forever"):
        queue.apply_retention()


def test_the_command_line_worker_deletes_old_tasks_with_keep_done(
    store_path: str, aged: dict[str, list[int]], tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "import time, sys\n"
        "from simplepyq import SimplePyQ\n"
        f"q = SimplePyQ({store_path!r}, poll_interval=0.01)\n"
        "def wait_for_retention(ids):\n"
        "    deadline = time.monotonic() + 60\n"
        "    while any(q.get_task(i) for i in ids):  # until the worker's sweep deletes them\n"
        "        assert time.monotonic() < deadline, 'retention never ran'\n"
        "        time.sleep(0.01)\n"
        "q.add_channel('check', wait_for_retention)\n")
    with SimplePyQ(store_path) as q:
        q.declare("check")
        q.enqueue("check", aged["old_done"])
    run_python(
        "import subprocess, sys\n"
        "sys.exit(subprocess.run([sys.executable, '-m', 'simplepyq', 'worker', 'app:q', "
        "'--burst', '--keep-done', '7d'], cwd=sys.argv[1]).returncode)", str(tmp_path),
        timeout=120)
    assert not set(aged["old_done"]) & _ids(store_path)
    assert set(aged["old_failed"]) <= _ids(store_path)  # --keep-failed not given: kept
