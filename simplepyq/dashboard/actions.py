"""What the dashboard's buttons do: each a POST that changes the store through the queue.

An action reads its form (400 naming a bad value), makes one call of the queue
(which decides, in the store, whether the change is allowed in the task's state)
and says what it did in an ``Outcome``; the app sends the browser back to the
page it came from with that message. Values are read as the command line reads
them (``purge --older-than 7d``, ``limits --rate 10/s``, ``none``), by the same
functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simplepyq import typed
from simplepyq.dashboard.http import Params, bad_request
from simplepyq.dashboard.widgets import Context
from simplepyq.errors import UnknownChannelError
from simplepyq.queue import UNCHANGED

MAX_RETRIES = 1_000_000


@dataclass(frozen=True)
class Outcome:
    """What an action did, told to the user; ``ok`` False when it changed nothing."""

    message: str
    ok: bool = True
    back: str | None = None
    """Where to go instead of the page the action came from (which may be gone)."""


TaskAction = Callable[[Context, Params, int], Outcome]
StoreAction = Callable[[Context, Params], Outcome]


def requeue(ctx: Context, form: Params, task_id: int) -> Outcome:
    retries = form.integer("retries", 0, MAX_RETRIES)
    if ctx.queue.requeue(task_id, retries):
        return Outcome(f"task {task_id} requeued")
    return _refused(ctx, task_id, "requeued")


def cancel(ctx: Context, form: Params, task_id: int) -> Outcome:
    try:
        cancelled = ctx.queue.cancel(task_id)
    except ValueError:  # no such task
        cancelled = False
    if not cancelled:
        return _refused(ctx, task_id, "cancelled")
    after = ctx.queue.get_task(task_id)
    if after is not None and after.status == "running":
        return Outcome(f"task {task_id} is running: asked to stop (cancelled if it then "
                       "raises, done if it returns)")
    return Outcome(f"task {task_id} cancelled")


def delete(ctx: Context, form: Params, task_id: int) -> Outcome:
    if ctx.queue.delete(task_id):
        gone = ctx.back.split("?")[0] == f"/tasks/{task_id}"
        return Outcome(f"task {task_id} deleted", back="/tasks" if gone else None)
    return _refused(ctx, task_id, "deleted")


def run_now(ctx: Context, form: Params, task_id: int) -> Outcome:
    if ctx.queue.run_now(task_id):
        return Outcome(f"task {task_id} will run now")
    return _refused(ctx, task_id, "run now")


def _refused(ctx: Context, task_id: int, what: str) -> Outcome:
    """Why the store left a task as it was: it is gone, or its status does not allow it."""
    found = ctx.queue.get_task(task_id)
    if found is None:
        return Outcome(f"there is no task {task_id}", ok=False)
    return Outcome(f"task {task_id} is {found.status}: not {what}", ok=False)


def requeue_failed(ctx: Context, form: Params) -> Outcome:
    channel = _channel(ctx, form)
    retries = form.integer("retries", 0, MAX_RETRIES)
    count = ctx.queue.requeue_failed(channel, retries)
    return Outcome(f"{count:,} failed task(s){_of(channel)} made pending again")


def clear_failed(ctx: Context, form: Params) -> Outcome:
    channel = _channel(ctx, form)
    count = ctx.queue.clear_failed(channel)
    return Outcome(f"{count:,} failed task(s){_of(channel)} deleted")


def purge(ctx: Context, form: Params) -> Outcome:
    channel = _channel(ctx, form)
    text = form.text("older_than")
    if text is None:
        raise bad_request("older_than is missing: give an age such as 90, 30m or 7d")
    try:
        older_than = typed.age(text)
    except ValueError as exc:
        raise bad_request(f"older_than: {exc}") from None
    count = ctx.queue.purge(older_than, channel)
    return Outcome(f"{count:,} finished task(s){_of(channel)} deleted (finished more than "
                   f"{text} ago)")


def set_limits(ctx: Context, form: Params) -> Outcome:
    channel = _channel(ctx, form)
    if channel is None:
        raise bad_request("channel is missing: limits are set per channel")
    rate = _read(form, "rate", typed.rate)
    running = _read(form, "max_running", typed.max_running)
    try:
        limits = ctx.queue.set_limits(channel, rate_limit=rate, max_running=running)
    except (ValueError, UnknownChannelError) as exc:
        raise bad_request(str(exc)) from None
    return Outcome(f"limits of {channel}: {limits}")


def _read(form: Params, name: str, parse: Callable[[str], object]) -> Any:
    """A limit as ``simplepyq limits`` reads it (``none`` removes it); empty: unchanged."""
    text = form.text(name, 40)
    if text is None:
        return UNCHANGED
    try:
        return parse(text)
    except ValueError as exc:
        raise bad_request(f"{name}: {exc}") from None


def _channel(ctx: Context, form: Params) -> str | None:
    """The form's channel, one the store knows, or None for every channel."""
    return form.choice("channel", list(ctx.queue.counts()), "channel")


def _of(channel: str | None) -> str:
    return "" if channel is None else f" of {channel}"


TASK_ACTIONS: dict[str, TaskAction] = {
    "requeue": requeue, "cancel": cancel, "delete": delete, "run-now": run_now}
"""``POST /tasks/<id>/<name>``."""
STORE_ACTIONS: dict[str, StoreAction] = {
    "/failed/requeue": requeue_failed, "/failed/clear": clear_failed, "/purge": purge,
    "/limits": set_limits}
