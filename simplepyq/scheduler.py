"""Running tasks: a pool of worker threads per channel, wake-ups, heartbeats and crash recovery.

A worker takes a claimed task, runs it and keeps its outcome for the next group
commit; claims come in batches shared by the channel's workers (``batches``), and
what an outcome means (retry, defer, fail) is decided in ``policy``. Idle workers
sleep on a condition: an enqueue in this process wakes them at once, and one
housekeeping thread per scheduler polls the store's cheap change counter to notice
other processes' work and delayed tasks coming due. It also commits outcomes that
waited long enough, releases claimed tasks that waited too long, heartbeats for
this instance and returns the running tasks of dead instances to pending.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simplepyq import codec, counters, policy, retention, waiting
from simplepyq.batches import RETRY_FIRST, RETRY_LONGEST, Hand, Ledger, Outbox, Pace
from simplepyq.callbacks import Callbacks
from simplepyq.context import ProgressBox
from simplepyq.errors import DelayException, TaskTimeout
from simplepyq.failing import RepeatedFailure
from simplepyq.hooks import Hooks, outcome_event
from simplepyq.identity import Heartbeats, ProcessIdentity, is_dead
from simplepyq.periodic import Ticker
from simplepyq.policy import Backoff, Decision
from simplepyq.retention import Retention, Sweeper
from simplepyq.runs import Run, Seat, seat
from simplepyq.solo import SoloGate
from simplepyq.storage.base import Claimed, CommitUnknownError, Exchange, Outcome, Owner, Store
from simplepyq.task import Task
from simplepyq.watchdog import Watchdog

log = logging.getLogger("simplepyq")

SETTLE_LIMIT = 30.0
"""Seconds a stop without a timeout keeps trying to commit outcomes the store refuses."""
FORKED_CHILD_EXIT = 70
"""The exit code of a forked child that returned into a worker (EX_SOFTWARE)."""
FULL_RECHECK = 1.0
"""Seconds at most that idle workers of a channel at its ``max_running`` wait before they
look again (a task ending anywhere wakes them sooner), and that those of a channel held
back by its rate limit wait for its window to move before they look again: a limit
raised or lifted meanwhile, by any process, is seen that soon."""
PROGRESS_EVERY = 0.5
"""Seconds between writes of the progress values that running tasks report."""
WATCH_GAP = 0.02
"""While every worker here is busy, the commits the store tells of (its own workers'
among them: it cannot tell whose) are wanted, and make a housekeeping pass, at most
this often: for cancel requests of the tasks running here, the only news a busy
process needs from others before its workers' next claims."""


class Wakeup:
    """A condition with a generation count, so that a wake between a look and a sleep is kept."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._listeners: Callbacks[[]] = Callbacks()
        self.sleepers = 0
        """How many threads sleep in ``wait_past`` now (read without the lock: a hint)."""
        self._woken = 0  # sleepers notified that have not run yet

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def idle(self) -> int:
        """How many sleepers no notify has woken yet (read without the lock: a hint)."""
        return self.sleepers - self._woken

    def notify(self, count: int | None = None) -> None:
        """Wake ``count`` sleepers (all when None), and call the listeners."""
        with self._cond:
            self._generation += 1
            if not self.sleepers:  # (exact here: it changes under this lock)
                pass
            elif count is None:
                self._cond.notify_all()
                self._woken = self.sleepers
            else:
                self._cond.notify(count)
                self._woken = min(self.sleepers, self._woken + count)
        self._listeners.fire()

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (cheap, and from any thread) at every notify; return what
        stops the calls. For waiters that are not threads (asyncio)."""
        return self._listeners.add(callback)

    def wait_past(self, generation: int, timeout: float | None) -> None:
        """Sleep until a notify after ``generation`` was seen, or ``timeout`` passes."""
        with self._cond:
            if self._generation == generation:
                self.sleepers += 1
                notified = False
                try:
                    notified = self._cond.wait(timeout)
                finally:
                    self.sleepers -= 1
                    if notified and self._woken:
                        self._woken -= 1


@dataclass
class Channel:
    """A channel registered in this process: its function and how to run it."""

    name: str
    func: Callable[[Any], Any]
    max_workers: int
    backoff: Backoff
    time_limit: float | None = None
    """Seconds a run of its tasks may take (a task's own limit comes first); None: no limit."""
    wake: Wakeup = field(default_factory=Wakeup)
    pace: Pace = field(default_factory=Pace)
    removed: bool = False
    not_before: float = 0.0
    """Its rate limit lets no task start before this time (``time.monotonic()``)."""
    full: bool = False
    """Its last claim found it at its ``max_running``."""


