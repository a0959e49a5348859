"""Unique keys: a channel holds at most one unfinished task per key.

``enqueue(..., key=K)`` while an unfinished (pending, delayed or running) task of
the channel holds K writes nothing and returns that task's id, with ``created``
False; once that task finishes (done, failed or cancelled) K is free again. A
partial unique index decides, not a query before the insert, so concurrent
enqueues of one key, from many threads and processes, make exactly one task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simplepyq import SimplePyQ, Status, TaskId
from simplepyq.copying import copy_tasks
from simplepyq.storage import open_store
from tests.backends import blocked_by, pg_connect, raw_sql
from tests.support import InThread, all_running, finish_all, spawn_python, wait_until


def fail_bad(args: Any) -> Any:
    """A channel function that fails for the args "bad" and returns any other."""
    if args == "bad":
        raise RuntimeError("bad args")
    return args


def _keyed(store_path: str, key: str) -> list[tuple[int, str]]:
    """(id, status) of every task with ``key``, read behind the library's back."""
    return [(int(task_id), str(status)) for task_id, status in raw_sql(
        store_path, "SELECT id, status FROM tasks WHERE key = ? ORDER BY id", (key,))]


def _count(store_path: str) -> int:
    [(count,)] = raw_sql(store_path, "SELECT COUNT(*) FROM tasks")
    return int(count)


class Gate:
    """A channel function whose runs wait until the gate opens."""

    def __init__(self) -> None:
        self.opened = threading.Event()

    def __call__(self, args: Any) -> Any:
        assert self.opened.wait(60), "the gate was never opened"
        return args


@pytest.fixture
def gated(queue: SimplePyQ) -> Iterator[tuple[SimplePyQ, Gate]]:
    """The test's queue with channel "c", whose tasks run until the gate opens."""
    gate = Gate()
    queue.add_channel("c", gate)
    yield queue, gate
    gate.opened.set()


# -- one process ------------------------------------------
def test_enqueue_with_a_key_creates_the_task_and_get_task_shows_the_key(
    queue: SimplePyQ
) -> None:
    queue.declare("c")

    task_id = queue.enqueue("c", "first", key="invoice-42")

    assert isinstance(task_id, TaskId) and task_id.created
    task = queue.get_task(task_id)
    assert task is not None
    assert (task.key, task.status, task.args) == ("invoice-42", Status.PENDING, "first")
    assert [t.key for t in queue.tasks()] == ["invoice-42"]
    untied = queue.enqueue("c", "no key")
    assert untied.created and queue.get_task(untied).key is None  # type: ignore[union-attr]


HOLDERS: dict[str, Callable[[SimplePyQ, Gate], TaskId]] = {
    "pending": lambda q, gate: q.enqueue("c", "first", key="k"),
    "delayed": lambda q, gate: q.enqueue("c", "first", key="k", delay=3600),
    "running": lambda q, gate: _running(q, q.enqueue("c", "first", key="k")),
}


def _running(q: SimplePyQ, task_id: TaskId) -> TaskId:
    q.start()
    wait_until(lambda: q.get_task(task_id).status == Status.RUNNING)  # type: ignore[union-attr]
    return task_id


@pytest.mark.parametrize("state", list(HOLDERS))
def test_a_key_held_by_an_unfinished_task_returns_that_task_and_writes_nothing(
    gated: tuple[SimplePyQ, Gate], store_path: str, state: str
) -> None:
    q, gate = gated
    holder = HOLDERS[state](q, gate)
    assert holder.created

    again = q.enqueue("c", "second", key="k", priority=9, retries=5)

    assert again == holder and not again.created
    assert _count(store_path) == 1
    task = q.get_task(holder)
    assert task is not None
    assert (task.status, task.args, task.priority, task.retries) == (state, "first", 0, 0)


def _done(q: SimplePyQ, gate: Gate) -> TaskId:
    gate.opened.set()
    task_id = q.enqueue("c", "first", key="k")
    q.run_until_complete(timeout=30)
    return task_id


def _failed(q: SimplePyQ, gate: Gate) -> TaskId:
    gate.opened.set()
    task_id = q.enqueue("bad", "bad", key="k")
    q.run_until_complete(timeout=30)
    return task_id


def _cancelled(q: SimplePyQ, gate: Gate) -> TaskId:
    task_id = q.enqueue("c", "first", key="k")
    assert q.cancel(task_id)
    return task_id


