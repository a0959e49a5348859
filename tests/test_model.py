"""Model-based test: random sequences of queue calls, checked against a model of the store.

Hypothesis drives one queue through enqueue / enqueue_many (with and without
unique keys) / start / stop / run_until_complete / cancel / requeue_failed /
clear_failed / remove_channel / purge, with tasks that succeed, raise, or defer
themselves once, and tasks cancelled while they run (which then raise or return).
The model predicts what each call returns: the ids, and for a key whether the
call created its task or found the unfinished one holding it; ``cancel``'s answer
(or ``ValueError``); how many tasks ``requeue_failed`` requeued (none whose key is
held, only the newest of the failed tasks sharing a free key). Whenever no worker
runs, the store must hold exactly what the model says: the same tasks, and for
each its status, key, retries left, attempts (= runs of its function) and result.
While workers ran, the model learns how many times each function ran and replays
those runs, so it still predicts every field. Each example gets a fresh store of
the test's backend (a SQLite file, or a PostgreSQL schema dropped afterwards).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from simplepyq import DelayException, SimplePyQ, Step, TaskId, current_task
from tests.backends import drop_schema, new_schema_location, postgres_url, raw_sql
from tests.soak import SOAKING, scaled
from tests.support import died_running

CHANNELS = ("a", "b")
KINDS = ("ok", "raise", "delay")
KEYS = ("k1", "k2")
WAITING_KINDS = ("wait-raise", "wait-return")
"""Tasks that run until their cancel is requested, then raise (ending ``cancelled``)
or return (ending ``done``): enqueued only by the rule that cancels them."""


@dataclass
class Expected:
    """What the store must say about one task."""

    channel: str
    kind: str
    token: int
    retries: int
    key: str | None = None
    runs: int = 0
    phase: str = "waiting"  # waiting (pending or delayed), done, failed or cancelled

    def run_once(self) -> None:
        assert self.phase == "waiting", f"task {self.token} ran while {self.phase}"
        self.runs += 1
        if self.kind == "ok" or (self.kind == "delay" and self.runs >= 2):
            self.phase = "done"
        elif self.kind == "raise":
            if self.retries > 0:
                self.retries -= 1
            else:
                self.phase = "failed"


def fresh_store(backend: str, directory: str) -> tuple[str, str | None]:
    """A store for one example: a file in ``directory``, or a new PostgreSQL schema (and
    its name, to drop afterwards)."""
    if backend == "postgres":
        return new_schema_location(postgres_url())
    return str(Path(directory, "tasks.db")), None


def forget_store(directory: str, schema: str | None) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    if schema is not None:
        drop_schema(postgres_url(), schema)


class QueueModel(RuleBasedStateMachine):
    backend = "sqlite"
    """Where each example's fresh store lives: a SQLite file, or a PostgreSQL schema."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="simplepyq-model-")
        location, self.schema = fresh_store(self.backend, self.directory)
        self.q = SimplePyQ(location, poll_interval=0.01)
        self.lock = threading.Lock()
        self.calls: Counter[int] = Counter()
        self.expected: dict[int, Expected] = {}
        self.registered: set[str] = set()
        self.started = False
        self.tokens = 0
        self.highest_id = 0
        self.running: dict[int, threading.Event] = {}
        """Per token of a WAITING_KINDS task: set once its run has started."""
        for channel in CHANNELS:
            self._register(channel)

    def teardown(self) -> None:
        self.q.close()
        forget_store(self.directory, self.schema)

    # -- the task function ---------------------------------
    def work(self, args: list[Any]) -> int:
        kind, token = args
        with self.lock:
            self.calls[token] += 1
            runs = self.calls[token]
        if kind in WAITING_KINDS:
            return self._until_cancelled(kind, token)
        if kind == "raise":
            raise ValueError(f"task {token} fails")
        if kind == "delay" and runs == 1:
            raise DelayException(0.01)
        return int(token)

    def _until_cancelled(self, kind: str, token: int) -> int:
        context = current_task()
        assert context is not None
        self.running[token].set()
        deadline = time.monotonic() + 30
        while not context.cancelled():  # a bounded poll of the flag a sync task watches
            assert time.monotonic() < deadline, f"task {token} never saw its cancel"
            time.sleep(0.002)
        if kind == "wait-raise":
            context.check()  # raises TaskCancelled
        return token

    def _register(self, channel: str) -> None:
        self.q.add_channel(channel, self.work, max_workers=2)
        self.registered.add(channel)

    # -- rules ---------------------------------------------
    @rule(channel=st.sampled_from(CHANNELS), kind=st.sampled_from(KINDS),
          retries=st.integers(0, 2), key=st.none() | st.sampled_from(KEYS))
    def enqueue(self, channel: str, kind: str, retries: int, key: str | None) -> None:
        token = self._token()
        if channel not in self.registered:
            with pytest.raises(ValueError, match="unknown channel"):
                self.q.enqueue(channel, [kind, token], retries, key=key)
            return
        task_id = self.q.enqueue(channel, [kind, token], retries, key=key)
        self._learn(task_id, Expected(channel, kind, token, retries, key))

    @rule(channel=st.sampled_from(CHANNELS),
          items=st.lists(st.tuples(st.sampled_from(KINDS), st.none() | st.sampled_from(KEYS)),
                         max_size=4),
          retries=st.integers(0, 2), with_keys=st.booleans())
    def enqueue_many(self, channel: str, items: list[tuple[str, str | None]], retries: int,
                     with_keys: bool) -> None:
        if not with_keys:
            items = [(kind, None) for kind, _ in items]
        wanted = [Expected(channel, kind, self._token(), retries, key) for kind, key in items]
        args = [[want.kind, want.token] for want in wanted]
        keys = [want.key for want in wanted] if with_keys else None
        if channel not in self.registered:
            with pytest.raises(ValueError, match="unknown channel"):
                self.q.enqueue_many(channel, args, retries, keys=keys)
            return
        ids = self.q.enqueue_many(channel, args, retries, keys=keys)
        assert len(ids) == len(wanted)
        for task_id, want in zip(ids, wanted, strict=True):
            self._learn(task_id, want)

    @precondition(lambda self: not self.started)
    @rule()
    def start(self) -> None:
        self.q.start()
        self.started = True

    @precondition(lambda self: self.started)
    @rule()
    def stop(self) -> None:
        assert self.q.stop(timeout=30)
        self.started = False
        self._replay_runs()

    @rule()
    def run_until_complete(self) -> None:
        self.q.run_until_complete(timeout=30)
        self.started = False
        self._replay_runs()
        for task_id, task in self.expected.items():
            if task.channel in self.registered:
                assert task.phase != "waiting", f"task {task_id} unfinished"

    @precondition(lambda self: not self.started)
    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        """Cancel a stored task (pending, delayed, done, failed or cancelled), or an id
        that names none (never used, or of a task deleted since)."""
        ids = sorted(self.expected)
        self.cancel_id(ids[pick % len(ids)] if ids and pick % 8 else self.highest_id + 1)

    def cancel_id(self, task_id: int) -> None:
        want = self.expected.get(task_id)
        if want is None:
            with pytest.raises(ValueError, match=f"no task with id {task_id}"):
                self.q.cancel(task_id)
            return
        assert self.q.cancel(task_id) == (want.phase == "waiting")
        if want.phase == "waiting":
            want.phase = "cancelled"

    @precondition(lambda self: self.started)
    @rule(channel=st.sampled_from(CHANNELS), kind=st.sampled_from(WAITING_KINDS),
          key=st.none() | st.sampled_from(KEYS))
    def cancel_while_running(self, channel: str, kind: str, key: str | None) -> None:
        """A task runs until cancelled; meanwhile its key (one known free) finds it."""
        if channel not in self.registered:
            return
        if self._holders(channel, key):
            key = None  # maybe held: another rule predicts that case
        want = Expected(channel, kind, self._token(), 0, key)
        self.running[want.token] = threading.Event()
        task_id = self.q.enqueue(channel, [kind, want.token], key=key)
        self._learn(task_id, want)
        assert task_id.created
        assert self.running[want.token].wait(30), "the task never started"
        if key is not None:
            again = self.q.enqueue(channel, ["ok", self._token()], key=key)
            assert again == task_id and not again.created
        assert self.q.cancel(task_id)
        assert self.q.wait(task_id, timeout=30).status == (
            "cancelled" if kind == "wait-raise" else "done")
        assert self.calls[want.token] == 1
        want.runs, want.phase = 1, "cancelled" if kind == "wait-raise" else "done"

    @precondition(lambda self: not self.started)
    @rule(channel=st.none() | st.sampled_from(CHANNELS), retries=st.none() | st.integers(0, 2))
    def requeue_failed(self, channel: str | None, retries: int | None) -> None:
        # A failed task with a key is requeued only if no unfinished task holds the
        # key, and only the newest of the failed tasks of its channel sharing it.
        newest = {(t.channel, t.key): task_id for task_id, t in sorted(self.expected.items())
                  if t.phase == "failed" and t.key is not None}
        chosen = [t for task_id, t in sorted(self.expected.items())
                  if t.phase == "failed" and channel in (None, t.channel) and (
                      t.key is None or (newest[t.channel, t.key] == task_id
                                        and not self._holders(t.channel, t.key)))]
        assert self.q.requeue_failed(channel, retries) == len(chosen)
        for task in chosen:
            task.phase = "waiting"
            task.retries = task.retries if retries is None else retries

    @precondition(lambda self: not self.started)
    @rule(channel=st.none() | st.sampled_from(CHANNELS))
    def clear_failed(self, channel: str | None) -> None:
        chosen = self._failed(channel)
        assert self.q.clear_failed(channel) == len(chosen)
        self._forget(lambda task: task in chosen)

    @precondition(lambda self: not self.started)
    @rule()
    def purge(self) -> None:
        finished = [t for t in self.expected.values() if t.phase != "waiting"]
        assert self.q.purge(0) == len(finished)
        self._forget(lambda task: task.phase != "waiting")

    @precondition(lambda self: not self.started and "b" in self.registered)
    @rule()
    def remove_channel(self) -> None:
        of_b = [t for t in self.expected.values() if t.channel == "b"]
        assert self.q.remove_channel("b") == len(of_b)
        self.registered.discard("b")
        self._forget(lambda task: task.channel == "b")

    @precondition(lambda self: "b" not in self.registered)
    @rule()
    def add_channel_again(self) -> None:
        self._register("b")

    # -- the check -----------------------------------------
    @invariant()
    def store_matches_the_model(self) -> None:
        if self.started:
            return  # workers are moving tasks: checked once they stop
        stored = {task.id: task for task in self.q.tasks(limit=100_000)}
        assert set(stored) == set(self.expected)
        for task_id, task in stored.items():
            want = self.expected[task_id]
            assert (task.channel, task.args, task.key) == (
                want.channel, [want.kind, want.token], want.key)
            assert task.attempts == want.runs == self.calls[want.token]
            assert task.retries == want.retries
            if want.phase == "waiting":
                assert task.status in ("pending", "delayed"), (task_id, task)
                assert task.result is None
            else:
                assert task.status == want.phase, (task_id, task)
                assert task.result == (want.token if want.phase == "done" else None)
        stats = self.q.stats()
        for channel in CHANNELS:
            mine = [t for t in self.expected.values() if t.channel == channel]
            counts = stats.get(channel, {})
            assert counts.get("running", 0) == 0
            assert counts.get("done", 0) == sum(t.phase == "done" for t in mine)
            assert counts.get("failed", 0) == sum(t.phase == "failed" for t in mine)
            assert counts.get("cancelled", 0) == sum(t.phase == "cancelled" for t in mine)
            assert sum(counts.values()) == len(mine)
            for key in KEYS:  # which the unique index guarantees, and the model relies on
                assert len(self._holders(channel, key)) <= 1

    # -- helpers -------------------------------------------
    def _token(self) -> int:
        self.tokens += 1
        return self.tokens

    def _holders(self, channel: str, key: str | None) -> list[int]:
        """The tasks of ``channel`` the model holds unfinished with ``key``: the one
        holder while no worker runs; while workers run, some may have finished."""
        return [] if key is None else [
            task_id for task_id, t in self.expected.items()
            if (t.channel, t.key, t.phase) == (channel, key, "waiting")]

    def _learn(self, task_id: TaskId, want: Expected) -> None:
        """What an enqueue of ``want`` returned: a task it created, or the holder of its key."""
        holders = self._holders(want.channel, want.key)
        if not task_id.created:
            assert task_id in holders, (task_id, want, holders)
            return
        assert not holders or self.started, (task_id, want, holders)  # created: key was free
        assert task_id not in self.expected and task_id > self.highest_id
        self.highest_id = task_id
        self.expected[task_id] = want

    def _replay_runs(self) -> None:
        """Replay, in the model, the runs each function made while workers ran."""
        with self.lock:
            calls = Counter(self.calls)
        for task in self.expected.values():
            while task.runs < calls[task.token]:
                task.run_once()

    def _failed(self, channel: str | None) -> list[Expected]:
        return [t for t in self.expected.values()
                if t.phase == "failed" and channel in (None, t.channel)]

    def _forget(self, gone: Any) -> None:
        self.expected = {i: t for i, t in self.expected.items() if not gone(t)}


