"""The dashboard's pages: each a view of the store, made of parts the script refreshes.

A handler reads its query through ``Params`` (400 on a bad value), asks the queue
what it shows (never SQL of its own: the same calls as the command line) and
returns a ``Page`` of ``Part`` s. A part with an id is live: the page's JSON
(``?format=json``) carries it again, and ``dashboard.js`` swaps it in when it
changed. Parts that hold what a user types (filters, limits) are not live.
Lists are paged by id (``before``: the ids below it), never by offset or count,
so that a page costs the same at a million tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from simplepyq.dashboard.chart import MINUTES, Throughput, svg
from simplepyq.dashboard.http import HttpError, Response, redirect
from simplepyq.dashboard.markup import Html, join, tag
from simplepyq.dashboard.widgets import (
    STATUSES,
    Context,
    action,
    badge,
    fields,
    long_text,
    number,
    plain,
    select,
    short,
    table,
    text_input,
    when,
)
from simplepyq.display import age
from simplepyq.task import Status, Task
from simplepyq.workers import Worker

PAGE_SIZE, MAX_PAGE = 50, 500
WORKFLOW_TASKS = 200
"""Tasks of a workflow shown on its page; a link pages on to the next ones."""
UNFINISHED = {Status.PENDING.value, Status.DELAYED.value, Status.RUNNING.value,
              Status.BLOCKED.value}
REQUEUABLE = {Status.FAILED.value, Status.CANCELLED.value}


@dataclass
class Part:
    """A piece of a page; live (refreshed by the script) when it has an id."""

    id: str | None
    html: Html


@dataclass
class Page:
    title: str
    section: str
    """The navigation entry this page is under."""
    parts: list[Part] = field(default_factory=list)
    chart: Throughput | None = None


# -- overview ----------------------------------------------
def overview(ctx: Context) -> Page:
    queue = ctx.queue
    counts = queue.counts()
    rows = queue.finished(MINUTES)
    throughput = Throughput.of(rows, ctx.now)
    hour: dict[str, list[int]] = {}
    for row in rows:
        hour.setdefault(row.channel, [0, 0])
        hour[row.channel][0] += row.done
        hour[row.channel][1] += row.failed
    since = queue.pending_since()
    limits = queue.all_limits()
    workers = [worker for worker in queue.workers() if worker.alive]
    per_channel = {name: sum(name in w.channels for w in workers) for name in counts}
    channel_rows = [
        [ctx.link("/tasks", name, channel=name),
         *[_count_link(ctx, name, status, numbers.get(status, 0)) for status in STATUSES],
         _oldest(ctx.now, since, name),
         number(hour.get(name, [0, 0])[0]), number(hour.get(name, [0, 0])[1]),
         str(limits[name]) if name in limits else "no limits", number(per_channel[name])]
        for name, numbers in counts.items()]
    headers = ["channel", *STATUSES, "oldest pending", "done 1h", "failed 1h", "limits",
               "workers"]
    numeric = [*range(1, len(STATUSES) + 4), len(STATUSES) + 5]
    counts_part = table(headers, channel_rows, numeric, "no channel yet")
    chart_part = join([tag("h2", {}, "Finished per minute, last hour"), svg(throughput),
                       tag("p", {"class": "legend"}, tag("span", {"class": "key done"}, ""),
                           " done ", tag("span", {"class": "key failed"}, ""), " failed")])
    return Page("Overview", "overview", [
        Part("counts", counts_part),
        Part(None, chart_part),
        Part(None, tag("h2", {}, "Live workers")),
        Part("workers", _workers(ctx, workers)),
    ], throughput)


def _count_link(ctx: Context, channel: str, status: str, count: int) -> Html:
    if not count:
        return Html('<span class="zero">0</span>')
    return ctx.link("/tasks", f"{count:,}", channel=channel, status=status)


def _oldest(now: datetime, since: dict[str, datetime | None], channel: str) -> str:
    if channel not in since:
        return "-"
    moment = since[channel]
    return "unknown" if moment is None else age((now - moment).total_seconds())


def _workers(ctx: Context, workers: Sequence[Worker]) -> Html:
    rows = [[worker.host or "-", worker.pid or "-", ", ".join(worker.channels) or "-",
             "-" if worker.heartbeat_at is None
             else age((ctx.now - worker.heartbeat_at).total_seconds()), number(worker.running)]
            for worker in workers]
    return table(["host", "pid", "channels", "heartbeat age", "running tasks"], rows,
                 [1, 4], "no live worker")


# -- tasks -------------------------------------------------
def tasks(ctx: Context) -> Page | Response:
    query, queue = ctx.request.query, ctx.queue
    found = query.integer("id")
    if found is not None:  # "find by id"
        return redirect(ctx.request.url(f"/tasks/{found}"))
    channels = list(queue.counts())
    channel = query.choice("channel", channels, "channel")
    status = query.choice("status", STATUSES, "status")
    key = query.text("key")
    before = query.integer("before")
    limit = query.integer("limit", 1, MAX_PAGE) or PAGE_SIZE
    listed = queue.recent_tasks(channel, status, key=key, before=before, limit=limit)
    filters = tag(
        "form", {"method": "get", "action": ctx.request.url("/tasks"), "class": "filters"},
        select("channel", "channel", channels, channel), select("status", "status",
                                                               STATUSES, status),
        text_input("key", "key", key, 16),
        tag("input", {"type": "hidden", "name": "limit",
                      "value": None if limit == PAGE_SIZE else limit}),
        tag("button", {"type": "submit"}, "filter"))
    finder = tag("form", {"method": "get", "action": ctx.request.url("/tasks"),
                          "class": "filters"},
                 text_input("id", "task id", None, 8), tag("button", {"type": "submit"}, "open"))
    more = _pager(ctx, "/tasks", [t.id for t in listed], limit, before,
                  channel=channel, status=status, key=key)
    return Page("Tasks", "tasks", [Part(None, join([filters, finder])),
                                   Part("list", join([_task_table(ctx, listed), more]))])


def _task_table(ctx: Context, listed: Sequence[Task]) -> Html:
    rows = [[ctx.task_link(t.id), t.channel, badge(t.status), number(t.attempts),
             when(t.created_at), when(t.finished_at), t.key or "-",
             tag("code", {}, short(t.args))] for t in listed]
    return table(["id", "channel", "status", "attempts", "created", "finished", "key", "args"],
                 rows, [0, 3], "no task")


def _failed_table(ctx: Context, listed: Sequence[Task]) -> Html:
    """Failed tasks with the last line of their error, each with its requeue button."""
    rows = [[ctx.task_link(t.id), t.channel, number(t.attempts), when(t.finished_at),
             _last_line(t.error), t.key or "-", tag("code", {}, short(t.args)),
             action(ctx, f"/tasks/{t.id}/requeue", "requeue")] for t in listed]
    return table(["id", "channel", "attempts", "finished", "error", "key", "args",
                  "" if ctx.read_only else "action"], rows, [0, 2], "no failed task")


def _pager(ctx: Context, path: str, ids: Sequence[int], limit: int, before: int | None,
           **filters: object) -> Html:
    """Links to the newest page and to the next older one (ids below the last shown)."""
    shown = {**filters, "limit": None if limit == PAGE_SIZE else limit}
    links = []
    if before is not None:
        links.append(ctx.link(path, "« newest", **shown))
    if len(ids) == limit:
        links.append(ctx.link(path, "older »", before=min(ids), **shown))
    return tag("p", {"class": "pager"}, join(links, " · ")) if links else Html("")


def _last_line(error: str | None) -> str:
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    return short(lines[-1], 120).strip('"') if lines else "-"


# -- one task ----------------------------------------------
def task(ctx: Context, task_id: int) -> Page:
    queue = ctx.queue
    found = queue.get_task(task_id)
    if found is None:
        raise HttpError(404, f"there is no task {task_id}")
    links = queue.links(task_id)
    summary = fields([
        ("status", join([badge(found.status), " cancel requested"
                         if found.cancel_requested and found.status in UNFINISHED else ""])),
        ("channel", ctx.link("/tasks", found.channel, channel=found.channel)),
        ("key", found.key or "-"), ("priority", found.priority),
        ("attempts", found.attempts), ("retries left", found.retries),
        ("time limit", "its channel's" if found.time_limit is None
         else f"{found.time_limit:g}s"),
        ("recoveries", found.recoveries),
        ("progress", "-" if found.progress is None else short(found.progress, 200)),
        ("created", when(found.created_at)), ("run at", when(found.run_at)),
        ("started", when(found.started_at)), ("finished", when(found.finished_at)),
        ("workflow", "-" if links.workflow is None
         else ctx.link(f"/workflows/{links.workflow}", f"workflow {links.workflow}")),
        ("depends on", join([ctx.task_link(i) for i in links.depends_on], " ") or "-"),
        ("dependents", join([ctx.task_link(i) for i in links.dependents], " ") or "-"),
    ])
    history = table(["attempt", "started", "ended", "outcome", "error"],
                    [[a.number, when(a.started_at), when(a.ended_at), a.outcome, a.error or "-"]
                     for a in found.history], [0], "no earlier attempt")
    return Page(f"Task {task_id}", "tasks", [
        Part("summary", summary),
        Part("actions", _task_actions(ctx, found)),
        Part(None, tag("h2", {}, "Error")),
        Part("error", tag("p", {"class": "empty"}, "none") if found.error is None
             else long_text(found.error, 8000)),
        Part(None, tag("h2", {}, "Args")), Part("args", long_text(plain(found.args))),
        Part(None, tag("h2", {}, "Result")), Part("result", long_text(plain(found.result))),
        Part(None, tag("h2", {}, "Earlier attempts")), Part("history", history),
    ])


def _task_actions(ctx: Context, found: Task) -> Html:
    """The buttons that make sense in the task's status (the store has the last word)."""
    path = f"/tasks/{found.id}"
    buttons = []
    if found.status in REQUEUABLE:
        buttons.append(action(ctx, f"{path}/requeue", "requeue",
                              inputs=[text_input("retries", "retries", None, 8, "as before")]))
    if found.status == Status.DELAYED.value:
        buttons.append(action(ctx, f"{path}/run-now", "run now"))
    if found.status in UNFINISHED:
        buttons.append(action(ctx, f"{path}/cancel", "cancel", danger=True))
    if found.status != Status.RUNNING.value:
        buttons.append(action(ctx, f"{path}/delete", "delete", danger=True))
    return tag("div", {"class": "actions"}, buttons)


