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

import asyncio
import inspect
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simplepyq import codec, policy
from simplepyq.batches import Hand, Outbox, Pace
from simplepyq.errors import DelayException
from simplepyq.identity import ProcessIdentity, is_dead
from simplepyq.policy import Backoff, Decision
from simplepyq.storage.base import Claimed, Outcome, Owner, Store

log = logging.getLogger("simplepyq")


class Wakeup:
    """A condition with a generation count, so that a wake between a look and a sleep is kept."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self, count: int | None = None) -> None:
        """Wake ``count`` sleepers (all when None)."""
        with self._cond:
            self._generation += 1
            if count is None:
                self._cond.notify_all()
            else:
                self._cond.notify(count)

    def wait_past(self, generation: int, timeout: float | None) -> None:
        """Sleep until a notify after ``generation`` was seen, or ``timeout`` passes."""
        with self._cond:
            if self._generation == generation:
                self._cond.wait(timeout)


@dataclass
class Channel:
    """A channel registered in this process: its function and how to run it."""

    name: str
    func: Callable[[Any], Any]
    max_workers: int
    backoff: Backoff
    wake: Wakeup = field(default_factory=Wakeup)
    pace: Pace = field(default_factory=Pace)
    removed: bool = False


@dataclass(frozen=True)
class Signals:
    """What a scheduler tells the threads waiting on it (``wait``, ``run_until_complete``)."""

    recorded: Wakeup = field(default_factory=Wakeup)
    """A task's outcome was recorded, or another process changed the store."""
    idle: Wakeup = field(default_factory=Wakeup)
    """A worker found nothing to claim: perhaps every task is finished."""


@dataclass(frozen=True)
class Settings:
    """Timing knobs of a scheduler; see ``SimplePyQ`` for their meaning."""

    poll_interval: float
    lease: float


