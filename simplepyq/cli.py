"""The ``simplepyq`` command: inspect and maintain a task store, enqueue, and run a worker.

``simplepyq ...`` and ``python -m simplepyq ...`` are the same program. It uses
argparse only, so the command line adds no dependency to the library. Exit
codes: 0 success; 1 a runtime error (one line on stderr, the traceback too with
``--debug``); 2 a usage error (bad arguments, including a ``worker`` target or
``--channels`` that do not match the code they name). Every command but
``enqueue`` and ``worker`` refuses a store that does not exist (a file, or a
PostgreSQL schema), so a mistyped path or schema never becomes a new empty store.
The library's warnings (and with ``--debug`` its debug logs) are told on stderr as
the command's own messages are: ``simplepyq: warning: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from types import FrameType
from typing import Any, TypeVar

from simplepyq import __version__, display, typed
from simplepyq.copying import CopyReport, LiveWorkersError, copy_tasks
from simplepyq.errors import UnknownChannelError
from simplepyq.limits import Limits, check_time_limit
from simplepyq.progress import (
    JsonView,
    LogView,
    Progress,
    TerminalView,
    View,
    cell,
    display_width,
    is_terminal,
    padded,
    printable,
    shown_statuses,
)
from simplepyq.queue import UNCHANGED, SimplePyQ
from simplepyq.storage import MEMORY, is_database_url, open_store, store_location
from simplepyq.task import Status, Task
from simplepyq.workflows import Links

log = logging.getLogger("simplepyq.cli")
T = TypeVar("T")

PROG = "simplepyq"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DB_ENV = "SIMPLEPYQ_DB"
PASSWORD_ENV = "SIMPLEPYQ_DASHBOARD_PASSWORD"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
AGE_HELP = "a number of seconds, or with a unit s, m, h or d (90, 1s, 30m, 7d)"
CELL_WIDTH = 50
"""Columns a table cell may take; longer ones are cut with an ellipsis."""
UNKNOWN = "unknown"
UNFINISHED = (Status.PENDING, Status.DELAYED, Status.RUNNING, Status.BLOCKED)


class UsageError(Exception):
    """Arguments that parsed but make no sense together: exit code 2."""


class CommandError(Exception):
    """A runtime failure the user can fix, told in one line: exit code 1."""


class Stop(BaseException):
    """Raised in the main thread by the first SIGINT or SIGTERM: stop the worker gracefully.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on
    the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# -- entry point -------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 itself on a usage error
    args.json = getattr(args, "json", False)
    args.debug = getattr(args, "debug", False)
    args.db = getattr(args, "db", None)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        if args.command == "worker":  # (which sets up its own logging: see _Events)
            return run(args)
        with _library_messages(args.debug):
            return run(args)
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (``simplepyq tasks | head``): stop quietly, as other
        # tools do, and keep Python from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{parser.prog}: error: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; ``--db``, ``--json`` and ``--debug`` go before or after it."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Inspect and maintain a simplepyq task store, and run "
        f"workers. The store is --db PATH, or ${DB_ENV}.",
    )

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int],
                text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        _common_options(sub)
        sub.set_defaults(run=run)
        return sub

    command("stats", cmd_stats, "Task counts per channel and status, live workers, the age "
            "of the oldest pending task, and channels with unfinished tasks but no live worker.")

    sub = command("tasks", cmd_tasks, "List tasks, oldest first.")
    sub.add_argument("--channel", metavar="C", help="only tasks of this channel")
    sub.add_argument("--status", choices=[s.value for s in Status], help="only tasks in it")
    sub.add_argument("--limit", type=_count, default=100, metavar="N",
                     help="at most N tasks (default 100)")

    sub = command("show", cmd_show,
                  "One task in full: args, result, times, history, error traceback.")
    sub.add_argument("id", type=int, metavar="ID")

    command("periodic", cmd_periodic, "Periodic tasks: each schedule with its next run, "
            "its last tick, and that tick's task and its status.")

    sub = command("workflow", cmd_workflow,
                  "A workflow's tasks (ID: the workflow's id, or any of its tasks' ids): "
                  "counts by status, and each task with what it depends on.")
    sub.add_argument("id", type=int, metavar="ID")

    sub = command("requeue-failed", cmd_requeue_failed, "Make failed tasks pending again; a "
                  "failed task whose key an unfinished task holds stays failed, with a "
                  "warning naming it.")
    sub.add_argument("--channel", metavar="C", help="only tasks of this channel")
    sub.add_argument("--retries", type=_count, metavar="N",
                     help="give them N retries (default: the count they had)")

    sub = command("clear-failed", cmd_clear_failed, "Delete failed tasks.")
    sub.add_argument("--channel", metavar="C", help="only tasks of this channel")

    sub = command("purge", cmd_purge,
                  "Delete done, failed and cancelled tasks that finished long ago.")
    sub.add_argument("--older-than", type=_duration, required=True, metavar="AGE",
                     help="finished more than AGE ago: " + AGE_HELP)
    sub.add_argument("--channel", metavar="C", help="only tasks of this channel")

    sub = command("remove-channel", cmd_remove_channel,
                  "Forget a channel and delete all its tasks.")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    sub = command("enqueue", cmd_enqueue, "Enqueue one task; print its id. With --key, an "
                  "unfinished task of the channel that holds the key already is kept instead: "
                  "its id is printed, and stderr says that nothing was enqueued.")
    sub.add_argument("channel", metavar="CHANNEL")
    sub.add_argument("args", type=_json_value, metavar="JSON", help="the task's args, as JSON")
    sub.add_argument("--retries", type=_count, default=0, metavar="N")
    sub.add_argument("--delay", type=_duration, metavar="AGE",
                     help="run no sooner than AGE from now: " + AGE_HELP)
    sub.add_argument("--priority", type=int, default=0, metavar="P",
                     help="higher runs first (default 0)")
    sub.add_argument("--key", type=_key, metavar="KEY",
                     help="unique key: while an unfinished (pending, delayed, running or blocked) "
                     "task of the channel holds it, nothing is enqueued")
    sub.add_argument("--time-limit", type=_time_limit, metavar="SECONDS",
                     help="each run may take at most this long, in place of the channel's: "
                     + AGE_HELP)

    sub = command("cancel", cmd_cancel, "Cancel tasks and print what became of each: a "
                  "pending or delayed task is cancelled at once; a running one is asked to "
                  "stop; a finished one is left as it is. Exit code 0 if every ID exists, "
                  "1 otherwise.")
    sub.add_argument("ids", type=int, nargs="+", metavar="ID")

    sub = command("limits", cmd_limits, "Show the rate and concurrency limits of CHANNEL (of "
                  "every channel without one), or change them: every process sharing the "
                  "store obeys the new ones from its next claim.")
    sub.add_argument("channel", nargs="?", metavar="CHANNEL")
    sub.add_argument("--rate", type=_rate, default=UNCHANGED, metavar="RATE",
                     help="at most COUNT/UNIT tasks start in any such window, across every "
                     f"process (10/s, 100/m, 5/h, 1000/d); {typed.NO_LIMIT} removes it")
    sub.add_argument("--max-running", type=_max_running, default=UNCHANGED, metavar="N",
                     help=f"at most N tasks run at once, across every process; {typed.NO_LIMIT} "
                     "removes it")

    sub = command("copy", cmd_copy, "Move the unfinished and failed tasks of one store into "
                  "another, e.g. from a SQLite file to PostgreSQL; its workers must be stopped.")
    sub.add_argument("--from", dest="source", required=True, metavar="STORE",
                     help="the store to copy from: a file path or a postgresql:// URL")
    sub.add_argument("--to", dest="target", required=True, metavar="STORE",
                     help="the store to copy into (created if missing)")
    sub.add_argument("--keep", action="store_true",
                     help="leave the copied tasks in the source too (by default they are "
                     "deleted there, so that none can run twice)")
    sub.add_argument("--lease", type=_duration, default=30.0, metavar="AGE",
                     help="a worker on another host counts as stopped once its heartbeat is "
                     "AGE old (default 30s, the workers' default lease): " + AGE_HELP)

    sub = command("worker", cmd_worker, "Run the channels of a SimplePyQ defined in a module "
                  "until SIGTERM or SIGINT (a second one stops at once).")
    sub.add_argument("target", metavar="MODULE:ATTR",
                     help="where the queue is, e.g. myapp.tasks:queue (the current directory "
                     "is importable)")
    sub.add_argument("--channels", type=_names, metavar="A,B",
                     help="run only these of its channels")
    sub.add_argument("--burst", action="store_true",
                     help="exit once every task of its channels is done or failed")
    sub.add_argument("--keep-done", type=_duration, metavar="AGE",
                     help="delete done tasks finished more than AGE ago, as it runs "
                     "(default: as the queue says; it keeps them): " + AGE_HELP)
    sub.add_argument("--keep-failed", type=_duration, metavar="AGE",
                     help="the same for failed and cancelled tasks")
    sub.add_argument("--watch", action="append", metavar="DIR",
                     help="for development: run the worker in a child process, and restart it "
                     "gracefully when a Python file under DIR changes (repeatable; faster with "
                     "the watch extra: pip install 'simplepyq[watch]')")

    sub = command("dashboard", cmd_dashboard, "Serve the web dashboard of the store (pages, "
                  f"/metrics, /healthz) until SIGINT or SIGTERM. ${PASSWORD_ENV}, if set, "
                  "is its password (HTTP Basic auth, any user name).")
    sub.add_argument("--host", default="127.0.0.1", metavar="HOST",
                     help="the address to listen on (default 127.0.0.1: this machine only); "
                     f"any other needs ${PASSWORD_ENV} or --insecure-no-password")
    sub.add_argument("--port", type=_port, default=8181, metavar="PORT",
                     help="the port (default 8181; 0 picks a free one)")
    sub.add_argument("--read-only", action="store_true",
                     help="show the store, change nothing: no buttons, actions refused")
    sub.add_argument("--insecure-no-password", action="store_true",
                     help="serve on a non-loopback --host without a password")
    return parser