MODEL_SETTINGS = settings(
    max_examples=scaled(40), stateful_step_count=20, deadline=None, database=None,
    derandomize=not SOAKING, suppress_health_check=[HealthCheck.too_slow],
)


class PostgresQueueModel(QueueModel):
    backend = "postgres"


MODELS = {"sqlite": QueueModel, "postgres": PostgresQueueModel}
run_machine: Callable[..., None] = run_state_machine_as_test
"""Hypothesis' runner, which runs the machine as its TestCase would (typed here: some
Hypothesis versions leave it untyped)."""


def test_random_call_sequences_leave_the_store_as_the_model_predicts(backend: str) -> None:
    if backend == "postgres":
        postgres_url()  # skips without a server, before Hypothesis starts
    run_machine(MODELS[backend], settings=MODEL_SETTINGS)


def test_keyed_enqueues_requeues_and_cancels_in_every_state_match_the_model(
    backend: str
) -> None:
    """The paths of keys and cancel that random sequences reach only now and then, as
    one scripted sequence of the model's own rules, checked after each step. Tasks
    are named by the token of the enqueue that created them (ids may skip numbers:
    an insert that met a key's holder may use one up)."""
    if backend == "postgres":
        postgres_url()
    machine = MODELS[backend]()

    def task(token: int) -> int:
        [task_id] = [i for i, t in machine.expected.items() if t.token == token]
        return task_id

    def cancel(token: int | None) -> Callable[[], None]:
        """A step cancelling the task of ``token``, or (None) an id no task has."""
        return lambda: machine.cancel_id(machine.highest_id + 1 if token is None
                                         else task(token))

    def phases(by_token: dict[int, str]) -> Callable[[], None]:
        """A step checking that the script went where it says: the model holds the tasks
        of these tokens in these phases (and the store holds them as the model does)."""
        return lambda: _check_phases(machine, {task(token): phase
                                               for token, phase in by_token.items()})

    steps: list[Callable[[], None]] = [
        lambda: machine.enqueue("a", "raise", 0, "k1"),  # token 1
        # Tokens 2-4: the first finds token 1's task; the third finds token 3's.
        lambda: machine.enqueue_many("a", [("ok", "k1"), ("ok", "k2"), ("ok", "k2")], 0, True),
        machine.run_until_complete,
        phases({1: "failed", 3: "done"}),
        lambda: machine.enqueue("a", "raise", 0, "k1"),  # 5: a failed task holds no key
        machine.run_until_complete,
        lambda: machine.enqueue("b", "raise", 1, "k1"),  # 6: keys are per channel
        machine.run_until_complete,
        lambda: machine.requeue_failed(None, 2),  # 5 (the newer of a's two) and 6
        phases({1: "failed", 5: "waiting", 6: "waiting"}),
        lambda: machine.enqueue("a", "ok", 0, "k1"),  # 7 finds the requeued 5
        lambda: machine.enqueue("b", "raise", 0, "k2"),  # 8
        # Failed, done, pending (three), an id of no task, cancelled already.
        *[cancel(token) for token in (1, 3, 5, 6, 8, None, 5)],
        phases({1: "failed", 3: "done", 5: "cancelled", 6: "cancelled", 8: "cancelled"}),
        lambda: machine.enqueue("a", "ok", 0, "k1"),  # 9: the cancelled 5 held k1
        lambda: machine.requeue_failed("a", None),  # 1 stays failed: 9 holds k1
        machine.start,
        lambda: machine.cancel_while_running("a", "wait-raise", "k2"),  # 10, 11 finds it
        lambda: machine.cancel_while_running("b", "wait-return", "k2"),  # 12, 13 finds it
        lambda: machine.cancel_while_running("b", "wait-raise", None),  # 14
        machine.stop,
        phases({1: "failed", 9: "done", 10: "cancelled", 12: "done", 14: "cancelled"}),
        lambda: machine.requeue_failed(None, None),  # 9 is done: 1 is requeued now
        phases({1: "waiting"}),
        machine.purge,
    ]
    try:
        for step in steps:
            step()
            machine.store_matches_the_model()
    finally:
        machine.teardown()


