"""SimplePyQ, the public facade: channels, enqueueing, inspection and maintenance.

It checks its arguments, encodes args and delegates: rows to the store, running
to the scheduler. Every method is safe to call from any thread, tasks included.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from os import PathLike
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

from simplepyq import aio, codec, counters, periodic, testing, workflows
from simplepyq.counters import FinishedMinute
from simplepyq.errors import (
    StoreError,
    UnknownChannelError,
    check_timeout,
    delay_from_now,
    seconds_from,
)
from simplepyq.identity import ProcessIdentity, is_dead
from simplepyq.limits import Limits, Rate, check_max_running, check_time_limit, parse_rate
from simplepyq.periodic import Periodic, Spec
from simplepyq.policy import Backoff
from simplepyq.progress import Progress
from simplepyq.retention import Retention, Sweeper
from simplepyq.runs import running_in
from simplepyq.scheduler import Channel, Scheduler, Settings, Signals
from simplepyq.storage import MEMORY, open_store, store_location
from simplepyq.storage.base import LimitChange
from simplepyq.storage.dependents import NewTask
from simplepyq.task import Status, Task, TaskId
from simplepyq.workers import Worker, workers_of
from simplepyq.workflows import Links, Step, TaskFunction, Workflow, WorkflowStatus

T = TypeVar("T")
log = logging.getLogger("simplepyq")
UNCHANGED: Any = object()
"""``set_limits``' default: leave this limit as it is."""

_OPEN: weakref.WeakSet[SimplePyQ] = weakref.WeakSet()
"""The queues of this process not closed yet: their workers stop at exit."""