def _common_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: an option given before the command is not reset by the command's parser.
    parser.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"the task store (default: ${DB_ENV})")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors, and debug logs")


# -- maintenance and inspection ----------------------------
def cmd_stats(args: argparse.Namespace) -> int:
    with _opened(args) as queue:
        counts = queue.stats()
        registered = set(queue.known_channels())
        since = queue.pending_since()
        workers = queue.live_workers()
    now = datetime.now(timezone.utc)
    channels = {name: {**numbers, "workers": workers.get(name, 0),
                       **_oldest_pending(since, name, now),
                       "registered": name in registered,
                       "no_live_worker": workers.get(name, 0) == 0
                       and any(numbers.get(s.value, 0) for s in UNFINISHED)}
                for name, numbers in counts.items()}
    if args.json:
        return _print_json({"store": _shown(args.db), "channels": channels})
    statuses = shown_statuses(counts.values())
    rows = [[cell(name, CELL_WIDTH - 1) + ("*" if row["no_live_worker"] else ""),
             *[str(row[s]) for s in statuses], str(row["workers"]),
             UNKNOWN if row["oldest_pending_unknown"]
             else display.age(row["oldest_pending_age"])]
            for name, row in channels.items()]
    # OLDEST: the age of the oldest pending task. The table fits in 80 columns with
    # channel names up to 9 characters.
    _print_table(["CHANNEL", *[s.upper() for s in statuses], "WORKERS", "OLDEST"], rows)
    if any(row["no_live_worker"] for row in channels.values()):
        print("* has pending, delayed or running tasks, but no live worker runs this channel")
    if any(row["oldest_pending_unknown"] for row in channels.values()):
        print(f"{UNKNOWN}: some pending task has no enqueue time (written by simplepyq 0.1.3), "
              "so it may have waited for any length of time")
    return EXIT_OK