def _check_phases(machine: QueueModel, by_id: dict[int, str]) -> None:
    assert {task_id: machine.expected[task_id].phase for task_id in by_id} == by_id


# -- random dependency graphs ------------------------------------------------------

GRAPH_KINDS = ("ok", "raise")
UNFINISHED = {"pending", "delayed", "running", "blocked"}


class GraphModel(RuleBasedStateMachine):
    """Random workflows (tasks depending on random earlier tasks, chains, groups with a
    callback, follow-ups, ``always`` steps), cancels, requeues, and crashes (a task
    claimed by a process that dies before recording it: recovered, or failed by the
    crash-loop rule, which ends it as any failure does). Properties, not predictions:
    no task runs before the tasks it needs have ended as it needs; no task runs more
    often than it was claimed; no task stays blocked once every task it waits for has
    ended; after a drain every task has ended."""

    backend = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="simplepyq-graph-")
        location, self.schema = fresh_store(self.backend, self.directory)
        self.location = location
        self.q = SimplePyQ(location, poll_interval=0.01)
        self.q.add_channel("g", self.work, max_workers=3)
        self.lock = threading.Lock()
        self.kinds: dict[int, str] = {}
        self.runs: Counter[int] = Counter()
        self.early: list[str] = []
        """Runs that started before what they wait for had ended as they need."""
        self.requeued: set[int] = set()
        """Tasks that failed and were requeued at some point."""

    def teardown(self) -> None:
        self.q.close()
        forget_store(self.directory, self.schema)

    def work(self, args: Any) -> dict[str, int]:
        context = current_task()
        assert context is not None
        with self.lock:
            self.runs[context.id] += 1
        links = self.q.links(context.id)
        needs = self._needs(context.id)
        # A task released by an end that requeue_failed undid later stays released (it
        # received that outcome), except one that needs its upstreams done.
        ends = {int(up): self._status(up) for up in links.depends_on
                if needs == "done" or int(up) not in self.requeued}
        if any(status in UNFINISHED or (needs == "done" and status != "done")
               or (needs == "failed" and status == "done") for status in ends.values()):
            self.early.append(f"task {context.id} ran with upstreams {ends} ({needs})")
        wanted = _input(self._input(context.id), [int(up) for up in links.depends_on])
        if wanted is not None and not wanted(args):
            self.early.append(f"task {context.id} received {args} from {links.depends_on}")
        if self.kinds.get(context.id) == "raise":
            raise ValueError(f"task {context.id} fails")
        return {"from": context.id}

    def _status(self, task_id: int) -> str:
        task = self.q.get_task(task_id)
        return "gone" if task is None else str(task.status)

    def _needs(self, task_id: int) -> str:
        [(needs,)] = raw_sql(self.location, "SELECT needs FROM simplepyq_flows "
                                            "WHERE task_id = ?", (task_id,)) or [("done",)]
        return str(needs)

    def _input(self, task_id: int) -> str | None:
        [(kind,)] = raw_sql(self.location, "SELECT input FROM simplepyq_flows "
                                           "WHERE task_id = ?", (task_id,)) or [(None,)]
        return None if kind is None else str(kind)

    def _step(self, kind: str, with_args: bool, always: bool = False,
              on_failure: bool = False) -> Step:
        return Step("g", {"kind": kind} if with_args else _NO_INPUT, always=always,
                    on_failure=Step("g", {"kind": "ok"}) if on_failure else None)

    def _learn(self, ids: Any, kinds: list[str]) -> None:
        for task_id, kind in zip(ids, kinds, strict=False):
            self.kinds[int(task_id)] = kind

    # -- rules ---------------------------------------------
    @rule(kind=st.sampled_from(GRAPH_KINDS), picks=st.lists(st.integers(0, 1000), max_size=3),
          always=st.booleans(), on_failure=st.booleans())
    def enqueue_after(self, kind: str, picks: list[int], always: bool, on_failure: bool) -> None:
        known = sorted(self.kinds)
        upstreams = sorted({known[pick % len(known)] for pick in picks}) if known else []
        step = self._step(kind, True, always, on_failure)
        task_id = self.q.enqueue("g", step.args, depends_on=upstreams or None,
                                 on_failure=step.on_failure)
        self.kinds[int(task_id)] = kind
        for follow_up in self.q.links(task_id).dependents:
            self.kinds[int(follow_up)] = "ok"

    @rule(kinds=st.lists(st.sampled_from(GRAPH_KINDS), min_size=1, max_size=4),
          always=st.booleans())
    def chain(self, kinds: list[str], always: bool) -> None:
        steps = [self._step(kind, index == 0, always and index > 0)
                 for index, kind in enumerate(kinds)]
        self._learn(self.q.chain(*steps).task_ids, kinds)

    @rule(kinds=st.lists(st.sampled_from(GRAPH_KINDS), min_size=1, max_size=4),
          then=st.sampled_from(GRAPH_KINDS), always=st.booleans())
    def group(self, kinds: list[str], then: str, always: bool) -> None:
        flow = self.q.group([self._step(kind, True) for kind in kinds],
                            then=self._step(then, False, always))
        self._learn(flow.task_ids, [*kinds, then])

    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        if self.kinds:
            self.q.cancel(sorted(self.kinds)[pick % len(self.kinds)])

    @rule(max_recoveries=st.sampled_from([1, 3]))
    def crash(self, max_recoveries: int) -> None:
        """A process claims the next task and dies before it records anything."""
        died_running(self.location, "g", max_recoveries)

    @rule()
    def requeue_failed(self) -> None:
        self.requeued |= {int(task.id) for task in self.q.tasks(status="failed", limit=10_000)}
        self.q.requeue_failed()

    @rule()
    def run_until_complete(self) -> None:
        self.q.run_until_complete(timeout=60)
        left = {int(t.id): str(t.status) for t in self.q.tasks(limit=10_000)
                if str(t.status) in UNFINISHED}
        assert not left, f"unfinished after a drain: {left}"

    # -- properties ----------------------------------------
    @invariant()
    def graph_properties_hold(self) -> None:
        assert not self.early, self.early
        tasks = {int(t.id): t for t in self.q.tasks(limit=10_000)}
        for task_id, task in tasks.items():
            assert self.runs[task_id] <= task.attempts, (task_id, self.runs[task_id], task)
            if str(task.status) != "blocked":
                continue
            upstreams = self.q.links(task_id).depends_on
            assert any(up in tasks and str(tasks[up].status) in UNFINISHED
                       for up in upstreams), f"task {task_id} blocked after {upstreams} ended"