@dataclass(frozen=True)
class Signals:
    """What a scheduler tells the threads waiting on it (``wait``, ``run_until_complete``)."""

    recorded: Wakeup = field(default_factory=Wakeup)
    """A task's outcome was recorded, or another process changed the store."""
    idle: Wakeup = field(default_factory=Wakeup)
    """A worker found nothing to claim: perhaps every task is finished."""
    hooks: Hooks = field(default_factory=Hooks)
    """The queue's lifecycle hooks: told of the events of the tasks run here."""


@dataclass(frozen=True)
class Settings:
    """Timing knobs of a scheduler; see ``SimplePyQ`` for their meaning."""

    poll_interval: float
    lease: float
    max_recoveries: int = 3
    retention: Retention = field(default_factory=Retention)


class Scheduler:
    """One run of the workers, from ``start()`` to ``stop()``, under one owner identity."""

    def __init__(self, store: Store, channels: dict[str, Channel], settings: Settings,
                 signals: Signals) -> None:
        self._store = store
        self._channels = channels
        self._settings = settings
        self._signals = signals
        self._identity = ProcessIdentity.current()
        self._beats = Heartbeats(every=settings.lease / 3)
        self._stopping = threading.Event()
        self._nudge = Wakeup()
        self._watched_at = 0.0  # when a commit the store told of last made a pass
        self._hands: dict[str, Hand] = {}
        self._outbox = Outbox()
        self._ledger = Ledger()
        self._failures: dict[str, RepeatedFailure] = {}
        self._workers: list[threading.Thread] = []
        self._live: set[threading.Thread] = set()
        self._abandoned: set[threading.Thread] = set()
        self._started: dict[str, Channel] = {}
        self._solo = SoloGate()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        """Notified when a worker ends or is abandoned (``stop`` waits on it)."""
        self._runs: dict[int, Run] = {}
        self._claimed_rows: dict[int, tuple[Any, ...]] = {}
        """With hooks: the rows of claimed tasks not started yet, for their start event."""
        self._reporting = threading.Lock()
        """With hooks: held from a commit until its events are handed over."""
        self._cancels: set[int] = set()
        """Tasks claimed here whose cancel was requested, until their run ends."""
        self._progress = ProgressBox()
        self._watchdog = Watchdog(self._abandon)
        self._sweeper = Sweeper(store, settings.retention) if settings.retention.active \
            else None
        self._ticker = Ticker(store, time.time)
        self._suspect: threading.Thread | None = None
        """The worker running a suspect alone (see ``_run_alone``), if any."""
        self._store_closed = False
        self._housekeeper = threading.Thread(
            target=self._housekeep, name="simplepyq-housekeeper", daemon=True
        )

    # -- life cycle ----------------------------------------
    def start(self) -> None:
        """Register this instance, recover dead work, then start every channel's workers."""
        self._register()
        self.recover_dead()
        with self._lock:
            for channel in list(self._channels.values()):
                self._start_workers(channel)
        self._housekeeper.start()

    def add(self, channel: Channel) -> None:
        """Run ``channel`` too, starting its workers unless they run already."""
        with self._lock:
            self._channels.setdefault(channel.name, channel)
            if not self._stopping.is_set() and self._started.get(channel.name) is not channel:
                self._start_workers(channel)

    def stop(self, timeout: float | None) -> bool:
        """Let running tasks finish (up to ``timeout``) and start no new ones.

        Returns True when every worker has ended and every outcome is committed.
        Workers still busy after the timeout finish their task in the background,
        still heartbeating. Outcomes the store refuses are tried again until the
        timeout (or, without one, for SETTLE_LIMIT seconds).
        """
        self._stopping.set()
        self._nudge.notify()
        for channel in list(self._channels.values()):
            channel.wake.notify()
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        me = threading.current_thread()
        with self._ended:
            # Abandoned workers (see ``watchdog``) are not waited for: they are stuck.
            while self._live - self._abandoned - {me}:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._ended.wait(waiting.slice_of(remaining))
            ended = not self._live - {me}
        settled = self.settle(deadline if deadline is not None
                              else max(start, time.monotonic()) + SETTLE_LIMIT)
        if not self._busy():
            waiting.join(self._housekeeper, None)
        return ended and settled

    def cancel_here(self, task_id: int) -> None:
        """A cancel of ``task_id`` was requested: if this process runs it, tell the run;
        if it holds it unstarted, it ends cancelled without running."""
        self._cancels.add(task_id)
        run = self._runs.get(task_id)
        if run is not None:
            run.request_cancel()

    def store_closed(self) -> None:
        """The queue closed the store while workers of this scheduler still run (stuck
        past their time limit): housekeeping ends, as nothing more can be written."""
        self._store_closed = True
        self._nudge.notify()

    def unsettled(self) -> int:
        """How many outcomes of finished tasks are not committed yet."""
        return self._outbox.unsettled()

    def runs_in(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` is one of this scheduler's workers (a task runs in it)."""
        with self._lock:
            return thread in self._workers

    def _start_workers(self, channel: Channel) -> None:
        self._started[channel.name] = channel
        self._hands[channel.name] = Hand(channel.max_workers, channel.pace)
        for _ in range(channel.max_workers):
            self._start_worker(channel)

    def _start_worker(self, channel: Channel) -> None:
        """Start one worker of ``channel`` (the caller holds the lock)."""
        worker = threading.Thread(
            target=self._work, args=(channel,), daemon=True,
            name=f"simplepyq-{channel.name}-{len(self._workers)}",
        )
        self._workers.append(worker)
        self._live.add(worker)
        worker.start()

    def _abandon(self, run: Run) -> None:
        """The watchdog gave up on ``run`` (its thread is stuck past its time limit): let
        its thread finish alone and start a worker in its place. Its place in the solo
        gate is given up now, so that no suspect waits for it."""
        with self._lock:
            self._abandoned.add(run.thread)
            self._ended.notify_all()
            channel = self._started.get(run.channel)
            if channel is not None and not channel.removed and not self._stopping.is_set():
                self._start_worker(channel)
            suspect = self._suspect is run.thread
            if suspect:
                self._suspect = None
        self._solo.leave()
        if suspect:  # it ran alone: the others may run again
            self._solo.end()
            self._wake_all()

    # -- the worker loop -----------------------------------
    def _work(self, channel: Channel) -> None:
        hand = self._hands[channel.name]
        claiming = self._failure(f"claiming tasks of channel {channel.name!r}")
        here = seat()
        here.store = self._store
        try:
            while not self._stopping.is_set() and not channel.removed:
                seen = channel.wake.generation
                if not self._solo.enter():  # a suspect runs alone: claim and start nothing
                    self._solo.wait_open(self._settings.poll_interval)
                    continue
                try:
                    task = hand.take() or self._refill(channel, hand)
                except Exception as exc:
                    self._solo.leave()
                    claiming.failed(exc, "retrying")
                    self._stopping.wait(self._settings.poll_interval)
                    continue
                if claiming.failing:
                    claiming.succeeded()
                if task is None:
                    self._solo.leave()
                    self._signals.idle.notify()
                    channel.wake.wait_past(seen, timeout=_throttled_for(channel))
                    continue
                left_behind = False
                try:
                    if task.recoveries:
                        self._run_alone(channel, hand, task, here)
                    else:
                        self._run(channel, task, here)
                finally:
                    left_behind = self._left_behind() if self._abandoned else False
                    if not left_behind:
                        self._solo.leave()
                if left_behind:
                    break  # another worker took this one's place
        finally:
            if not self._left_behind():
                self._give_back(hand)
            self._flush(due_only=False)
            here.close_loop()
            with self._ended:
                self._live.discard(threading.current_thread())
                self._ended.notify_all()
            self._nudge.notify()  # the housekeeper ends once the last worker has

    def _left_behind(self) -> bool:
        """Whether the calling worker was abandoned (see ``_abandon``)."""
        return threading.current_thread() in self._abandoned

    def _run_alone(self, channel: Channel, hand: Hand, task: Claimed,
                   here: Seat) -> None:
        """Run a suspect (see ``solo``) with nothing else of this process in flight, its
        outcome committed at once; if another suspect runs alone already, give it back.
        The caller is in the gate, so a suspect runs only once it has given this back."""
        if not self._solo.begin():
            hand.put([task])
            self._give_back(hand)
            return
        try:
            for other in list(self._hands.values()):
                self._give_back(other)
            settle_by = time.monotonic() + self._settings.lease
            self.settle(settle_by)
            self._safe(lambda: self._store.run_alone(self._identity.owner, task.id), None)
            self._suspect = threading.current_thread()
            self._run(channel, task, here)
            self.settle(settle_by + self._settings.lease)
        finally:
            if not self._left_behind():  # else _abandon opened the gate already
                self._suspect = None
                self._solo.end()
                self._wake_all()

    def _refill(self, channel: Channel, hand: Hand) -> Claimed | None:
        """Commit the waiting outcomes and claim the channel's next batch, in one transaction."""
        with hand.refilling:
            task = hand.take()
            if task is not None:
                return task
            # While commits of outcomes fail, they are tried at a growing pause, not with
            # every claim.
            outcomes = [] if self._outbox.pausing(time.monotonic()) else self._outbox.take()
            limit = 0 if self._stopping.is_set() or channel.removed or (
                channel.not_before and channel.not_before > time.monotonic()) else hand.wanted()
            try:
                exchange = self._exchange(outcomes, channel.name, limit)
            except BaseException as exc:
                self._outbox.restore(outcomes)
                if isinstance(exc, CommitUnknownError):
                    self._commit_unknown(outcomes)
                raise
            self._settled(outcomes, exchange)
            if limit:
                _throttle(channel, exchange)
            hand.put(exchange.claimed)
            if len(exchange.claimed) > 1 and channel.max_workers > 1:
                # Other workers may be asleep: wake as many as there are tasks for.
                channel.wake.notify(min(len(exchange.claimed), channel.max_workers) - 1)
            return hand.take()

    def _run(self, channel: Channel, task: Claimed, here: Seat) -> None:
        """Run one claimed task and keep its outcome for the next commit; never raises."""
        began = time.perf_counter()
        if self._claimed_rows:
            self._report_start(task.id)
        if self._cancels and task.id in self._cancels:
            decision = policy.cancelled(task.retries, "cancelled before it ran", time.time())
        else:
            try:
                args = None if task.args is None else codec.unpack(task.args)
            except ValueError as exc:
                decision = policy.unrunnable(task.retries, f"args could not be decoded: {exc}",
                                             time.time())
            else:
                decision = self._call(channel, task, args, here)
        if self._cancels:
            self._cancels.discard(task.id)
        if _forks_seen and os.getpid() != self._pid:
            _leave_forked_child(task.id)
        channel.pace.ran(time.perf_counter() - began)
        channel.full = False  # one of its tasks ended: below max_running, if it has one
        if self._outbox.add(Outcome(task.id, decision, channel.name)):
            self._nudge.notify()  # the housekeeper commits it if no worker does in time

    def _call(self, channel: Channel, task: Claimed, args: Any, here: Seat) -> Decision:
        """Call the channel's function as a ``Run`` (its time limit watched, its cancel
        deliverable, ``current_task()`` set) and decide what the run came to."""
        # Its own limit, else its channel's (one that is not a number, written by hand in
        # a SQLite file, counts as none).
        limit = task.time_limit
        if limit is None or not isinstance(limit, (int, float)):
            limit = channel.time_limit
        run = Run(task.id, channel.name, task.attempts, limit, self._progress.put)
        self._runs[task.id] = run
        # A cancel that came after _run looked, and before cancel_here could find the run:
        if self._cancels and task.id in self._cancels:
            run.cancel_requested = True
        if limit is not None:
            self._watchdog.watch(run)
        try:
            value, error = run.call(channel.func, args, here)
        finally:
            del self._runs[task.id]
        if error is None and value is None:  # the common case, decided the short way
            decision = policy.succeeded(task.retries, None, time.time())
        else:
            decision = self._decided(channel, task, run, value, error)
        progress = self._progress.end(task.id) if self._progress.latest else None
        return decision if progress is None else decision._replace(progress=progress)

    def _decided(self, channel: Channel, task: Claimed, run: Run, value: Any,
                 error: BaseException | None) -> Decision:
        """What the run came to: ``value`` returned, or ``error`` raised."""
        if error is None:
            try:
                result = None if value is None else codec.pack(value, "the task's return value")
            except Exception as exc:  # whatever encoding refuses, the worker lives on
                log.warning("task %d of channel %r returned a value that cannot be stored "
                            "(%s); failed", task.id, channel.name, exc)
                return policy.unrunnable(task.retries, f"{type(exc).__name__}: {exc}",
                                         time.time())
            return policy.succeeded(task.retries, result, time.time())
        if _forks_seen and os.getpid() != self._pid:
            _leave_forked_child(task.id)
        now = time.time()
        if run.cancel_requested:
            log.info("task %d of channel %r was cancelled (it raised %s)", task.id,
                     channel.name, type(error).__name__)
            return policy.cancelled(task.retries, _traceback(error), now)
        if isinstance(error, DelayException) and not run.timed_out:
            return policy.deferred(task.retries, error.delay_seconds, now)
        if run.timed_out or isinstance(error, TaskTimeout):  # check() may come first
            decision = policy.timed_out(task.retries, task.attempts, run.limit or 0,
                                        _traceback(error), channel.backoff, now)
        else:
            decision = policy.raised(task.retries, task.attempts, _traceback(error),
                                     channel.backoff, now)
        log.warning("task %d of channel %r raised %s: %s; %s", task.id, channel.name,
                    type(error).__name__, error, policy.explained(decision, task.attempts))
        return decision

    def _flush(self, due_only: bool) -> None:
        """Commit the waiting outcomes (only once the oldest has waited GROUP_WINDOW, or
        longer while commits keep failing, if ``due_only``). A failed commit keeps them
        waiting, to be tried again; first, any audit owed after a commit whose fate is
        unknown is done."""
        self._reconcile()
        due_in = self._outbox.due_in(time.monotonic())
        if due_in is None or (due_only and due_in > 0):
            return
        outcomes = self._outbox.take()
        try:
            exchange = self._exchange(outcomes, None, 0)
        except Exception as exc:
            self._outbox.restore(outcomes)
            self._failure("recording task outcomes").failed(
                exc, f"the outcomes of {len(outcomes)} task(s) wait here, their tasks still "
                "running, and will be recorded on a later try")
            if isinstance(exc, CommitUnknownError):
                self._commit_unknown(outcomes)
            return
        self._settled(outcomes, exchange)

    def settle(self, deadline: float | None) -> bool:
        """Commit the outcomes still waiting, trying again with growing pauses until
        ``deadline`` (``time.monotonic()``); True once none is left uncommitted.

        For a stop: an outcome never committed leaves its task ``running`` under this
        process, to be run again once the process is gone. With ``deadline`` None it
        tries once and does not wait: a caller that can wait says how long.
        """
        pause = RETRY_FIRST
        while True:
            self._flush(due_only=False)
            left = self._outbox.unsettled()
            if not left:
                return True
            now = time.monotonic()
            if deadline is None or now >= deadline:
                log.error("the outcomes of %d task(s) could not be recorded; those tasks will "
                          "run again once this process is gone", left)
                return False
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, RETRY_LONGEST)

    def _settled(self, outcomes: list[Outcome], exchange: Exchange) -> None:
        """After a commit that went through: the outcomes it carried are held no more, and
        workers here of channels it released tasks of look for them."""
        dropped = exchange.dropped
        for name in exchange.released:
            channel = self._channels.get(name)
            if channel is not None:
                channel.wake.notify(1)
        self._outbox.settled(outcomes)
        self._failure("recording task outcomes").succeeded()
        doubted = self._ledger.drop(outcome.task_id for outcome in outcomes)
        known = [task_id for task_id in dropped if task_id in doubted]
        if known:
            log.info("the outcomes of %d task(s) were recorded already, by a commit whose "
                     "answer was lost (or the tasks were taken from this worker): %s",
                     len(known), _ids(known))
        for task_id in dropped:
            if task_id not in doubted:
                log.warning("task %d was taken from this worker (recovered or removed); "
                            "its outcome is dropped", task_id)
        if outcomes:
            self._signals.recorded.notify()

    def _commit_unknown(self, outcomes: list[Outcome]) -> None:
        """A commit of ours may have landed or not: its outcomes stay waiting (recording
        one twice is refused by the store), and claimed tasks that no worker holds are
        looked for now, and once more a little later."""
        self._ledger.unknown((outcome.task_id for outcome in outcomes), time.monotonic())
        self._reconcile()

    def _reconcile(self) -> None:
        """If a commit's fate was unknown: return to pending the tasks running under this
        instance that none of its workers holds (what that commit claimed, or failed to
        release), so they do not wait for this process to end."""
        if not self._ledger.audit_due(time.monotonic()):
            return
        failure = self._failure("looking for claimed tasks that no worker holds")
        try:
            with self._ledger.audit() as held:
                count = self._store.reconcile(self._identity.owner, held)
        except Exception as exc:
            failure.failed(exc)
            return
        failure.succeeded()
        if count:
            log.warning("returned %d task(s) to pending that a commit whose answer was lost "
                        "had claimed for this process", count)
            self._wake_all()

    def _failure(self, what: str) -> RepeatedFailure:
        """The log of the retried step ``what``, so that its failures are not logged in a
        tight loop (see ``failing``)."""
        failure = self._failures.get(what)
        if failure is None:
            failure = self._failures.setdefault(what, RepeatedFailure(what))
        return failure

    def _exchange(self, outcomes: list[Outcome], channel: str | None, limit: int) -> Exchange:
        """Record ``outcomes`` and claim up to ``limit`` tasks of ``channel`` (see
        ``Store.exchange``), holding what it claimed in the ledger. With hooks, the
        commit's events are handed over before any other commit of this process
        begins, so that they come in commit order."""
        if not self._signals.hooks.active:
            with self._ledger.call():
                exchange = self._store.exchange(self._identity.owner, outcomes, channel,
                                                limit, time.time())
                self._ledger.hold(task.id for task in exchange.claimed)
            return exchange
        with self._reporting:
            with self._ledger.call():
                exchange = self._store.exchange(self._identity.owner, outcomes, channel,
                                                limit, time.time(), report=True)
                self._ledger.hold(task.id for task in exchange.claimed)
            try:
                self._report(outcomes, exchange)
            except Exception:  # committed all the same: no hook may undo that
                log.exception("the events of a commit could not be handed to the hooks")
        return exchange

    def _report(self, outcomes: list[Outcome], exchange: Exchange) -> None:
        """Hand the hooks the events of a commit: each recorded run's, with the task as
        its outcome left it; keep the rows of the tasks claimed for their start."""
        hooks, events = self._signals.hooks, []
        rows = exchange.recorded_rows or {}
        for outcome in outcomes:
            row = rows.get(outcome.task_id)
            if row is not None:
                task = Task.from_row(row)
                event = outcome_event(str(task.status), outcome.decision.outcome)
                if hooks.wants(event, task.channel):
                    events.append((event, task))
        hooks.emit(events)
        self._claimed_rows.update(exchange.claimed_rows or {})

    def _report_start(self, task_id: int) -> None:
        """Hand the hooks the start of a run, with the task as its claim left it."""
        row = self._claimed_rows.pop(task_id, None)
        if row is not None:
            task = Task.from_row(row)
            if self._signals.hooks.wants("started", task.channel):
                self._signals.hooks.emit([("started", task)])

    def _give_back(self, hand: Hand) -> None:
        """Release the claimed, unstarted tasks to pending for any process to take.

        If the store refuses, they go back into the hand: still claimed here, run by
        this process's workers later or, once it has stopped, recovered like the
        tasks of any owner that is gone.
        """
        tasks = hand.empty()
        if not tasks:
            return
        ids = [task.id for task in tasks]
        for task_id in ids:
            self._claimed_rows.pop(task_id, None)
        failure = self._failure("releasing claimed tasks")
        try:
            with self._ledger.call():
                self._store.release(self._identity.owner, ids)
        except CommitUnknownError as exc:
            # Released or not, no worker here will run them: any still claimed are
            # returned by the audit.
            failure.failed(exc, "tasks still claimed will be returned to pending")
            self._ledger.drop(ids)
            self._commit_unknown([])
            return
        except Exception as exc:
            failure.failed(exc, f"{len(tasks)} claimed task(s) stay claimed here")
            hand.put(tasks)
            return
        failure.succeeded()
        self._ledger.drop(ids)

    # -- in the calling thread ------------------------------
    def enter_here(self) -> Seat:
        """Get ready to run tasks in the calling thread, without workers (see
        ``testing.drain``): this instance is registered as an owner; the seat to run on."""
        self._register()
        here = seat()
        here.store = self._store
        return here

    def claim_here(self, name: str) -> Claimed | None:
        """Commit the outcomes waiting and claim the next task of channel ``name``, in one
        transaction; the task, or None if none could be claimed."""
        outcomes = self._outbox.take()
        try:
            exchange = self._exchange(outcomes, name, 1)
        except BaseException:
            self._outbox.restore(outcomes)
            raise
        self._settled(outcomes, exchange)
        return exchange.claimed[0] if exchange.claimed else None

    def run_here(self, name: str, task: Claimed, here: Seat) -> None:
        """Run ``task``, claimed by ``claim_here``, in the calling thread; its outcome is
        committed with the next claim, or by ``leave_here``."""
        self._run(self._channels[name], task, here)

    def release_here(self, task: Claimed) -> None:
        """Give ``task``, claimed by ``claim_here``, back to pending unstarted."""
        with self._ledger.call():
            self._store.release(self._identity.owner, [task.id])
        self._ledger.drop([task.id])

    def leave_here(self, here: Seat) -> bool:
        """Done running tasks in the calling thread: commit the outcomes waiting (trying
        for up to a lease), then unregister; whether every outcome was committed."""
        here.store = None
        here.close_loop()
        try:
            return self.settle(time.monotonic() + self._settings.lease)
        finally:
            self._watchdog.stop()
            self._safe(lambda: self._store.unregister_owner(self._identity.owner), None)

    # -- housekeeping --------------------------------------
    def _housekeep(self) -> None:
        """Poll for outside changes and due tasks, heartbeat, recover the dead; until stopped."""
        poll = self._settings.poll_interval
        beat_every = self._settings.lease / 3
        sweep_every = min(1.0, beat_every)
        unwatch = self._safe(lambda: self._store.watch(self._committed, self._wants_commits),
                             _nothing)
        unwatch_added = self._safe(lambda: self._store.watch_added(self._added), _nothing)
        # A nudge counts from before the token is read: one that comes between the
        # read and the pause must cut the pause short, not wait for the next poll.
        seen = self._nudge.generation
        last_token = self._safe(self._store.change_token, 0)
        self._wake_all()  # for what was committed before the token was read
        looked = last_token  # the token when cancel requests were last looked for
        next_due = self._next_due()
        next_beat = next_sweep = next_progress = next_retention = next_fold = time.monotonic()
        while not (self._stopping.is_set() and (self._store_closed or not self._busy())):
            self._pause(poll, seen, next_due)
            if self._store_closed:
                break
            seen = self._nudge.generation
            self._flush(due_only=True)
            self._release_stale()
            token = self._safe(self._store.change_token, last_token)
            # Looked for only while tasks run here (or cancels wait to be matched); a change
            # seen while none ran (a cancel of a task claimed here and not started yet) is
            # looked at once one runs, and one whose look failed, at the next pass.
            if token != looked and (self._runs or self._cancels) \
                    and self._safe(self._look_for_cancels, False):
                looked = token
            if next_due is not None and next_due <= time.time():
                last_token = token
                self._wake_all()
                next_due = self._next_due()
            elif token != last_token:  # another connection committed
                last_token = token
                self._wake_runnable()
                next_due = self._next_due()
            now = time.monotonic()
            if now >= next_progress:
                self._safe(self._save_progress, None)
                next_progress = now + PROGRESS_EVERY
            if now >= next_beat:
                self._safe(self._register, None)
                next_beat = now + beat_every
            if now >= next_sweep:
                self._safe(self.recover_dead, 0)
                next_sweep = now + sweep_every
            if self._safe(self._ticker.tick, 0):
                self._wake_all()  # tasks of ticks: workers here look at once
            if self._sweeper is not None and now >= next_retention:
                self._safe(self._retain, None)
                next_retention = now + retention.EVERY
            if now >= next_fold:  # the finished-task counters' old minutes into their totals
                self._safe(lambda: self._store.fold_finished(counters.fold_before(time.time())), 0)
                next_fold = now + counters.FOLD_EVERY
        unwatch()
        unwatch_added()
        self._watchdog.stop()
        if not self._store_closed:
            self._flush(due_only=False)
            self._safe(lambda: self._store.unregister_owner(self._identity.owner), None)

    def _retain(self) -> None:
        """Delete finished tasks past the age kept for them, a few windows of ids at a time."""
        if self._sweeper is not None:
            deleted, _ = self._sweeper.step(time.time())
            if deleted:
                log.info("deleted %d finished task(s) past the age kept for them", deleted)

    def _look_for_cancels(self) -> bool:
        """Tell the runs here whose cancel another process (or thread) requested, and
        forget the requests noted here for tasks that no longer run here; True."""
        requested = self._store.cancel_requests(self._identity.owner)
        for task_id in requested:
            self.cancel_here(task_id)
        self._cancels.intersection_update(requested)
        return True

    def _save_progress(self) -> None:
        """Write the progress values that running tasks reported since the last write."""
        unsaved = self._progress.unsaved()
        if unsaved:
            self._store.save_progress(self._identity.owner, unsaved)

    def _pause(self, poll: float, seen: int, next_due: float | None) -> None:
        """Sleep for ``poll``, or less when a waiting outcome falls due sooner, a delayed
        task comes due at ``next_due`` (``time.time()``), or a nudge came after
        generation ``seen``. While stopping it still sleeps between passes (tasks may
        run on long after a stop that timed out); each worker that ends nudges it."""
        pause = poll
        due_in = self._outbox.due_in(time.monotonic())
        if due_in is not None:
            pause = min(pause, due_in)
        until_due = None if next_due is None else next_due - time.time()
        if until_due is not None and until_due > 0:  # (one past is woken for already)
            pause = min(pause, until_due)
        self._nudge.wait_past(seen, pause)

    def _release_stale(self) -> None:
        now = time.monotonic()
        for hand in list(self._hands.values()):
            if hand.stale(now):
                log.info("releasing claimed tasks that waited too long for a worker")
                self._give_back(hand)

    def _busy(self) -> bool:
        """Whether a worker has not ended yet (abandoned ones included)."""
        with self._lock:
            return bool(self._live)

    def _wake_all(self) -> None:
        for channel in list(self._channels.values()):
            channel.wake.notify(1)
        self._signals.recorded.notify()

    def _wants_commits(self) -> bool:
        """Whether a commit elsewhere would matter here now: at once if every worker of
        a channel here is idle (asleep, and not woken already: this process's own
        enqueue woke it, and the watch hears of that commit too), else at most every
        WATCH_GAP while tasks run here (a busy worker looks for tasks anyway and wakes
        the others of its channel for what it claims, and a drain's own commits must
        not keep the housekeeper, or the watch, busy)."""
        return any(channel.wake.idle >= channel.max_workers
                   for channel in list(self._channels.values())) or (
            bool(self._runs or self._cancels)
            and time.monotonic() - self._watched_at >= WATCH_GAP)

    def _committed(self) -> None:
        """The store told of a commit: a housekeeping pass, if one is wanted now."""
        if self._wants_commits():
            self._watched_at = time.monotonic()
            self._nudge.notify()

    def _added(self, name: str) -> None:
        """Another connection committed a task of channel ``name`` that can run now: wake
        one of its workers here, if it is ours (a worker between its look and its
        sleep sees the new generation, a busy one claims it after its task)."""
        channel = self._channels.get(name)
        if channel is not None:
            channel.wake.notify(1)

    def _wake_runnable(self) -> None:
        """Wake the waiters, and the idle workers of those channels that have a task to
        claim: a commit elsewhere (any commit, on a store shared with busy processes)
        must not send idle workers to take the write lock for nothing."""
        self._signals.recorded.notify()
        idle: list[str] = []
        for name, channel in list(self._channels.items()):
            if channel.wake.sleepers:
                idle.append(name)
            else:  # (a worker between its look and its sleep sees the new generation)
                channel.wake.notify(1)
        if idle:
            for name in self._safe(lambda: self._store.runnable(idle, time.time()), idle):
                self._channels[name].wake.notify(1)

    def _next_due(self) -> float | None:
        due: float | None = self._safe(lambda: self._store.next_due(list(self._channels)), None)
        return due

    def _register(self) -> None:
        """Heartbeat: announce this instance or renew its heartbeat, and note when it was
        written (a late one means a stall that held up everyone's, see ``Heartbeats``).

        Claims renew it too when it is half a lease old (the housekeeper is late), in
        their own transaction, so that no task is claimed under a heartbeat that says
        its owner is dead, nor under an owner given up for dead meanwhile.
        """
        me = self._identity
        began = time.time()
        self._store.register_owner(me.owner, me.host, me.pid, me.pid_start, began,
                                   list(self._channels), renew_after=self._settings.lease / 2)
        self._beats.wrote(began, time.time())

    def recover_dead(self) -> int:
        """Return the running tasks of dead instances to pending, and forget those
        instances (those that were running nothing too); how many tasks were returned.

        The store recovers an owner only if its heartbeat is still the one judged here:
        one that renewed since (it resumed after a freeze, say) keeps its tasks.
        """
        now = time.time()
        dead = [o for o in self._store.owners_to_judge() if self._is_dead(o, now)]
        if not dead:
            return 0
        names = ", ".join(str(o.owner) for o in dead)
        count = self._store.recover(dead,
                                    f"recovered: its worker ({names}) died while running it", now,
                                    self._settings.max_recoveries)
        if count:
            log.warning("recovered %d task(s) left running by dead worker(s) %s", count, names)
            self._wake_all()
        return count

    def _is_dead(self, owner: Owner, now: float) -> bool:
        return is_dead(owner, self._identity, self._settings.lease, now,
                       self._beats.silent_since(now))

    def _safe(self, work: Callable[[], Any], fallback: Any) -> Any:
        """``work()``, or ``fallback`` if it fails: a housekeeping step is tried again at
        the next pass, and its repeated failures are logged without flooding."""
        failure = self._failure(f"housekeeping step {_step_name(work)}")
        try:
            value = work()
        except Exception as exc:
            failure.failed(exc)
            return fallback
        failure.succeeded()
        return value


def _ids(task_ids: list[int], shown: int = 20) -> str:
    """Task ids for a log line: ``task 1, 2, 3``, the first ``shown`` of many and a count."""
    listed = ", ".join(str(task_id) for task_id in task_ids[:shown])
    more = len(task_ids) - shown
    return f"task {listed}" + (f" and {more} more" if more > 0 else "")


def _step_name(work: Callable[[], Any]) -> str:
    """What a housekeeping step is called in the log: its function's name or, for a
    lambda, the name of the store method it calls."""
    name = str(getattr(work, "__name__", "step"))
    code = getattr(work, "__code__", None)
    if name == "<lambda>" and code is not None and "_store" in code.co_names:
        names = code.co_names
        index = names.index("_store") + 1
        if index < len(names):
            return str(names[index])
    return name.lstrip("_")


_forks_seen = False
"""True in a process forked from another: only then can a worker find itself in a copy
of its parent (``os.getpid()`` is a system call, too dear to make for every task)."""


def _note_fork() -> None:
    global _forks_seen
    _forks_seen = True


os.register_at_fork(after_in_child=_note_fork)


def _leave_forked_child(task_id: int) -> None:
    """A task forked and its child came back here: the child must not go on as a worker
    of its parent (same identity, inherited connections), so it ends now."""
    log.error("task %d forked, and the child process %d returned from the task into the "
              "worker; a forked child must end with os._exit(), so it exits now (code 70)",
              task_id, os.getpid())
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(FORKED_CHILD_EXIT)


def _nothing() -> None:
    """Stands in for what stops a watch that could not start."""


def _traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _throttle(channel: Channel, exchange: Exchange) -> None:
    """After a claim: note whether the channel's limits held it back, and until when."""
    throttle = exchange.throttle
    if throttle is None:
        channel.full = False
    elif math.isinf(throttle):
        channel.full = True
    else:
        channel.not_before = time.monotonic() + min(throttle, FULL_RECHECK)


def _throttled_for(channel: Channel) -> float | None:
    """How long an idle worker of ``channel`` sleeps unless woken: until its rate limit
    lets a task start (at most FULL_RECHECK), FULL_RECHECK if it is at its
    ``max_running``, else until woken."""
    if channel.not_before:
        wait = channel.not_before - time.monotonic()
        if wait > 0:
            return wait
    return FULL_RECHECK if channel.full else None
