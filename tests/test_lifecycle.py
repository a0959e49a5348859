"""The workers' life cycle: start, a second start, stop, close, the interpreter's exit, and a
task that forks; what 0.1.3 code reads of a queue; declaring channels without functions.

Every test runs on both backends; the exit and fork tests run real child interpreters.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from simplepyq import SimplePyQ, Status
from simplepyq.errors import UnknownChannelError
from tests.support import run_python

# Enqueues three tasks, starts the workers, waits until the first task runs, and lets
# the script end while it still runs (0.1.3's first README example). argv: store.
EXIT_WHILE_RUNNING = """
    import sys, threading, time
    from simplepyq import SimplePyQ

    started = threading.Event()

    def slow(args):
        started.set()
        time.sleep(0.3)  # still running when the main thread ends
        return args

    q = SimplePyQ(sys.argv[1])
    q.add_channel("c", slow)
    ids = q.enqueue_many("c", [1, 2, 3])
    q.start()
    assert started.wait(30)
    print(ids[0])
"""


def test_normal_exit_lets_the_running_task_finish_and_returns_the_unstarted_ones(
    store_path: str,
) -> None:
    first = int(run_python(EXIT_WHILE_RUNNING, store_path))

    with SimplePyQ(store_path) as q:
        task = q.get_task(first)
        assert task is not None
        assert (task.status, task.attempts, task.result) == (Status.DONE, 1, 1)
        others = [t for t in q.tasks("c") if t.id != first]
        assert {t.status for t in others} <= {Status.PENDING, Status.DONE}
        assert all(t.attempts == (1 if t.status == Status.DONE else 0) for t in others)


def test_stop_reports_a_task_left_running_by_an_earlier_stop_that_timed_out(
    queue: SimplePyQ,
) -> None:
    release = threading.Event()
    queue.add_channel("c", lambda args: release.wait(30))
    queue.enqueue("c", 1)
    with pytest.raises(TimeoutError):
        queue.run_until_complete(timeout=0.5)

    assert queue.stop(timeout=0.1) is False
    release.set()
    assert queue.stop(timeout=30) is True


def test_close_from_inside_a_task_is_refused_and_the_task_still_finishes(
    queue: SimplePyQ,
) -> None:
    def closes(args: object) -> str:
        try:
            queue.close()
        except RuntimeError as exc:
            return str(exc)
        return "closed"

    queue.add_channel("c", closes)
    task_id = queue.enqueue("c", None)
    queue.run_until_complete(timeout=30)

    task = queue.get_task(task_id)
    assert task is not None and task.status == Status.DONE
    assert "close() was called from inside a task" in task.result


def test_a_second_start_with_other_channels_starts_them_too(queue: SimplePyQ) -> None:
    queue.add_channel("a", lambda args: "a")
    queue.add_channel("b", lambda args: "b")
    queue.start(channels=["a"])
    queue.start(channels=["b"])
    task_id = queue.enqueue("b", None)

    assert queue.wait(task_id, timeout=30).result == "b"


def test_a_second_start_of_every_channel_also_runs_channels_added_later(
    queue: SimplePyQ,
) -> None:
    queue.add_channel("a", lambda args: "a")
    queue.start(channels=["a"])
    queue.start()
    queue.add_channel("late", lambda args: "late")

    assert queue.wait(queue.enqueue("late", None), timeout=30).result == "late"


def test_channels_and_running_read_as_in_0_1_3(queue: SimplePyQ) -> None:
    def send(args: object) -> None:
        return None

    queue.add_channel("email", send, max_workers=2)
    assert dict(queue.channels) == {"email": (send, 2)}
    with pytest.raises(TypeError):
        queue.channels["other"] = (send, 1)  # type: ignore[index]
    assert queue.running is False
    queue.start()
    assert queue.running is True
    queue.stop()
    assert queue.running is False


def test_a_process_that_only_enqueues_declares_its_channels_before_any_worker_ran(
    store_path: str,
) -> None:
    with SimplePyQ(store_path) as web:
        with pytest.raises(UnknownChannelError, match=r"declare\("):
            web.enqueue("email", {"to": "ada"})
        web.declare("email", "resize")
        task_id = web.enqueue("email", {"to": "ada"})
        assert web.known_channels() == ["email", "resize"]

    with SimplePyQ(store_path, poll_interval=0.01) as worker:
        worker.add_channel("email", lambda args: args["to"])
        worker.run_until_complete(timeout=30)
        assert worker.get_task(task_id).result == "ada"  # type: ignore[union-attr]


def test_declare_refuses_a_bad_name_and_declares_none_of_the_others(queue: SimplePyQ) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        queue.declare("good", 5)  # type: ignore[arg-type]
    assert "good" not in queue.known_channels()


def test_live_workers_counts_the_queue_instances_running_each_channel(store_path: str) -> None:
    with SimplePyQ(store_path) as one, SimplePyQ(store_path) as two:
        one.add_channel("a", print)
        two.add_channel("a", print)
        two.add_channel("b", print)
        one.declare("idle")
        assert one.live_workers() == {"a": 0, "b": 0, "idle": 0}
        one.start()
        two.start()
        assert one.live_workers() == {"a": 2, "b": 1, "idle": 0}
        two.stop()
        assert two.live_workers() == {"a": 1, "b": 0, "idle": 0}


# A task that forks: the child returns from the task, into the worker. The parent task
# waits for the child and returns its exit code; every run appends "task pid" to a log.
# argv: store, log file.
FORKING_TASK = """
    import os, sys
    from simplepyq import SimplePyQ

    def work(args):
        with open(sys.argv[2], "a") as log:
            log.write(f"{args} {os.getpid()}\\n")
        if args == "fork":
            child = os.fork()
            if child == 0:
                return "returned in the child"
            return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        return args

    with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
        q.add_channel("c", work)
        fork_id = q.enqueue("c", "fork")
        q.enqueue_many("c", list(range(10)))
        q.run_until_complete(timeout=60)
        print(fork_id, os.getpid())
"""


def test_a_forked_child_returning_from_a_task_exits_instead_of_acting_as_a_worker(
    store_path: str, tmp_path: Path,
) -> None:
    log = tmp_path / "runs"
    fork_id, parent = map(int, run_python(FORKING_TASK, store_path, str(log)).split())

    runs = [line.split() for line in log.read_text().splitlines()]
    assert sorted(args for args, _ in runs) == sorted(["fork", *map(str, range(10))])
    assert {int(pid) for _, pid in runs} == {parent}
    with SimplePyQ(store_path) as q:
        assert q.get_task(fork_id).result == 70  # type: ignore[union-attr]
        assert q.stats()["c"]["done"] == 11