def _input(kind: str | None, upstreams: list[int]) -> Callable[[Any], bool] | None:
    """What a task taking ``kind`` of input from ``upstreams`` must receive (each
    upstream's function returns {"from": its id}); None for a task with its own args."""
    def outcomes(args: Any) -> bool:
        return [(o["id"], o["status"] in ("done", "failed", "cancelled")) for o in args] == [
            (up, True) for up in upstreams]

    return {
        None: None,
        "result": lambda args: args == {"from": upstreams[0]},
        "results": lambda args: args == [{"from": up} for up in upstreams],
        "outcome": lambda args: outcomes([args]),
        "outcomes": outcomes,
        "failure": lambda args: args["id"] == upstreams[0] and args["status"] != "done",
    }[kind]


_NO_INPUT: Any = Step("g").args
"""A step's args when it was given none (it receives its input)."""

GRAPH_SETTINGS = settings(
    max_examples=scaled(25), stateful_step_count=15, deadline=None, database=None,
    derandomize=not SOAKING, suppress_health_check=[HealthCheck.too_slow],
)


class PostgresGraphModel(GraphModel):
    backend = "postgres"


def test_random_dependency_graphs_with_crashes_end_every_task_in_order(backend: str) -> None:
    if backend == "postgres":
        postgres_url()
    run_machine({"sqlite": GraphModel, "postgres": PostgresGraphModel}[backend],
                settings=GRAPH_SETTINGS)
