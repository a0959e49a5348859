"""The storage contract: what the queue asks of a backend, in the queue's own words.

Each method is one transaction. Backends know rows and bytes, not task functions:
encoding args, deciding retries and telling dead processes from live ones happen
above this line, so every backend shares those rules.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from simplepyq.errors import StoreError
from simplepyq.limits import Limits, Rate
from simplepyq.policy import Decision
from simplepyq.storage.dependents import NewTask
from simplepyq.task import TaskId

TASK_COLUMNS = (
    "id", "channel", "args", "status", "retries", "attempts", "priority",
    "result", "error", "created_at", "delay_until", "started_at", "finished_at",
    "recoveries", "history", "key", "time_limit", "cancel_requested", "progress",
)
"""The order of columns in the rows that ``get``/``list`` return (see ``Task.from_row``)."""


def named(row: Sequence[Any]) -> dict[str, Any]:
    """A task row laid out as TASK_COLUMNS, as a mapping of column names to values."""
    return dict(zip(TASK_COLUMNS, row, strict=True))


class Claimed(NamedTuple):
    """A task a worker now owns: enough to run it and record its outcome."""

    id: int
    args: bytes | None
    retries: int
    attempts: int
    priority: int = 0
    recoveries: int = 0
    """How many times in a row the task was recovered from a dead worker: a suspect if > 0."""
    time_limit: float | None = None
    """The task's own time limit in seconds, if it was enqueued with one."""


class Outcome(NamedTuple):
    """What one run of a claimed task came to, waiting to be recorded."""

    task_id: int
    decision: Decision
    channel: str | None = None
    """The task's channel, as the worker claimed it, for the finished-task counters
    (a task never changes channel); None: the store looks it up."""


class CommitUnknownError(StoreError):
    """The connection was lost while a transaction committed: it may have been committed
    or not, and the store cannot say which. Whoever wrote must find out by reading."""


class Exchange(NamedTuple):
    """What one ``exchange`` transaction did."""

    dropped: list[int]
    """Outcomes not recorded: their task was no longer running under the owner."""
    claimed: list[Claimed]
    """Tasks newly claimed, highest priority first, then oldest."""
    throttle: float | None = None
    """Set when the channel's limits allowed fewer tasks than asked for: seconds until
    its rate limit lets the next one start, or ``math.inf`` when it waits for one of
    its running tasks to end (``max_running``)."""
    released: frozenset[str] = frozenset()
    """Channels of tasks that the outcomes released (their last upstream ended)."""
    recorded_rows: Mapping[int, tuple[Any, ...]] | None = None
    """With ``report``: the rows (TASK_COLUMNS) of the tasks recorded, as the outcomes
    left them."""
    claimed_rows: Mapping[int, tuple[Any, ...]] | None = None
    """With ``report``: the rows of the tasks claimed, as the claim left them."""


class NewTick(NamedTuple):
    """What a schedule enqueues at each of its ticks."""

    channel: str
    args: bytes | None
    retries: int = 0
    priority: int = 0
    time_limit: float | None = None
    key: str | None = None
    """A key held by the previous tick's unfinished task skips the tick (``overlap``)."""


class LimitChange(NamedTuple):
    """Which limits of a channel ``set_limits`` changes, to what (None removes one)."""

    set_rate: bool = False
    rate: Rate | None = None
    set_max_running: bool = False
    max_running: int | None = None


class Requeued(NamedTuple):
    """What ``requeue_failed`` did."""

    requeued: int
    """Failed tasks made pending."""
    kept: list[tuple[int, str]]
    """(id, key) of the failed tasks left failed: an unfinished task holds their key."""


@dataclass(frozen=True)
class Owner:
    """A queue instance that holds ``running`` tasks, as it registered itself."""

    owner: str
    host: str | None
    pid: int | None
    pid_start: str | None
    heartbeat_at: float | None
    channels: tuple[str, ...] = ()
    """The channels it runs workers for (empty where it did not say)."""


