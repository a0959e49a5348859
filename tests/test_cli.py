"""The command line, driven as users drive it: the installed ``simplepyq`` script, in children.

Every test on a store runs on both backends: ``--db`` is a SQLite file or a
PostgreSQL URL. Only what is about files (a missing one, one that is not SQLite)
is SQLite-only.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from simplepyq import Limits, Rate, SimplePyQ, __version__, current_task, scheduler
from simplepyq.cli import CommandError, _work, build_parser, main
from simplepyq.progress import STATUSES, ChannelProgress, TerminalView, display_width
from tests.backends import (
    drop_schema,
    is_postgres,
    new_schema_location,
    postgres_url,
    raw_sql,
    split_location,
    store_exists,
)
from tests.support import ROOT, SCRIPT, Collected, wait_until

APP = """
    import os, pathlib, time
    from simplepyq import SimplePyQ, current_task

    q = SimplePyQ(os.environ["APP_DB"], poll_interval=0.01)
    FLAGS = pathlib.Path(os.environ["APP_FLAGS"])

    @q.channel("work")
    def work(args):
        if args.get("block"):
            (FLAGS / f"started-{args['name']}").touch()
            deadline = time.monotonic() + 30
            while not (FLAGS / "release").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never released this task")
                if (FLAGS / "check").exists():
                    current_task().check()  # raises once a cancel was requested
                time.sleep(0.002)
        return args.get("name")

    @q.channel("other")
    def other(args):
        return "other"