def _oldest_pending(since: dict[str, datetime | None], name: str,
                    now: datetime) -> dict[str, Any]:
    """How long the channel's longest-waiting pending task has been due, in seconds
    (None if it has no pending task, or if that is unknown), and whether it is unknown."""
    when = since.get(name)
    return {"oldest_pending_age": None if when is None else (now - when).total_seconds(),
            "oldest_pending_unknown": name in since and when is None}


def cmd_tasks(args: argparse.Namespace) -> int:
    with _opened(args) as queue:
        _check_channel(queue, args.channel)
        tasks = queue.tasks(args.channel, args.status, args.limit)
    if args.json:
        return _print_json([_task_dict(task) for task in tasks])
    _print_table(["ID", "CHANNEL", "STATUS", "ATTEMPTS", "RETRIES", "CREATED", "KEY", "ARGS"],
                 [[str(t.id), t.channel, t.status, str(t.attempts), str(t.retries),
                   display.when(t.created_at), "-" if t.key is None else t.key,
                   display.to_json(t.args)]
                  for t in tasks])
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with _opened(args) as queue:
        task = queue.get_task(args.id)
        links = None if task is None else queue.links(task.id)
    if task is None or links is None:
        raise CommandError(f"there is no task with id {args.id}")
    if args.json:
        return _print_json({**_task_dict(task), **_links_dict(links)})
    fields = [
        ("id", task.id), ("channel", printable(task.channel)), ("status", _status(task)),
        ("key", "-" if task.key is None else printable(task.key)),
        ("workflow", "-" if links.workflow is None else links.workflow),
        ("depends_on", _id_list(links.depends_on)), ("dependents", _id_list(links.dependents)),
        ("args", display.to_json(task.args)), ("result", display.to_json(task.result)),
        ("progress", display.to_json(task.progress)),
        ("attempts", task.attempts), ("retries", f"{task.retries} left"),
        ("priority", task.priority),
        ("time_limit", "- (its channel's)" if task.time_limit is None
         else f"{task.time_limit:g}s"),
        ("cancel", "requested" if task.cancel_requested else "-"),
        ("created_at", display.when(task.created_at)),
        ("run_at", display.when(task.run_at)), ("started_at", display.when(task.started_at)),
        ("finished_at", display.when(task.finished_at)),
    ]
    for key, value in fields:
        print(f"{key:<12} {value}")
    print(f"{'history':<12} {'-' if not task.history else ''}".rstrip())
    for attempt in task.history:
        print(f"  #{attempt.number}  {display.when(attempt.started_at)} to "
              f"{display.when(attempt.ended_at)}  {attempt.outcome}: "
              f"{printable(attempt.error or '-')}")
    print(f"{'error':<12} {'-' if task.error is None else ''}".rstrip())
    if task.error is not None:
        print(task.error.rstrip("\n"))
    return EXIT_OK