def _cancelled_while_running(q: SimplePyQ, gate: Gate) -> TaskId:
    task_id = _running(q, q.enqueue("c", "first", key="k"))
    assert q.cancel(task_id)
    # Still running, with its cancel requested: it holds the key until it ends.
    held = q.enqueue("c", "meanwhile", key="k")
    assert held == task_id and not held.created
    gate.opened.set()
    q.wait(task_id, timeout=30)
    q.stop()
    return task_id


FINISHERS: dict[str, tuple[Callable[[SimplePyQ, Gate], TaskId], Status]] = {
    "done": (_done, Status.DONE),
    "failed": (_failed, Status.FAILED),
    "cancelled": (_cancelled, Status.CANCELLED),
    "running-then-returned": (_cancelled_while_running, Status.DONE),
}


@pytest.mark.parametrize("ending", list(FINISHERS))
def test_once_its_holder_finished_a_key_is_free_and_a_new_task_is_created(
    gated: tuple[SimplePyQ, Gate], store_path: str, ending: str
) -> None:
    q, gate = gated
    q.add_channel("bad", fail_bad)
    finish, status = FINISHERS[ending]
    first = finish(q, gate)
    channel = "bad" if ending == "failed" else "c"
    assert q.get_task(first).status == status  # type: ignore[union-attr]

    second = q.enqueue(channel, "second", key="k")

    assert second.created and second != first
    assert _keyed(store_path, "k") == [(first, status), (second, Status.PENDING)]


def test_keys_are_per_channel(queue: SimplePyQ, store_path: str) -> None:
    queue.declare("a", "b")

    in_a, in_b = queue.enqueue("a", 1, key="k"), queue.enqueue("b", 2, key="k")

    assert in_a.created and in_b.created and in_a != in_b
    assert queue.enqueue("a", 3, key="k") == in_a
    assert queue.enqueue("b", 4, key="k") == in_b
    assert _count(store_path) == 2


def test_enqueue_many_gives_each_item_its_key_and_a_repeated_key_returns_its_holder(
    queue: SimplePyQ, store_path: str
) -> None:
    queue.declare("c")
    held = queue.enqueue("c", "held before", key="old")

    ids = queue.enqueue_many("c", ["a", "b", "c", "d", "e", "f"],
                             keys=["x", None, "x", "old", None, "y"])

    a, b, c, d, e, f = ids
    assert [task_id.created for task_id in ids] == [True, True, False, False, True, True]
    assert c == a and d == held
    assert len({a, b, e, f, held}) == 5
    stored = {t.id: (t.args, t.key) for t in queue.tasks()}
    assert stored == {held: ("held before", "old"), a: ("a", "x"), b: ("b", None),
                      e: ("e", None), f: ("f", "y")}
    # Without keys (or all None), nothing is unique.
    assert all(i.created for i in queue.enqueue_many("c", ["g", "h"], keys=[None, None]))
    assert _count(store_path) == 7


BAD_KEYS = [
    pytest.param(lambda q: q.enqueue("c", 1, key=5), TypeError,
                 r"a key must be a str, not int 5", id="int"),
    pytest.param(lambda q: q.enqueue("c", 1, key=b"k"), TypeError, r"not bytes b'k'",
                 id="bytes"),
    pytest.param(lambda q: q.enqueue("c", 1, key=""), ValueError,
                 r"a key must not be empty, got ''", id="empty"),
    pytest.param(lambda q: q.enqueue_many("c", [1, 2, 3], keys=["a", "b", 3.5]), TypeError,
                 r"not float 3\.5", id="one-of-many"),
    pytest.param(lambda q: q.enqueue_many("c", [1, 2], keys=["a", ""]), ValueError,
                 r"got ''", id="one-of-many-empty"),
    pytest.param(lambda q: q.enqueue_many("c", [1, 2], keys=["a"]), ValueError,
                 r"keys has 1 item\(s\) for 2 task\(s\)", id="too-few"),
    pytest.param(lambda q: q.enqueue_many("c", [1], keys=["a", "b"]), ValueError,
                 r"keys has 2 item\(s\) for 1 task\(s\)", id="too-many"),
    pytest.param(lambda q: q.enqueue_many("c", [1, 2], keys="ab"), TypeError,
                 r"keys must be a list with one key per task, not the str 'ab'", id="str"),
]
"""Calls with a bad key (``q`` is the queue), the error each raises, and its message."""


@pytest.mark.parametrize(("call", "error", "message"), BAD_KEYS)
def test_a_bad_key_is_refused_naming_it_and_nothing_is_written(
    queue: SimplePyQ, store_path: str, call: Callable[[SimplePyQ], object],
    error: type[Exception], message: str
) -> None:
    queue.declare("c")

    with pytest.raises(error, match=message):
        call(queue)

    assert _count(store_path) == 0


