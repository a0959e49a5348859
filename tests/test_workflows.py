"""Workflows: tasks that wait for others, and what their upstreams' ends do to them.

A task stored with upstreams is ``blocked``; it becomes ``pending`` in the
transaction that records the last of its upstreams done, and ``cancelled``, down the
graph, in the one that records an upstream failed or cancelled. Chains, groups,
follow-ups and ``always`` steps are built on that one rule.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from simplepyq import (
    Links,
    SimplePyQ,
    Status,
    Step,
    TaskFunction,
    TaskId,
    WorkflowStatus,
    current_task,
)
from simplepyq.storage import open_store
from tests.backends import blocked_by, pg_connect, raw_sql
from tests.support import (
    InThread,
    died_running,
    read_runs,
    run_python,
    spawn_python,
    wait_until,
)


def add_one(x: int) -> int:
    return x + 1


def total(xs: list[int]) -> int:
    return sum(xs)


def boom(x: Any) -> Any:
    raise RuntimeError(f"boom {x}")


def echo(x: Any) -> Any:
    return x


class FailsFirst:
    """x + 1, once its first run for those args has raised (a task that needs a requeue)."""

    def __init__(self) -> None:
        self.failed: set[Any] = set()

    def __call__(self, x: int) -> int:
        if x not in self.failed:
            self.failed.add(x)
            raise RuntimeError(f"first run for {x}")
        return x + 1


@pytest.fixture
def q(queue: SimplePyQ) -> SimplePyQ:
    """The test's queue with channels add (x + 1), total (sum), boom (raises), echo and
    flaky (FailsFirst)."""
    for name, func in (("add", add_one), ("total", total), ("boom", boom), ("echo", echo),
                       ("flaky", FailsFirst())):
        queue.add_channel(name, func, max_workers=2)
    return queue


def status(q: SimplePyQ, task_id: int) -> Status:
    task = q.get_task(task_id)
    assert task is not None
    return Status(task.status)


def result(q: SimplePyQ, task_id: int) -> Any:
    task = q.get_task(task_id)
    assert task is not None and task.status == Status.DONE, task
    return task.result


def error(q: SimplePyQ, task_id: int) -> str:
    task = q.get_task(task_id)
    assert task is not None and task.error is not None, task
    return task.error


def _count(store_path: str, table: str = "tasks") -> int:
    [(count,)] = raw_sql(store_path, f"SELECT COUNT(*) FROM {table}")
    return int(count)


# -- chains ----------------------------------------------------------------------


def test_a_chain_of_three_passes_each_result_on_as_the_next_steps_args(q: SimplePyQ) -> None:
    flow = q.chain(Step("add", 1), Step("add"), Step("add"))
    assert [status(q, i) for i in flow.task_ids] == [Status.PENDING, Status.BLOCKED,
                                                      Status.BLOCKED]
    q.run_until_complete(timeout=60)
    assert [result(q, i) for i in flow.task_ids] == [2, 3, 4]
    assert flow.status().succeeded and flow.status().counts == {"done": 3}


def test_a_step_given_args_keeps_them_and_still_waits_for_the_one_before(
    q: SimplePyQ
) -> None:
    flow = q.chain(Step("add", 1), Step("add", 10))
    assert status(q, flow.task_ids[1]) == Status.BLOCKED
    q.run_until_complete(timeout=60)
    assert [result(q, i) for i in flow.task_ids] == [2, 11]


def test_a_blocked_task_is_not_claimed_while_its_upstream_runs(q: SimplePyQ) -> None:
    opened = threading.Event()
    q.add_channel("gate", lambda args: opened.wait(60) and args)
    flow = q.chain(Step("gate", 5), Step("add"))
    q.start()
    wait_until(lambda: status(q, flow.task_ids[0]) == Status.RUNNING)
    assert status(q, flow.task_ids[1]) == Status.BLOCKED
    opened.set()
    assert q.wait(flow.task_ids[1], timeout=30).result == 6
    q.stop()


def test_a_failed_step_cancels_the_rest_of_the_chain_naming_where_it_began(
    q: SimplePyQ
) -> None:
    flow = q.chain(Step("add", 1), Step("boom"), Step("add"), Step("add"), Step("add"))
    q.run_until_complete(timeout=60)
    first, failed, *rest = flow.task_ids
    assert status(q, first) == Status.DONE and status(q, failed) == Status.FAILED
    assert [status(q, i) for i in rest] == [Status.CANCELLED] * 3
    assert error(q, rest[0]) == f"upstream task {failed} ended failed: RuntimeError: boom 2"
    # Three levels down: the task just above, and where the cascade began.
    assert error(q, rest[2]) == (f"upstream task {rest[1]} ended cancelled: upstream task "
                                 f"{failed} ended failed: RuntimeError: boom 2")
    assert q.workflow(flow.id).counts == {"done": 1, "failed": 1, "cancelled": 3}


def test_cancelling_a_pending_step_cancels_every_step_after_it(q: SimplePyQ) -> None:
    flow = q.chain(Step("add", 1), Step("add"), Step("add"))
    assert q.cancel(flow.task_ids[0]) is True
    assert [status(q, i) for i in flow.task_ids] == [Status.CANCELLED] * 3
    assert error(q, flow.task_ids[2]).startswith(f"upstream task {flow.task_ids[1]} ended "
                                                 f"cancelled: upstream task "
                                                 f"{flow.task_ids[0]} ended cancelled")


def test_cancelling_a_blocked_task_cancels_its_dependents_and_leaves_its_upstream(
    q: SimplePyQ
) -> None:
    first, middle, last = q.chain(Step("add", 1), Step("add"), Step("add")).task_ids
    assert q.cancel(middle) is True
    assert (status(q, first), status(q, middle), status(q, last)) == (
        Status.PENDING, Status.CANCELLED, Status.CANCELLED)
    q.run_until_complete(timeout=60)
    assert result(q, first) == 2 and status(q, last) == Status.CANCELLED


# -- groups ----------------------------------------------------------------------


def test_a_group_callback_receives_every_members_result_in_member_order(
    q: SimplePyQ
) -> None:
    flow = q.group([Step("add", i, priority=i % 3) for i in range(100)],
                   then=Step("echo"))
    *members, callback = flow.task_ids
    assert len(members) == 100 and status(q, callback) == Status.BLOCKED
    q.run_until_complete(timeout=60)
    assert result(q, callback) == [i + 1 for i in range(100)]
    assert flow.wait(timeout=10).counts == {"done": 101}


def test_a_group_callback_is_cancelled_when_a_member_fails(q: SimplePyQ) -> None:
    flow = q.group([Step("add", 1), Step("boom", 2), Step("add", 3)], then=Step("total"))
    q.run_until_complete(timeout=60)
    assert status(q, flow.task_ids[-1]) == Status.CANCELLED
    assert f"upstream task {flow.task_ids[1]} ended failed" in error(q, flow.task_ids[-1])


def test_an_always_callback_runs_after_a_failure_and_receives_every_outcome(
    q: SimplePyQ
) -> None:
    flow = q.group([Step("add", 1), Step("boom", 2)], then=Step("echo", always=True))
    q.run_until_complete(timeout=60)
    ok, failed, callback = flow.task_ids
    outcomes = result(q, callback)
    assert [(o["id"], o["status"], o["result"]) for o in outcomes] == [
        (ok, "done", 2), (failed, "failed", None)]
    assert outcomes[0]["error"] is None and "RuntimeError: boom 2" in outcomes[1]["error"]


def test_an_always_step_of_a_chain_receives_the_outcome_of_the_step_before(
    q: SimplePyQ
) -> None:
    failed, after = q.chain(Step("boom", 1), Step("echo", always=True)).task_ids
    q.run_until_complete(timeout=60)
    outcome = result(q, after)
    assert (outcome["id"], outcome["status"], outcome["result"]) == (failed, "failed", None)


# -- follow-ups ------------------------------------------------------------------


def test_an_on_failure_follow_up_runs_when_the_task_fails_and_receives_what_failed(
    q: SimplePyQ
) -> None:
    task_id = q.enqueue("boom", 7, on_failure=Step("echo"))
    [follow_up] = q.links(task_id).dependents
    assert status(q, follow_up) == Status.BLOCKED
    q.run_until_complete(timeout=60)
    received = result(q, follow_up)
    assert (received["id"], received["status"]) == (task_id, "failed")
    assert "RuntimeError: boom 7" in received["error"]


def test_an_on_failure_follow_up_is_cancelled_when_the_task_succeeds(q: SimplePyQ) -> None:
    task_id = q.enqueue("add", 1, on_failure=Step("echo", "alert"))
    [follow_up] = q.links(task_id).dependents
    q.run_until_complete(timeout=60)
    assert status(q, follow_up) == Status.CANCELLED
    assert error(q, follow_up) == f"not needed: task {task_id}, which it follows up on, " \
                                  f"ended done"


def test_an_on_failure_follow_up_runs_when_the_task_is_cancelled(q: SimplePyQ) -> None:
    task_id = q.enqueue("add", 1, on_failure=Step("echo", "it was cancelled"))
    [follow_up] = q.links(task_id).dependents
    q.cancel(task_id)
    q.run_until_complete(timeout=60)
    assert result(q, follow_up) == "it was cancelled"


def test_a_step_of_a_chain_can_have_its_own_follow_up(q: SimplePyQ) -> None:
    flow = q.chain(Step("add", 1), Step("boom", on_failure=Step("echo", "cleanup")))
    q.run_until_complete(timeout=60)
    [follow_up] = q.links(flow.task_ids[1]).dependents
    assert result(q, follow_up) == "cleanup"
    assert q.workflow(flow.id).counts == {"done": 2, "failed": 1}


# -- depends_on ------------------------------------------------------------------


def test_a_task_depending_on_a_done_task_is_due_at_once_with_its_own_args(
    q: SimplePyQ
) -> None:
    upstream = q.enqueue("add", 1)
    q.run_until_complete(timeout=60)
    task_id = q.enqueue("add", 41, depends_on=[upstream])
    assert status(q, task_id) == Status.PENDING
    q.run_until_complete(timeout=60)
    assert result(q, task_id) == 42


def test_a_task_depending_on_a_failed_task_is_cancelled_at_once(q: SimplePyQ) -> None:
    upstream = q.enqueue("boom", 1)
    q.run_until_complete(timeout=60)
    task_id = q.enqueue("add", 1, depends_on=[upstream])
    assert status(q, task_id) == Status.CANCELLED
    assert error(q, task_id) == f"upstream task {upstream} ended failed"


def test_a_task_waits_for_every_task_it_depends_on(q: SimplePyQ) -> None:
    first, second = q.enqueue("add", 1), q.enqueue("add", 2)
    task_id = q.enqueue("total", [0], depends_on=[first, second])
    assert q.links(task_id) == Links((first, second), (), task_id)
    assert q.links(first).dependents == (task_id,)
    q.run_until_complete(timeout=60)
    assert result(q, task_id) == 0


def test_depending_on_a_task_that_does_not_exist_stores_nothing(
    q: SimplePyQ, store_path: str
) -> None:
    upstream = q.enqueue("add", 1)
    before = _count(store_path)
    with pytest.raises(ValueError, match=r"there is no task with id 999 to depend on"):
        q.enqueue("add", 1, depends_on=[upstream, 999])
    with pytest.raises(ValueError, match="names a task twice"):
        q.enqueue("add", 1, depends_on=[upstream, upstream])
    with pytest.raises(TypeError, match=r"give \[1\]"):
        q.enqueue("add", 1, depends_on=1)  # type: ignore[arg-type]
    assert _count(store_path) == before and _count(store_path, "simplepyq_deps") == 0


def test_a_task_of_another_store_is_no_task_to_depend_on(q: SimplePyQ, tmp_path: Path) -> None:
    with SimplePyQ(tmp_path / "other.db") as other:
        other.add_channel("x", echo)
        foreign = [other.enqueue("x", n) for n in range(5)][-1]
    with pytest.raises(ValueError, match=f"no task with id {foreign}"):
        q.enqueue("add", 1, depends_on=[foreign])


# -- bad input -------------------------------------------------------------------


def test_a_step_naming_an_unknown_channel_names_the_step_and_stores_nothing(
    q: SimplePyQ, store_path: str
) -> None:
    with pytest.raises(ValueError, match=r"^step #1: unknown channel 'nope'; known channels: "
                                         r"add, boom, echo, flaky, total"):
        q.chain(Step("add", 1), Step("nope"))
    assert _count(store_path) == 0


def test_args_msgpack_cannot_encode_name_the_step_and_store_nothing(
    q: SimplePyQ, store_path: str
) -> None:
    with pytest.raises(TypeError, match=r"step #1 \(Step\('add', 1j\)\)"):
        q.group([Step("add", 1), Step("add", 1j)])
    assert _count(store_path) == 0


@pytest.mark.parametrize(("build", "error_type", "message"), [
    (lambda q: q.group([]), ValueError, "a group needs at least one member"),
    (lambda q: q.chain(), ValueError, "a chain needs at least one step"),
    (lambda q: q.chain(Step("add")), ValueError,
     r"step #0 \(Step\('add'\)\) has no args and waits for nothing"),
    (lambda q: q.chain(Step("add", 1), "add"), TypeError, "chain item #1 must be a Step"),
    (lambda q: q.chain(Step("add", 1, retries=-1)), ValueError,
     r"step #0 \(Step\('add', 1\)\): retries must be >= 0"),
    (lambda q: q.chain(Step("add", 1, on_failure=Step("echo", 1, on_failure=Step("echo", 2)))),
     ValueError, "has an on_failure of its own"),
])
def test_bad_workflows_are_refused_before_anything_is_stored(
    q: SimplePyQ, store_path: str, build: Any, error_type: type[Exception], message: str
) -> None:
    with pytest.raises(error_type, match=message):
        build(q)
    assert _count(store_path) == 0


# -- workflows -------------------------------------------------------------------


def test_a_workflow_reports_its_counts_and_can_be_waited_for_from_another_process(
    q: SimplePyQ, store_path: str
) -> None:
    flow = q.chain(Step("add", 1), Step("add"))
    assert q.workflow(flow.id) == WorkflowStatus(flow.id, {"pending": 1, "blocked": 1})
    waiter = spawn_python("""
        import sys
        from simplepyq import SimplePyQ
        with SimplePyQ(sys.argv[1]) as q:
            print(q.wait_workflow(int(sys.argv[2]), timeout=60).describe())
    """, store_path, str(flow.id))
    q.run_until_complete(timeout=60)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert out.strip() == "2 done"


def test_waiting_for_an_unfinished_workflow_times_out_saying_where_it_is(
    q: SimplePyQ
) -> None:
    flow = q.chain(Step("add", 1), Step("add"))
    with pytest.raises(TimeoutError, match=r"1 blocked, 1 pending\) after 0.05s"):
        flow.wait(timeout=0.05)
    with pytest.raises(ValueError, match="no workflow with id 999"):
        q.workflow(999)


def test_a_running_task_adds_a_fan_out_to_its_own_workflow(q: SimplePyQ) -> None:
    def split(count: int) -> int:
        context = current_task()
        assert context is not None
        q.group([Step("add", n) for n in range(count)], then=Step("total"))
        return count

    q.add_channel("split", split)
    flow = q.chain(Step("add", 49), Step("split"))
    q.run_until_complete(timeout=60)
    counts = q.workflow(flow.id).counts
    assert counts == {"done": 2 + 50 + 1}
    [callback] = [i for i in q.workflow_task_ids(flow.id) if q.links(i).depends_on
                  and len(q.links(i).depends_on) == 50]
    assert result(q, callback) == sum(n + 1 for n in range(50))


def test_a_decorated_channel_function_still_calls_and_makes_tasks_and_steps(
    queue: SimplePyQ
) -> None:
    @queue.channel("double")
    def double(x: int) -> int:
        return 2 * x

    assert isinstance(double, TaskFunction) and double(4) == 8
    assert double.__name__ == "double"
    first = double.enqueue(1)
    flow = queue.chain(double.step(2), double.step(), double.step())
    queue.run_until_complete(timeout=60)
    assert result(queue, first) == 2
    assert [result(queue, i) for i in flow.task_ids] == [4, 8, 16]


# -- every way a task ends or goes -----------------------------------------------


def test_removing_a_channel_cancels_what_waits_for_its_tasks_elsewhere(
    q: SimplePyQ
) -> None:
    upstream, downstream = q.chain(Step("boom", 1), Step("add", 1)).task_ids
    q.remove_channel("boom")
    assert q.get_task(upstream) is None
    assert status(q, downstream) == Status.CANCELLED
    assert error(q, downstream) == (f"upstream task {upstream} ended cancelled: "
                                    "removed with channel 'boom'")


def test_purging_a_finished_workflow_forgets_its_links(q: SimplePyQ, store_path: str) -> None:
    q.chain(Step("add", 1), Step("add"))
    q.run_until_complete(timeout=60)
    assert q.purge(older_than=0) == 2
    assert _count(store_path, "simplepyq_deps") == _count(store_path, "simplepyq_flows") == 0


def test_recovering_a_dead_processs_task_is_no_end_for_its_dependents(
    q: SimplePyQ, store_path: str
) -> None:
    first, second = q.chain(Step("add", 1), Step("add")).task_ids
    assert died_running(store_path, "add", max_recoveries=3) == first
    assert (status(q, first), status(q, second)) == (Status.PENDING, Status.BLOCKED)
    q.run_until_complete(timeout=60)
    assert result(q, second) == 3


def test_a_task_failed_by_recovery_cancels_its_dependents(
    q: SimplePyQ, store_path: str
) -> None:
    first, second = q.chain(Step("add", 1), Step("add")).task_ids
    assert died_running(store_path, "add", max_recoveries=1) == first
    assert (status(q, first), status(q, second)) == (Status.FAILED, Status.CANCELLED)


def test_a_chain_step_cut_by_kill_9_runs_again_and_the_chain_completes(
    store_path: str, tmp_path: Path
) -> None:
    log, marker = tmp_path / "runs.log", tmp_path / "killed-once"
    worker = """
        import os, sys, time
        from simplepyq import SimplePyQ
        log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        marker = sys.argv[3]
        def step(x):
            task_id = __import__("simplepyq").current_task().id
            os.write(log, f"start {task_id} {os.getpid()} {time.time()!r}\\n".encode())
            if x == 2 and not os.path.exists(marker):
                open(marker, "w").close()
                time.sleep(600)  # killed here, mid-step
            os.write(log, f"end {task_id} {os.getpid()} {time.time()!r}\\n".encode())
            return x + 1
        with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
            q.add_channel("step", step, max_workers=2)
            q.run_until_complete(timeout=120)
    """
    with SimplePyQ(store_path) as q:
        q.add_channel("step", add_one)
        ids = q.chain(Step("step", 1), Step("step"), Step("step"), Step("step")).task_ids
    victim = spawn_python(worker, store_path, str(log), str(marker))
    wait_until(marker.exists, timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    run_python(worker, store_path, str(log), str(marker), timeout=120)

    runs = read_runs(log)
    with SimplePyQ(store_path) as q:
        assert [result(q, i) for i in ids] == [2, 3, 4, 5]
    # Each step ran to its end once; the second also started once in the killed process.
    assert {i: len(runs[i]) for i in ids} == {ids[0]: 1, ids[1]: 2, ids[2]: 1, ids[3]: 1}
    assert [run.ended for run in runs[ids[1]]] == [False, True]
    assert os.getpid() not in {run.pid for i in ids for run in runs[i]}


# -- PostgreSQL: transactions that overlap ---------------------------------------


@pytest.mark.postgres_only
def test_two_members_ending_at_once_release_their_callback_exactly_once(
    q: SimplePyQ, store_path: str
) -> None:
    flow = q.group([Step("add", 1), Step("add", 2)], then=Step("total"))
    first, second, callback = flow.task_ids
    stores = [open_store(store_path, 30.0), open_store(store_path, 30.0)]
    try:
        claimed = [stores[0].exchange("one", [], "add", 1, time.time()).claimed[0],
                   stores[1].exchange("two", [], "add", 1, time.time()).claimed[0]]
        assert {task.id for task in claimed} == {first, second}
        with pg_connect(store_path) as holder:
            # Hold the callback's count: both commits record their member done, then wait.
            holder.execute("SELECT 1 FROM simplepyq_flows WHERE task_id = %s FOR UPDATE",
                           (callback,))
            ends = [_record_done(stores[0], "one", claimed[0]),
                    _record_done(stores[1], "two", claimed[1])]
            wait_until(lambda: _waiting(store_path) == 2, timeout=30)
            holder.rollback()
        for end in ends:
            assert end.result().dropped == []
    finally:
        for store in stores:
            store.close()
    assert status(q, callback) == Status.PENDING
    [(waiting,)] = raw_sql(store_path, "SELECT waiting FROM simplepyq_flows WHERE task_id = ?",
                           (callback,))
    assert waiting == 0
    q.run_until_complete(timeout=60)
    assert result(q, callback) == 2 + 3


def _record_done(store: Any, owner: str, task: Any) -> InThread:
    """Record, in a thread, that ``owner`` ran ``task`` (an ``add`` task) to its end."""
    from simplepyq import codec, policy
    from simplepyq.storage.base import Outcome

    value = codec.pack(codec.unpack(task.args) + 1, "result")
    return InThread(lambda: store.exchange(owner, [Outcome(task.id, policy.succeeded(
        0, value, time.time()))], None, 0, time.time()))


def _waiting(store_path: str) -> int:
    """How many sessions wait for a lock (the second of two waiting for one row lock
    waits for the first)."""
    [(count,)] = raw_sql(store_path, "SELECT COUNT(*) FROM pg_stat_activity "
                                     "WHERE cardinality(pg_blocking_pids(pid)) > 0")
    return int(count)


@pytest.mark.postgres_only
def test_a_dependent_added_while_its_upstream_ends_is_not_left_blocked(
    q: SimplePyQ, store_path: str
) -> None:
    upstream = q.enqueue("add", 1)
    with pg_connect(store_path) as ending:
        # The upstream ends in an open transaction; the enqueue reads it after the commit.
        ending.execute("UPDATE tasks SET status = 'done', finished_at = 0 WHERE id = %s",
                       (upstream,))
        adding = InThread(lambda: q.enqueue("add", 10, depends_on=[upstream]))
        wait_until(lambda: blocked_by(store_path, ending.info.backend_pid), timeout=30)
        ending.commit()
    task_id = adding.result()
    assert status(q, task_id) == Status.PENDING


@pytest.mark.postgres_only
def test_an_upstream_ending_while_its_dependent_is_added_releases_it(
    q: SimplePyQ, store_path: str
) -> None:
    upstream = q.enqueue("add", 1)
    store = open_store(store_path, 30.0)
    try:
        [claimed] = store.exchange("owner", [], "add", 1, time.time()).claimed
        from simplepyq import policy
        from simplepyq.storage.base import Outcome

        with pg_connect(store_path) as keyholder:
            # An open insert of key "k" stops the enqueue after it has read (and locked)
            # the upstream, before it commits its new dependent.
            keyholder.execute("INSERT INTO tasks (channel, status, attempts, key) "
                              "VALUES ('add', 'pending', 0, 'k')")
            adding = InThread(lambda: q.enqueue("add", 10, key="k", depends_on=[upstream]))
            wait_until(lambda: blocked_by(store_path, keyholder.info.backend_pid), timeout=30)
            ending = InThread(lambda: store.exchange("owner", [Outcome(
                claimed.id, policy.succeeded(0, None, time.time()))], None, 0, time.time()))
            adder = blocked_by(store_path, keyholder.info.backend_pid)
            assert adder is not None
            wait_until(lambda: blocked_by(store_path, adder), timeout=30)  # the end waits
            keyholder.rollback()
        task_id = adding.result()
        assert ending.result().dropped == []
    finally:
        store.close()
    assert task_id.created and status(q, task_id) == Status.PENDING


def test_task_ids_of_a_workflow_are_its_tasks_in_order(q: SimplePyQ) -> None:
    flow = q.chain(Step("add", 1), Step("add", on_failure=Step("echo", "x")))
    [follow_up] = q.links(flow.task_ids[1]).dependents
    assert q.workflow_task_ids(flow.id) == [*flow.task_ids, follow_up]
    assert all(isinstance(i, TaskId) for i in flow.task_ids)


# -- requeue_failed --------------------------------------------------------------


def test_requeueing_a_failed_step_brings_back_what_its_failure_cancelled(
    q: SimplePyQ
) -> None:
    first, flaky_step, third, fourth = q.chain(
        Step("add", 1), Step("flaky"), Step("add"), Step("add")).task_ids
    q.run_until_complete(timeout=60)
    assert [status(q, i) for i in (third, fourth)] == [Status.CANCELLED] * 2

    assert q.requeue_failed("flaky") == 1
    assert [status(q, i) for i in (flaky_step, third, fourth)] == [
        Status.PENDING, Status.BLOCKED, Status.BLOCKED]
    assert q.get_task(third).error is None  # type: ignore[union-attr]
    q.run_until_complete(timeout=60)
    assert [result(q, i) for i in (first, flaky_step, third, fourth)] == [2, 3, 4, 5]


def test_requeueing_every_failed_member_brings_back_the_callback_for_all_of_them(
    q: SimplePyQ
) -> None:
    flow = q.group([Step("flaky", 1), Step("flaky", 2), Step("add", 3)], then=Step("total"))
    q.run_until_complete(timeout=60)
    assert status(q, flow.task_ids[-1]) == Status.CANCELLED
    assert q.requeue_failed("flaky") == 2
    assert status(q, flow.task_ids[-1]) == Status.BLOCKED
    q.run_until_complete(timeout=60)
    assert result(q, flow.task_ids[-1]) == 2 + 3 + 4


def test_requeueing_one_of_two_failed_members_leaves_the_callback_cancelled(
    q: SimplePyQ, store_path: str
) -> None:
    flow = q.group([Step("boom", 1), Step("boom", 2)], then=Step("total"))
    q.run_until_complete(timeout=60)
    raw_sql(store_path, "UPDATE tasks SET channel = 'echo' WHERE id = ?", (flow.task_ids[0],))
    assert q.requeue_failed("echo") == 1
    assert status(q, flow.task_ids[-1]) == Status.CANCELLED



def test_a_group_run_by_three_processes_of_four_workers_calls_its_callback_once(
    store_path: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    worker = """
        import os, sys, time
        from simplepyq import SimplePyQ, current_task
        log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        def run(args):
            task_id = current_task().id
            os.write(log, f"start {task_id} {os.getpid()} {time.time()!r}\\n".encode())
            time.sleep(0.002)  # long enough for the processes to share the members
            os.write(log, f"end {task_id} {os.getpid()} {time.time()!r}\\n".encode())
            return args
        with SimplePyQ(sys.argv[1], poll_interval=0.01) as q:
            q.add_channel("member", run, max_workers=4)
            q.add_channel("callback", run, max_workers=4)
            open(f"{sys.argv[3]}.{os.getpid()}", "w").close()  # ready
            deadline = time.monotonic() + 60
            while not os.path.exists(sys.argv[3]) and time.monotonic() < deadline:
                time.sleep(0.002)  # all start at once, on the go file
            q.run_until_complete(timeout=120)
    """
    with SimplePyQ(store_path) as q:
        q.declare("member", "callback")
        flow = q.group([Step("member", n) for n in range(100)], then=Step("callback"))
    go = tmp_path / "go"
    children = [spawn_python(worker, store_path, str(log), str(go)) for _ in range(3)]
    try:
        wait_until(lambda: len(list(tmp_path.glob("go.*"))) == 3, timeout=60)
        go.touch()
        for child in children:
            _, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
    finally:
        for child in children:
            child.kill()
    runs = read_runs(log)
    *members, callback = flow.task_ids
    assert {task_id: len(runs[task_id]) for task_id in flow.task_ids} == {
        task_id: 1 for task_id in flow.task_ids}
    assert len({run.pid for task_id in members for run in runs[task_id]}) > 1
    with SimplePyQ(store_path) as q:
        assert result(q, callback) == list(range(100))


def test_a_task_stored_after_its_upstream_failed_comes_back_with_its_requeue(
    q: SimplePyQ
) -> None:
    q.declare("later")  # its task stays pending until a channel function is added
    upstream, done = q.enqueue("flaky", 1), q.enqueue("add", 1)
    q.run_until_complete(timeout=60)
    unfinished = q.enqueue("later", 0)
    task_id = q.enqueue("total", [5], depends_on=[done, upstream, unfinished])
    assert status(q, task_id) == Status.CANCELLED
    assert q.requeue_failed() == 1
    assert status(q, task_id) == Status.BLOCKED
    q.run_until_complete(timeout=60)
    assert status(q, task_id) == Status.BLOCKED  # it still waits for the later task
    q.add_channel("later", echo)
    q.run_until_complete(timeout=60)
    assert result(q, task_id) == 5


def test_a_task_cancelled_by_one_upstream_while_another_is_done_comes_back_whole(
    q: SimplePyQ, store_path: str
) -> None:
    from simplepyq import policy
    from simplepyq.storage.base import Outcome

    flow = q.group([Step("add", 1), Step("add", 2)], then=Step("total"))
    first, second, callback = flow.task_ids
    store = open_store(store_path, 30.0)
    try:
        claimed = store.exchange("owner", [], "add", 2, time.time()).claimed
        assert [task.id for task in claimed] == [first, second]
        # Both end in one commit: one done, the other failed.
        store.exchange("owner", [
            Outcome(first, policy.succeeded(0, b"\x02", time.time())),
            Outcome(second, policy.unrunnable(0, "RuntimeError: no", time.time()))],
            None, 0, time.time())
    finally:
        store.close()
    assert status(q, callback) == Status.CANCELLED
    assert q.requeue_failed() == 1
    q.run_until_complete(timeout=60)
    assert result(q, callback) == 2 + 3