def cmd_periodic(args: argparse.Namespace) -> int:
    with _opened(args) as queue:
        schedules = queue.periodics()
    if args.json:
        return _print_json([{
            "name": p.name, "channel": p.channel, "cron": p.cron, "every": p.every,
            "tz": p.tz, "next_run": _iso(p.next_run), "last_tick": _iso(p.last_tick),
            "last_task": p.last_task, "last_status": p.last_status, "error": p.error}
            for p in schedules])
    _print_table(["NAME", "CHANNEL", "WHEN", "NEXT RUN", "LAST TICK", "LAST TASK"],
                 [[p.name, p.channel, p.error or (f"{p.cron} ({p.tz})" if p.cron
                                                  else f"every {p.every:g}s"),
                   display.when(p.next_run), display.when(p.last_tick),
                   "-" if p.last_task is None else f"{p.last_task} {p.last_status or 'gone'}"]
                  for p in schedules])
    return EXIT_OK


def cmd_workflow(args: argparse.Namespace) -> int:
    with _opened(args) as queue:
        workflow = queue.links(args.id).workflow if queue.get_task(args.id) else None
        workflow = args.id if workflow is None else workflow
        ids = queue.workflow_task_ids(workflow)
        if not ids:
            raise CommandError(f"there is no workflow with id {args.id}")
        tasks = [(queue.get_task(task_id), queue.links(task_id)) for task_id in ids]
    shown = [(task, links) for task, links in tasks if task is not None]
    counts: dict[str, int] = {}
    for task, _ in shown:
        counts[_status(task)] = counts.get(_status(task), 0) + 1
    if args.json:
        return _print_json({"workflow": workflow, "counts": counts, "tasks": [
            {"id": task.id, "channel": task.channel, "status": _status(task),
             **_links_dict(links)} for task, links in shown]})
    print(f"workflow {workflow}: " + ", ".join(f"{count} {status}"
                                              for status, count in sorted(counts.items())))
    _print_table(["ID", "CHANNEL", "STATUS", "DEPENDS ON", "ERROR"],
                 [[str(task.id), task.channel, _status(task), _id_list(links.depends_on),
                   "-" if task.error is None else task.error.strip().splitlines()[-1]]
                  for task, links in shown])
    return EXIT_OK


def cmd_requeue_failed(args: argparse.Namespace) -> int:
    return _maintain(args, "requeued", "failed task(s) made pending again",
                     lambda queue: queue.requeue_failed(args.channel, args.retries))


def cmd_clear_failed(args: argparse.Namespace) -> int:
    return _maintain(args, "cleared", "failed task(s) deleted",
                     lambda queue: queue.clear_failed(args.channel))


def cmd_purge(args: argparse.Namespace) -> int:
    return _maintain(args, "purged", "finished task(s) deleted",
                     lambda queue: queue.purge(args.older_than, args.channel))


def _maintain(args: argparse.Namespace, key: str, what: str,
              action: Callable[[SimplePyQ], int]) -> int:
    """Run one maintenance call on the tasks of ``--channel`` (or all); print how many."""
    with _opened(args) as queue:
        _check_channel(queue, args.channel)
        count = action(queue)
    return _report(args, key, count, what)


def cmd_remove_channel(args: argparse.Namespace) -> int:
    with _opened(args) as queue:
        _check_channel(queue, args.name)
        tasks = sum(queue.stats()[args.name].values())
        question = f"Remove channel {args.name!r} and delete its {tasks} task(s)? [y/N] "
        if not args.yes and is_terminal(sys.stdin) and not _confirmed(question):
            raise CommandError("nothing removed (not confirmed)")
        count = queue.remove_channel(args.name)
    return _report(args, "removed", count, f"task(s) deleted with channel {args.name!r}")


def cmd_enqueue(args: argparse.Namespace) -> int:
    with _opened(args, create=True) as queue:
        task_id = queue.enqueue(args.channel, args.args, args.retries, delay=args.delay,
                                priority=args.priority, key=args.key,
                                time_limit=args.time_limit)
        holder = None if task_id.created else queue.get_task(task_id)
    if args.json:
        return _print_json({"id": task_id, "created": task_id.created})
    print(task_id)
    if not task_id.created:
        status = "unfinished" if holder is None else _status(holder)
        _say(f"nothing enqueued: task {task_id} ({status}) holds key {args.key!r} in channel "
             f"{printable(args.channel)!r}")
    return EXIT_OK