# -- failed tasks ------------------------------------------
def failed(ctx: Context) -> Page:
    query, queue = ctx.request.query, ctx.queue
    counts = queue.counts()
    channel = query.choice("channel", list(counts), "channel")
    before = query.integer("before")
    limit = query.integer("limit", 1, MAX_PAGE) or PAGE_SIZE
    listed = queue.recent_tasks(channel, Status.FAILED.value, before=before, limit=limit)
    rows = [[ctx.link("/failed", name, channel=name), number(numbers.get("failed", 0)),
             join([action(ctx, "/failed/requeue", "requeue all", {"channel": name},
                          inputs=[text_input("retries", "retries", None, 8, "as before")]),
                   _clear_button(ctx, name)])]
            for name, numbers in counts.items() if numbers.get("failed", 0)]
    more = _pager(ctx, "/failed", [t.id for t in listed], limit, before, channel=channel)
    return Page("Failed tasks", "failed", [
        Part("channels", table(["channel", "failed", "" if ctx.read_only else "actions"], rows,
                               [1], "no failed task")),
        Part(None, tag("h2", {}, "Most recent" + (f" in {channel}" if channel else ""))),
        Part("list", join([_failed_table(ctx, listed), more])),
    ])


def _clear_button(ctx: Context, channel: str) -> Html:
    """Deleting is asked twice: the button is behind a fold, with no script needed."""
    if ctx.read_only:
        return Html("")
    return tag("details", {"class": "confirm"}, tag("summary", {}, "clear…"),
               action(ctx, "/failed/clear", f"delete the failed tasks of {channel}",
                      {"channel": channel}, danger=True))


