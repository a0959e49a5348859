"""Model-based test: random sequences of queue calls, checked against a model of the store.

Hypothesis drives one queue through enqueue / enqueue_many / start / stop /
run_until_complete / requeue_failed / clear_failed / remove_channel / purge,
with tasks that succeed, raise, or defer themselves once. Whenever no worker runs,
the store must hold exactly what the model says: the same tasks, and for each
its status, retries left, attempts (= runs of its function) and result. While
workers ran, the model learns how many times each function ran and replays
those runs, so it still predicts every field. Each example gets a fresh store of
the test's backend (a SQLite file, or a PostgreSQL schema dropped afterwards).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
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

from simplepyq import DelayException, SimplePyQ
from tests.backends import drop_schema, new_schema_location, postgres_url
from tests.soak import SOAKING, scaled

CHANNELS = ("a", "b")
KINDS = ("ok", "raise", "delay")


@dataclass
class Expected:
    """What the store must say about one task."""

    channel: str
    kind: str
    token: int
    retries: int
    runs: int = 0
    phase: str = "waiting"  # waiting (pending or delayed), done or failed

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


class QueueModel(RuleBasedStateMachine):
    backend = "sqlite"
    """Where each example's fresh store lives: a SQLite file, or a PostgreSQL schema."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="simplepyq-model-")
        self.schema: str | None = None
        if self.backend == "postgres":
            location, self.schema = new_schema_location(postgres_url())
        else:
            location = str(Path(self.directory, "tasks.db"))
        self.q = SimplePyQ(location, poll_interval=0.01)
        self.lock = threading.Lock()
        self.calls: Counter[int] = Counter()
        self.expected: dict[int, Expected] = {}
        self.registered: set[str] = set()
        self.started = False
        self.tokens = 0
        for channel in CHANNELS:
            self._register(channel)

    def teardown(self) -> None:
        self.q.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.schema is not None:
            drop_schema(postgres_url(), self.schema)

    # -- the task function ---------------------------------
    def work(self, args: list[Any]) -> int:
        kind, token = args
        with self.lock:
            self.calls[token] += 1
            runs = self.calls[token]
        if kind == "raise":
            raise ValueError(f"task {token} fails")
        if kind == "delay" and runs == 1:
            raise DelayException(0.01)
        return int(token)

    def _register(self, channel: str) -> None:
        self.q.add_channel(channel, self.work, max_workers=2)
        self.registered.add(channel)

    # -- rules ---------------------------------------------
    @rule(channel=st.sampled_from(CHANNELS), kind=st.sampled_from(KINDS),
          retries=st.integers(0, 2))
    def enqueue(self, channel: str, kind: str, retries: int) -> None:
        self.enqueue_many(channel, [kind], retries)

    @rule(channel=st.sampled_from(CHANNELS), kinds=st.lists(st.sampled_from(KINDS), max_size=4),
          retries=st.integers(0, 2))
    def enqueue_many(self, channel: str, kinds: list[str], retries: int) -> None:
        tokens = list(range(self.tokens, self.tokens + len(kinds)))
        self.tokens += len(kinds)
        args = [[kind, token] for kind, token in zip(kinds, tokens, strict=True)]
        if channel not in self.registered:
            with pytest.raises(ValueError, match="unknown channel"):
                self.q.enqueue_many(channel, args, retries)
            return
        ids = self.q.enqueue_many(channel, args, retries)
        assert len(ids) == len(kinds)
        for task_id, kind, token in zip(ids, kinds, tokens, strict=True):
            assert task_id not in self.expected
            self.expected[task_id] = Expected(channel, kind, token, retries)

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
    @rule(channel=st.none() | st.sampled_from(CHANNELS), retries=st.none() | st.integers(0, 2))
    def requeue_failed(self, channel: str | None, retries: int | None) -> None:
        chosen = self._failed(channel)
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
            assert (task.channel, task.args) == (want.channel, [want.kind, want.token])
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
            assert sum(counts.values()) == len(mine)

    # -- helpers -------------------------------------------
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