# -- task control ------------------------------------------
def cmd_cancel(args: argparse.Namespace) -> int:
    outcomes: list[dict[str, Any]] = []
    with _opened(args) as queue:
        for task_id in args.ids:
            try:  # read before and after: a running task may end (cancelled, even) at once
                before = queue.get_task(task_id)
                changed = queue.cancel(task_id)
            except ValueError as exc:  # no such task (or an id no task can have)
                outcomes.append({"id": task_id, "outcome": "missing", "status": None,
                                 "error": str(exc)})
                continue
            after = queue.get_task(task_id)  # (None: deleted meanwhile)
            status = None if after is None else _status(after)
            ran = before is not None and before.status == Status.RUNNING.value
            outcome = "already_finished" if not changed else (
                "cancelled" if status == Status.CANCELLED.value and not ran
                else "cancel_requested")
            outcomes.append({"id": task_id, "outcome": outcome, "status": status})
    exit_code = EXIT_ERROR if any(o["outcome"] == "missing" for o in outcomes) else EXIT_OK
    if args.json:
        _print_json(outcomes)
        return exit_code
    for each in outcomes:
        if each["outcome"] == "missing":
            print(f"{PROG}: error: {each['error']}", file=sys.stderr)
        else:
            print(f"task {each['id']}: {_cancel_told(each['outcome'], each['status'])}")
    return exit_code


def _cancel_told(outcome: str, status: str | None) -> str:
    """What a cancel did to one task, in words."""
    if outcome == "cancelled":
        return "cancelled"
    if outcome == "already_finished":
        return f"already {status or 'finished'}, left as it is"
    if status == Status.RUNNING.value:
        return "cancel requested while it runs (cancelled if it then raises, done if it returns)"
    return f"cancel requested while it ran; it has ended {status or 'and is gone'}"


def cmd_limits(args: argparse.Namespace) -> int:
    changing = args.rate is not UNCHANGED or args.max_running is not UNCHANGED
    if changing and args.channel is None:
        raise UsageError("give the CHANNEL whose limits --rate or --max-running change")
    with _opened(args) as queue:
        if args.channel is None:
            found = dict(sorted(queue.all_limits().items()))
        elif changing:
            found = {args.channel: queue.set_limits(args.channel, rate_limit=args.rate,
                                                    max_running=args.max_running)}
        else:
            found = {args.channel: queue.limits(args.channel)}
    if args.json:
        if args.channel is not None:
            return _print_json({"channel": args.channel, **_limits_dict(found[args.channel])})
        return _print_json({"channels": {name: _limits_dict(limits)
                                         for name, limits in found.items()}})
    if args.channel is not None:
        print(f"{printable(args.channel)}: {found[args.channel]}")
        return EXIT_OK
    _print_table(["CHANNEL", "RATE", "MAX RUNNING"],
                 [[name, str(limits.rate_limit or "-"), str(limits.max_running or "-")]
                  for name, limits in found.items()])
    return EXIT_OK


def _limits_dict(limits: Limits) -> dict[str, Any]:
    rate = limits.rate_limit
    return {"rate_limit": None if rate is None else str(rate),
            "max_running": limits.max_running}


def cmd_copy(args: argparse.Namespace) -> int:
    if _same_file(args.source, args.target):
        raise UsageError(f"--from and --to name the same store {_shown(args.source)!r}")
    _check_shared(args.source, "--from")
    _check_shared(args.target, "--to")
    if not _exists(args.source):
        raise CommandError(f"there is no task store at {_shown(args.source)!r} to copy from")
    source = open_store(args.source, busy_timeout=30.0)
    try:
        target = open_store(args.target, busy_timeout=30.0)
        try:
            report = copy_tasks(source, target, keep=args.keep, lease=args.lease,
                                now=time.time())
        finally:
            target.close()
    except LiveWorkersError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        source.close()
    return _copied(args, source.location, target.location, report)


def _copied(args: argparse.Namespace, source: str, target: str, report: CopyReport) -> int:
    """Tell what a copy did; exit 1 if some task could not be moved cleanly."""
    clean = not report.skipped and not report.changed
    if args.json:
        _print_json({"from": source, "to": target, "copied": dict(report.copied),
                     "removed": report.removed, "changed": report.changed,
                     "skipped": report.skipped})
        return EXIT_OK if clean else EXIT_ERROR
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.copied.items()))
    print(f"{report.copied.total()} task(s) copied from {source} to {target}"
          + (f" ({counts})" if counts else ""))
    if not args.keep:
        print(f"{report.removed} task(s) deleted from {source}")
    for reason in report.skipped:
        print(f"not copied: {reason}", file=sys.stderr)
    if report.changed:
        print(f"{report.changed} copied task(s) changed in {source} during the copy (a worker "
              "is running there): they are now in both stores", file=sys.stderr)
    return EXIT_OK if clean else EXIT_ERROR


