"""Workflows: tasks that wait for other tasks (``Step``, chains, groups, follow-ups).

A ``Step`` is a task not stored yet. ``SimplePyQ.chain`` and ``SimplePyQ.group`` turn
steps into ``NewTask`` rows here, each naming the earlier tasks it waits for, and
store them in one transaction (see ``storage.dependents``, which releases and
cancels them as their upstreams end).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from simplepyq import codec
from simplepyq.errors import delay_from_now
from simplepyq.limits import check_time_limit
from simplepyq.storage.dependents import NewTask, Upstream
from simplepyq.task import FINISHED, Status, TaskId

if TYPE_CHECKING:
    from simplepyq.queue import SimplePyQ

_NO_ARGS: Any = object()


@dataclass(frozen=True)
class Step:
    """A task not stored yet, for ``chain``, ``group``, ``then=`` and ``on_failure=``.

    Without ``args``, the task receives its input from what it waits for: in a chain,
    the result of the step before; as a group's ``then``, the list of the members'
    results, in member order; as an ``on_failure`` follow-up, what failed (a dict of
    ``id``, ``status`` and ``error``). With ``always=True`` it runs once what it waits
    for has finished, whatever the outcome (else only if all of it is done; if any of
    it fails or is cancelled, the step is cancelled), and receives outcomes instead of
    results: a dict of ``id``, ``status``, ``result`` and ``error`` per task.
    ``on_failure`` is a step stored with this one that runs if this one fails or is
    cancelled, and is cancelled if it succeeds. ``retries``, ``priority``, ``key`` and
    ``time_limit`` are those of ``SimplePyQ.enqueue``. ``delay`` counts from when the
    step is stored: a step released later runs at once.
    """

    channel: str
    args: Any = _NO_ARGS
    retries: int = 0
    delay: float | timedelta | None = None
    priority: int = 0
    key: str | None = None
    time_limit: float | timedelta | None = None
    always: bool = False
    on_failure: Step | None = None

    @property
    def takes_input(self) -> bool:
        """Whether the step was given no args, and receives its input instead."""
        return self.args is _NO_ARGS

    def __repr__(self) -> str:
        shown = "" if self.takes_input else f", {codec.short_repr(self.args)}"
        return f"Step({self.channel!r}{shown})"


@dataclass(frozen=True)
class WorkflowStatus:
    """How far a workflow has come: how many of its tasks have each status."""

    id: int
    """The workflow's id."""
    counts: Mapping[str, int]
    """How many of its tasks have each status (a status none has may be missing)."""

    @property
    def total(self) -> int:
        """How many tasks the workflow has."""
        return sum(self.counts.values())

    @property
    def finished(self) -> bool:
        """Whether every task of the workflow has finished (done, failed or cancelled)."""
        return self.total > 0 and all(self.counts.get(status.value, 0) == 0
                                      for status in Status if status not in FINISHED)

    @property
    def succeeded(self) -> bool:
        """Whether every task of the workflow is done."""
        return self.total > 0 and self.counts.get(Status.DONE.value, 0) == self.total

    def describe(self) -> str:
        """The counts, as ``"2 done, 1 running"``."""
        return ", ".join(f"{count} {status}" for status, count in sorted(self.counts.items())
                         if count)


class Links(NamedTuple):
    """How a task is tied to others in a workflow."""

    depends_on: tuple[TaskId, ...]
    """The tasks it waits for, in order (their results or outcomes are its input)."""
    dependents: tuple[TaskId, ...]
    """The tasks that wait for it."""
    workflow: int | None = None
    """The workflow it belongs to, if any."""


@dataclass(frozen=True)
class Workflow:
    """Tasks stored together by ``chain``, ``group`` or ``enqueue(depends_on=...)``:
    the workflow's ``id`` (shared by the tasks it grows by at run time) and the ids of
    the tasks stored by that call, in order."""

    id: int
    task_ids: tuple[TaskId, ...]
    _queue: SimplePyQ = field(repr=False, compare=False)

    def status(self) -> WorkflowStatus:
        """The workflow as stored now."""
        return self._queue.workflow(self.id)

    def wait(self, timeout: float | None = None) -> WorkflowStatus:
        """Block until every task of the workflow has finished (``TimeoutError`` past
        ``timeout`` seconds); from any process."""
        return self._queue.wait_workflow(self.id, timeout)


