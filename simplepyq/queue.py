"""SimplePyQ, the public facade: channels, enqueueing, inspection and maintenance.

It checks its arguments, encodes args and delegates: rows to the store, running
to the scheduler. Every method is safe to call from any thread, tasks included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from os import PathLike
from types import TracebackType
from typing import Any, TypeVar

from simplepyq import codec
from simplepyq.errors import UnknownChannelError, delay_from_now, seconds_from
from simplepyq.policy import Backoff
from simplepyq.progress import Progress
from simplepyq.scheduler import Channel, Scheduler, Settings, Signals
from simplepyq.storage import open_store
from simplepyq.task import Status, Task

F = TypeVar("F", bound=Callable[..., Any])


class SimplePyQ:
    """A task queue persisted in one store, shared by every process that opens it.

    The store is a SQLite file, or a PostgreSQL database named by a
    ``postgresql://`` URL (``?schema=NAME`` picks its schema; needs the
    ``postgres`` extra), for workers on several hosts.

    ``poll_interval`` bounds how long an idle worker takes to notice tasks that
    another process enqueued or that came due (a cheap change check, not a query).
    ``lease`` bounds how long tasks of a dead process on *another host* stay
    ``running`` before they are recovered; on this host a dead process is noticed
    at once. ``busy_timeout`` is how long a call waits for another writer.

    Every write is committed before the call that made it returns, and survives
    any crash of the process. On SQLite, ``power_safe=True`` also makes it survive a
    power cut or an OS crash, by flushing each commit to the disk (one fsync per
    commit, which bounds enqueues to the disk's fsync rate); PostgreSQL's
    durability is the server's setting.
    """

    def __init__(self, store_path: str | PathLike[str] = "simplepyq_tasks.db", *,
                 poll_interval: float = 0.05, lease: float = 30.0,
                 busy_timeout: float = 30.0, power_safe: bool = False) -> None:
        self._settings = Settings(
            poll_interval=_positive(poll_interval, "poll_interval"),
            lease=_positive(lease, "lease"),
        )
        if not isinstance(power_safe, bool):
            raise TypeError(f"power_safe must be True or False, not {power_safe!r}")
        self._store = open_store(store_path, _positive(busy_timeout, "busy_timeout"), power_safe)
        self.store_path = self._store.location
        self._channels: dict[str, Channel] = {}
        self._running = self._channels  # what the scheduler runs: all, or start()'s choice
        self._signals = Signals()
        self._scheduler: Scheduler | None = None
        self._draining: list[Scheduler] = []  # stopped, but with tasks still running
        self._lock = threading.RLock()

    # -- channels ------------------------------------------
    def add_channel(self, name: str, func: Callable[[Any], Any], max_workers: int = 1, *,
                    backoff: Backoff | float | timedelta = 0) -> None:
        """Bind ``func`` to channel ``name``, run by ``max_workers`` threads.

        ``backoff`` is the wait before a failed task's retry: seconds, a timedelta
        or a ``Backoff`` (fixed or exponential with a cap); 0 retries at once.
        A channel added while the scheduler runs starts its workers at once.
        """
        _check_name(name)
        if not callable(func):
            raise TypeError(f"func for channel {name!r} must be callable, not "
                            f"{type(func).__name__}")
        if not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise TypeError(f"max_workers must be an int, not {type(max_workers).__name__}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        channel = Channel(name, func, max_workers, Backoff.coerce(backoff))
        with self._lock:
            if name in self._channels:
                raise ValueError(f"Channel '{name}' already exists")
            self._store.register_channel(name, time.time())
            self._channels[name] = channel
            if self._scheduler is not None and (self._running is self._channels
                                                or name in self._running):
                self._running[name] = channel
                self._scheduler.add(channel)

    def channel(self, name: str, max_workers: int = 1, *,
                backoff: Backoff | float | timedelta = 0) -> Callable[[F], F]:
        """Decorator form of ``add_channel``: ``@q.channel("email", max_workers=2)``."""

        def register(func: F) -> F:
            self.add_channel(name, func, max_workers, backoff=backoff)
            return func

        return register

    def remove_channel(self, name: str) -> int:
        """Forget channel ``name`` here and in the store, deleting all its tasks.

        Works whether or not this process registered it; returns how many tasks
        were deleted. Its tasks running right now finish, but nothing is recorded.
        """
        _check_name(name)
        with self._lock:
            channel = self._channels.pop(name, None)
        if channel is not None:
            channel.removed = True
            channel.wake.notify()
        return self._store.remove_channel(name)

    # -- enqueueing ----------------------------------------
    def enqueue(self, channel: str, args: Any, retries: int = 0, *,
                delay: float | timedelta | None = None, run_at: datetime | None = None,
                priority: int = 0) -> int:
        """Store a task for ``channel`` and return its id.

        ``args`` is passed to the channel's function after a msgpack round trip.
        ``delay`` (seconds or timedelta) or ``run_at`` (a datetime; naive means
        local time) hold it back; higher ``priority`` runs first, FIFO among equals.
        The channel must be registered here or by a process sharing the store
        (checked in the insert's transaction), else ``ValueError`` lists the known
        ones. Raises ``TypeError`` for args msgpack cannot encode, writing nothing.
        """
        return self.enqueue_many(channel, [args], retries, delay=delay, run_at=run_at,
                                 priority=priority)[0]

    def enqueue_many(self, channel: str, args_list: Iterable[Any], retries: int = 0, *,
                     delay: float | timedelta | None = None, run_at: datetime | None = None,
                     priority: int = 0) -> list[int]:
        """Store one task per item of ``args_list`` in a single transaction; return the ids.

        All or nothing: if any item cannot be encoded, no task is written.
        """
        _check_name(channel)
        _check_count(retries, "retries")
        _check_int(priority, "priority")
        when = _run_at(delay, run_at)
        payloads = codec.pack_each(args_list,
                                   lambda index: f"args #{index} for channel {channel!r}")
        with self._lock:
            local = channel in self._channels
        ids = self._store.add(channel, payloads, retries, when, priority, time.time(),
                              register=local)
        self._wake(channel, len(ids))
        return ids

    # -- running -------------------------------------------
    def start(self, channels: Iterable[str] | None = None) -> None:
        """Start the workers of every registered channel, or only of ``channels``.

        Workers run in background threads; channels added later start too, unless
        ``channels`` chose others. Does nothing if the workers run already. A name
        not registered in this process raises ``UnknownChannelError`` (a
        ``ValueError``) and starts nothing.
        """
        with self._lock:
            if self._scheduler is not None:
                return
            self._running = self._channels if channels is None else self._chosen(channels)
            scheduler = Scheduler(self._store, self._running, self._settings, self._signals)
            scheduler.start()
            self._scheduler = scheduler

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the workers: running tasks finish (up to ``timeout`` s), no new one starts.

        Unstarted tasks stay pending in the store; ``start()`` resumes. Returns
        False if some task was still running when the timeout expired.
        """
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is None or scheduler.stop(timeout):
            return True
        with self._lock:
            self._draining.append(scheduler)
        return False

    def run_until_complete(self, timeout: float | None = None, *,
                           channels: Iterable[str] | None = None,
                           progress: bool | Progress = False) -> None:
        """Run until every task of this process's channels is done or failed, then stop.

        Waits out delays and retries. Tasks of channels not registered here are
        left alone; ``channels`` narrows the run further, as in ``start``. If
        ``timeout`` passes first, it stops starting tasks and raises
        ``TimeoutError`` at once; tasks still running finish in the background.
        ``progress=True`` shows live counts and tasks/s on stderr if it is a
        terminal, else logs each change at INFO; a ``Progress`` shows them its way.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        chosen = None if channels is None else list(self._chosen(channels))
        shown = progress if isinstance(progress, Progress) else (
            Progress.auto(self.stats, chosen or self.local_channels()) if progress else None)
        if shown is not None:
            shown.refresh()  # the counts before this run starts anything
        self.start(chosen)
        try:
            while True:
                seen = self._signals.idle.generation
                with self._lock:
                    names = list(self._running)
                if shown is not None:
                    shown.tick()
                if not self._store.has_unfinished(names):
                    return
                remaining = _remaining(deadline)
                if remaining == 0:
                    self.stop(timeout=0)
                    raise TimeoutError(f"tasks of channels {', '.join(names)} were still "
                                       f"unfinished after {timeout}s")
                self._signals.idle.wait_past(seen, _shorter(remaining,
                                                            self._settings.poll_interval))
        finally:
            self.stop()
            if shown is not None:
                shown.close()

    # -- inspection ----------------------------------------
    def get_task(self, task_id: int) -> Task | None:
        """The task with this id as stored now, or None if there is none."""
        _check_int(task_id, "task_id")
        row = self._store.get(task_id)
        return None if row is None else Task.from_row(row)

    def wait(self, task_id: int, timeout: float | None = None) -> Task:
        """Block until the task is done or failed and return it.

        Works in any process, running workers or not. Raises ``TimeoutError`` when
        ``timeout`` passes, ``ValueError`` if the task does not exist (or is deleted).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        unwatch = self._store.watch(self._signals.recorded.notify)
        try:
            return self._wait(task_id, timeout, deadline)
        finally:
            unwatch()

    def _wait(self, task_id: int, timeout: float | None, deadline: float | None) -> Task:
        token: int | None = None
        task: Task | None = None
        while True:
            seen = self._signals.recorded.generation
            current = self._store.change_token()
            if current != token:
                token = current
                task = self.get_task(task_id)
                if task is None:
                    raise ValueError(f"there is no task with id {task_id}")
                if task.finished:
                    return task
            remaining = _remaining(deadline)
            if remaining == 0:
                status = "unfinished" if task is None else task.status
                raise TimeoutError(f"task {task_id} was still {status} after {timeout}s")
            self._signals.recorded.wait_past(seen, _shorter(remaining,
                                                            self._settings.poll_interval))

    def tasks(self, channel: str | None = None, status: Status | str | None = None,
              limit: int = 100) -> list[Task]:
        """Stored tasks, oldest first, optionally of one channel and/or one status."""
        if channel is not None:
            _check_name(channel)
        if status is not None and status not in {s.value for s in Status}:
            raise ValueError(f"unknown status {status!r}; statuses are "
                             f"{', '.join(s.value for s in Status)}")
        _check_count(limit, "limit")
        value = None if status is None else Status(status).value
        return [Task.from_row(row) for row in self._store.list(channel, value, limit)]

    def stats(self) -> dict[str, dict[str, int]]:
        """Task counts per channel and status, with every status present (0 if none).

        Channels registered here or by another process sharing the store are included.
        """
        counts = self._store.stats()
        names = set(counts) | set(self.known_channels())
        return {name: {s.value: counts.get(name, {}).get(s.value, 0) for s in Status}
                for name in sorted(names)}

    def local_channels(self) -> list[str]:
        """The channels registered in this process (those ``start`` runs), sorted."""
        with self._lock:
            return sorted(self._channels)

    def known_channels(self) -> list[str]:
        """The channels registered here or by any process sharing the store, sorted.

        Tasks of a channel missing from this list have no consumer: no process
        ever registered it (e.g. rows written by 0.1.3), so nothing will run them.
        """
        with self._lock:
            here = set(self._channels)
        return sorted(self._store.known_channels() | here)

    def pending_since(self) -> dict[str, datetime | None]:
        """Per channel with pending tasks, when the longest-waiting one became due.

        That is the end of its delay if it had one, else its enqueue time (aware
        UTC). Far in the past means nobody is working on that channel. None means
        unknown: some pending task of the channel has no enqueue time (rows written
        by 0.1.3 have none), so it may have waited for any length of time. A
        channel with no pending task is absent.
        """
        return {name: None if since is None else datetime.fromtimestamp(since, tz=timezone.utc)
                for name, since in self._store.pending_since().items()}

    # -- maintenance ---------------------------------------
    def clear_failed(self, channel: str | None = None) -> int:
        """Delete failed tasks (of one channel, or all); return how many."""
        if channel is not None:
            _check_name(channel)
        return self._store.clear_failed(channel)

    def requeue_failed(self, channel: str | None = None, retries: int | None = None) -> int:
        """Make failed tasks pending again, with ``retries`` if given; return how many."""
        if channel is not None:
            _check_name(channel)
        if retries is not None:
            _check_count(retries, "retries")
        count = self._store.requeue_failed(channel, retries)
        for name in [channel] if channel is not None else list(self._channels):
            self._wake(name, count)
        return count

    def purge(self, older_than: float | timedelta, channel: str | None = None) -> int:
        """Delete done and failed tasks that finished more than ``older_than`` ago.

        ``older_than`` is seconds or a timedelta; returns how many were deleted.
        """
        age = seconds_from(older_than, "older_than")
        if channel is not None:
            _check_name(channel)
        return self._store.purge(channel, time.time() - age)

    # -- closing -------------------------------------------
    def close(self) -> None:
        """Stop the workers, wait for every running task to end, and release the store."""
        self.stop()
        with self._lock:
            draining, self._draining = self._draining, []
        for scheduler in draining:
            scheduler.stop(None)
        self._store.close()

    def __enter__(self) -> SimplePyQ:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- helpers -------------------------------------------
    def _chosen(self, names: Iterable[str]) -> dict[str, Channel]:
        if isinstance(names, str):
            raise TypeError(f"channels must be a list of names, not the str {names!r}")
        chosen: dict[str, Channel] = {}
        for name in names:
            if name not in self._channels:
                raise UnknownChannelError(name, set(self._channels))
            chosen[name] = self._channels[name]
        return chosen

    def _wake(self, name: str, count: int) -> None:
        with self._lock:
            channel = self._channels.get(name)
        if channel is not None and count:
            channel.wake.notify(count)


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"a channel name must be a str, not {type(name).__name__}")
    if not name.strip():
        raise ValueError(f"a channel name must not be empty, got {name!r}")


def _check_int(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{name} must fit in 64 bits, got {value}")


def _check_count(value: object, name: str) -> None:
    _check_int(value, name)
    assert isinstance(value, int)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _positive(value: float, name: str) -> float:
    seconds = seconds_from(value, name)
    if seconds == 0:
        raise ValueError(f"{name} must be more than 0 seconds")
    return seconds


def _run_at(delay: float | timedelta | None, run_at: datetime | None) -> float | None:
    """The epoch time a new task becomes due, or None for now."""
    if delay is not None and run_at is not None:
        raise ValueError("give either delay or run_at, not both")
    if delay is not None:
        return time.time() + delay_from_now(delay, "delay")
    if run_at is None:
        return None
    if not isinstance(run_at, datetime):
        raise TypeError(f"run_at must be a datetime, not {type(run_at).__name__}")
    return run_at.timestamp()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _shorter(remaining: float | None, interval: float) -> float:
    return interval if remaining is None else min(remaining, interval)