# -- the dashboard -----------------------------------------
def cmd_dashboard(args: argparse.Namespace) -> int:
    from simplepyq.dashboard import Dashboard, server

    password = os.environ.get(PASSWORD_ENV) or None
    exposed = not server.is_loopback(args.host)
    if exposed and password is None and not args.insecure_no_password:
        raise UsageError(f"--host {args.host} can be reached from other machines: set a "
                         f"password in ${PASSWORD_ENV} (HTTP Basic auth), or pass "
                         "--insecure-no-password to serve without one")
    with _opened(args) as queue:
        dashboard = Dashboard(queue, read_only=args.read_only, password=password)
        try:
            bound = server.bind(dashboard, args.host, args.port)
        except OSError as exc:
            raise CommandError(f"cannot serve on {args.host} port {args.port}: "
                               f"{exc.strerror or exc}") from None
        if exposed and password is None:
            _say(f"warning: INSECURE: serving {server.url(bound)} WITHOUT A PASSWORD "
                 "(--insecure-no-password): anyone who reaches it sees every task"
                 + ("" if args.read_only else " and can change the store"))
        print(f"serving {_shown(queue.store_path)} on {server.url(bound)}"
              + (" (read-only)" if args.read_only else ""), flush=True)
        server.serve(bound)
    return EXIT_OK


# -- the worker --------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    if args.watch:  # this process only supervises: see simplepyq/reloading.py
        from simplepyq.reloading import Supervisor, worker_command

        if args.burst:
            raise UsageError("--watch restarts a worker that runs until it is stopped, and "
                             "--burst stops it once its channels are drained: give one or "
                             "the other")
        try:
            supervisor = Supervisor(worker_command(args), args.watch, _Events(args, []).say)
        except ValueError as exc:  # a DIR that is not a directory, or a bad $SIMPLEPYQ_WATCH
            raise UsageError(str(exc)) from None
        return supervisor.run()
    queue = _load_queue(args.target)
    try:
        return _work(args, queue)
    finally:
        queue.close()


def _work(args: argparse.Namespace, queue: SimplePyQ) -> int:
    db = args.db or os.environ.get(DB_ENV)
    if db and not _same_file(db, queue.store_path):
        raise CommandError(f"{args.target} uses the store {queue.store_path!r}, but --db or "
                           f"${DB_ENV} names {_shown(db)!r}; give the same one, or neither")
    local = queue.local_channels()
    names: list[str] = args.channels or local
    unknown = [name for name in names if name not in local]
    if unknown:
        raise UsageError(f"--channels names {', '.join(map(repr, unknown))}, which "
                         f"{args.target} does not define; it defines "
                         f"{', '.join(local) or 'no channel'}")
    if not names:
        raise CommandError(f"{args.target} defines no channel: there is nothing to run")
    given = {name: getattr(args, name) for name in ("keep_done", "keep_failed")
             if getattr(args, name) is not None}
    if given:
        queue.set_retention(**given)
    events = _Events(args, names)
    progress = Progress(queue.stats, names, events.view)
    events.say("started", f"worker {os.getpid()} started on {queue.store_path} for channels "
               f"{', '.join(map(printable, names))}" + (" (burst)" if args.burst else ""),
               pid=os.getpid(), store=queue.store_path, channels=names, burst=args.burst)
    shutdown = _Shutdown(events)
    reason, clean = "drained", True
    try:
        progress.refresh()  # the counts before this worker starts anything
        queue.start(args.channels)
        shutdown.arm()
        if args.burst:
            queue.run_until_complete(channels=args.channels, progress=progress)
        else:
            while True:
                progress.tick()
                time.sleep(progress.interval)
    except Stop as stop:
        reason = str(stop)
        # No task starts from here on; then say so, and let the running ones finish (a
        # second signal exits at once instead). A burst's run_until_complete has
        # stopped already: this says whether it was clean.
        queue.stop(timeout=0)
        shutdown.announce()
        clean = queue.stop()
        if not args.burst:  # (run_until_complete has shown the end already)
            progress.close()
    events.say("stopped", f"worker {os.getpid()} stopped ({reason})", reason=reason)
    if not clean:
        raise CommandError("the store refused the outcomes of tasks that finished while the "
                           "worker stopped; those tasks will run again once this process is "
                           "gone")
    return EXIT_OK