# -- workflows ---------------------------------------------
def workflows(ctx: Context) -> Page:
    query = ctx.request.query
    before = query.integer("before")
    limit = query.integer("limit", 1, MAX_PAGE) or PAGE_SIZE
    listed = ctx.queue.recent_workflows(before=before, limit=limit)
    shown = [Status.PENDING.value, Status.BLOCKED.value, Status.RUNNING.value,
             Status.DONE.value, Status.FAILED.value, Status.CANCELLED.value]
    rows = [[ctx.link(f"/workflows/{w.id}", f"workflow {w.id}"), number(w.total),
             *[number(w.counts.get(status, 0)) for status in shown],
             "finished" if w.finished else "unfinished"] for w in listed]
    more = _pager(ctx, "/workflows", [w.id for w in listed], limit, before)
    return Page("Workflows", "workflows", [Part("list", join([
        table(["workflow", "tasks", *shown, "state"], rows, list(range(1, len(shown) + 2)),
              "no workflow"), more]))])


def workflow(ctx: Context, workflow_id: int) -> Page:
    queue = ctx.queue
    try:
        status = queue.workflow(workflow_id)
    except ValueError:
        raise HttpError(404, f"there is no workflow {workflow_id}") from None
    after = ctx.request.query.integer("after", 0) or 0
    ids = [i for i in queue.workflow_task_ids(workflow_id) if i > after]
    rows = []
    for task_id in ids[:WORKFLOW_TASKS]:
        found = queue.get_task(task_id)
        if found is not None:
            rows.append([ctx.task_link(task_id), found.channel, badge(found.status),
                         join([ctx.task_link(i) for i in queue.links(task_id).depends_on],
                              " ") or "-", _last_line(found.error)])
    more = ctx.link(f"/workflows/{workflow_id}", "next tasks »",
                    after=ids[WORKFLOW_TASKS - 1]) if len(ids) > WORKFLOW_TASKS else Html("")
    counts = ", ".join(f"{n:,} {name}" for name, n in sorted(status.counts.items()) if n)
    return Page(f"Workflow {workflow_id}", "workflows", [
        Part("counts", tag("p", {}, f"{status.total:,} tasks: {counts}")),
        Part("tasks", join([table(["task", "channel", "status", "depends on", "error"], rows,
                                  [0], "no task"), tag("p", {"class": "pager"}, more)]))])


