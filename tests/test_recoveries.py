"""Tasks that kill their process, and the history of every task's runs.

A task whose worker's process dies while running it is run again; one that kills
every process that runs it (SIGKILL here, as a segfault or the OOM killer would) is
failed after ``max_recoveries`` recoveries in a row, and runs alone in its process
meanwhile, so that the tasks queued behind it (or beside it) are not blamed and run.
Every run that did not succeed is kept in the task's history. The crashes are real
child interpreters killing themselves; every test runs on both backends.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from simplepyq import DelayException, SimplePyQ, Status
from simplepyq.storage.base import Owner
from tests.support import read_runs, spawn_python, wait_until

# Drains channel "c" with 4 workers: "bomb" SIGKILLs its own process, anything else is
# logged (start and end, as tests/support.read_runs reads them) and returned.
# argv: store, log file.
CRASHING_WORKER = """
    import os, signal, sys, time
    from simplepyq import SimplePyQ

    log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def work(args):
        if args == "bomb":
            os.kill(os.getpid(), signal.SIGKILL)
        os.write(log, f"start {args} {os.getpid()} {time.time()!r}\\n".encode())
        time.sleep(0.002)
        os.write(log, f"end {args} {os.getpid()} {time.time()!r}\\n".encode())
        return args

    with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
        q.add_channel("c", work, max_workers=4)
        q.run_until_complete(timeout=60)