class Scheduler:
    """One run of the workers, from ``start()`` to ``stop()``, under one owner identity."""

    def __init__(self, store: Store, channels: dict[str, Channel], settings: Settings,
                 signals: Signals) -> None:
        self._store = store
        self._channels = channels
        self._settings = settings
        self._signals = signals
        self._identity = ProcessIdentity.current()
        self._stopping = threading.Event()
        self._nudge = Wakeup()
        self._hands: dict[str, Hand] = {}
        self._outbox = Outbox()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
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
        """Start the workers of a channel added while running."""
        with self._lock:
            if not self._stopping.is_set():
                self._start_workers(channel)

    def stop(self, timeout: float | None) -> bool:
        """Let running tasks finish (up to ``timeout``) and start no new ones.

        Returns True when every worker has ended. Workers still busy after the
        timeout finish their task in the background, still heartbeating.
        """
        self._stopping.set()
        self._nudge.notify()
        for channel in list(self._channels.values()):
            channel.wake.notify()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            others = [w for w in self._workers if w is not threading.current_thread()]
        for worker in others:
            worker.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        if not self._busy():
            self._housekeeper.join()
        return not any(worker.is_alive() for worker in others)

    def _start_workers(self, channel: Channel) -> None:
        self._hands[channel.name] = Hand(channel.max_workers, channel.pace)
        for number in range(channel.max_workers):
            worker = threading.Thread(
                target=self._work, args=(channel,), daemon=True,
                name=f"simplepyq-{channel.name}-{number}",
            )
            self._workers.append(worker)
            worker.start()

    # -- the worker loop -----------------------------------
    def _work(self, channel: Channel) -> None:
        hand = self._hands[channel.name]
        loop: asyncio.AbstractEventLoop | None = None
        try:
            while not self._stopping.is_set() and not channel.removed:
                seen = channel.wake.generation
                try:
                    task = hand.take() or self._refill(channel, hand)
                except Exception:
                    log.exception("claiming tasks of channel %r failed; retrying", channel.name)
                    self._stopping.wait(self._settings.poll_interval)
                    continue
                if task is None:
                    self._signals.idle.notify()
                    channel.wake.wait_past(seen, timeout=None)
                    continue
                loop = self._run(channel, hand, task, loop)
        finally:
            self._give_back(hand)
            self._flush(due_only=False)
            if loop is not None:
                loop.close()

    def _refill(self, channel: Channel, hand: Hand) -> Claimed | None:
        """Commit the waiting outcomes and claim the channel's next batch, in one transaction."""
        with hand.refilling:
            task = hand.take()
            if task is not None:
                return task
            outcomes = self._outbox.take()
            limit = 0 if self._stopping.is_set() or channel.removed else hand.wanted()
            try:
                exchange = self._store.exchange(self._identity.owner, outcomes, channel.name,
                                                limit, time.time())
            except BaseException:
                self._outbox.restore(outcomes)
                raise
            self._settled(outcomes, exchange.dropped)
            hand.put(exchange.claimed)
            if len(exchange.claimed) > 1 and channel.max_workers > 1:
                # Other workers may be asleep: wake as many as there are tasks for.
                channel.wake.notify(min(len(exchange.claimed), channel.max_workers) - 1)
            return hand.take()

    def _run(self, channel: Channel, hand: Hand, task: Claimed,
             loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop | None:
        """Run one claimed task and keep its outcome for the next commit; never raises."""
        began = time.perf_counter()
        try:
            args = None if task.args is None else codec.unpack(task.args)
        except ValueError as exc:
            decision = policy.unrunnable(task.retries, f"args could not be decoded: {exc}",
                                         time.time())
        else:
            decision, loop = self._call(channel, task, args, loop)
        channel.pace.ran(time.perf_counter() - began)
        if self._outbox.add(Outcome(task.id, decision)):
            self._nudge.notify()  # the housekeeper commits it if no worker does in time
        return loop

    def _call(self, channel: Channel, task: Claimed, args: Any,
              loop: asyncio.AbstractEventLoop | None
              ) -> tuple[Decision, asyncio.AbstractEventLoop | None]:
        try:
            value = channel.func(args)
            if inspect.isawaitable(value):
                loop = loop or asyncio.new_event_loop()
                value = loop.run_until_complete(_awaited(value))
        except DelayException as delay:
            return policy.deferred(task.retries, delay.delay_seconds, time.time()), loop
        except BaseException as exc:  # the task's failure, whatever it is, is recorded
            log.warning("task %d of channel %r raised %s: %s",
                        task.id, channel.name, type(exc).__name__, exc)
            return policy.raised(task.retries, task.attempts, traceback.format_exc(),
                                 channel.backoff, time.time()), loop
        try:
            result = None if value is None else codec.pack(value, "the task's return value")
        except TypeError as exc:
            return policy.unrunnable(task.retries, str(exc), time.time()), loop
        return policy.succeeded(task.retries, result, time.time()), loop

    def _flush(self, due_only: bool) -> None:
        """Commit the waiting outcomes (only once the oldest has waited GROUP_WINDOW if
        ``due_only``). A failed commit keeps them waiting, to be tried again."""
        due_in = self._outbox.due_in(time.monotonic())
        if due_in is None or (due_only and due_in > 0):
            return
        outcomes = self._outbox.take()
        try:
            exchange = self._store.exchange(self._identity.owner, outcomes, None, 0, time.time())
        except Exception:
            self._outbox.restore(outcomes)
            log.exception("recording the outcomes of %d task(s) failed; they stay running "
                          "here and will be recorded on a later try", len(outcomes))
            return
        self._settled(outcomes, exchange.dropped)

    def _settled(self, outcomes: list[Outcome], dropped: list[int]) -> None:
        for task_id in dropped:
            log.warning("task %d was taken from this worker (recovered or removed); "
                        "its outcome is dropped", task_id)
        if outcomes:
            self._signals.recorded.notify()

    def _give_back(self, hand: Hand) -> None:
        """Release the claimed, unstarted tasks to pending for any process to take.

        If the store refuses, they go back into the hand: still claimed here, run by
        this process's workers later or, once it has stopped, recovered like the
        tasks of any owner that is gone.
        """
        tasks = hand.empty()
        if not tasks:
            return
        try:
            self._store.release(self._identity.owner, [task.id for task in tasks])
        except Exception:
            log.exception("releasing %d claimed task(s) failed; they stay claimed here",
                          len(tasks))
            hand.put(tasks)

    # -- housekeeping --------------------------------------
    def _housekeep(self) -> None:
        """Poll for outside changes and due tasks, heartbeat, recover the dead; until stopped."""
        poll = self._settings.poll_interval
        beat_every = self._settings.lease / 3
        sweep_every = min(1.0, beat_every)
        unwatch = self._safe(lambda: self._store.watch(self._nudge.notify), _nothing)
        # A nudge counts from before the token is read: one that comes between the
        # read and the pause must cut the pause short, not wait for the next poll.
        seen = self._nudge.generation
        last_token = self._safe(self._store.change_token, 0)
        next_due = self._next_due()
        next_beat = next_sweep = time.monotonic()
        while not (self._stopping.is_set() and not self._busy()):
            self._pause(poll, seen)
            seen = self._nudge.generation
            self._flush(due_only=True)
            self._release_stale()
            token = self._safe(self._store.change_token, last_token)
            if token != last_token or (next_due is not None and next_due <= time.time()):
                last_token = token
                self._wake_all()
                next_due = self._next_due()
            now = time.monotonic()
            if now >= next_beat:
                self._safe(self._register, None)
                next_beat = now + beat_every
            if now >= next_sweep:
                self._safe(self.recover_dead, 0)
                next_sweep = now + sweep_every
        unwatch()
        self._flush(due_only=False)
        self._safe(lambda: self._store.unregister_owner(self._identity.owner), None)

    def _pause(self, poll: float, seen: int) -> None:
        """Sleep for ``poll``, or less when a waiting outcome falls due sooner or a nudge
        came after generation ``seen``."""
        due_in = self._outbox.due_in(time.monotonic())
        if not self._stopping.is_set():
            self._nudge.wait_past(seen, poll if due_in is None else min(poll, due_in))

    def _release_stale(self) -> None:
        now = time.monotonic()
        for hand in list(self._hands.values()):
            if hand.stale(now):
                log.info("releasing claimed tasks that waited too long for a worker")
                self._give_back(hand)

    def _busy(self) -> bool:
        with self._lock:
            return any(worker.is_alive() for worker in self._workers)

    def _wake_all(self) -> None:
        for channel in list(self._channels.values()):
            channel.wake.notify(1)
        self._signals.recorded.notify()

    def _next_due(self) -> float | None:
        due: float | None = self._safe(lambda: self._store.next_due(list(self._channels)), None)
        return due

    def _register(self) -> None:
        me = self._identity
        self._store.register_owner(me.owner, me.host, me.pid, me.pid_start, time.time())

    def recover_dead(self) -> int:
        """Return the running tasks of dead instances to pending; how many were returned."""
        now = time.time()
        dead = [o for o in self._store.running_owners() if self._is_dead(o, now)]
        if not dead:
            return 0
        names = ", ".join(str(o.owner) for o in dead)
        count = self._store.recover([o.owner for o in dead],
                                    f"recovered: its worker ({names}) died while running it", now)
        if count:
            log.warning("recovered %d task(s) left running by dead worker(s) %s", count, names)
            self._wake_all()
        return count

    def _is_dead(self, owner: Owner, now: float) -> bool:
        return is_dead(owner, self._identity, self._settings.lease, now)

    @staticmethod
    def _safe(work: Callable[[], Any], fallback: Any) -> Any:
        try:
            return work()
        except Exception:
            log.exception("housekeeping step failed; will try again")
            return fallback


def _nothing() -> None:
    """Stands in for what stops a watch that could not start."""


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