"""


def env_for(db: str | None = None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "SIMPLEPYQ_DB"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if db is not None:
        env["SIMPLEPYQ_DB"] = str(db)
    return {**env, **extra}


def cli(*args: str, db: str | None = None, cwd: Path | None = None, module: bool = False,
        stdin: int | None = subprocess.DEVNULL, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """Run the console script (or ``python -m simplepyq``) to completion."""
    command = [sys.executable, "-m", "simplepyq"] if module else [str(SCRIPT)]
    return subprocess.run([*command, *args], env=env or env_for(db), cwd=cwd, stdin=stdin,
                          capture_output=True, text=True, timeout=60)


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def noop(args: object) -> None:
    return None


def fail(args: object) -> None:
    raise RuntimeError(f"cannot send {args}")


@pytest.fixture
def db(store_path: str) -> str:
    """A store with channel 'email' (one done, one failed, one pending, one delayed task)
    and channel 'resize' (no tasks)."""
    path = store_path
    with SimplePyQ(path, poll_interval=0.01) as q:
        q.add_channel("email", lambda args: fail(args) if args == "bad" else "sent")
        q.add_channel("resize", noop)
        q.enqueue("email", "good")
        q.enqueue("email", "bad")
        q.run_until_complete(timeout=10)
    with SimplePyQ(path) as q:  # this process runs no worker for these
        q.enqueue("email", "later")
        q.enqueue("email", "much later", delay=3600)
    return path


@dataclass(frozen=True)
class App:
    """A directory holding app.py, and the store its queue ``q`` uses."""

    dir: Path
    db: str

    @property
    def flags(self) -> Path:
        """Where its tasks mark that they started, and wait for a release file."""
        return self.dir / "flags"


@pytest.fixture
def app(tmp_path: Path, store_path: str) -> App:
    """An app whose queue ``q`` defines channels 'work' and 'other'."""
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "flags").mkdir()
    with SimplePyQ(store_path) as q:  # register the channels, as importing app would
        q.add_channel("work", noop)
        q.add_channel("other", noop)
    return App(tmp_path, store_path)


def app_env(app: App) -> dict[str, str]:
    return env_for(APP_DB=app.db, APP_FLAGS=str(app.flags))


def enqueue(store: str, channel: str, *args: object) -> list[int]:
    with SimplePyQ(store) as q:
        return [q.enqueue(channel, item) for item in args]


def status_of(store: str, task_id: int) -> tuple[str, int]:
    with SimplePyQ(store) as q:
        task = q.get_task(task_id)
    assert task is not None
    return task.status, task.attempts


class Worker(Collected):
    """A ``simplepyq worker`` child whose output lines are collected as they come; one
    still running when its test ends (a failed test) is killed then."""

    started: ClassVar[list[Worker]] = []

    def __init__(self, app: App, *args: str) -> None:
        super().__init__([str(SCRIPT), "worker", "app:q", *args], app.dir, app_env(app))
        Worker.started.append(self)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.err + self.out)

    def finish(self, read_for: float = 10.0) -> int:
        code = super().finish(read_for)
        self.close_output()
        return code

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out]


@pytest.fixture(autouse=True)
def _no_worker_left_running() -> Iterator[None]:
    yield
    while Worker.started:
        Worker.started.pop().close()


# -- packaging ---------------------------------------------
def test_console_script_is_installed_next_to_the_interpreter() -> None:
    assert SCRIPT.exists(), f"run pip install -e . to create {SCRIPT}"
    result = cli("--help")
    assert result.returncode == 0
    for command in ("stats", "tasks", "show", "requeue-failed", "clear-failed", "purge",
                    "remove-channel", "enqueue", "cancel", "limits", "worker"):
        assert command in result.stdout


def test_version_prints_the_library_version() -> None:
    result = cli("--version")
    assert (result.returncode, result.stdout) == (0, f"simplepyq {__version__}\n")


def test_python_dash_m_runs_the_same_commands(db: str) -> None:
    assert json_of(cli("tasks", "--json", db=db, module=True)) == json_of(cli("tasks", "--json",
                                                                              db=db))


# -- stats -------------------------------------------------
def test_stats_counts_each_status_per_channel_with_the_oldest_pending_age(db: str) -> None:
    with SimplePyQ(db) as q:
        q.cancel(q.enqueue("email", "cancelled"))
    report = json_of(cli("--db", db, "stats", "--json"))
    email = report["channels"]["email"]
    assert {k: email[k] for k in ("pending", "delayed", "running", "done", "failed",
                                  "cancelled")} == {
        "pending": 1, "delayed": 1, "running": 0, "done": 1, "failed": 1, "cancelled": 1}
    assert 0 <= email["oldest_pending_age"] < 60
    assert report["channels"]["resize"]["oldest_pending_age"] is None
    text = cli("stats", db=db)
    assert text.returncode == 0
    assert text.stdout.split("\n")[0].split()[:2] == ["CHANNEL", "PENDING"]
    assert "email" in text.stdout and "resize" in text.stdout


def test_stats_flags_channels_with_unfinished_tasks_that_no_live_worker_runs(db: str) -> None:
    # As a 0.1.3 process would write it (or a process of another app): no registration.
    raw_sql(db, "INSERT INTO tasks (channel, args, status, retries) "
            "VALUES ('ghost', NULL, 'pending', 0)")
    channels = json_of(cli("stats", "--json", db=db))["channels"]
    assert {name: (row["workers"], row["no_live_worker"], row["registered"])
            for name, row in channels.items()} == {
        "ghost": (0, True, False), "email": (0, True, True),  # pending, nobody runs them
        "resize": (0, False, True)}  # idle: nothing to run
    text = cli("stats", db=db).stdout
    assert "ghost*" in text and "email*" in text and "resize*" not in text
    assert "* has pending, delayed or running tasks, but no live worker runs this channel" \
        in text


def test_stats_counts_live_workers_and_flags_a_running_task_whose_worker_died(
        app: App) -> None:
    [task] = enqueue(app.db, "work", {"block": True, "name": "1"})
    enqueue(app.db, "other", {})
    worker = Worker(app, "--channels", "work")
    wait_until(lambda: (app.flags / "started-1").exists())
    channels = json_of(cli("stats", "--json", db=app.db))["channels"]
    assert {name: (row["running"], row["pending"], row["workers"], row["no_live_worker"])
            for name, row in channels.items()} == {
        "work": (1, 0, 1, False), "other": (0, 1, 0, True)}
    header, *rows = cli("stats", db=app.db).stdout.splitlines()[:3]
    assert header.split()[6:] == ["CANCELLED", "WORKERS", "OLDEST"]
    assert [row.split()[:8] for row in rows] == [["other*", "1", "0", "0", "0", "0", "0", "0"],
                                                 ["work", "0", "1", "0", "0", "0", "0", "1"]]
    worker.process.kill()
    worker.finish()
    assert status_of(app.db, task) == ("running", 1)  # until a worker recovers it
    work = json_of(cli("stats", "--json", db=app.db))["channels"]["work"]
    assert (work["running"], work["workers"], work["no_live_worker"]) == (1, 0, True)
    assert "work*" in cli("stats", db=app.db).stdout


def test_stats_shows_the_wait_of_pending_tasks_without_an_enqueue_time_as_unknown(
        db: str) -> None:
    # As 0.1.3 wrote them: no created_at, no delay_until.
    raw_sql(db, "INSERT INTO tasks (channel, args, status, retries, created_at) "
            "VALUES ('email', NULL, 'pending', 0, NULL)")
    channels = json_of(cli("stats", "--json", db=db))["channels"]
    assert (channels["email"]["oldest_pending_age"],
            channels["email"]["oldest_pending_unknown"]) == (None, True)
    assert (channels["resize"]["oldest_pending_age"],
            channels["resize"]["oldest_pending_unknown"]) == (None, False)  # none pending
    lines = cli("stats", db=db).stdout.splitlines()
    email = next(line for line in lines if line.startswith("email"))
    assert email.endswith("unknown")
    assert any(line.startswith("unknown: some pending task has no enqueue time")
               for line in lines)


def test_pending_since_is_none_for_a_channel_with_a_pending_task_of_unknown_age(
        store_path: str) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("old", noop)
        q.add_channel("new", noop)
        q.add_channel("idle", noop)
        q.enqueue("old", 1)
        q.enqueue("new", 2)
        raw_sql(store_path, "INSERT INTO tasks (channel, args, status, retries, created_at) "
                "VALUES ('old', NULL, 'pending', 0, NULL)")
        since = q.pending_since()
        new_task = q.get_task(2)
    assert new_task is not None
    assert since == {"old": None, "new": new_task.created_at}


def test_stats_keeps_its_table_aligned_whatever_the_channel_names(store_path: str) -> None:
    names = ["line\nbreak", "x" * 300, "日本語のチャンネル", "plain"]
    with SimplePyQ(store_path) as q:
        for name in names:
            q.add_channel(name, noop)
            q.enqueue(name, None)
    assert set(json_of(cli("stats", "--json", db=store_path))["channels"]) == set(names)
    *lines, footnote = cli("stats", db=store_path).stdout.splitlines()
    assert len(lines) == 1 + len(names)  # a newline in a name does not start a row
    assert footnote.startswith("* has pending")
    assert any(row.startswith("line\\nbreak* ") for row in lines)
    [long_row] = [row for row in lines if row.startswith("x")]
    assert "x" * 300 not in long_row and "x\u2026* " in long_row
    pending_column = display_width(lines[0][:lines[0].index("PENDING")])
    for row in lines[1:]:
        first_count = re.search(r" {2,}1 ", row)
        assert first_count is not None, row
        assert display_width(row[:first_count.end() - 2]) == pending_column, row


def test_stats_table_fits_in_80_columns_with_channel_names_up_to_9_characters(
        store_path: str) -> None:
    with SimplePyQ(store_path) as q:
        q.add_channel("thumbnail", noop)
        q.enqueue("thumbnail", None)
    # The widest age there is: unknown (a pending task without an enqueue time).
    raw_sql(store_path, "INSERT INTO tasks (channel, args, status, retries, created_at) "
            "VALUES ('thumbnail', NULL, 'pending', 0, NULL)")
    header, row = cli("stats", db=store_path).stdout.splitlines()[:2]
    assert header.split() == ["CHANNEL", "PENDING", "RUNNING", "DELAYED", "DONE", "FAILED",
                              "CANCELLED", "WORKERS", "OLDEST"]
    assert row.split() == ["thumbnail*", "2", "0", "0", "0", "0", "0", "0", "unknown"]
    assert max(display_width(header), display_width(row)) <= 80, (header, row)


# -- tasks and show ----------------------------------------
def test_tasks_lists_oldest_first_and_filters_by_channel_status_and_limit(db: str) -> None:
    everything = json_of(cli("tasks", "--json", db=db))
    assert [t["args"] for t in everything] == ["good", "bad", "later", "much later"]
    failed = json_of(cli("tasks", "--status", "failed", "--channel", "email", "--json", db=db))
    assert [(t["args"], t["status"]) for t in failed] == [("bad", "failed")]
    assert len(json_of(cli("tasks", "--limit", "2", "--json", db=db))) == 2
    assert "much later" in cli("tasks", db=db).stdout


def test_a_reader_that_stops_early_ends_the_listing_quietly(db: str) -> None:
    with SimplePyQ(db) as q:
        q.enqueue_many("email", ["x" * 200] * 5000)  # more output than a pipe holds
    child = subprocess.Popen([str(SCRIPT), "tasks", "--limit", "6000"], env=env_for(db),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().startswith("ID")
    child.stdout.close()  # like `simplepyq tasks | head -1`
    _, err = child.communicate(timeout=60)
    assert (child.returncode, err) == (1, "")


def test_tasks_of_an_unknown_channel_is_an_error_naming_the_known_ones(db: str) -> None:
    result = cli("tasks", "--channel", "emial", db=db)
    assert result.returncode == 1
    assert "unknown channel 'emial'" in result.stderr and "email" in result.stderr


def test_show_gives_a_failed_task_in_full_with_its_traceback(db: str) -> None:
    failed = json_of(cli("show", "2", "--json", db=db))
    assert failed["status"] == "failed" and failed["args"] == "bad"
    assert failed["attempts"] == 1 and failed["finished_at"] is not None
    assert "Traceback" in failed["error"] and "RuntimeError: cannot send bad" in failed["error"]
    text = cli("show", "2", db=db).stdout
    assert "Traceback (most recent call last)" in text and "status       failed" in text
    done = json_of(cli("show", "1", "--json", db=db))
    assert (done["status"], done["result"]) == ("done", "sent")


def test_show_and_workflow_tell_what_a_task_depends_on_and_what_waits_for_it(
    db: str
) -> None:
    from simplepyq import Step

    with SimplePyQ(db, poll_interval=0.01) as q:
        q.add_channel("resize", lambda args: fail(args) if args == "bad" else "sent")
        first, second, third = q.chain(Step("resize", "bad"), Step("resize"),
                                       Step("resize")).task_ids
        q.run_until_complete(timeout=30)
    shown = json_of(cli("show", str(second), "--json", db=db))
    assert (shown["workflow"], shown["depends_on"], shown["dependents"]) == (
        first, [first], [third])
    assert shown["status"] == "cancelled"
    text = cli("show", str(second), db=db).stdout
    assert f"workflow     {first}\ndepends_on   {first}\ndependents   {third}\n" in text
    assert "workflow     -\ndepends_on   -\ndependents   -\n" in cli("show", "1", db=db).stdout

    listed = json_of(cli("workflow", str(third), "--json", db=db))  # any task of it
    assert listed["workflow"] == first
    assert listed["counts"] == {"failed": 1, "cancelled": 2}
    assert [(t["id"], t["status"], t["depends_on"]) for t in listed["tasks"]] == [
        (first, "failed", []), (second, "cancelled", [first]), (third, "cancelled", [second])]
    lines = cli("workflow", str(first), db=db).stdout.splitlines()
    assert lines[0] == f"workflow {first}: 2 cancelled, 1 failed"
    assert lines[4].split()[:4] == [str(third), "resize", "cancelled", str(second)]
    missing = cli("workflow", "999", db=db)
    assert missing.returncode == 1 and "no workflow with id 999" in missing.stderr


def test_times_are_shown_in_utc_marked_z_whatever_the_local_zone(db: str) -> None:
    with SimplePyQ(db) as q:
        task = q.get_task(1)
    assert task is not None and task.created_at is not None
    expected = task.created_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    away = env_for(db, TZ="Asia/Tokyo")  # nine hours from UTC all year
    shown = cli("show", "1", env=away).stdout
    assert f"created_at   {expected}\n" in shown
    listed = cli("tasks", env=away).stdout.splitlines()[1]
    assert expected in listed
    assert json_of(cli("show", "1", "--json", env=away))["created_at"].endswith("+00:00")


def test_bytes_in_args_are_told_apart_from_a_dict_that_looks_like_them(db: str) -> None:
    lookalike = {"$bytes": "AGhp"}
    with SimplePyQ(db) as q:
        task_id = q.enqueue("email", [b"\x00hi", lookalike, {"$dict": 1}, {"$bytes": 1, "n": 2}])
    shown = json_of(cli("show", str(task_id), "--json", db=db))["args"]
    assert shown == [{"$bytes": "AGhp"}, {"$dict": lookalike}, {"$dict": {"$dict": 1}},
                     {"$bytes": 1, "n": 2}]
    text = cli("show", str(task_id), db=db).stdout
    assert ('args         [{"$bytes": "AGhp"}, {"$dict": {"$bytes": "AGhp"}}, '
            '{"$dict": {"$dict": 1}}, {"$bytes": 1, "n": 2}]\n') in text


def test_datetimes_decimals_uuids_tuples_and_sets_in_args_are_shown_readably(db: str) -> None:
    args = {
        "naive": datetime(2024, 5, 1, 12, 30, 0, 5),
        "aware": datetime(2024, 5, 1, 12, 30, tzinfo=ZoneInfo("Europe/Paris")),
        "day": date(2024, 2, 29), "at": time(9, 30, tzinfo=timezone.utc),
        "wait": timedelta(days=1, hours=2, seconds=3, microseconds=500000),
        "back": -timedelta(seconds=0.25), "none": timedelta(0),
        "price": Decimal("19.90"), "id": UUID(int=1),
        "pair": (1, (2, date(2024, 1, 1))), "tags": {"b", "c", "a"},
        "mixed": frozenset({2, "x"}), (1, "k"): "tuple key", datetime(2024, 1, 1): "when",
    }
    with SimplePyQ(db) as q:
        task_id = q.enqueue("email", [args])
    shown = json_of(cli("show", str(task_id), "--json", db=db))["args"]
    assert shown == [{
        "naive": "2024-05-01T12:30:00.000005", "aware": "2024-05-01T12:30:00+02:00",
        "day": "2024-02-29", "at": "09:30:00+00:00",
        "wait": "P1DT2H3.5S", "back": "-PT0.25S", "none": "PT0S",
        "price": "19.90", "id": "00000000-0000-0000-0000-000000000001",
        "pair": [1, [2, "2024-01-01"]], "tags": ["a", "b", "c"], "mixed": ["x", 2],
        "[1, \"k\"]": "tuple key", "2024-01-01T00:00:00": "when",
    }]
    text = cli("show", str(task_id), db=db).stdout
    assert '"price": "19.90", "id": "00000000-0000-0000-0000-000000000001", ' in text, text
    assert '"tags": ["a", "b", "c"], "mixed": ["x", 2], ' in text, text


def test_show_lists_the_runs_that_did_not_succeed_before_the_one_that_did(db: str) -> None:
    tries: list[int] = []

    def flaky(args: object) -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ValueError("first try breaks")
        return "sent"

    with SimplePyQ(db, poll_interval=0.01) as q:
        q.add_channel("flaky", flaky)
        task_id = q.enqueue("flaky", None, retries=1)
        q.run_until_complete(timeout=30)

    shown = json_of(cli("show", str(task_id), "--json", db=db))
    assert (shown["status"], shown["error"], shown["recoveries"]) == ("done", None, 0)
    (attempt,) = shown["history"]
    assert (attempt["attempt"], attempt["outcome"], attempt["error"]) == (
        1, "error", "ValueError: first try breaks")
    assert attempt["started_at"].endswith("+00:00") and attempt["ended_at"].endswith("+00:00")
    text = cli("show", str(task_id), db=db).stdout
    assert re.search(r"^history\n  #1  \S+ \S+Z to \S+ \S+Z  error: ValueError: first try "
                     r"breaks\nerror        -$", text, re.MULTILINE), text


def test_show_of_a_missing_task_exits_1(db: str) -> None:
    result = cli("show", "999", db=db)
    assert (result.returncode, result.stdout) == (1, "")
    assert "no task with id 999" in result.stderr


def test_show_and_tasks_give_the_key_time_limit_cancel_request_and_progress(db: str) -> None:
    def report(args: object) -> str:
        context = current_task()
        assert context is not None
        context.set_progress({"done": 3, "of": b"\x00"})
        return "reported"

    with SimplePyQ(db, poll_interval=0.01) as q:
        q.add_channel("report", report)
        reported = q.enqueue("report", None)
        q.run_until_complete(timeout=30)
        keyed = q.enqueue("email", "keyed", key="invoice-42", time_limit=90)
        q.cancel(keyed)

    shown = json_of(cli("show", str(keyed), "--json", db=db))
    assert {k: shown[k] for k in ("status", "key", "time_limit", "cancel_requested",
                                  "progress")} == {
        "status": "cancelled", "key": "invoice-42", "time_limit": 90.0,
        "cancel_requested": True, "progress": None}
    text = cli("show", str(keyed), db=db).stdout
    for line in ("status       cancelled", "key          invoice-42", "time_limit   90s",
                 "cancel       requested", "progress     null"):
        assert f"\n{line}\n" in text, text
    listed = {t["id"]: t for t in json_of(cli("tasks", "--json", db=db))}
    assert (listed[reported]["progress"], listed[reported]["key"]) == (
        {"done": 3, "of": {"$bytes": "AA=="}}, None)
    assert (listed[keyed]["key"], listed[keyed]["cancel_requested"]) == ("invoice-42", True)
    plain = cli("show", str(reported), db=db).stdout
    assert ('progress     {"done": 3, "of": {"$bytes": "AA=="}}\n' in plain
            and "key          -\n" in plain and "time_limit   - (its channel's)\n" in plain
            and "cancel       -\n" in plain), plain
    header, *rows = cli("tasks", "--status", "cancelled", db=db).stdout.splitlines()
    assert header.split()[-2:] == ["KEY", "ARGS"]
    assert [row.split()[-2:] for row in rows] == [["invoice-42", '"keyed"']]


# -- maintenance -------------------------------------------
def test_requeue_failed_makes_them_pending_with_new_retries_and_says_how_many(db: str) -> None:
    assert json_of(cli("requeue-failed", "--retries", "3", "--json", db=db)) == {"requeued": 1}
    task = json_of(cli("show", "2", "--json", db=db))
    assert (task["status"], task["retries"]) == ("pending", 3)
    assert cli("requeue-failed", "--channel", "email", db=db).stdout.startswith("0 ")


def test_requeue_failed_says_which_failed_tasks_stay_failed_because_their_key_is_held(
        db: str) -> None:
    with SimplePyQ(db) as q:
        kept = q.enqueue("email", "failed, keyed", key="invoice-42")
        raw_sql(db, "UPDATE tasks SET status = 'failed' WHERE id = ?", (kept,))
        holder = q.enqueue("email", "holds the key now", key="invoice-42")
    assert holder.created

    result = cli("requeue-failed", "--json", db=db)

    assert json_of(result) == {"requeued": 1}  # task 2, which has no key
    assert result.stderr == (f"simplepyq: warning: 1 failed task(s) stay failed: an unfinished "
                             f"task holds their key (task {kept} key 'invoice-42')\n")
    assert status_of(db, kept)[0] == "failed"
    assert status_of(db, 2)[0] == "pending"


def test_clear_failed_deletes_only_failed_tasks(db: str) -> None:
    assert json_of(cli("clear-failed", "--channel", "email", "--json", db=db)) == {"cleared": 1}
    assert [t["args"] for t in json_of(cli("tasks", "--json", db=db))] == [
        "good", "later", "much later"]


@pytest.mark.parametrize(("age", "purged"), [("0s", 2), ("0", 2), ("7d", 0), ("1.5h", 0),
                                             ("30m", 0)])
def test_purge_deletes_tasks_finished_longer_ago_than_the_given_age(db: str, age: str,
                                                                    purged: int) -> None:
    assert json_of(cli("purge", "--older-than", age, "--json", db=db)) == {"purged": purged}
    assert len(json_of(cli("tasks", "--json", db=db))) == 4 - purged


def test_purge_deletes_cancelled_tasks_too(db: str) -> None:
    assert cli("cancel", "3", "4", db=db).returncode == 0
    assert json_of(cli("purge", "--older-than", "0", "--json", db=db)) == {"purged": 4}
    assert json_of(cli("tasks", "--json", db=db)) == []


def test_remove_channel_with_yes_deletes_its_tasks(db: str) -> None:
    assert json_of(cli("remove-channel", "email", "--yes", "--json", db=db)) == {"removed": 4}
    assert "email" not in json_of(cli("stats", "--json", db=db))["channels"]


def test_remove_channel_asks_on_a_terminal_and_a_no_removes_nothing(db: str) -> None:
    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"n\n")
        refused = cli("remove-channel", "email", db=db, stdin=terminal)
        os.write(controller, b"y\n")
        accepted = cli("remove-channel", "email", db=db, stdin=terminal)
    finally:
        os.close(controller)
        os.close(terminal)
    assert refused.returncode == 1
    assert "delete its 4 task(s)? [y/N]" in refused.stderr
    assert "nothing removed" in refused.stderr
    assert (accepted.returncode, accepted.stdout) == (0, "4 task(s) deleted with channel 'email'\n")


def test_remove_channel_off_a_terminal_does_not_ask(db: str) -> None:
    assert cli("remove-channel", "resize", db=db).returncode == 0
    assert "resize" not in json_of(cli("stats", "--json", db=db))["channels"]


def test_remove_of_an_unknown_channel_exits_1(db: str) -> None:
    assert cli("remove-channel", "nope", "--yes", db=db).returncode == 1


# -- enqueue -----------------------------------------------
def test_enqueue_prints_the_new_id_and_stores_the_json_args(db: str) -> None:
    result = cli("enqueue", "email", '{"to": "ada@example.com", "n": [1, 2]}', db=db)
    assert result.returncode == 0
    task = json_of(cli("show", result.stdout.strip(), "--json", db=db))
    assert task["args"] == {"to": "ada@example.com", "n": [1, 2]}
    assert (task["status"], task["retries"], task["priority"]) == ("pending", 0, 0)


def test_enqueue_takes_retries_delay_priority_key_and_time_limit(db: str) -> None:
    created = json_of(cli("enqueue", "email", "null", "--retries", "2", "--delay", "1h",
                          "--priority", "7", "--key", "k", "--time-limit", "1.5m", "--json",
                          db=db))
    assert created["created"] is True
    task = json_of(cli("show", str(created["id"]), "--json", db=db))
    assert (task["status"], task["retries"], task["priority"]) == ("delayed", 2, 7)
    assert (task["key"], task["time_limit"]) == ("k", 90.0)


def test_enqueue_with_a_key_an_unfinished_task_holds_prints_that_tasks_id_and_adds_nothing(
        db: str) -> None:
    first = cli("enqueue", "email", '"first"', "--key", "invoice-42", db=db)
    again = cli("enqueue", "email", '"again"', "--key", "invoice-42", db=db)
    as_json = json_of(cli("enqueue", "email", '"as json"', "--key", "invoice-42", "--json",
                          db=db))
    elsewhere = json_of(cli("enqueue", "resize", "null", "--key", "invoice-42", "--json",
                            db=db))

    assert (first.returncode, first.stderr) == (0, "")
    holder = int(first.stdout)
    assert (again.returncode, again.stdout) == (0, f"{holder}\n")
    assert again.stderr == (f"simplepyq: nothing enqueued: task {holder} (pending) holds key "
                            "'invoice-42' in channel 'email'\n")
    assert as_json == {"id": holder, "created": False}
    assert elsewhere["created"] is True  # a key is unique within its channel
    keyed = [t for t in json_of(cli("tasks", "--json", db=db)) if t["key"] == "invoice-42"]
    assert [(t["id"], t["channel"], t["args"]) for t in keyed] == [
        (holder, "email", "first"), (elsewhere["id"], "resize", None)]


def test_enqueue_to_an_unknown_channel_exits_1_naming_the_known_ones(db: str) -> None:
    result = cli("enqueue", "emial", "{}", db=db)
    assert result.returncode == 1
    assert "unknown channel 'emial'; known channels: email, resize" in result.stderr


def test_enqueue_delay_is_an_age_in_help_as_in_use(db: str) -> None:
    assert "--delay AGE" in cli("enqueue", "--help").stdout
    for age in ("90", "1s", "30m", "7d"):
        created = json_of(cli("enqueue", "email", "null", "--delay", age, "--json", db=db))
        assert json_of(cli("show", str(created["id"]), "--json", db=db))["status"] == "delayed"


def test_enqueue_of_invalid_json_is_a_usage_error(db: str) -> None:
    result = cli("enqueue", "email", "{to: ada}", db=db)
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr


# -- cancel ------------------------------------------------
def test_cancel_tells_what_became_of_each_task_and_exits_1_if_one_does_not_exist(
        db: str) -> None:
    # The db fixture's tasks: 1 done, 2 failed, 3 pending, 4 delayed.
    result = cli("cancel", "3", "4", "1", "2", "999", db=db)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "task 3: cancelled", "task 4: cancelled", "task 1: already done, left as it is",
        "task 2: already failed, left as it is"]
    assert result.stderr == "simplepyq: error: there is no task with id 999\n"
    assert [t["status"] for t in json_of(cli("tasks", "--json", db=db))] == [
        "done", "failed", "cancelled", "cancelled"]
    again = cli("cancel", "3", "--json", db=db)
    assert (again.returncode, json.loads(again.stdout)) == (0, [
        {"id": 3, "outcome": "already_finished", "status": "cancelled"}])


def test_cancel_json_says_missing_for_an_id_that_does_not_exist(db: str) -> None:
    result = cli("cancel", "999", "3", "--json", db=db)
    assert result.returncode == 1
    assert json.loads(result.stdout) == [
        {"id": 999, "outcome": "missing", "status": None,
         "error": "there is no task with id 999"},
        {"id": 3, "outcome": "cancelled", "status": "cancelled"}]


def test_cancel_of_a_running_task_asks_it_to_stop_and_it_ends_cancelled(app: App) -> None:
    [task] = enqueue(app.db, "work", {"block": True, "name": "1"})
    worker = Worker(app, "--channels", "work")
    try:
        wait_until(lambda: (app.flags / "started-1").exists())

        result = cli("cancel", str(task), db=app.db)

        assert (result.returncode, result.stdout) == (0, f"task {task}: cancel requested while "
                                                      "it runs (cancelled if it then raises, "
                                                      "done if it returns)\n")
        assert status_of(app.db, task) == ("running", 1)  # it has not looked yet
        (app.flags / "check").touch()  # now it calls current_task().check(), which raises
        with SimplePyQ(app.db) as q:
            ended = q.wait(task, timeout=30)
        assert (ended.status, ended.attempts) == ("cancelled", 1)
    finally:
        worker.process.send_signal(signal.SIGTERM)
        assert worker.finish() == 0, worker.err


def test_cancel_of_a_running_task_that_ends_at_once_says_the_cancel_was_requested(
        db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    raw_sql(db, "UPDATE tasks SET status = 'running', owner = 'elsewhere' WHERE id = 3")
    cancel = SimplePyQ.cancel

    def cancel_and_end_at_once(queue: SimplePyQ, task_id: int) -> bool:
        changed = cancel(queue, task_id)
        # As the run would, if it learnt of the cancel at once and raised (PostgreSQL).
        raw_sql(db, "UPDATE tasks SET status = 'cancelled' WHERE id = ?", (task_id,))
        return changed

    monkeypatch.setattr(SimplePyQ, "cancel", cancel_and_end_at_once)
    assert main(["--db", db, "cancel", "3"]) == 0
    assert capsys.readouterr().out == (
        "task 3: cancel requested while it ran; it has ended cancelled\n")


# -- limits ------------------------------------------------
def test_limits_shows_sets_and_removes_the_limits_of_a_channel(db: str) -> None:
    assert json_of(cli("limits", "--json", db=db)) == {"channels": {
        "email": {"rate_limit": None, "max_running": None},
        "resize": {"rate_limit": None, "max_running": None}}}

    changed = cli("limits", "email", "--rate", "10/s", "--max-running", "3", db=db)

    assert (changed.returncode, changed.stdout) == (0, "email: rate 10/s, at most 3 running\n")
    with SimplePyQ(db) as q:
        assert q.limits("email") == Limits(Rate(10, 1.0), 3)
    assert json_of(cli("limits", "email", "--max-running", "none", "--json", db=db)) == {
        "channel": "email", "rate_limit": "10/s", "max_running": None}
    assert [line.split() for line in cli("limits", db=db).stdout.splitlines()] == [
        ["CHANNEL", "RATE", "MAX", "RUNNING"], ["email", "10/s", "-"], ["resize", "-", "-"]]
    assert cli("limits", "email", "--rate", "None", db=db).stdout == "email: no limits\n"
    assert cli("limits", "resize", db=db).stdout == "resize: no limits\n"
    with SimplePyQ(db) as q:
        assert q.limits("email") == Limits()


@pytest.mark.parametrize(("args", "message"), [
    (["email", "--rate", "10/x"], "argument --rate: rate_limit '10/x' is not a rate: write "
                                  "COUNT/UNIT with a unit of s, m, h or d"),
    (["email", "--rate", "0/s"], "rate_limit '0/s' must allow at least 1 task"),
    (["email", "--rate=-1/s"], "rate_limit '-1/s' is not a rate"),
    (["email", "--max-running", "0"], "argument --max-running: max_running must be at least 1"),
    (["email", "--max-running", "many"], "'many' is not a whole number (at least 1) or none"),
    (["--rate", "1/s"], "give the CHANNEL whose limits --rate or --max-running change"),
])
def test_limits_refuses_a_bad_value_with_the_librarys_message_and_exit_2(
        db: str, args: list[str], message: str) -> None:
    with SimplePyQ(db) as q:
        q.set_limits("email", rate_limit="5/m", max_running=2)

    result = cli("limits", *args, db=db)

    assert (result.returncode, result.stdout) == (2, "")
    assert message in result.stderr
    with SimplePyQ(db) as q:
        assert q.limits("email") == Limits(Rate(5, 60.0), 2)  # left as they were


def test_limits_of_an_unknown_channel_exits_1_naming_the_known_ones(db: str) -> None:
    for args in (["emial"], ["emial", "--rate", "1/s"]):
        result = cli("limits", *args, db=db)
        assert result.returncode == 1
        assert "unknown channel 'emial'; known channels: email, resize" in result.stderr


def test_limits_changed_on_the_command_line_apply_to_a_running_worker(app: App) -> None:
    assert cli("limits", "work", "--rate", "1/d", db=app.db).returncode == 0
    first, second = enqueue(app.db, "work", {"name": "a"}, {"name": "b"})
    worker = Worker(app, "--channels", "work")
    try:
        with SimplePyQ(app.db) as q:
            assert q.wait(first, timeout=30).status == "done"
            assert status_of(app.db, second) == ("pending", 0)  # one start a day

            assert cli("limits", "work", "--rate", "none", db=app.db).returncode == 0

            assert q.wait(second, timeout=30).status == "done"
    finally:
        worker.process.send_signal(signal.SIGTERM)
        assert worker.finish() == 0, worker.err


# -- errors ------------------------------------------------
@pytest.mark.parametrize("command", [["stats"], ["tasks"], ["show", "1"], ["requeue-failed"],
                                     ["clear-failed"], ["purge", "--older-than", "1d"],
                                     ["remove-channel", "email", "--yes"], ["cancel", "1"],
                                     ["limits"], ["limits", "email", "--rate", "1/s"]])
def test_a_missing_store_is_an_error_and_is_not_created(store_path: str,
                                                        command: list[str]) -> None:
    result = cli(*command, db=store_path)
    assert result.returncode == 1
    assert "no task store at" in result.stderr and "Traceback" not in result.stderr
    assert not store_exists(store_path)


@pytest.mark.parametrize("command", [["stats"], ["enqueue", "email", "{}"]])
def test_a_store_url_of_another_database_is_refused_without_showing_its_password(
    command: list[str],
) -> None:
    result = cli(*command, db="mysql://ada:hunter2@db.example/app")
    assert result.returncode == 1
    assert "'mysql'" in result.stderr and "postgresql://" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [["--db", ":memory:", "stats"],
                                     ["--db", ":memory:", "enqueue", "email", "{}"],
                                     ["copy", "--from", ":memory:", "--to", "x.db"],
                                     ["copy", "--from", "x.db", "--to", ":memory:"]])
def test_a_store_in_memory_is_refused_as_out_of_reach(tmp_path: Path,
                                                      command: list[str]) -> None:
    result = cli(*command, cwd=tmp_path)
    assert result.returncode == 2
    assert ":memory: names a store private to the process" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_enqueue_may_create_the_store(store_path: str) -> None:
    result = cli("enqueue", "email", "{}", db=store_path)
    assert store_exists(store_path)
    assert result.returncode == 1 and "known channels: none" in result.stderr


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["tasks", "--status", "lost"],
                                  ["tasks", "--limit", "-1"], ["show", "one"],
                                  ["purge"], ["purge", "--older-than", "7 weeks"],
                                  ["enqueue", "email"], ["worker"], ["cancel"],
                                  ["cancel", "one"], ["limits", "a", "b"],
                                  ["enqueue", "email", "1", "--time-limit", "0"],
                                  ["enqueue", "email", "1", "--time-limit", "soon"],
                                  ["enqueue", "email", "1", "--key", ""],
                                  ["worker", "app:q", "--channels", ","]])
def test_bad_arguments_exit_2_with_usage(db: str, args: list[str]) -> None:
    result = cli(*args, db=db)
    assert result.returncode == 2
    assert "usage:" in result.stderr and result.stdout == ""


def test_no_database_given_is_a_usage_error() -> None:
    result = cli("stats")
    assert result.returncode == 2
    assert "--db PATH or set $SIMPLEPYQ_DB" in result.stderr


@pytest.mark.sqlite_only
def test_debug_adds_the_traceback_to_a_runtime_error(tmp_path: Path) -> None:
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("not sqlite")
    plain, debug = cli("stats", db=str(not_a_store)), cli("stats", "--debug",
                                                          db=str(not_a_store))
    assert plain.returncode == debug.returncode == 1
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr


# -- the worker --------------------------------------------
def test_burst_worker_drains_its_channels_and_exits_0(app: App) -> None:
    ids = enqueue(app.db, "work", {"name": "a"}, {"name": "b"}, {"name": "c"})
    worker = Worker(app, "--burst", "--json")
    assert worker.finish() == 0, worker.err
    events = worker.events()
    assert events[0] == {"event": "started", "pid": worker.process.pid,
                         "store": app.db, "channels": ["other", "work"],
                         "burst": True}
    assert events[-1] == {"event": "stopped", "reason": "drained"}
    last = [e for e in events if e["event"] == "progress" and e["channel"] == "work"][-1]
    assert (last["done"], last["pending"]) == (3, 0)
    assert all(status_of(app.db, i) == ("done", 1) for i in ids)


def test_burst_worker_runs_only_the_channels_named(app: App) -> None:
    [mine] = enqueue(app.db, "work", {"name": "a"})
    [theirs] = enqueue(app.db, "other", {})
    worker = Worker(app, "--burst", "--channels", "work")
    assert worker.finish() == 0, worker.err
    assert status_of(app.db, mine)[0] == "done"
    assert status_of(app.db, theirs)[0] == "pending"
    assert worker.said("started") and worker.said("stopped (drained)")  # log lines off a tty


def test_sigterm_lets_the_running_task_finish_leaves_the_rest_pending_and_exits_0(
        app: App) -> None:
    first, second = enqueue(app.db, "work", {"block": True, "name": "1"},
                            {"block": True, "name": "2"})
    worker = Worker(app)
    wait_until(lambda: (app.flags / "started-1").exists())
    worker.process.send_signal(signal.SIGTERM)
    wait_until(lambda: worker.said("SIGTERM: stopping"))
    assert worker.process.poll() is None  # still waiting for task 1
    (app.flags / "release").touch()
    assert worker.finish() == 0, worker.err
    assert status_of(app.db, first) == ("done", 1), "".join(worker.err)
    assert status_of(app.db, second) == ("pending", 0)
    assert not (app.flags / "started-2").exists()
    assert worker.said("stopped (SIGTERM)")


def test_a_second_sigint_stops_at_once_and_the_task_is_recovered_later(app: App) -> None:
    [task] = enqueue(app.db, "work", {"block": True, "name": "1"})
    worker = Worker(app, "--json")
    wait_until(lambda: (app.flags / "started-1").exists())
    worker.process.send_signal(signal.SIGINT)
    wait_until(lambda: worker.said('"stopping"'))
    worker.process.send_signal(signal.SIGINT)
    assert worker.finish() == 128 + signal.SIGINT
    assert status_of(app.db, task) == ("running", 1)
    (app.flags / "release").touch()
    assert Worker(app, "--burst").finish() == 0
    assert status_of(app.db, task) == ("done", 2)


def test_burst_worker_on_a_terminal_shows_live_counts_and_rate(app: App) -> None:
    enqueue(app.db, "work", {"name": "a"})
    controller, terminal = pty.openpty()
    child = subprocess.Popen([str(SCRIPT), "worker", "app:q", "--burst"], cwd=app.dir,
                             env=app_env(app), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    seen = bytearray()
    _read_all(controller, seen)
    os.close(controller)
    assert child.wait(timeout=30) == 0
    text = seen.decode()
    assert "tasks/s" in text and "work" in text and "\x1b[" in text  # redrawn in place
    assert "stopped (drained)" in text


def screen_after(output: bytes) -> list[str]:
    """The lines a terminal shows after ``output``: enough of one to follow the live
    table (carriage return, line feed, cursor up, clear to the end of the screen)."""
    lines, row, column = [""], 0, 0
    for token in re.findall(rb"\x1b\[(\d*)([AJ])|(\r)|(\n)|([^\x1b\r\n]+)", output):
        count, command, carriage_return, line_feed, text = token
        if command == b"A":
            row, column = max(row - int(count or 1), 0), 0
        elif command == b"J":
            lines[row] = lines[row][:column]
            del lines[row + 1:]
        elif carriage_return:
            column = 0
        elif line_feed:
            row, column = row + 1, 0
            lines.extend([""] * (row + 1 - len(lines)))
        else:
            chars = text.decode()
            lines[row] = lines[row][:column] + chars + lines[row][column + len(chars):]
            column += len(chars)
    return [line for line in lines if line]


def test_worker_on_a_terminal_keeps_the_stopping_and_stopped_lines_below_its_last_table(
        app: App) -> None:
    enqueue(app.db, "work", {"block": True, "name": "1"})
    controller, terminal = pty.openpty()
    child = subprocess.Popen([str(SCRIPT), "worker", "app:q", "--channels", "work"],
                             cwd=app.dir, env=app_env(app), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    seen = bytearray()
    reader = threading.Thread(target=_read_all, args=(controller, seen), daemon=True)
    reader.start()
    wait_until(lambda: (app.flags / "started-1").exists() and b"tasks/s" in seen)
    child.send_signal(signal.SIGINT)
    wait_until(lambda: b"SIGINT: stopping" in seen)
    (app.flags / "release").touch()
    assert child.wait(timeout=30) == 0
    reader.join(timeout=10)
    os.close(controller)
    screen = screen_after(bytes(seen))
    assert len(screen) == 6, screen
    assert screen[0].endswith("for channels work")
    assert "SIGINT: stopping; running tasks finish" in screen[1]
    assert screen[2].split() == ["channel", "pending", "running", "delayed", "done", "failed",
                                 "cancelled", "tasks/s"]
    assert screen[3].split()[:7] == ["work", "0", "0", "0", "1", "0", "0"]
    assert screen[4].endswith("tasks/s")
    assert screen[5].endswith("stopped (SIGINT)")


def _read_all(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            return
        if not chunk:
            return
        into.extend(chunk)


def test_worker_with_channels_its_module_does_not_define_is_a_usage_error(app: App) -> None:
    worker = Worker(app, "--channels", "work,emial")
    assert worker.finish() == 2
    assert worker.said("'emial', which app:q does not define; it defines other, work")
    assert not worker.said("started")


@pytest.mark.parametrize(("target", "message"), [
    ("app", "is not MODULE:ATTR"), ("nosuchmodule:q", "no module named 'nosuchmodule'"),
    ("app:nope", "has no attribute 'nope'"), ("app:FLAGS", "not a SimplePyQ"),
])
def test_worker_target_that_is_not_a_queue_is_a_usage_error(app: App, target: str,
                                                            message: str) -> None:
    result = cli("worker", target, cwd=app.dir, env=app_env(app))
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize(("module", "message"), [
    ("import no_such_dependency\n",
     "importing broken failed: No module named 'no_such_dependency'"),
    ("raise RuntimeError('settings missing')\n",
     "importing broken failed: RuntimeError: settings missing"),
])
def test_worker_whose_module_fails_to_import_names_that_module(app: App, module: str,
                                                                 message: str) -> None:
    (app.dir / "broken.py").write_text(module)
    result = cli("worker", "broken:q", cwd=app.dir, env=app_env(app))
    assert result.returncode == 1
    assert f"simplepyq: error: {message}\n" == result.stderr


def test_worker_takes_a_db_naming_its_queues_store(app: App) -> None:
    [task] = enqueue(app.db, "work", {"name": "a"})
    worker = Worker(app, "--burst", "--db", app.db)
    assert worker.finish() == 0, worker.err
    assert status_of(app.db, task) == ("done", 1)


def test_worker_refuses_a_db_other_than_its_queues_store(app: App) -> None:
    result = cli("worker", "app:q", "--db", str(app.dir / "other.db"), cwd=app.dir,
                 env=app_env(app))
    assert result.returncode == 1
    assert "give the same one, or neither" in result.stderr


@contextmanager
def store_locked(location: str) -> Iterator[None]:
    """Hold the store's tasks locked against writers, from another connection."""
    if not is_postgres(location):
        conn = sqlite3.connect(location, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.rollback()
            conn.close()
        return
    import psycopg

    url, schema = split_location(location)
    with psycopg.connect(url, options=f"-c search_path={schema}") as pg:
        pg.execute("LOCK TABLE tasks IN EXCLUSIVE MODE")
        yield
        pg.rollback()


def test_worker_exits_1_when_its_stop_cannot_record_the_outcomes_of_finished_tasks(
        store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler, "SETTLE_LIMIT", 0.5)  # how long a stop insists
    started, release, returned = threading.Event(), threading.Event(), threading.Event()

    def work(args: object) -> str:
        started.set()
        release.wait(30)
        return "done"

    queue = SimplePyQ(store_path, poll_interval=0.01, busy_timeout=0.05)
    queue.add_channel("work", work)
    enqueue(store_path, "work", 1)
    args = build_parser().parse_args(["worker", "app:q"])
    args.json, args.debug, args.db = False, False, None

    def meanwhile() -> None:
        started.wait(30)
        with store_locked(store_path):
            os.kill(os.getpid(), signal.SIGTERM)  # the worker stops gracefully...
            release.set()  # ...its task finishes, and the store refuses its outcome
            returned.wait(30)

    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    level = logging.getLogger("simplepyq").level
    helper = threading.Thread(target=meanwhile)
    helper.start()
    try:
        with pytest.raises(CommandError, match="refused the outcomes"):
            _work(args, queue)
    finally:
        returned.set()
        helper.join(30)
        for number, handler in handlers.items():
            signal.signal(number, handler)
        logging.getLogger("simplepyq").setLevel(level)
        queue.close()


# -- the library's progress ----------------------------------
class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_run_until_complete_with_progress_draws_on_a_terminal(
        store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    screen = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", screen)
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("email", noop)
        q.enqueue_many("email", range(5))
        q.run_until_complete(timeout=10, progress=True)
    last_table = screen.getvalue().rsplit("\x1b[J", 1)[-1]
    assert last_table.split("\n")[0].split() == [
        "channel", "pending", "running", "delayed", "done", "failed", "cancelled", "tasks/s"]
    assert last_table.split("\n")[1].split()[:7] == ["email", "0", "0", "0", "5", "0", "0"]
    assert "5 finished" in last_table


class InterruptedTerminal(io.TextIOWrapper):
    """A terminal (a pipe, here) whose first write is interrupted by a signal handler
    that has a line to print."""

    def __init__(self, fd: int, view: Callable[[], TerminalView]) -> None:
        super().__init__(os.fdopen(fd, "wb"), encoding="utf-8", write_through=True)
        self._view = view
        self.interrupted = False

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        written = super().write(text)
        if not self.interrupted:
            self.interrupted = True
            self._view().interrupt(b"SIGTERM: stopping\n")
        return written


def test_terminal_table_aligns_any_channel_name_and_a_line_from_a_signal_goes_above_it() -> None:
    reading, writing = os.pipe()
    view: list[TerminalView] = []
    screen = InterruptedTerminal(writing, lambda: view[0])
    view.append(TerminalView(screen))
    names = ["\u65e5\u672c\u8a9e", "a\nb", "x" * 300]
    counts = {status: number for number, status in enumerate(STATUSES, 1)}  # 1 to 6
    channels = [ChannelProgress(name, counts, 0, 0.0, True) for name in names]
    view[0].show(channels, 1.0)  # interrupted in the middle of its write
    view[0].show(channels, 2.0)
    view[0].close()
    view[0].above("stopped")
    screen.close()
    with os.fdopen(reading, "rb") as pipe:
        lines = screen_after(pipe.read())
    assert lines[0] == "SIGTERM: stopping" and lines[-1] == "stopped", lines
    header, *rows, elapsed = lines[1:-1]
    assert len(rows) == len(names) and elapsed.startswith("0:02 elapsed")
    for status, number in counts.items():  # each count ends where its column's name ends
        column_end = display_width(header[:header.index(status) + len(status)])
        for row in rows:
            assert display_width(row[:row.index(f" {number} ") + 1 + len(str(number))]) == (
                column_end), lines
    assert all(display_width(row) == display_width(header) for row in rows), lines
    assert rows[1].startswith("a\\nb ") and rows[2].startswith("x" * 39 + "\u2026")


@pytest.mark.parametrize(("blocked", "longest_name"), [(0, 16), (10**7, 7)])
def test_terminal_table_of_channels_fits_in_80_columns_its_blocked_column_shown_if_any(
    blocked: int, longest_name: int
) -> None:
    screen = FakeTerminal()
    view = TerminalView(screen)
    # Counts up to 8 digits fit their columns.
    big = {status: 10**7 for status in STATUSES} | {"blocked": blocked}
    view.show([ChannelProgress("n" * longest_name, big, 0, 12345.6, True)], 3600.0)
    lines = screen.getvalue().splitlines()
    shown = [status for status in STATUSES if status != "blocked" or blocked]
    assert lines[0].split() == ["channel", *shown, "tasks/s"]
    assert max(display_width(line) for line in lines) <= 80, lines


def test_run_until_complete_with_progress_off_a_terminal_logs_changes(
        store_path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="simplepyq")
    with SimplePyQ(store_path, poll_interval=0.01) as q:
        q.add_channel("email", noop)
        q.enqueue_many("email", range(3))
        q.run_until_complete(timeout=10, progress=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("channel email")]
    assert lines[-1].startswith("channel email: pending 0, running 0, delayed 0, done 3")


def test_main_can_be_called_in_process(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    library = logging.getLogger("simplepyq")
    before = (list(library.handlers), library.level)
    assert main(["--db", db, "tasks", "--status", "done", "--json", "--debug"]) == 0
    assert [t["args"] for t in json.loads(capsys.readouterr().out)] == ["good"]
    assert (list(library.handlers), library.level) == before  # its message handler is gone


# -- PostgreSQL URLs ---------------------------------------
PASSWORD = "s3cret-Pa55"
"""A password put in store URLs; the test server trusts local connections and ignores it."""


def test_the_password_of_a_database_url_is_never_printed(tmp_path: Path) -> None:
    url = postgres_url()
    location, schema = new_schema_location(url)
    user, _, host = location.split("://", 1)[1].rpartition("@")
    secret = f"postgresql://{user or 'postgres'}:{PASSWORD}@{host}"
    try:
        with SimplePyQ(secret) as q:
            q.add_channel("email", noop)
            q.enqueue("email", "x")
        outputs = [cli("stats", "--json", db=secret), cli("tasks", db=secret),
                   cli("enqueue", "emial", "{}", db=secret),
                   cli("stats", db=secret.replace(schema, schema + "_typo"))]
        app = App(tmp_path, secret)
        (tmp_path / "app.py").write_text(textwrap.dedent(APP))
        (tmp_path / "flags").mkdir()
        worker = Worker(app, "--burst", "--json", "--db", secret)
        assert worker.finish() == 0, worker.err
        other = cli("worker", "app:q", "--db", secret.replace(schema, schema + "_other"),
                    cwd=tmp_path, env=app_env(app))
    finally:
        drop_schema(url, schema)

    assert json_of(outputs[0])["store"] == secret.replace(PASSWORD, "***")
    assert [result.returncode for result in outputs] == [0, 0, 1, 1]
    assert "no task store at" in outputs[3].stderr
    assert worker.events()[0]["store"] == secret.replace(PASSWORD, "***")
    assert other.returncode == 1 and "give the same one" in other.stderr
    printed = [r.stdout + r.stderr for r in [*outputs, other]] + worker.out + worker.err
    assert not [text for text in printed if PASSWORD in text]