"""


def _run_workers_until_drained(store_path: str, log: Path, most: int) -> list[int]:
    """Start worker processes one after another (as systemd's Restart= would) until one
    drains the store; the exit codes of those that ran."""
    codes: list[int] = []
    while len(codes) < most:
        child = spawn_python(CRASHING_WORKER, store_path, str(log))
        _, err = child.communicate(timeout=90)
        codes.append(child.returncode)
        if child.returncode == 0:
            return codes
        assert child.returncode == -9, err
    raise AssertionError(f"still crashing after {most} worker processes: {codes}")


def test_a_task_that_kills_its_process_fails_after_three_recoveries_and_the_queue_drains(
    store_path: str, tmp_path: Path,
) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("c", print)
        bomb = q.enqueue("c", "bomb")
        others = q.enqueue_many("c", list(range(30)))
    log = tmp_path / "runs"

    codes = _run_workers_until_drained(store_path, log, most=6)

    assert codes == [-9, -9, -9, 0]
    with SimplePyQ(store_path) as q:
        failed = q.get_task(bomb)
        assert failed is not None and failed.status == Status.FAILED
        assert "its worker died 3 times in a row while running it" in (failed.error or "")
        assert [attempt.outcome for attempt in failed.history] == ["recovered"] * 3
        done = [q.get_task(task_id) for task_id in others]
        assert all(task is not None and task.status == Status.DONE for task in done)
        assert all(task is not None and task.recoveries == 0 for task in done)
    runs = read_runs(log)
    assert sorted(runs) == list(range(30))
    assert all(run.ended for task_runs in runs.values() for run in task_runs)


def test_a_task_recovered_once_then_run_to_the_end_keeps_the_recovery_in_its_history(
    store_path: str, tmp_path: Path,
) -> None:
    marker = tmp_path / "crashed once"
    code = f"""
        import os, pathlib, signal, sys
        from simplepyq import SimplePyQ

        def once(args):
            mark = pathlib.Path({str(marker)!r})
            if not mark.exists():
                mark.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return "survived"

        with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
            q.add_channel("c", once)
            if len(sys.argv) > 2:
                print(q.enqueue("c", None))
            q.run_until_complete(timeout=60)
    """
    first = spawn_python(code, store_path, "enqueue")
    first.communicate(timeout=60)
    assert first.returncode == -9
    second = spawn_python(code, store_path)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err

    with SimplePyQ(store_path) as q:
        (task,) = q.tasks("c")
    assert (task.status, task.result, task.attempts, task.recoveries) == (
        Status.DONE, "survived", 2, 0)
    (recovered,) = task.history
    assert recovered.outcome == "recovered" and recovered.number == 1
    assert "died while running it" in (recovered.error or "")
    assert recovered.started_at is not None and recovered.ended_at is not None


def test_a_task_that_failed_and_deferred_before_succeeding_keeps_each_run_in_its_history(
    queue: SimplePyQ,
) -> None:
    runs: list[int] = []

    def flaky(args: object) -> str:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("first try breaks")
        if len(runs) == 2:
            raise DelayException(0)
        return "third time lucky"

    queue.add_channel("c", flaky)
    task_id = queue.enqueue("c", None, retries=1)
    queue.run_until_complete(timeout=30)

    task = queue.get_task(task_id)
    assert task is not None and (task.status, task.error) == (Status.DONE, None)
    assert [(a.number, a.outcome, a.error) for a in task.history] == [
        (1, "error", "ValueError: first try breaks"),
        (2, "deferred", "deferred for 0s"),
    ]
    assert all(a.started_at is not None and a.ended_at is not None for a in task.history)


def test_history_keeps_the_last_ten_runs_that_did_not_succeed(queue: SimplePyQ) -> None:
    queue.add_channel("c", lambda args: (_ for _ in ()).throw(RuntimeError("again")))
    task_id = queue.enqueue("c", None, retries=11)
    queue.run_until_complete(timeout=30)

    task = queue.get_task(task_id)
    assert task is not None and task.status == Status.FAILED and task.attempts == 12
    assert [attempt.number for attempt in task.history] == list(range(3, 13))


def test_a_retried_failure_and_the_final_one_say_which_they_are_in_the_log(
    queue: SimplePyQ, caplog: pytest.LogCaptureFixture,
) -> None:
    queue.add_channel("c", lambda args: 1 / 0)
    task_id = queue.enqueue("c", None, retries=1)
    with caplog.at_level(logging.WARNING, logger="simplepyq"):
        queue.run_until_complete(timeout=30)

    lines = [r.getMessage() for r in caplog.records if f"task {task_id} " in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].endswith("ZeroDivisionError: division by zero; retrying now (0 retries left)")
    assert lines[1].endswith("; failed for good after 2 attempts")


def test_a_return_value_that_cannot_be_stored_fails_the_task_with_a_log_line(
    queue: SimplePyQ, caplog: pytest.LogCaptureFixture,
) -> None:
    queue.add_channel("c", lambda args: object())
    task_id = queue.enqueue("c", None)
    with caplog.at_level(logging.WARNING, logger="simplepyq"):
        queue.run_until_complete(timeout=30)

    task = queue.get_task(task_id)
    assert task is not None and task.status == Status.FAILED
    (line,) = [r.getMessage() for r in caplog.records if f"task {task_id} " in r.getMessage()]
    assert "returned a value that cannot be stored" in line and "object" in line


def test_max_recoveries_must_be_a_whole_number_of_at_least_one(store_path: str) -> None:
    with pytest.raises(ValueError, match="max_recoveries must be at least 1, got 0"):
        SimplePyQ(store_path, max_recoveries=0)
    with pytest.raises(TypeError, match="max_recoveries must be an int"):
        SimplePyQ(store_path, max_recoveries=2.5)  # type: ignore[arg-type]


def test_retry_wait_is_said_in_seconds_when_the_channel_backs_off(
    queue: SimplePyQ, caplog: pytest.LogCaptureFixture,
) -> None:
    queue.add_channel("c", lambda args: 1 / 0, backoff=60)
    task_id = queue.enqueue("c", None, retries=2)
    with caplog.at_level(logging.WARNING, logger="simplepyq"):
        queue.start()
        wait_until(lambda: queue.get_task(task_id).status == Status.DELAYED)  # type: ignore[union-attr]
        queue.stop()
    (line,) = [r.getMessage() for r in caplog.records if f"task {task_id} " in r.getMessage()]
    assert line.endswith("; retrying in 60.0 s (1 retry left)")


def test_after_its_first_recovery_a_task_is_blamed_only_for_deaths_while_it_ran_alone(
    queue: SimplePyQ,
) -> None:
    queue.add_channel("c", print)
    task_id = queue.enqueue("c", None)
    store = queue._store

    def dies(owner: str, alone: bool) -> tuple[str, int]:
        (claimed,) = store.exchange(owner, [], "c", 1, time.time()).claimed
        if alone:
            store.run_alone(owner, claimed.id)
        store.recover([Owner(owner, None, None, None, None)], f"{owner} died", time.time(), 3)
        task = queue.get_task(task_id)
        assert task is not None
        return task.status, task.recoveries

    assert dies("first", alone=False) == (Status.PENDING, 1)  # the first always counts
    assert dies("claimed it only", alone=False) == (Status.PENDING, 1)
    assert dies("ran it alone", alone=True) == (Status.PENDING, 2)
    assert dies("claimed it only again", alone=False) == (Status.PENDING, 2)
    assert dies("ran it alone again", alone=True) == (Status.FAILED, 3)
    task = queue.get_task(task_id)
    assert task is not None and len(task.history) == 5
    assert "died 3 times in a row" in (task.error or "")