# -- periodic schedules ------------------------------------
def periodic(ctx: Context) -> Page:
    rows = []
    for p in ctx.queue.periodics():
        schedule = p.error or (f"{p.cron} ({p.tz})" if p.cron else f"every {p.every:g}s")
        next_run = join([when(p.next_run), "" if p.next_run is None else
                         f" (in {age((p.next_run - ctx.now).total_seconds())})"])
        last = "-" if p.last_task is None else join(
            [ctx.task_link(p.last_task), " ", badge(p.last_status or "gone")])
        rows.append([p.name, p.channel, schedule, next_run, when(p.last_tick), last])
    return Page("Periodic tasks", "periodic", [Part("list", table(
        ["name", "channel", "schedule", "next run", "last tick", "last task"], rows, [],
        "no periodic task"))])


# -- channels: limits and purge ----------------------------
def channels(ctx: Context) -> Page:
    queue = ctx.queue
    counts = queue.counts()
    limits = queue.all_limits()
    shown = [[name, str(limits[name].rate_limit or "-") if name in limits else "-",
              str(limits[name].max_running or "-") if name in limits else "-",
              number(sum(numbers.values()))] for name, numbers in counts.items()]
    parts = [Part("limits", table(["channel", "rate limit", "max running", "tasks"], shown,
                                  [2, 3], "no channel yet"))]
    if not ctx.read_only:
        parts.append(Part(None, join([tag("h2", {}, "Change limits"),
                                      tag("div", {"class": "limits"},
                                          [_limits_form(ctx, name, limits.get(name))
                                           for name in counts]),
                                      tag("h2", {}, "Purge finished tasks"),
                                      _purge_form(ctx, list(counts))])))
    return Page("Channels", "channels", parts)


def _limits_form(ctx: Context, channel: str, current: object) -> Html:
    rate = getattr(current, "rate_limit", None)
    running = getattr(current, "max_running", None)
    return action(ctx, "/limits", f"set limits of {channel}", {"channel": channel}, inputs=[
        tag("strong", {}, channel),
        text_input("rate", "rate", rate or "none", 8, "10/s or none"),
        text_input("max_running", "max running", running or "none", 5, "3 or none")])


def _purge_form(ctx: Context, names: Sequence[str]) -> Html:
    return action(ctx, "/purge", "purge", danger=True, inputs=[
        text_input("older_than", "finished more than", "7d", 6, "90, 30m, 7d"), " ago, ",
        select("channel", "channel", names, None, "every channel")])