class _Events:
    """Where the worker's events and progress go: a terminal, log lines, or JSON lines."""

    def __init__(self, args: argparse.Namespace, channels: Sequence[str]) -> None:
        self.json = args.json
        level = logging.DEBUG if args.debug else logging.INFO
        handler: logging.Handler
        self.view: View
        self._terminal: TerminalView | None = None
        self._fd = sys.stdout.fileno() if self.json else sys.stderr.fileno()
        if self.json:
            self.view = JsonView(sys.stdout)
            handler = logging.StreamHandler(sys.stderr)
        elif is_terminal(sys.stderr):
            terminal = self._terminal = TerminalView(sys.stderr)
            self.view, handler = terminal, terminal.log_handler()
        else:
            self.view, handler = LogView(), logging.StreamHandler(sys.stderr)
        handler.setFormatter(UtcFormatter(LOG_FORMAT))
        self.formatter = handler.formatter
        # The user's module may have set up logging already; then its set-up wins.
        logging.basicConfig(level=level, handlers=[handler])
        logging.getLogger("simplepyq").setLevel(level)

    def say(self, event: str, message: str, **fields: Any) -> None:
        if self.json:
            print(json.dumps({"event": event, **fields}), flush=True)
        else:
            log.info("%s", message)

    def interrupt(self, event: str, message: str, **fields: Any) -> None:
        """Tell of an event from a signal handler, which may have interrupted a write:
        straight to the file descriptor, above the live table if one is drawn."""
        if self.json:
            line = (json.dumps({"event": event, **fields}) + "\n").encode()
        else:
            record = log.makeRecord(log.name, logging.INFO, __file__, 0, message, (), None)
            formatter = self.formatter or UtcFormatter(LOG_FORMAT)
            line = (formatter.format(record) + "\n").encode()
        if self._terminal is not None:
            self._terminal.interrupt(line)
        else:
            os.write(self._fd, line)


class UtcFormatter(logging.Formatter):
    """Log lines stamped like the listings: UTC, marked Z (``2026-05-01 12:00:00.250Z``)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc)
        return stamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:23] + "Z"


class _Shutdown:
    """SIGINT and SIGTERM: the first one stops the worker gracefully, the next one at once.

    The first raises ``Stop`` in the main thread, but only once ``arm`` is called:
    raised while the queue is still starting, it would leave workers that nothing
    stops. It is told of (``announce``) once no task can start any more, so that
    whoever reads "stopping" may count on it. Signals are told of through
    ``_Events.interrupt``, since a handler may interrupt a ``print`` and buffered
    streams refuse to be re-entered.
    """

    def __init__(self, events: _Events) -> None:
        self._events = events
        self._armed = False
        self._received: int | None = None
        self._announced = False
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._handle)

    def arm(self) -> None:
        """From now on the first signal raises ``Stop``; raise it now if one came already."""
        self._armed = True
        if self._received is not None:
            raise Stop(self._received)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._received is not None:
            self._events.interrupt(
                "killed", f"{name}: stopping at once; tasks left running will be recovered "
                "and run again", signal=name)
            os._exit(128 + signum)
        self._received = signum
        if self._armed:
            raise Stop(signum)
        self.announce()  # (the queue is starting: arm() raises Stop once it has)

    def announce(self) -> None:
        """Tell of the first signal, once."""
        if self._received is None or self._announced:
            return
        self._announced = True
        name = signal.Signals(self._received).name
        self._events.interrupt(
            "stopping", f"{name}: stopping; running tasks finish, unstarted ones stay pending "
            "(signal again to stop at once)", signal=name)


def _load_queue(target: str) -> SimplePyQ:
    """Import ``MODULE:ATTR`` the way ``python -m`` would see it from here, and check it."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UsageError(f"{target!r} is not MODULE:ATTR, e.g. myapp.tasks:queue")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            # The module exists but imports something missing: a runtime error.
            raise CommandError(f"importing {module_name} failed: {exc}") from exc
        raise UsageError(f"no module named {exc.name!r} (looked in {os.getcwd()} and "
                         "sys.path)") from exc
    except Exception as exc:
        raise CommandError(f"importing {module_name} failed: {type(exc).__name__}: "
                           f"{exc}") from exc

    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise UsageError(f"{module_name} has no attribute {attr!r}")
        value = getattr(value, part)
    if not isinstance(value, SimplePyQ):
        raise UsageError(f"{target} is a {type(value).__name__}, not a SimplePyQ")
    return value