# -- many threads and processes at once ----------------------
# 8 threads enqueue to channel "c" once the file "go" appears in the signal directory
# (after writing "ready-LABEL" there): in mode N, each enqueues the keys k0 ... kN-1 in
# turn (so that all contend for each key at about the same moment); in mode "stop",
# each enqueues the key k until the file "stop" appears. One line "KEY ID CREATED"
# per call. argv: store, signal directory, label, mode.
ENQUEUERS = """
    import pathlib, sys, threading, time
    from simplepyq import SimplePyQ

    signals, label, mode = pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    q = SimplePyQ(sys.argv[1], poll_interval=0.01)
    lines = []

    def enqueue(thread):
        q.get_task(0)  # connect before the start, not in the race
        deadline = time.monotonic() + 60
        while not (signals / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        calls = 0
        while (calls < int(mode)) if mode != "stop" else not (signals / "stop").exists():
            key = "k" if mode == "stop" else f"k{calls}"
            task_id = q.enqueue("c", [label, thread, calls], key=key)
            lines.append(f"{key} {int(task_id)} {task_id.created}")
            calls += 1

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    (signals / f"ready-{label}").touch()
    for thread in threads:
        thread.join()
    q.close()
    print("\\n".join(lines))
"""


def _enqueue_from_three_processes(store_path: str, signals: Path, mode: str,
                                  meanwhile: Callable[[], None] = lambda: None
                                  ) -> list[tuple[str, int, bool]]:
    """Every (key, id, created) that 3 processes x 8 threads got, enqueueing to channel
    "c" from the same moment on (see ENQUEUERS); ``meanwhile`` runs once they start, and
    the file "stop" appears once it returns."""
    signals.mkdir()
    children = [spawn_python(ENQUEUERS, store_path, str(signals), str(n), mode)
                for n in range(3)]
    try:
        wait_until(lambda: all_running(children) and len(list(signals.glob("ready-*"))) == 3,
                   timeout=60)
        (signals / "go").touch()
        meanwhile()
    finally:
        (signals / "go").touch()
        (signals / "stop").touch()
        outputs = finish_all(children, timeout=120)
    assert [(child.returncode, err) for child, (_, err) in zip(children, outputs, strict=True)] \
        == [(0, "")] * 3
    return [(key, int(task_id), created == "True")
            for out, _ in outputs for key, task_id, created in (line.split() for line in
                                                                out.splitlines())]


def test_three_processes_of_eight_threads_enqueueing_one_key_make_one_task(
    store_path: str, tmp_path: Path
) -> None:
    keys = 10  # each contended for by all 24 threads at about the same moment
    with SimplePyQ(store_path) as q:
        q.declare("c")

    calls = _enqueue_from_three_processes(store_path, tmp_path / "signals", str(keys))

    assert len(calls) == 24 * keys and _count(store_path) == keys
    for n in range(keys):
        [(task_id, status)] = _keyed(store_path, f"k{n}")
        assert status == Status.PENDING
        mine = [(returned, created) for key, returned, created in calls if key == f"k{n}"]
        assert {returned for returned, _ in mine} == {task_id}
        assert sorted(created for _, created in mine) == [False] * 23 + [True]


def test_enqueues_of_one_key_racing_its_holders_end_each_return_a_task_that_held_it(
    store_path: str, tmp_path: Path
) -> None:
    """The holder finishes (is cancelled) again and again while 24 threads enqueue its
    key: every call returns a task, made by one call. (On PostgreSQL an enqueue whose
    insert met a holder that ended before it could be looked up inserts again; on
    SQLite the write lock keeps the two together.)"""
    cancels = 0

    def cancel_holders(q: SimplePyQ) -> None:
        nonlocal cancels
        deadline = time.monotonic() + 60
        while cancels < 40 and time.monotonic() < deadline:
            for task_id, status in _keyed(store_path, "k"):
                if status == Status.PENDING and q.cancel(task_id):
                    cancels += 1

    with SimplePyQ(store_path) as q:
        q.declare("c")
        calls = _enqueue_from_three_processes(store_path, tmp_path / "signals", "stop",
                                              lambda: cancel_holders(q))

    assert cancels == 40
    keyed = dict(_keyed(store_path, "k"))
    created = [task_id for _, task_id, made in calls if made]
    # Each task holding the key was made by exactly one call, and every call got one.
    assert sorted(created) == sorted(keyed)
    assert {task_id for _, task_id, _ in calls} == set(keyed)
    assert sum(status == Status.PENDING for status in keyed.values()) <= 1
    assert sum(status == Status.CANCELLED for status in keyed.values()) == 40