class Store(Protocol):
    """A place where tasks live, shared by every process that opens the same location."""

    location: str

    # -- channels ------------------------------------------
    def register_channel(self, name: str, now: float,
                         limits: LimitChange | None = None) -> None:
        """Remember that ``name`` is a channel, so other processes may enqueue to it,
        and change its limits as ``limits`` says, in the same transaction."""

    def known_channels(self) -> set[str]:
        """Every channel registered by any process sharing this store."""

    # -- the task life cycle -------------------------------
    def add(self, channel: str, payloads: Sequence[bytes], retries: int,
            run_at: float | None, priority: int, now: float, register: bool,
            time_limit: float | None = None,
            keys: Sequence[str | None] | None = None) -> list[TaskId]:
        """Insert tasks in one transaction and return their ids, in order.

        With ``register`` the channel is (re)registered in the same transaction;
        otherwise it must be registered already, or ``UnknownChannelError`` is raised
        and nothing is written. ``keys`` gives each task a key or None: a key that an
        unfinished task of the channel holds (one inserted by this call included)
        inserts nothing, and that task's id comes back with ``created`` False.
        """

    def exchange(self, owner: str, outcomes: Sequence[Outcome], channel: str | None,
                 limit: int, now: float, report: bool = False) -> Exchange:
        """Record ``outcomes`` and claim up to ``limit`` tasks of ``channel``, in one transaction.

        This is the group commit: many finished tasks and the next batch cost one
        commit. An outcome applies only to a task ``owner`` still runs. Claiming
        first makes due delayed tasks pending, then marks the highest-priority,
        oldest pending tasks running for ``owner``; each is claimed by one caller only.
        A claim holds the owner's row and may renew its heartbeat (``register_owner``).
        With ``report``, the rows of the tasks recorded and claimed are read in the
        same transaction (for hooks).
        """

    def release(self, owner: str, task_ids: Sequence[int]) -> int:
        """Return claimed but unstarted tasks to pending, as if never claimed (cancelled,
        if a cancel was requested meanwhile); how many."""

    def reconcile(self, owner: str, held: Sequence[int]) -> int:
        """Return to pending, as if never claimed, the tasks running under ``owner`` that
        are not among ``held``; how many. After a commit whose fate is unknown
        (``CommitUnknownError``), these are what it claimed that no worker ever got."""

    def next_due(self, channels: Iterable[str]) -> float | None:
        """The earliest ``delay_until`` among delayed tasks of ``channels``, if any."""

    def runnable(self, channels: Sequence[str], now: float) -> list[str]:
        """Those of ``channels`` that have a task a claim could take now (pending, or
        delayed and due): a cheap read, before waking workers that would claim."""

    def make_due(self, channels: Sequence[str], now: float) -> int:
        """Make the delayed tasks of ``channels`` pending, as if their time had come;
        how many (for a drain in a test, see ``SimplePyQ.drain``)."""

    def has_unfinished(self, channels: Iterable[str]) -> bool:
        """Whether any task of ``channels`` is pending, delayed or running."""

    def change_token(self) -> int:
        """A number that changes whenever another connection commits (a cheap poll)."""

    def watch(self, callback: Callable[[], None],
              wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
        """Call ``callback`` soon after any connection commits a change, where the backend
        hears of commits (PostgreSQL's NOTIFY, the watch on SQLite's log where the
        platform has one); return what stops the calls. Where it cannot, or misses
        one, nothing is called: users poll ``change_token`` as a fallback.

        ``wanted``, if given, says whether ``callback`` would act on a commit now:
        while no callback wants to hear, a backend may skip the work of telling
        (SQLite confirms each commit it hears of, a busy process's own among them).
        """

    def watch_added(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(channel)`` soon after another connection commits a task of
        ``channel`` that can run at once, where the backend tells which (PostgreSQL,
        for one-call enqueues); such a commit then calls no ``watch`` callback, since
        it finished nothing. Return what stops the calls. Others never call it.
        """

    # -- workflows -----------------------------------------
    def add_graph(self, tasks: Sequence[NewTask], workflow: int | None,
                  register: Iterable[str], now: float) -> list[TaskId]:
        """Store ``tasks`` in one transaction, each after the tasks it names (see
        ``dependents.add_graph``); their ids. The channels in ``register`` are
        (re)registered; any other must be registered already (``UnknownChannelError``).
        ``ValueError`` if an upstream does not exist; nothing is stored then."""

    def workflow_of(self, task_id: int) -> int | None:
        """The workflow a task belongs to, if any."""

    def workflow_counts(self, workflow: int) -> dict[str, int]:
        """How many tasks of ``workflow`` have each status (empty if there is none)."""

    def workflow_tasks(self, workflow: int) -> list[int]:
        """The ids of the tasks of ``workflow``, in order."""

    def links(self, task_id: int) -> tuple[list[int], list[int], int | None]:
        """The tasks a task waits for (in order), those that wait for it, and its
        workflow, in one read."""

    # -- periodic tasks ------------------------------------
    def schedule(self, name: str) -> tuple[Any, ...] | None:
        """A schedule's row: channel, spec, args, next_at, fired."""

    def put_schedule(self, name: str, channel: str, spec: str, args: bytes | None,
                     next_at: float, register: bool, now: float) -> None:
        """Store a schedule (replacing one of that name) whose next tick is ``next_at``;
        its channel must be registered (with ``register``, it is registered)."""

    def remove_schedule(self, name: str) -> bool:
        """Forget a schedule; whether there was one."""

    def schedules(self) -> list[tuple[Any, ...]]:
        """Every schedule: name, channel, spec, args, next_at, fired, last_tick,
        last_task and that task's status."""

    def fire(self, name: str, fired: int, next_at: float, ticks: Sequence[float],
             task: NewTick) -> list[TaskId] | None:
        """Move a schedule on to ``next_at`` and enqueue one task per tick of ``ticks``,
        in one transaction, if the schedule was fired ``fired`` times still (else None:
        another process fired it first). A tick whose key is held enqueues nothing."""

    def scheduled_at(self, task_id: int) -> float | None:
        """The tick a periodic task was enqueued for."""

    # -- task control --------------------------------------
    def cancel(self, task_id: int, now: float) -> tuple[bool, str] | None:
        """Cancel a task: (True, its status now), ``"cancelled"`` if it had not started
        (it never will), ``"running"`` if it runs (its cancel is requested: its owner
        finds it with ``cancel_requests``); (False, its status) if it had finished
        already; None if there is no such task."""

    def cancel_requests(self, owner: str) -> list[int]:
        """The ids of the tasks running under ``owner`` whose cancel was requested."""

    def save_progress(self, owner: str, progress: Mapping[int, bytes]) -> None:
        """Store the progress reported by tasks running under ``owner`` (by id)."""

    def set_limits(self, channel: str, change: LimitChange) -> Limits:
        """Change a registered channel's limits as ``change`` says; the limits it has now.
        ``UnknownChannelError`` if the channel is not registered."""

    def limits(self) -> dict[str, Limits]:
        """The limits of every registered channel."""

    # -- liveness and recovery -----------------------------
    def register_owner(self, owner: str, host: str, pid: int, pid_start: str | None,
                       now: float, channels: Sequence[str] = (),
                       renew_after: float | None = None) -> None:
        """Announce a live queue instance running workers for ``channels``, or renew its
        heartbeat (re-registering it if it was given up for dead).

        The heartbeat written is the time of the write, not ``now``: a write held up by
        a lock must not report a heartbeat already old. With ``renew_after``, every
        claim this store makes for ``owner`` holds its row (a recovery waits for the
        claim to commit) and writes its heartbeat again, in the claim's transaction,
        if the row is gone (given up for dead) or older than ``renew_after`` seconds.
        """

    def unregister_owner(self, owner: str) -> None:
        """Forget ``owner``: it has stopped and holds no running task."""

    def running_owners(self) -> list[Owner]:
        """The owners of ``running`` tasks, with what they registered (None if unknown)."""

    def owners_to_judge(self) -> list[Owner]:
        """Every registered instance, and the owners of ``running`` tasks that none
        registered (with None for what they would have registered): those that
        ``recover`` may be given, once judged dead."""

    def owners(self) -> list[Owner]:
        """Every registered queue instance, live or not, with the channels it runs."""

    def recover(self, owners: Sequence[Owner], note: str, now: float,
                max_recoveries: int) -> int:
        """Return the running tasks of dead ``owners`` to pending, or fail those that this
        makes ``max_recoveries`` counted recoveries in a row (a task's first, and any
        while it ran alone); forget those owners.

        Each owner is recovered only if its heartbeat is still the one it was judged
        by (``Owner.heartbeat_at``; None for an owner with no row): one that renewed
        since keeps its tasks.
        """

    def run_alone(self, owner: str, task_id: int) -> None:
        """Note that ``owner`` now runs the recovered task ``task_id`` alone, so that its
        next recovery counts towards ``max_recoveries`` (see ``recover``)."""

    # -- inspection ----------------------------------------
    def get(self, task_id: int) -> tuple[Any, ...] | None:
        """One task's row, laid out as TASK_COLUMNS."""

    def list(self, channel: str | None, status: str | None, limit: int) -> list[tuple[Any, ...]]:
        """Rows of tasks, oldest first, optionally of one channel and/or one status."""

    def stats(self) -> dict[str, dict[str, int]]:
        """Task counts per channel and status."""

    # -- maintenance ---------------------------------------
    def clear_failed(self, channel: str | None) -> int:
        """Delete failed tasks; return how many."""

    def requeue_failed(self, channel: str | None, retries: int | None) -> Requeued:
        """Make failed tasks pending again, optionally with new retries; a failed task
        whose key an unfinished task holds stays failed (one of several failed tasks
        sharing a free key, the newest, is requeued)."""

    def remove_channel(self, name: str) -> int:
        """Forget a channel and delete all its tasks; return how many tasks."""

    def max_task_id(self) -> int:
        """The highest task id in the store (0 if it holds none)."""

    def expired(self, start: int, stop: int, done_before: float | None,
                failed_before: float | None) -> Sequence[int]:
        """The ids in [start, stop) of done tasks finished before ``done_before`` and of
        failed or cancelled ones finished before ``failed_before`` (None: none of
        them), read without taking the write lock."""

    def prune(self, task_ids: Sequence[int], done_before: float | None,
              failed_before: float | None) -> int:
        """Delete those of ``task_ids`` that are still as ``expired`` found them, but for
        a task whose result a blocked task will receive; how many, in one short
        transaction."""

    def purge(self, channel: str | None, finished_before: float) -> int:
        """Delete done, failed and cancelled tasks that finished before the given time;
        return how many."""

    # -- moving between stores -----------------------------
    def adopt(self, rows: Sequence[tuple[Any, ...]], channels: Iterable[str],
              now: float) -> int:
        """Insert tasks copied from another store (rows laid out as TASK_COLUMNS, in order,
        given new ids), and register ``channels``, in one transaction; how many."""

    def forget(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Delete the tasks of these rows that are still as the rows show them (same status
        and attempts), in one transaction; how many."""

    def close(self) -> None:
        """Release every connection; the store is unusable afterwards."""

    def pending_since(self) -> dict[str, float | None]:
        """Per channel with pending tasks, when its longest-waiting one became due
        (None if some pending task has no time: its wait is unknown)."""

    # -- finished-task counters (see storage/finished.py) --
    def counts(self) -> dict[str, dict[str, int]]:
        """Task counts per channel and status, as ``stats`` gives them, without reading
        the finished tasks (most of a long-lived store): each status but done is
        counted through its partial index, done tasks from the counters.

        Done tasks are those counted done when they ended (or at the upgrade that
        created the counters) less those deleted since; a task made done by a 0.1.3
        process has no ``finished_at`` and is counted by neither, so it is not in
        the count (``stats`` counts it). Tasks ended by a process of an older
        version still running after the upgrade are not counted either.
        """

    def finished(self, since_minute: int) -> builtins.list[tuple[str, int, int, int, int]]:
        """(channel, minute, done, failed, cancelled) for each channel and minute from
        ``since_minute`` on in which tasks ended, oldest first; a minute is Unix time
        // 60, that of the commit that ended them."""

    def finished_totals(self) -> dict[str, dict[str, int]]:
        """Per channel, how many tasks ended ``done``, ``failed`` and ``cancelled`` since
        the store was created (or upgraded to counting them): they never go down, not
        even when tasks are deleted (a Prometheus counter's rule)."""

    def fold_finished(self, before_minute: int) -> int:
        """Fold the per-minute counts older than ``before_minute`` into each channel's
        total, in one transaction that two processes may run at once without counting
        anything twice; how many rows were folded. ``finished_totals`` is unchanged."""

    # -- browsing and acting on one task (see storage/browse.py) --
    def recent(self, channel: str | None, status: str | None, key: str | None,
               before: int | None, limit: int) -> builtins.list[tuple[Any, ...]]:
        """Rows of up to ``limit`` tasks (TASK_COLUMNS), newest first, with ids below
        ``before`` (None: any), of one channel, status and key where given. Keyset
        paging: a page costs the same at any depth; the filters use the partial index
        of a status and the index of keyed tasks where the planner finds that cheaper."""

    def requeue(self, task_id: int, retries: int | None) -> str | None:
        """Make one failed or cancelled task pending again (with ``retries`` if given), and
        the tasks its end cancelled wait for it again (as ``requeue_failed``); its
        channel, or None if it is absent or may not be requeued: another state, its key
        held by an unfinished task, or a task of a workflow that still waits for its
        upstreams or never received its input (decided in the transaction)."""

    def delete(self, task_id: int) -> bool:
        """Delete a task that is not running, with its rows in the side tables (workflow,
        dependencies, tick); False if it is absent, running, or a blocked task waits
        for it."""

    def run_now(self, task_id: int, now: float) -> str | None:
        """Make a delayed task pending now (its run-at time brought to ``now``), and tell
        other processes that a task of its channel can run; its channel, or None if it
        is absent or not delayed."""

    def running_by_owner(self) -> dict[str, int]:
        """How many tasks each owner runs, from the index of running tasks."""

    def recent_workflows(self, before: int | None, limit: int
                         ) -> builtins.list[tuple[int, dict[str, int]]]:
        """Up to ``limit`` workflows with ids below ``before`` (None: any), newest first,
        each with its tasks' counts by status, in one read."""