def _same_file(a: str, b: str) -> bool:
    if is_database_url(a) or is_database_url(b):  # (a queue's store_path hides the password)
        return _shown(a) == _shown(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


# -- helpers -----------------------------------------------
def _exists(location: str) -> bool:
    """Whether a store is at ``location``: the file, or a PostgreSQL schema holding one."""
    if is_database_url(location):
        from simplepyq.storage.postgres import store_exists

        return store_exists(location)
    return os.path.exists(location)


def _check_shared(location: str, option: str) -> None:
    """Refuse ``:memory:``: a store in one process's memory, which no command can reach."""
    if location == MEMORY:
        raise UsageError(f"{option} {MEMORY} names a store private to the process that "
                         "opened it, out of this command's reach; give a file path or a "
                         "postgresql:// URL")


def _shown(location: str) -> str:
    """``location`` fit to print: a database URL loses its password."""
    if is_database_url(location):
        from simplepyq.storage.postgres import redacted

        return redacted(location)
    return location


@contextmanager
def _opened(args: argparse.Namespace, create: bool = False) -> Iterator[SimplePyQ]:
    path = args.db or os.environ.get(DB_ENV)
    if not path:
        raise UsageError(f"no task store given: pass --db PATH or set ${DB_ENV}")
    store_location(path)  # a URL of another database is refused without showing it whole
    _check_shared(path, "--db")
    if not create and not _exists(path):
        raise CommandError(f"there is no task store at {_shown(path)!r} (only enqueue and worker "
                           "create one); check --db or $" + DB_ENV)
    args.db = path
    queue = SimplePyQ(path)
    try:
        yield queue
    finally:
        queue.close()


def _check_channel(queue: SimplePyQ, name: str | None) -> None:
    """Refuse a channel the store has never heard of: a typo would otherwise touch nothing."""
    if name is not None:
        known = set(queue.stats())
        if name not in known:
            raise UnknownChannelError(name, known)


def _say(message: str) -> None:
    """A notice about what a command did (not its output): on stderr, as warnings are."""
    print(f"{PROG}: {message}", file=sys.stderr)


class _MessageHandler(logging.Handler):
    """The library's log records, told on stderr as the command's own messages are."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _say(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:
            self.handleError(record)


@contextmanager
def _library_messages(debug: bool) -> Iterator[None]:
    """While a command runs, show the library's warnings (its debug logs too with
    ``--debug``), which would otherwise go nowhere: ``requeue-failed`` tells by a
    warning which failed tasks stayed failed because their key was held."""
    logger = logging.getLogger("simplepyq")
    handler = _MessageHandler(logging.DEBUG if debug else logging.WARNING)
    level = logger.level
    logger.addHandler(handler)
    if debug:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _confirmed(question: str) -> bool:
    sys.stderr.write(question)
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _report(args: argparse.Namespace, key: str, count: int, what: str) -> int:
    if args.json:
        return _print_json({key: count})
    print(f"{count} {what}")
    return EXIT_OK


def _task_dict(task: Task) -> dict[str, Any]:
    return {
        "id": task.id, "channel": task.channel, "status": _status(task),
        "args": display.jsonable(task.args), "result": display.jsonable(task.result),
        "retries": task.retries, "attempts": task.attempts, "priority": task.priority,
        "created_at": _iso(task.created_at), "run_at": _iso(task.run_at),
        "started_at": _iso(task.started_at), "finished_at": _iso(task.finished_at),
        "error": task.error, "recoveries": task.recoveries, "key": task.key,
        "time_limit": task.time_limit, "cancel_requested": task.cancel_requested,
        "progress": display.jsonable(task.progress),
        "history": [{"attempt": a.number, "started_at": _iso(a.started_at),
                     "ended_at": _iso(a.ended_at), "outcome": a.outcome, "error": a.error}
                    for a in task.history],
    }


def _links_dict(links: Links) -> dict[str, Any]:
    return {"workflow": links.workflow, "depends_on": [int(i) for i in links.depends_on],
            "dependents": [int(i) for i in links.dependents]}


def _id_list(ids: Sequence[int]) -> str:
    return " ".join(map(str, ids)) or "-"


def _status(task: Task) -> str:
    return str(getattr(task.status, "value", task.status))


def _print_json(data: Any) -> int:
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return EXIT_OK


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns aligned by the width characters take on a terminal; each cell on one
    line (control characters escaped) and cut to ``CELL_WIDTH`` columns."""
    cells = [[cell(text, CELL_WIDTH) for text in row] for row in [header, *rows]]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(padded(text, width)
                        for text, width in zip(row, widths, strict=True)).rstrip())


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


# -- argument types (argparse turns their errors into exit code 2) --
def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None


def _key(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("a key must not be empty")
    return text


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse type: the message of its ``ValueError`` becomes the
    usage error's."""
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


_duration = _argument(typed.age)
_rate = _argument(typed.rate)
_max_running = _argument(typed.max_running)
_time_limit = _argument(lambda text: check_time_limit(typed.age(text)))


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give 0 to 65535 (0: any "
                                         "free port)")
    return value


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no channel: give a,b")
    return names