class TaskFunction:
    """A channel's function as ``@q.channel`` returns it: calling it calls the function,
    and ``enqueue`` and ``step`` make tasks of its channel."""

    __name__: str
    __qualname__: str

    def __init__(self, queue: SimplePyQ, channel: str, func: Callable[[Any], Any]) -> None:
        self.queue = queue
        self.channel = channel
        self.func = func
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def enqueue(self, args: Any, retries: int = 0, **options: Any) -> TaskId:
        """``q.enqueue(channel, args, ...)`` for this function's channel."""
        return self.queue.enqueue(self.channel, args, retries, **options)

    def step(self, args: Any = _NO_ARGS, retries: int = 0, **options: Any) -> Step:
        """``Step(channel, args, ...)`` for this function's channel (without ``args``, the
        step receives its input)."""
        return Step(self.channel, args, retries, **options)

    def __repr__(self) -> str:
        return f"<task function {self.func.__qualname__} of channel {self.channel!r}>"


def chain_tasks(steps: Sequence[Step], check: Callable[[Step], None]) -> list[NewTask]:
    """The rows of a chain: each step waits for the one before; follow-ups after all."""
    if not steps:
        raise ValueError("a chain needs at least one step")
    main = [_new_task(step, index, check,
                      () if index == 0 else (Upstream(earlier=index - 1),),
                      "outcome" if step.always else "result")
            for index, step in enumerate(_checked_steps(steps, "chain"))]
    return main + _follow_ups(steps, check)


def group_tasks(steps: Sequence[Step], then: Step | None,
                check: Callable[[Step], None]) -> list[NewTask]:
    """The rows of a group: its members, then ``then`` waiting for every member, then
    the follow-ups."""
    if not steps:
        raise ValueError("a group needs at least one member")
    members = [_new_task(step, index, check, (), "result")
               for index, step in enumerate(_checked_steps(steps, "group"))]
    if then is not None:
        _checked_steps([then], "then")
        members.append(_new_task(then, len(steps), check,
                                 tuple(Upstream(earlier=i) for i in range(len(steps))),
                                 "outcomes" if then.always else "results"))
    return members + _follow_ups([*steps, *([] if then is None else [then])], check)


def after_tasks(step: Step, depends_on: Sequence[int], check: Callable[[Step], None]
                ) -> list[NewTask]:
    """The rows of one task waiting for stored tasks (``enqueue(depends_on=...)``), and
    of its follow-up."""
    upstreams = tuple(Upstream(task_id=task_id) for task_id in depends_on)
    kind = ("outcome" if step.always else "result") if len(upstreams) == 1 else \
        ("outcomes" if step.always else "results")
    return [_new_task(step, 0, check, upstreams, kind), *_follow_ups([step], check)]


def _checked_steps(steps: Sequence[Step], what: str) -> Sequence[Step]:
    for index, step in enumerate(steps):
        if not isinstance(step, Step):
            raise TypeError(f"{what} item #{index} must be a Step, not {step!r}")
    return steps


def _follow_ups(steps: Sequence[Step], check: Callable[[Step], None]) -> list[NewTask]:
    """The ``on_failure`` steps of ``steps`` (the first rows of the call, in order)."""
    rows: list[NewTask] = []
    for index, step in enumerate(steps):
        if step.on_failure is not None:
            _checked_steps([step.on_failure], f"on_failure of step #{index}")
            if step.on_failure.on_failure is not None:
                raise ValueError(f"the on_failure of step #{index} ({step!r}) has an "
                                 f"on_failure of its own; give it to the first follow-up")
            rows.append(_new_task(step.on_failure, index, check,
                                  (Upstream(earlier=index),), "failure", needs="failed"))
    return rows


def _new_task(step: Step, index: int, check: Callable[[Step], None],
              after: tuple[Upstream, ...], input_kind: str, needs: str | None = None
              ) -> NewTask:
    """One step as a row, its args encoded (or its input named, if it takes one)."""
    where = f"step #{index} ({step!r})"
    try:
        check(step)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    args = None
    if not step.takes_input:
        args = codec.pack(step.args, f"the args of {where}")
    elif not after:
        raise ValueError(f"{where} has no args and waits for nothing to receive them from")
    return NewTask(
        channel=step.channel, args=args, retries=step.retries,
        run_at=None if step.delay is None else time.time() + delay_from_now(step.delay, "delay"),
        priority=step.priority, key=step.key,
        time_limit=None if step.time_limit is None else check_time_limit(step.time_limit),
        after=after, needs=needs or ("finished" if step.always else "done"),
        input=input_kind if step.takes_input else None)