def test_enqueue_many_calls_taking_the_same_keys_in_opposite_orders_make_one_task_per_key(
    queue: SimplePyQ, store_path: str
) -> None:
    """Two batches that take the same keys in opposite orders may each wait for the
    other: on PostgreSQL the server breaks the deadlock (after its deadlock_timeout, 1 s
    by default) and the loser is redone; on SQLite one waits for the other's commit."""
    queue.declare("c")
    rounds, keys = 2, 10
    start = threading.Barrier(2)

    def enqueue(order: int) -> list[dict[str, TaskId]]:
        made = []
        for n in range(rounds):
            names = [f"r{n}-k{k}" for k in range(keys)][::order]
            start.wait(30)
            made.append(dict(zip(names, queue.enqueue_many("c", [order] * keys, keys=names),
                                 strict=True)))
        return made

    forward, backward = InThread(lambda: enqueue(1)), InThread(lambda: enqueue(-1))
    both = zip(forward.result(), backward.result(), strict=True)

    assert _count(store_path) == rounds * keys
    for one, other in both:
        assert one == other  # the same task for each key
        assert all(one[name].created != other[name].created for name in one)


# -- PostgreSQL: transactions in flight ---------------------
class PausingConnection:
    """A psycopg connection that runs ``pause`` once, right after the first statement
    containing ``marker``: another transaction can commit between two statements."""

    def __init__(self, conn: Any, marker: str, pause: Callable[[], object]) -> None:
        self.conn = conn
        self.marker = marker
        self.pause: Callable[[], object] | None = pause

    def execute(self, query: str, params: Any = None) -> Any:
        cursor = self.conn.execute(query, params)
        if self.pause is not None and self.marker in query:
            pause, self.pause = self.pause, None
            pause()
        return cursor


def _shared(channel: str) -> dict[str, Any]:
    """The values the PostgreSQL store's insert statements take for a plain task."""
    return {"channel": channel, "status": "pending", "retries": 0, "run_at": None,
            "priority": 0, "now": time.time(), "time_limit": None}


@pytest.mark.postgres_only
def test_an_enqueue_whose_key_holder_ends_between_insert_and_look_up_inserts_again(
    queue: SimplePyQ, store_path: str
) -> None:
    from simplepyq import codec
    from simplepyq.storage.postgres import PostgresStore

    queue.declare("c")
    holder = queue.enqueue("c", "holder", key="k")

    with pg_connect(store_path) as conn:
        # The insert meets the holder and does nothing; before the look-up runs, the
        # holder ends: the look-up finds no one, and the insert is made again.
        racing: Any = PausingConnection(conn, "ON CONFLICT", lambda: queue.cancel(holder))
        made = PostgresStore._add_one(racing, _shared("c"), codec.pack("second", "args"), "k")
        conn.commit()

    assert made.created and made != holder
    assert _keyed(store_path, "k") == [(holder, Status.CANCELLED), (made, Status.PENDING)]


@pytest.mark.postgres_only
@pytest.mark.parametrize("first_ends_by", ["commit", "rollback"])
def test_an_enqueue_of_a_key_being_inserted_by_an_open_transaction_waits_for_its_end(
    queue: SimplePyQ, store_path: str, first_ends_by: str
) -> None:
    from simplepyq import codec
    from simplepyq.storage.postgres import Q

    queue.declare("c")
    with pg_connect(store_path) as first:
        [(inserted,)] = first.execute(Q["add_keyed"], {
            **_shared("c"), "args": codec.pack("first", "args"), "key": "k"}).fetchall()
        second = InThread(lambda: queue.enqueue("c", "second", key="k"))
        wait_until(lambda: blocked_by(store_path, first.info.backend_pid), timeout=30)
        assert second.running()  # the unique index makes it wait for the first to end
        getattr(first, first_ends_by)()

    task_id = second.result()
    if first_ends_by == "commit":
        assert task_id == inserted and not task_id.created
        assert _keyed(store_path, "k") == [(inserted, Status.PENDING)]
    else:
        assert task_id.created and task_id != inserted
        assert _keyed(store_path, "k") == [(task_id, Status.PENDING)]


# -- requeue_failed ---------------------------------------
def _fail(q: SimplePyQ, key: str, channel: str = "c") -> TaskId:
    task_id = q.enqueue(channel, "bad", key=key)
    q.run_until_complete(timeout=30)
    assert q.get_task(task_id).status == Status.FAILED  # type: ignore[union-attr]
    return task_id


