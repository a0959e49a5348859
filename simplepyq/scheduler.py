"""Running tasks: a pool of worker threads per channel, wake-ups, heartbeats and crash recovery.

A worker claims a task, runs it and records the outcome; what the outcome means
(retry, defer, fail) is decided in ``policy``. Idle workers sleep on a condition:
an enqueue in this process wakes them at once, and one housekeeping thread per
scheduler polls the store's cheap change counter to notice other processes' work
and delayed tasks coming due. It also heartbeats for this instance and returns
the running tasks of dead instances to pending.
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
from simplepyq.errors import DelayException
from simplepyq.identity import ProcessIdentity, is_alive_here
from simplepyq.policy import Backoff, Decision
from simplepyq.storage.base import Claimed, Owner, Store

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
        for number in range(channel.max_workers):
            worker = threading.Thread(
                target=self._work, args=(channel,), daemon=True,
                name=f"simplepyq-{channel.name}-{number}",
            )
            self._workers.append(worker)
            worker.start()

    # -- the worker loop -----------------------------------
    def _work(self, channel: Channel) -> None:
        loop: asyncio.AbstractEventLoop | None = None
        try:
            while not self._stopping.is_set() and not channel.removed:
                seen = channel.wake.generation
                claimed = self._claim(channel)
                if claimed is None:
                    self._signals.idle.notify()
                    channel.wake.wait_past(seen, timeout=None)
                    continue
                channel.wake.notify(1)  # more may be due: pass the turn on
                loop = self._run(channel, claimed, loop)
        finally:
            if loop is not None:
                loop.close()

    def _claim(self, channel: Channel) -> Claimed | None:
        try:
            claimed = self._store.claim(channel.name, self._identity.owner, 1, time.time())
        except Exception:
            log.exception("claiming a task of channel %r failed; retrying", channel.name)
            self._stopping.wait(self._settings.poll_interval)
            return None
        return claimed[0] if claimed else None

    def _run(self, channel: Channel, task: Claimed,
             loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop | None:
        """Run one claimed task and record what happened; never raises."""
        try:
            args = None if task.args is None else codec.unpack(task.args)
        except ValueError as exc:
            decision = policy.unrunnable(task.retries, f"args could not be decoded: {exc}",
                                         time.time())
        else:
            decision, loop = self._call(channel, task, args, loop)
        self._record(channel, task, decision)
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

    def _record(self, channel: Channel, task: Claimed, decision: Decision) -> None:
        pause = self._settings.poll_interval
        for attempt in range(1, 8):
            try:
                if not self._store.record(task.id, self._identity.owner, decision):
                    log.warning("task %d of channel %r was taken from this worker "
                                "(recovered or removed); its outcome is dropped",
                                task.id, channel.name)
                break
            except Exception:
                log.exception("recording the outcome of task %d failed (try %d)",
                              task.id, attempt)
                time.sleep(pause)
                pause *= 2
        else:
            log.error("task %d stays running until this process exits; it will then be "
                      "recovered and run again", task.id)
        self._signals.recorded.notify()

    # -- housekeeping --------------------------------------
    def _housekeep(self) -> None:
        """Poll for outside changes and due tasks, heartbeat, recover the dead; until stopped."""
        poll = self._settings.poll_interval
        beat_every = self._settings.lease / 3
        sweep_every = min(1.0, beat_every)
        last_token = self._safe(self._store.change_token, 0)
        next_due = self._next_due()
        next_beat = next_sweep = time.monotonic()
        while not (self._stopping.is_set() and not self._busy()):
            self._stopping.wait(poll)
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
        self._safe(lambda: self._store.unregister_owner(self._identity.owner), None)

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
        if owner.owner == self._identity.owner:
            return False
        if owner.pid is None:
            return True  # never registered, or gave itself up: nobody runs these
        if owner.host == self._identity.host:
            return not is_alive_here(owner.pid, owner.pid_start)
        return owner.heartbeat_at is None or owner.heartbeat_at < now - self._settings.lease

    @staticmethod
    def _safe(work: Callable[[], Any], fallback: Any) -> Any:
        try:
            return work()
        except Exception:
            log.exception("housekeeping step failed; will try again")
            return fallback


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