class SimplePyQ:
    """A task queue persisted in one store, shared by every process that opens it.

    The store is a SQLite file, or a PostgreSQL database named by a
    ``postgresql://`` URL (``?schema=NAME`` picks its schema; needs the
    ``postgres`` extra), for workers on several hosts. ``":memory:"`` keeps the
    tasks in this process's memory, shared by its threads and gone once the queue
    is closed: for tests and scripts that need no second process.

    ``eager=True`` runs each task in the thread that enqueues it, before
    ``enqueue`` returns (see ``drain``, and docs/howto/testing.rst); no worker starts.

    ``poll_interval`` bounds how long an idle worker takes to notice tasks that
    another process enqueued, where nothing wakes it sooner (a cheap change check,
    not a query): PostgreSQL's NOTIFY and, on Linux, a watch on a SQLite file's log
    wake it within milliseconds.
    ``lease`` bounds how long tasks of a dead process on *another host* stay
    ``running`` before they are recovered; on this host a dead process is noticed
    at once. ``busy_timeout`` is how long a call waits for another writer.

    Every write is committed before the call that made it returns, and survives
    any crash of the process. On SQLite, ``power_safe=True`` also makes it survive a
    power cut or an OS crash, by flushing each commit to the disk (one fsync per
    commit, which bounds enqueues to the disk's fsync rate); PostgreSQL's
    durability is the server's setting.

    A task whose worker's process dies while running it is run again by the next
    process, up to ``max_recoveries`` times in a row: then it is taken to be what
    kills its workers (a segfault, an OOM kill) and fails, so that it cannot keep
    the queue in a crash loop. A recovered task runs alone in its process, and
    after its first recovery only deaths while it ran alone count, so that only
    the task that kills a process is blamed.

    It is a context manager: ``with SimplePyQ(...) as q:`` closes it on the way out
    (see ``close``).
    """

    def __init__(self, store_path: str | PathLike[str] = "simplepyq_tasks.db", *,
                 poll_interval: float = 0.05, lease: float = 30.0,
                 busy_timeout: float = 30.0, power_safe: bool = False,
                 max_recoveries: int = 3,
                 keep_done: float | timedelta | None = None,
                 keep_failed: float | timedelta | None = None,
                 eager: bool = False) -> None:
        store_path = store_location(store_path)  # None, bytes, mysql://: refused first
        self._settings = Settings(
            poll_interval=_positive(poll_interval, "poll_interval"),
            lease=_positive(lease, "lease"),
            max_recoveries=_at_least_one(max_recoveries, "max_recoveries"),
            retention=_retention(keep_done, keep_failed),
        )
        if not isinstance(power_safe, bool):
            raise TypeError(f"power_safe must be True or False, not {power_safe!r}")
        self._eager = _checked_eager(eager)
        self._store = open_store(store_path, _positive(busy_timeout, "busy_timeout"), power_safe)
        self.store_path = self._store.location
        """Where the store is: the file's path, or the URL with its password hidden."""
        self._channels: dict[str, Channel] = {}
        self._running = self._channels  # what the scheduler runs: all, or start()'s choice
        self._signals = Signals()
        self._scheduler: Scheduler | None = None
        self._draining: list[Scheduler] = []  # stopped, but with tasks still running
        self._offload = aio.Offloader()
        self._periodics: dict[str, tuple[str, str, bytes | None]] = {}
        """The schedules added in this process: name -> (channel, spec, args)."""
        self._lock = threading.RLock()
        self._pid = os.getpid()
        _OPEN.add(self)

    @property
    def eager(self) -> bool:
        """Whether ``enqueue`` runs each task before it returns (see the constructor);
        may be switched while no worker runs."""
        return self._eager

    @eager.setter
    def eager(self, value: bool) -> None:
        with self._lock:
            if value and self._scheduler is not None:
                raise RuntimeError("the queue's workers are running: stop() them before "
                                   "making it eager")
            self._eager = _checked_eager(value)

    # -- channels ------------------------------------------
    def add_channel(self, name: str, func: Callable[[Any], Any], max_workers: int = 1, *,
                    backoff: Backoff | float | timedelta = 0,
                    time_limit: float | timedelta | None = None,
                    rate_limit: str | Rate | None = None,
                    max_running: int | None = None) -> None:
        """Bind ``func`` to channel ``name``, run by ``max_workers`` threads.

        ``backoff`` is the wait before a failed task's retry: seconds, a timedelta
        or a ``Backoff`` (fixed or exponential with a cap); 0 retries at once.
        ``time_limit`` (seconds or a timedelta) bounds each run of its tasks in this
        process (a task's own ``time_limit`` comes first): see docs/howto/cancellation.rst.
        ``rate_limit`` (``"10/s"``, also ``/m``, ``/h``, ``/d``) and ``max_running``
        are stored on the channel and obeyed by every process sharing the store
        (see ``set_limits``); given here, they are set as the channel registers,
        and left as stored when not given.
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
        limit = None if time_limit is None else check_time_limit(time_limit)
        change = _limit_change(UNCHANGED if rate_limit is None else rate_limit,
                               UNCHANGED if max_running is None else max_running)
        channel = Channel(name, func, max_workers, Backoff.coerce(backoff), time_limit=limit)
        with self._lock:
            if name in self._channels:
                raise ValueError(f"Channel '{name}' already exists")
            self._store.register_channel(name, time.time(), change)
            self._channels[name] = channel
            if self._scheduler is not None and (self._running is self._channels
                                                or name in self._running):
                self._running[name] = channel
                self._scheduler.add(channel)

    def channel(self, name: str, max_workers: int = 1, *,
                backoff: Backoff | float | timedelta = 0,
                time_limit: float | timedelta | None = None,
                rate_limit: str | Rate | None = None,
                max_running: int | None = None) -> Callable[[Callable[[Any], Any]], TaskFunction]:
        """Decorator form of ``add_channel``: ``@q.channel("email", max_workers=2)``.

        The decorated name is a ``TaskFunction``: calling it calls the function as it
        was, and ``.enqueue(args, ...)`` and ``.step(args, ...)`` make its tasks.
        """

        def register(func: Callable[[Any], Any]) -> TaskFunction:
            self.add_channel(name, func, max_workers, backoff=backoff, time_limit=time_limit,
                             rate_limit=rate_limit, max_running=max_running)
            return TaskFunction(self, name, func)

        return register

    def set_limits(self, channel: str, *, rate_limit: str | Rate | None = UNCHANGED,
                   max_running: int | None = UNCHANGED) -> Limits:
        """Change the limits of ``channel`` in the store, for every process at once; the
        limits it has now. A limit not given stays as it is; None removes it.

        ``rate_limit="10/s"``: in any window of that length, at most that many of its
        tasks start, counted across every process and host sharing the store.
        ``max_running=3``: at most that many of its tasks run at once, anywhere.
        Both are enforced in the transaction that claims tasks; a task held back
        stays pending and spends no retry. The channel must be registered.
        """
        _check_name(channel)
        limits = self._store.set_limits(channel, _limit_change(rate_limit, max_running))
        with self._lock:
            local = self._channels.get(channel)
        if local is not None:  # a limit raised or lifted: workers here look again at once
            local.not_before, local.full = 0.0, False
            local.wake.notify()
        return limits

    def limits(self, channel: str) -> Limits:
        """The limits stored for ``channel`` (``UnknownChannelError`` if not registered)."""
        _check_name(channel)
        found = self.all_limits()
        if channel not in found:
            raise UnknownChannelError(channel, set(found))
        return found[channel]

    def all_limits(self) -> dict[str, Limits]:
        """The limits of every channel registered in the store, by name, in one read."""
        return self._store.limits()

    def declare(self, *names: str) -> None:
        """Make channel names known to the store without binding functions to them.

        For a process that only enqueues (a web app, say) on a store whose workers
        run elsewhere and may not have started yet: enqueueing to a channel no
        process declared or added is refused as a likely typo.
        """
        for name in names:
            _check_name(name)
        now = time.time()
        for name in names:
            self._store.register_channel(name, now)

    @property
    def channels(self) -> Mapping[str, tuple[Callable[[Any], Any], int]]:
        """The channels added in this process: name -> (function, max_workers), read-only
        (as simplepyq 0.1.3 exposed them)."""
        with self._lock:
            return MappingProxyType({name: (channel.func, channel.max_workers)
                                     for name, channel in self._channels.items()})

    @property
    def running(self) -> bool:
        """Whether this process's workers run (``start`` was called and not ``stop``)."""
        with self._lock:
            return self._scheduler is not None

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
                priority: int = 0, key: str | None = None,
                time_limit: float | timedelta | None = None,
                depends_on: Iterable[int] | None = None,
                on_failure: Step | None = None) -> TaskId:
        """Store a task for ``channel`` and return its id.

        ``args`` is passed to the channel's function after a msgpack round trip.
        ``delay`` (seconds or timedelta) or ``run_at`` (a datetime; naive means
        local time) hold it back; higher ``priority`` runs first, FIFO among equals.
        ``key`` makes it unique: while an unfinished (pending, delayed, running or
        blocked) task of the channel holds the key, nothing is written and that task's id is
        returned, with ``created`` False (the id is an ``int`` that says so).
        ``time_limit`` bounds its runs, in place of its channel's.
        The channel must be registered here or by a process sharing the store
        (checked in the insert's transaction), else ``ValueError`` lists the known
        ones. Raises ``TypeError`` for args msgpack cannot encode (or could not read
        back as they were), writing nothing.

        ``depends_on`` (task ids) stores it ``blocked`` until each of those tasks is
        done; if one fails or is cancelled, it is cancelled (see ``Step`` for the
        rest of workflows). ``on_failure`` (a ``Step``) is stored with it, to run if
        it fails or is cancelled; it is cancelled if the task succeeds.
        """
        if depends_on is not None or on_failure is not None:
            when = _run_at(delay, run_at)
            step = Step(channel, args, retries, priority=priority, key=key,
                        delay=None if when is None else max(when - time.time(), 0.0),
                        time_limit=time_limit, on_failure=on_failure)
            upstreams = _checked_upstreams(depends_on)
            return self._add_graph(workflows.after_tasks(step, upstreams,
                                                         self._check_step))[0]
        return self._add(channel, [args], retries, delay, run_at, priority,
                         None if key is None else [key], time_limit)[0]

    def enqueue_many(self, channel: str, args_list: Iterable[Any], retries: int = 0, *,
                     delay: float | timedelta | None = None, run_at: datetime | None = None,
                     priority: int = 0, keys: Iterable[str | None] | None = None,
                     time_limit: float | timedelta | None = None) -> list[TaskId]:
        """Store one task per item of ``args_list`` in a single transaction; return the ids.

        ``keys``, if given, has one key (or None) per item, as ``enqueue``'s ``key``;
        an item whose key is held, by an earlier item of the list too, returns the
        holder's id with ``created`` False. All or nothing: if any item cannot be
        encoded, no task is written.
        """
        _check_args_list(args_list)
        return self._add(channel, args_list, retries, delay, run_at, priority, keys,
                         time_limit)

    def _add(self, channel: str, args_list: Iterable[Any], retries: int,
             delay: float | timedelta | None, run_at: datetime | None, priority: int,
             keys: Iterable[str | None] | None,
             time_limit: float | timedelta | None) -> list[TaskId]:
        """Check, encode and store tasks of ``channel`` (``enqueue`` and ``enqueue_many``)."""
        _check_name(channel)
        _check_count(retries, "retries")
        _check_int(priority, "priority")
        when = _run_at(delay, run_at)
        limit = None if time_limit is None else check_time_limit(time_limit)
        payloads = codec.pack_each(args_list,
                                   lambda index: f"args #{index} for channel {channel!r}")
        key_list = None if keys is None else _checked_keys(keys, len(payloads))
        with self._lock:
            local = channel in self._channels
        ids = self._store.add(channel, payloads, retries, when, priority, time.time(),
                              register=local, time_limit=limit, keys=key_list)
        self._wake(channel, len(ids))
        return ids

    def drain(self, channels: Iterable[str] | None = None, *, due: bool = False,
              max_runs: int = testing.MAX_RUNS) -> list[Task]:
        """Run every runnable task of this process's channels (or of ``channels``) in the
        calling thread, one at a time, until none is left; the tasks it ran, as they
        are now, in the order they first ran. For tests: deterministic, no threads.
        Each next task is the first of the first channel (in the order they were
        added) that has one: highest priority, then first enqueued.

        Tasks run as workers run them (args through msgpack, outcome, hooks and
        dependents recorded), tasks enqueued by them and tasks their ends release
        included. Delayed tasks (a delay, a retry's backoff, ``DelayException``) run
        only with ``due=True``, which treats them as due at once. Rate limits are
        obeyed: a task they hold back stays pending. Past ``max_runs`` runs it stops
        and raises ``RuntimeError`` (a task that defers itself without end). Refused
        (``RuntimeError``) while this queue's workers run.
        """
        _check_count(max_runs, "max_runs")
        if not isinstance(due, bool):
            raise TypeError(f"due must be True or False, not {due!r}")
        with self._lock:
            if self._scheduler is not None:
                raise RuntimeError("drain() runs tasks in the calling thread, but this "
                                   "queue's workers are running: stop() them first")
            chosen = dict(self._channels if channels is None else self._chosen(channels))
        scheduler = Scheduler(self._store, chosen, self._settings, self._signals)
        try:
            runs = testing.drain(scheduler, self._store, list(chosen), due, max_runs)
        finally:
            self._signals.hooks.drain(None)  # the events of what ran, handled
        tasks = (self.get_task(task_id) for task_id in dict.fromkeys(runs))
        return [task for task in tasks if task is not None]

    def _run_eagerly(self) -> None:
        """Eager mode: run what an enqueue made runnable, unless the caller is a task of
        this queue (then the drain running it runs what it enqueued, once it ends)."""
        if running_in(self._store) is None:
            self.drain()

    # -- task control --------------------------------------
    def cancel(self, task_id: int) -> bool:
        """Cancel a task; whether it was unfinished.

        A pending or delayed task becomes ``cancelled`` at once and never runs. A
        running one is asked to stop: an ``async def`` task is cancelled at its next
        ``await``; a sync task sees ``current_task().cancelled()`` turn True (its
        process learns of it within milliseconds, or a poll interval where nothing
        wakes it, see the constructor). If that run then ends by raising, the task is
        ``cancelled``, never retried; if it returns, it is ``done``. A task already
        finished is left as it is (False). ``ValueError`` if there is no such task.
        """
        _check_int(task_id, "task_id")
        found = self._store.cancel(task_id, time.time())
        if found is None:
            raise ValueError(f"there is no task with id {task_id}")
        changed, status = found
        if changed and status == Status.RUNNING.value:
            with self._lock:
                schedulers = [*self._draining, *([self._scheduler] if self._scheduler else [])]
            for scheduler in schedulers:
                scheduler.cancel_here(task_id)
        return changed

    # -- retention -----------------------------------------
    def set_retention(self, *, keep_done: float | timedelta | None = UNCHANGED,
                      keep_failed: float | timedelta | None = UNCHANGED) -> None:
        """Keep done tasks for ``keep_done``, and failed and cancelled ones for
        ``keep_failed`` (seconds or timedelta; None: forever, the default; not given:
        as it was), as the constructor's keywords of the same names do; from the next
        ``start()``.

        While workers run, their process deletes older finished tasks, a few
        thousand ids a look every few seconds, in transactions of at most 500 rows, so
        that claims never wait long; unfinished tasks, and a done task whose result a
        blocked task will receive, are never deleted.
        """
        kept = self._settings.retention
        self._settings = replace(self._settings, retention=_retention(
            kept.keep_done if keep_done is UNCHANGED else keep_done,
            kept.keep_failed if keep_failed is UNCHANGED else keep_failed))

    def apply_retention(self) -> int:
        """Delete, now, every finished task past the age kept for it (see
        ``set_retention``), walking the whole table; how many. ``ValueError`` if this
        queue keeps finished tasks forever."""
        kept = self._settings.retention
        if not kept.active:
            raise ValueError("this queue keeps finished tasks forever: give keep_done or "
                             "keep_failed first")
        return Sweeper(self._store, kept).sweep(time.time())

    # -- periodic tasks ------------------------------------
    def add_periodic(self, name: str, channel: str, *, cron: str | None = None,
                     every: float | timedelta | None = None, args: Any = None,
                     tz: str | None = None, retries: int = 0, priority: int = 0,
                     overlap: bool = True, catch_up: str = "latest",
                     max_delay: float | timedelta | None = None,
                     time_limit: float | timedelta | None = None) -> None:
        """Enqueue a task of ``channel`` with ``args`` at every tick of ``cron`` (five
        fields, names, ranges, steps, lists, ``@hourly`` to ``@yearly``; in the IANA
        zone ``tz``, UTC by default) or ``every`` (seconds or timedelta).

        Stored in the store by ``name``, so that every process and the command line
        see it; any process running workers enqueues each tick as it comes due, and
        across all of them exactly one task per tick. Declaring it again as it is
        keeps its next tick; declaring it differently replaces it. After downtime,
        ``catch_up="latest"`` runs only the most recent missed tick, if it is at most
        ``max_delay`` late (default: one period, at most an hour); ``"all"`` runs
        every missed tick (the 100 most recent); ``"none"`` runs none. With
        ``overlap=False`` a tick is skipped while the previous tick's task is
        unfinished. ``current_task().scheduled_at`` tells a task its tick.
        """
        _check_name(name)
        _check_name(channel)
        _check_count(retries, "retries")
        _check_int(priority, "priority")
        if not isinstance(overlap, bool):
            raise TypeError(f"overlap must be True or False, not {overlap!r}")
        spec = Spec(cron=cron, every=None if every is None else seconds_from(every, "every"),
                    tz=tz or "UTC", catch_up=catch_up,
                    max_delay=None if max_delay is None else seconds_from(max_delay,
                                                                          "max_delay"),
                    retries=retries, priority=priority, overlap=overlap,
                    time_limit=None if time_limit is None else check_time_limit(time_limit))
        text = spec.check().text()
        payload = None if args is None else codec.pack(args, f"the args of schedule {name!r}")
        with self._lock:
            declared = self._periodics.get(name)
            if declared is not None and declared != (channel, text, payload):
                raise ValueError(f"schedule {name!r} was added differently in this process "
                                 "already; remove_periodic() it first")
            local = channel in self._channels
        stored = self._store.schedule(name)
        if stored is None or (stored[0], stored[1], stored[2]) != (channel, text, payload):
            now = time.time()
            self._store.put_schedule(name, channel, text, payload,
                                     spec.after(now, round(now, 6)), local, now)
        with self._lock:
            self._periodics[name] = (channel, text, payload)

    def remove_periodic(self, name: str) -> bool:
        """Forget a schedule, in the store; whether there was one. Tasks it enqueued stay."""
        _check_name(name)
        with self._lock:
            self._periodics.pop(name, None)
        return self._store.remove_schedule(name)

    def periodics(self) -> list[Periodic]:
        """Every stored schedule: its next run, its last tick, and that tick's task."""
        return [periodic.listed(row) for row in self._store.schedules()]

    # -- hooks ---------------------------------------------
    def on(self, event: str, handler: Callable[[Task], Any], channel: str | None = None) -> None:
        """Call ``handler(task)`` on ``event`` of the tasks this process's workers run (of
        ``channel`` only, if given): ``started``, ``succeeded``, ``retrying``,
        ``deferred``, ``failed`` (once no retry is left) or ``cancelled``.

        ``task`` is the task as the transaction that made the event left it (its
        status, result, error and attempts then). Handlers run after that commit, on
        one thread of this queue, in commit order, so workers never wait for them;
        one that raises is logged and changes nothing. They are at most once: events
        not handled yet when the process dies are lost. A reaction that must happen
        is a follow-up step (``on_failure``), stored with the task.
        """
        if channel is not None:
            _check_name(channel)
        self._signals.hooks.add(event, handler, channel)

    # -- workflows -----------------------------------------
    def chain(self, *steps: Step) -> Workflow:
        """Store ``steps`` at once (all or nothing), each waiting for the one before: it
        runs once that one is done, with its result as args if it was given none. If
        a step fails or is cancelled, the steps after it are cancelled."""
        tasks = workflows.chain_tasks(steps, self._check_step)
        return self._workflow_of(self._add_graph(tasks), len(steps))

    def group(self, steps: Iterable[Step], then: Step | None = None) -> Workflow:
        """Store ``steps`` at once (all or nothing), to run independently, and ``then``,
        which waits for all of them: it runs once every one is done, with the list of
        their results, in order, as args if it was given none (with ``then``'s
        ``always=True``: once every one has finished, with their outcomes). The
        handle's ``task_ids`` are the members', then ``then``'s."""
        members = list(steps)
        tasks = workflows.group_tasks(members, then, self._check_step)
        return self._workflow_of(self._add_graph(tasks),
                                 len(members) + (then is not None))

    def workflow(self, workflow_id: int) -> WorkflowStatus:
        """How far a workflow has come: its tasks' counts by status. ``ValueError`` if
        no task belongs to it."""
        _check_int(workflow_id, "workflow_id")
        counts = self._store.workflow_counts(workflow_id)
        if not counts:
            raise ValueError(f"there is no workflow with id {workflow_id}")
        return WorkflowStatus(workflow_id, MappingProxyType(counts))

    def workflow_task_ids(self, workflow_id: int) -> list[TaskId]:
        """The ids of a workflow's tasks, those it grew by at run time included, in order."""
        _check_int(workflow_id, "workflow_id")
        return [TaskId(task_id) for task_id in self._store.workflow_tasks(workflow_id)]

    def wait_workflow(self, workflow_id: int, timeout: float | None = None) -> WorkflowStatus:
        """Block until every task of the workflow has finished; from any process.
        ``TimeoutError`` past ``timeout`` seconds."""
        return self._until(lambda: self.workflow(workflow_id),
                           lambda status: status.finished,
                           lambda status: f"workflow {workflow_id} was unfinished"
                           + ("" if status is None else f" ({status.describe()})"), timeout)

    def links(self, task_id: int) -> Links:
        """The tasks a task depends on (in order), the tasks that depend on it, and its
        workflow."""
        _check_int(task_id, "task_id")
        depends_on, dependents, workflow = self._store.links(task_id)
        return Links(tuple(map(TaskId, depends_on)), tuple(map(TaskId, dependents)), workflow)

    def _add_graph(self, tasks: list[NewTask]) -> list[TaskId]:
        """Store a workflow's tasks; inside a task of this store, in its workflow."""
        run = running_in(self._store)
        workflow = None if run is None else self._store.workflow_of(run.task_id)
        with self._lock:
            local = {task.channel for task in tasks} & set(self._channels)
        try:
            ids = self._store.add_graph(tasks, workflow, local, time.time())
        except UnknownChannelError as exc:  # said of the first step that names it
            where = next(index for index, task in enumerate(tasks) if task.channel == exc.name)
            raise UnknownChannelError(exc.name, exc.known, f"step #{where}: ") from None
        for channel in {task.channel for task in tasks}:
            self._wake(channel, len(ids))
        return ids

    def _workflow_of(self, ids: list[TaskId], shown: int) -> Workflow:
        """The handle of a workflow just stored: its first ``shown`` ids."""
        workflow = self._store.workflow_of(ids[0]) or ids[0]
        return Workflow(workflow, tuple(ids[:shown]), self)

    def _check_step(self, step: Step) -> None:
        """Refuse a step whose options ``enqueue`` would refuse."""
        _check_name(step.channel)
        _check_count(step.retries, "retries")
        _check_int(step.priority, "priority")
        if step.key is not None:
            _checked_keys([step.key], 1)

    # -- the asyncio face ----------------------------------
    async def enqueue_async(self, channel: str, args: Any, retries: int = 0,
                            **options: Any) -> TaskId:
        """``enqueue``, awaitable: it runs in a thread of the queue's, so that a wait for
        another writer never blocks the event loop."""
        return await self._offload.call(self.enqueue, channel, args, retries, **options)

    async def enqueue_many_async(self, channel: str, args_list: Iterable[Any],
                                 retries: int = 0, **options: Any) -> list[TaskId]:
        """``enqueue_many``, awaitable (see ``enqueue_async``)."""
        return await self._offload.call(self.enqueue_many, channel, list(args_list), retries,
                                        **options)

    async def get_task_async(self, task_id: int) -> Task | None:
        """``get_task``, awaitable."""
        return await self._offload.call(self.get_task, task_id)

    async def cancel_async(self, task_id: int) -> bool:
        """``cancel``, awaitable."""
        return await self._offload.call(self.cancel, task_id)

    async def stats_async(self) -> dict[str, dict[str, int]]:
        """``stats``, awaitable."""
        return await self._offload.call(self.stats)

    async def wait_async(self, task_id: int, timeout: float | None = None) -> Task:
        """``wait``, as a coroutine: the event loop goes on while the task runs; it wakes
        on the same signals as ``wait``. ``TimeoutError`` past ``timeout`` seconds."""
        _check_int(task_id, "task_id")
        check_timeout(timeout)
        return await aio.until(
            self._offload, lambda: self._existing(task_id), lambda task: task.finished,
            lambda task: f"task {task_id} was still "
            f"{'unfinished' if task is None else task.status}",
            timeout, self._settings.poll_interval, self._store.change_token, self._listen)

    def _listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` at every change this process can tell of: a commit of its
        workers, or one the store announces (PostgreSQL); return what stops it."""
        stop_local = self._signals.recorded.listen(callback)
        stop_store = self._store.watch(callback)

        def stop() -> None:
            stop_local()
            stop_store()

        return stop

    # -- running -------------------------------------------
    def start(self, channels: Iterable[str] | None = None) -> None:
        """Start the workers of every registered channel, or only of ``channels``.

        Workers run in background threads; channels added later start too, unless
        ``channels`` chose others. While workers run, a second call starts the
        channels it names that do not run yet (all, without ``channels``). A name
        not registered in this process raises ``UnknownChannelError`` (a
        ``ValueError``) and starts nothing.

        At a normal exit of the interpreter the workers stop as ``stop()`` stops
        them: running tasks finish and their outcomes are committed; claimed tasks
        not started yet go back to pending. An eager queue starts none.
        """
        with self._lock:
            chosen = self._channels if channels is None else self._chosen(channels)
            if self._eager:
                log.debug("an eager queue starts no workers: its tasks run as they are "
                          "enqueued")
                return
            if self._scheduler is not None:
                self._run_more(self._scheduler, chosen)
                return
            self._running = chosen if chosen is self._channels else dict(chosen)
            scheduler = Scheduler(self._store, self._running, self._settings, self._signals)
            scheduler.start()
            self._scheduler = scheduler

    def _run_more(self, scheduler: Scheduler, chosen: dict[str, Channel]) -> None:
        """Start, beside the running ones, the channels of ``chosen`` that do not run yet."""
        if chosen is self._channels:
            self._running = self._channels  # from now on, channels added later run too
        for name, channel in chosen.items():
            self._running[name] = channel
            scheduler.add(channel)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the workers: running tasks finish (up to ``timeout`` s), no new one starts.

        Unstarted tasks stay pending in the store; ``start()`` resumes. Returns
        False if some task was still running when the timeout expired (including
        tasks left running by an earlier stop that timed out), or if the outcome of
        a finished task could not be committed (the store refused, e.g. a full
        disk): such a task runs again once this process is gone.
        """
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
            schedulers = [*self._draining, *([scheduler] if scheduler else [])]
        unfinished = [each for each in schedulers if not each.stop(_remaining(deadline))]
        with self._lock:
            self._draining = [each for each in self._draining if each in unfinished]
            if scheduler is not None and scheduler in unfinished:
                self._draining.append(scheduler)
        self._signals.hooks.drain(_remaining(deadline))  # the events of what ran, handled
        return not unfinished

    def run_until_complete(self, timeout: float | None = None, *,
                           channels: Iterable[str] | None = None,
                           progress: bool | Progress = False) -> None:
        """Run until every task of this process's channels is finished, then stop.

        Waits out delays and retries. Tasks of channels not registered here are
        left alone; ``channels`` narrows the run further, as in ``start``. If
        ``timeout`` passes first, it stops starting tasks and raises
        ``TimeoutError`` at once; tasks still running finish in the background.
        ``progress=True`` shows live counts and tasks/s on stderr if it is a
        terminal, else logs each change at INFO; a ``Progress`` shows them its way.
        Raises ``StoreError`` if, at the end, outcomes could not be committed. An
        eager queue runs what is left in the calling thread: ``drain(due=True)``.
        """
        check_timeout(timeout)
        if self._eager:  # no worker: what is left runs here, the delayed made due
            self.drain(channels, due=True)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        chosen = None if channels is None else list(self._chosen(channels))
        shown = progress if isinstance(progress, Progress) else (
            Progress.auto(self.stats, chosen or self.local_channels()) if progress else None)
        if shown is not None:
            shown.refresh()  # the counts before this run starts anything
        self.start(chosen)
        timed_out = False
        try:
            while True:
                seen = self._signals.idle.generation
                with self._lock:
                    names = list(self._running)
                if shown is not None:
                    shown.tick()
                if not self._store.has_unfinished(names):
                    break
                remaining = _remaining(deadline)
                if remaining == 0:
                    timed_out = True
                    self.stop(timeout=0)  # what still runs finishes in the background
                    raise TimeoutError(f"tasks of channels {', '.join(names)} were still "
                                       f"unfinished after {timeout}s")
                self._signals.idle.wait_past(seen, _shorter(remaining,
                                                            self._settings.poll_interval))
        finally:
            stopped = timed_out or self.stop()
            if shown is not None:
                shown.close()
        if not stopped:
            raise StoreError(f"the outcomes of some tasks could not be recorded in "
                             f"{self.store_path!r}; those tasks will run again")

    # -- inspection ----------------------------------------
    def get_task(self, task_id: int) -> Task | None:
        """The task with this id as stored now, or None if there is none."""
        _check_int(task_id, "task_id")
        row = self._store.get(task_id)
        return None if row is None else Task.from_row(row)

    def wait(self, task_id: int, timeout: float | None = None) -> Task:
        """Block until the task is done, failed or cancelled and return it.

        Works in any process, running workers or not. Raises ``TimeoutError`` when
        ``timeout`` passes, ``ValueError`` if the task does not exist (or is deleted).
        """
        _check_int(task_id, "task_id")
        return self._until(lambda: self._existing(task_id), lambda task: task.finished,
                           lambda task: f"task {task_id} was still "
                           f"{'unfinished' if task is None else task.status}", timeout)

    def _existing(self, task_id: int) -> Task:
        task = self.get_task(task_id)
        if task is None:
            raise ValueError(f"there is no task with id {task_id}")
        return task

    def _until(self, look: Callable[[], T], over: Callable[[T], bool],
               unfinished: Callable[[T | None], str], timeout: float | None) -> T:
        """Look again whenever the store changes, until ``over(look())``; that value.
        ``TimeoutError`` saying ``unfinished(the last value seen)`` when ``timeout``
        passes."""
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        unwatch = self._store.watch(self._signals.recorded.notify)
        try:
            token: int | None = None
            seen_last: T | None = None
            while True:
                seen = self._signals.recorded.generation
                current = self._store.change_token()
                if current != token:
                    token = current
                    seen_last = look()
                    if over(seen_last):
                        return seen_last
                remaining = _remaining(deadline)
                if remaining == 0:
                    raise TimeoutError(f"{unfinished(seen_last)} after {timeout}s")
                self._signals.recorded.wait_past(
                    seen, _shorter(remaining, self._settings.poll_interval))
        finally:
            unwatch()

    def tasks(self, channel: str | None = None, status: Status | str | None = None,
              limit: int = 100) -> list[Task]:
        """Stored tasks, oldest first, optionally of one channel and/or one status."""
        if channel is not None:
            _check_name(channel)
        value = _status_value(status)
        _check_count(limit, "limit")
        return [Task.from_row(row) for row in self._store.list(channel, value, limit)]

    def stats(self) -> dict[str, dict[str, int]]:
        """Task counts per channel and status, with every status present (0 if none).

        Channels registered here or by another process sharing the store are included.
        Exact, and it reads every task: see ``counts`` for a cheap look at a big store.
        """
        return self._every_status(self._store.stats())

    def counts(self) -> dict[str, dict[str, int]]:
        """Task counts per channel and status, as ``stats`` gives them, without reading the
        finished tasks (most of a long-lived store): about a millisecond with a million
        done tasks, where ``stats`` reads them all (half a second on SQLite). For
        dashboards and metrics.

        Each status but ``done`` is counted exactly, through its own index. Done
        tasks are counted when they end (and once, from those the store held, when a
        store of an older version is upgraded), less those deleted since. Not counted:
        tasks made done by a 0.1.3 process (they have no finish time), and those ended
        by a process of an older version still running after the upgrade.
        """
        return self._every_status(self._store.counts())

    def _every_status(self, counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """``counts`` with every known channel and every status present (0 if none)."""
        names = set(counts) | set(self.known_channels())
        return {name: {s.value: counts.get(name, {}).get(s.value, 0) for s in Status}
                for name in sorted(names)}

    def finished(self, minutes: int = 60) -> list[FinishedMinute]:
        """How many tasks of each channel ended done, failed and cancelled in each of the
        last ``minutes`` minutes (the current one included), oldest first; minutes in
        which none of a channel's tasks ended are left out. A task counts in the minute
        of the commit that ended it, on the clock of the process that committed it.

        Minutes older than about two hours are folded into the totals by processes
        running workers (``finished_totals``); asking for more shows what is left.
        """
        _at_least_one(minutes, "minutes")
        return [FinishedMinute.from_row(row)
                for row in self._store.finished(counters.since(minutes, time.time()))]

    def finished_totals(self) -> dict[str, dict[str, int]]:
        """Per channel that ever ended a task, how many ended ``done``, ``failed`` and
        ``cancelled`` since the store was created (or upgraded to count them).

        They only grow: deleting tasks (``purge``, retention, ``remove_channel``) does
        not lower them, nor does a restart, so they suit a Prometheus counter. A task
        that runs again (``requeue_failed``) and ends again counts again.
        """
        return self._store.finished_totals()

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

    def live_workers(self) -> dict[str, int]:
        """Per channel known to the store, how many live queue instances run its workers.

        Liveness is judged as crash recovery judges it: on this host by the process,
        elsewhere by a heartbeat younger than ``lease``. A channel with unfinished
        tasks and 0 here has nobody to run them.
        """
        me = ProcessIdentity.current()
        now = time.time()
        counts = dict.fromkeys(self.known_channels(), 0)
        for owner in self._store.owners():
            if not is_dead(owner, me, self._settings.lease, now):
                for name in owner.channels:
                    counts[name] = counts.get(name, 0) + 1
        return counts

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

    # -- browsing and acting on one task -------------------
    def recent_tasks(self, channel: str | None = None, status: Status | str | None = None,
                     *, key: str | None = None, before: int | None = None,
                     limit: int = 50) -> list[Task]:
        """A page of stored tasks, newest first (id descending), optionally of one
        channel, one status and/or one key.

        ``before`` turns the page: only tasks with ids below it, so that the next page
        passes the last id of this one. A page is read from its bound down (no offset
        to skip, no total counted, through the index of the status or key where that
        is cheaper), so a deep page costs no more than the first, and tasks enqueued
        meanwhile do not shift the pages after the first: each task is on one page.
        """
        if channel is not None:
            _check_name(channel)
        value = _status_value(status)
        if key is not None:
            _checked_keys([key], 1)
        if before is not None:
            _at_least_one(before, "before")
        _at_least_one(limit, "limit")
        return [Task.from_row(row)
                for row in self._store.recent(channel, value, key, before, limit)]

    def requeue(self, task_id: int, retries: int | None = None) -> bool:
        """Make one failed or cancelled task pending again, with ``retries`` if given;
        whether it did. False if there is no such task, or it may not run again now:
        it is not failed or cancelled, or an unfinished task of its channel holds its
        key (decided in the store's transaction, so that an enqueue of the key at the
        same moment makes one unfinished task, never two).

        Tasks of workflows are requeued as ``requeue_failed`` requeues them: the tasks
        that its end cancelled (those waiting for it, and so on down) wait for it
        again, and its ``on_failure`` follow-ups are not undone. A task of a workflow
        is refused (False) while it still waits for an upstream, or if it never
        received its input: one cancelled because an upstream failed comes back when
        that upstream is requeued, and one cancelled while it waited stays cancelled.
        Its cancel request is forgotten.
        """
        _check_int(task_id, "task_id")
        if retries is not None:
            _check_count(retries, "retries")
        channel = self._store.requeue(task_id, retries)
        if channel is not None:
            self._wake(channel, 1)
        return channel is not None

    def delete(self, task_id: int) -> bool:
        """Delete one task that is not running, whatever its status; whether it did.

        False if there is no such task, if it runs (``cancel`` it first), or if a
        blocked task waits for it (for its end, or its result as input): deleting it
        would leave that task waiting forever. Its place in a workflow and its tick
        go with it.
        """
        _check_int(task_id, "task_id")
        return self._store.delete(task_id)

    def run_now(self, task_id: int) -> bool:
        """Make a delayed task (a delay, a retry's backoff, ``DelayException``) pending
        now, its run-at time brought forward; whether it did (False if there is no such
        task or it is not delayed). Idle workers of its channel wake for it at once,
        here and, where the store tells them (PostgreSQL, and SQLite's watch on its
        log), in other processes; elsewhere within a poll interval.
        """
        _check_int(task_id, "task_id")
        channel = self._store.run_now(task_id, time.time())
        if channel is not None:
            self._wake(channel, 1)
        return channel is not None

    def workers(self) -> list[Worker]:
        """Every queue instance registered in the store to run workers, this one
        included while its workers run, alive or not (judged as ``live_workers``
        judges), with how many tasks each runs now; by host, then pid."""
        owners = self._store.owners()
        running = self._store.running_by_owner()
        return workers_of(owners, running, ProcessIdentity.current(), self._settings.lease,
                          time.time())

    def recent_workflows(self, before: int | None = None,
                         limit: int = 50) -> list[WorkflowStatus]:
        """A page of workflows, newest first (by id, that of a workflow's first task),
        each with its tasks' counts by status, read in one statement. ``before`` turns
        the page, as in ``recent_tasks``: only workflows with ids below it."""
        if before is not None:
            _at_least_one(before, "before")
        _at_least_one(limit, "limit")
        return [WorkflowStatus(workflow, MappingProxyType(counts))
                for workflow, counts in self._store.recent_workflows(before, limit)]

    # -- maintenance ---------------------------------------
    def clear_failed(self, channel: str | None = None) -> int:
        """Delete failed tasks (of one channel, or all); return how many."""
        if channel is not None:
            _check_name(channel)
        return self._store.clear_failed(channel)

    def requeue_failed(self, channel: str | None = None, retries: int | None = None) -> int:
        """Make failed tasks pending again, with ``retries`` if given; return how many.

        A failed task with a key stays failed while an unfinished task of its channel
        holds the key (of several failed tasks sharing a key, only the newest is
        requeued): a warning names each one left failed.

        The tasks that a requeued task's failure cancelled (those waiting for it, and
        so on down) are blocked again, waiting for it, unless another task they need
        done has failed or been cancelled too, or a task they wait for was deleted
        meanwhile, or an unfinished task holds their key. Its ``on_failure``
        follow-ups are not undone.
        """
        if channel is not None:
            _check_name(channel)
        if retries is not None:
            _check_count(retries, "retries")
        requeued = self._store.requeue_failed(channel, retries)
        if requeued.kept:
            log.warning("%d failed task(s) stay failed: an unfinished task holds their key "
                        "(%s)", len(requeued.kept), ", ".join(
                            f"task {task_id} key {key!r}" for task_id, key in requeued.kept[:20]))
        for name in [channel] if channel is not None else list(self._channels):
            self._wake(name, requeued.requeued)
        return requeued.requeued

    def purge(self, older_than: float | timedelta, channel: str | None = None) -> int:
        """Delete done, failed and cancelled tasks that finished more than ``older_than`` ago.

        ``older_than`` is seconds or a timedelta; returns how many were deleted.
        """
        age = seconds_from(older_than, "older_than")
        if channel is not None:
            _check_name(channel)
        return self._store.purge(channel, time.time() - age)

    # -- closing -------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Stop the workers, wait for running tasks to end (up to ``timeout`` s), and
        release the store.

        Tasks past their time limit and stuck (see docs/howto/cancellation.rst) are not
        waited for, nor are any tasks once ``timeout`` passes: a warning says so, and
        their outcomes can no longer be recorded here (they run again once this
        process is gone). Refused from inside a task of this queue
        (``RuntimeError``): the task would wait for itself. Raises ``StoreError`` if
        outcomes of finished tasks could not be committed; the store is released
        all the same.
        """
        self._refuse_from_a_task("close()")
        check_timeout(timeout)
        try:
            if not self.stop(timeout):
                with self._lock:
                    unsettled = sum(each.unsettled() for each in self._draining)
                if unsettled:
                    raise StoreError(f"the outcomes of some tasks could not be recorded in "
                                     f"{self.store_path!r}; those tasks will run again")
                log.warning("closing %s while some of its tasks still run; their outcomes "
                            "cannot be recorded, and they will run again once this process "
                            "is gone", self.store_path)
        finally:
            _OPEN.discard(self)
            with self._lock:
                for scheduler in self._draining:
                    scheduler.store_closed()
            self._signals.hooks.close(timeout)
            self._offload.close()
            self._store.close()

    def __enter__(self) -> SimplePyQ:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _stop_at_exit(self) -> None:
        """The interpreter is exiting: stop the workers as ``stop()`` does, so that a
        normal exit is not taken for a crash (and no task runs twice)."""
        if self._pid != os.getpid():
            return  # a forked child: the workers are its parent's
        with self._lock:
            busy = self._scheduler is not None or bool(self._draining)
        if busy and not self.stop():
            log.warning("at exit, some tasks of %s were still running or their outcomes "
                        "could not be recorded; they will run again", self.store_path)

    def _refuse_from_a_task(self, call: str) -> None:
        current = threading.current_thread()
        with self._lock:
            schedulers = [*self._draining, *([self._scheduler] if self._scheduler else [])]
        if any(scheduler.runs_in(current) for scheduler in schedulers):
            raise RuntimeError(f"{call} was called from inside a task of this queue, which "
                               "would wait for that task to end; call it from outside "
                               "the tasks (a task may call stop())")

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
            if self._eager:
                self._run_eagerly()

    @contextmanager
    def _isolated(self, eager: bool) -> Iterator[SimplePyQ]:
        """This queue on a fresh store in memory, with its channels and their limits,
        until the block ends (see ``testing.isolated``)."""
        with self._lock:
            if self._scheduler is not None or self._draining:
                raise RuntimeError("isolated() needs the queue's workers stopped: call "
                                   "stop() first")
            saved = self._store, self.store_path, self._eager
            limits = saved[0].limits()
            fresh = open_store(MEMORY, 30.0)
            now = time.time()
            for name in self._channels:
                kept = limits.get(name, Limits())
                fresh.register_channel(name, now, LimitChange(
                    True, kept.rate_limit, True, kept.max_running))
            self._store, self.store_path = fresh, fresh.location
            self._eager = _checked_eager(eager)
        try:
            yield self
        finally:
            with self._lock:
                self._store, self.store_path, self._eager = saved
            fresh.close()


def _checked_eager(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"eager must be True or False, not {value!r}")
    return value


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


def _status_value(status: object) -> str | None:
    """A status to filter by, as stored (None: any); ``ValueError`` names a bad one."""
    if status is None:
        return None
    if status not in {s.value for s in Status}:
        raise ValueError(f"unknown status {status!r}; statuses are "
                         f"{', '.join(s.value for s in Status)}")
    return Status(status).value


def _check_count(value: object, name: str) -> None:
    _check_int(value, name)
    assert isinstance(value, int)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _positive(value: float | timedelta, name: str) -> float:
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


def _limit_change(rate_limit: Any, max_running: Any) -> LimitChange:
    """The limits to change, each checked: those not ``UNCHANGED``; None removes one."""
    return LimitChange(
        set_rate=rate_limit is not UNCHANGED,
        rate=None if rate_limit is UNCHANGED or rate_limit is None else parse_rate(rate_limit),
        set_max_running=max_running is not UNCHANGED,
        max_running=None if max_running is UNCHANGED or max_running is None
        else check_max_running(max_running))


def _checked_keys(keys: Iterable[str | None], count: int) -> list[str | None]:
    """``enqueue_many``'s keys, one per task: each a non-empty str or None."""
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"keys must be a list with one key per task, not the "
                        f"{type(keys).__name__} {codec.short_repr(keys)}")
    checked = list(keys)
    if len(checked) != count:
        raise ValueError(f"keys has {len(checked)} item(s) for {count} task(s); give one "
                         f"key (or None) per task")
    for key in checked:
        if key is None:
            continue
        if not isinstance(key, str):
            raise TypeError(f"a key must be a str, not {type(key).__name__} "
                            f"{codec.short_repr(key)}")
        if not key:
            raise ValueError("a key must not be empty, got ''")
    return checked


def _retention(keep_done: float | timedelta | None,
               keep_failed: float | timedelta | None) -> Retention:
    return Retention(None if keep_done is None else _positive(keep_done, "keep_done"),
                     None if keep_failed is None else _positive(keep_failed, "keep_failed"))


def _checked_upstreams(depends_on: Iterable[int] | None) -> list[int]:
    """``depends_on``'s task ids: each an int, none twice."""
    if depends_on is None:
        return []
    if isinstance(depends_on, int):
        raise TypeError(f"depends_on must be a list of task ids, not the int {depends_on}; "
                        f"give [{depends_on}]")
    upstreams = list(depends_on)
    for task_id in upstreams:
        _check_int(task_id, "each task id of depends_on")
    if len(set(upstreams)) != len(upstreams):
        raise ValueError(f"depends_on names a task twice: {upstreams}")
    return upstreams


def _check_args_list(args_list: object) -> None:
    """Refuse what ``enqueue_many`` would split wrongly: a str or bytes (one task per
    character), a mapping (one per key), or anything that is not iterable."""
    if isinstance(args_list, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"args_list must be an iterable of args, one per task, not the "
                        f"{type(args_list).__name__} {codec.short_repr(args_list)}; to "
                        f"enqueue it as one task's args, use enqueue()")
    if isinstance(args_list, Mapping):
        raise TypeError(f"args_list must be an iterable of args, one per task, not a "
                        f"mapping ({type(args_list).__name__}), which gives only its keys; "
                        f"to enqueue it as one task's args, use enqueue()")
    try:
        iter(args_list)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"args_list must be an iterable of args, one per task (a list, "
                        f"say), not {type(args_list).__name__} "
                        f"{codec.short_repr(args_list)}") from None


def _at_least_one(value: object, name: str) -> int:
    _check_int(value, name)
    assert isinstance(value, int)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


@atexit.register
def _stop_all_at_exit() -> None:
    for queue in list(_OPEN):
        queue._stop_at_exit()