def _kept_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "stay failed" in r.getMessage()]


def test_requeue_failed_leaves_a_failed_task_whose_key_is_held_failed_and_says_so(
    queue: SimplePyQ, store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue.add_channel("c", fail_bad)
    failed = _fail(queue, "k")
    loose = _fail(queue, "free")
    holder = queue.enqueue("c", "good", key="k")
    assert holder.created

    assert queue.requeue_failed() == 1  # raises nothing: no second holder of "k"

    assert _keyed(store_path, "k") == [(failed, Status.FAILED), (holder, Status.PENDING)]
    assert _keyed(store_path, "free") == [(loose, Status.PENDING)]
    [warning] = _kept_warnings(caplog)
    assert f"task {failed} key 'k'" in warning and f"task {loose} " not in warning


def test_requeue_failed_of_failed_tasks_sharing_a_free_key_requeues_only_the_newest(
    queue: SimplePyQ, store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue.add_channel("c", fail_bad)
    queue.add_channel("other", fail_bad)
    older, newer = _fail(queue, "k"), _fail(queue, "k")
    elsewhere = _fail(queue, "k", channel="other")  # keys are per channel

    assert queue.requeue_failed(retries=2) == 2

    assert _keyed(store_path, "k") == [
        (older, Status.FAILED), (newer, Status.PENDING), (elsewhere, Status.PENDING)]
    assert queue.get_task(newer).retries == 2  # type: ignore[union-attr]
    [warning] = _kept_warnings(caplog)
    assert f"task {older} key 'k'" in warning and f"task {newer} " not in warning
    # The requeued task holds the key: enqueueing it finds that task.
    again = queue.enqueue("c", "good", key="k")
    assert again == newer and not again.created


@pytest.mark.postgres_only
def test_requeue_failed_racing_an_enqueue_of_the_key_leaves_the_failed_task_failed(
    queue: SimplePyQ, store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The requeue cannot see an enqueue not committed yet; the unique index makes it
    wait for that one, and it is redone once the key is taken: never two holders."""
    from simplepyq import codec
    from simplepyq.storage.postgres import Q

    queue.add_channel("c", fail_bad)
    failed = _fail(queue, "k")
    with pg_connect(store_path) as enqueuing:
        [(holder,)] = enqueuing.execute(Q["add_keyed"], {
            **_shared("c"), "args": codec.pack("good", "args"), "key": "k"}).fetchall()
        requeue = InThread(queue.requeue_failed)
        wait_until(lambda: blocked_by(store_path, enqueuing.info.backend_pid), timeout=30)
        enqueuing.commit()

    assert requeue.result() == 0
    assert _keyed(store_path, "k") == [(failed, Status.FAILED), (holder, Status.PENDING)]
    assert f"task {failed} key 'k'" in _kept_warnings(caplog)[0]


# -- copying between stores ---------------------------------
def test_a_copied_task_keeps_its_key_unless_the_target_holds_it_unfinished(
    store_path: str, tmp_path: Path
) -> None:
    source = str(tmp_path / "old.db")
    with SimplePyQ(source) as old:
        old.add_channel("c", fail_bad)
        _fail(old, "taken")
        old.enqueue_many("c", ["mine", "taken", "done there"], keys=["mine", "taken", "reused"])
        old.enqueue("c", "later", key="later", delay=3600)
    with SimplePyQ(store_path) as target:
        target.declare("c")
        theirs = target.enqueue("c", "theirs", key="taken")
        finished = target.enqueue("c", "finished", key="reused")
        target.cancel(finished)

    stores = open_store(source, 30.0), open_store(store_path, 30.0)
    try:
        report = copy_tasks(*stores, keep=False, lease=30.0, now=time.time())
    finally:
        for store in stores:
            store.close()

    assert report.copied == {"pending": 3, "delayed": 1, "failed": 1}
    with SimplePyQ(store_path) as target:
        tasks = {t.args: t for t in target.tasks()}
        assert {args: t.key for args, t in tasks.items() if t.id not in (theirs, finished)} == {
            "mine": "mine", "later": "later", "done there": "reused",
            "taken": None,  # the target's own task holds it: dropped from the copy
            "bad": "taken",  # failed: holds nothing, keeps its key
        }
        assert tasks["theirs"].key == "taken"
        # The copied keys are held in the target as they were in the source.
        for key, args in (("mine", "mine"), ("later", "later"), ("reused", "done there"),
                          ("taken", "theirs")):
            again = target.enqueue("c", "again", key=key)
            assert again == tasks[args].id and not again.created
