"""``simplepyq worker --watch DIR``: a supervisor that restarts its worker when the code changes.

Real processes throughout: the installed ``simplepyq`` script supervises a real worker
child that imports a module from tmp_path, with a SQLite store beside it. Every test
that depends on how files are watched runs with both watchers: ``watchfiles`` and the
polling scan (forced by ``SIMPLEPYQ_WATCH=poll``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from simplepyq import SimplePyQ
from simplepyq.cli import build_parser
from simplepyq.reloading import (
    WATCH_ENV,
    Changes,
    NotifyWatcher,
    PollingWatcher,
    Watcher,
    choose_watcher,
    worker_command,
)
from tests.support import ROOT, SCRIPT, Collected, wait_until

APP = """
    import os, pathlib, time
    from simplepyq import SimplePyQ

    VERSION = 1
    q = SimplePyQ(os.environ["APP_DB"], poll_interval=0.01)
    FLAGS = pathlib.Path(os.environ["APP_FLAGS"])
    (FLAGS / f"imported-{os.getpid()}").write_text(repr(time.time()))

    @q.channel("work")
    def work(args):
        if args == "block":
            (FLAGS / f"started-{os.getpid()}").touch()
            deadline = time.monotonic() + 30
            while not (FLAGS / "release").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never released this task")
                time.sleep(0.002)
        return VERSION
"""
WATCHERS = ["watchfiles", "poll"]


@pytest.fixture(params=WATCHERS)
def watcher(request: pytest.FixtureRequest) -> str:
    """Which watcher the supervisor is made to use."""
    if request.param == "watchfiles":
        pytest.importorskip("watchfiles")
    return str(request.param)


@dataclass(frozen=True)
class App:
    """``src/app.py`` (the watched directory) with its queue ``q``; the store and the
    flags its tasks leave are outside ``src``."""

    root: Path

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def module(self) -> Path:
        return self.src / "app.py"

    @property
    def db(self) -> str:
        return str(self.root / "tasks.db")

    @property
    def flags(self) -> Path:
        return self.root / "flags"

    def edit(self, old: str, new: str) -> None:
        """Replace ``old`` by ``new`` in app.py, keeping its mtime in the same whole
        second: an edit that a cached module (.pyc) could hide."""
        before = self.module.stat()
        self.module.write_text(self.module.read_text().replace(old, new))
        second, fraction = divmod(before.st_mtime_ns, 10**9)
        os.utime(self.module, ns=(before.st_atime_ns, second * 10**9 + (fraction + 1) % 10**9))

    def enqueue(self, args: object) -> int:
        with SimplePyQ(self.db) as q:
            return q.enqueue("work", args)

    def finished(self, task_id: int) -> Any:
        """The task, once it is done; None before."""
        with SimplePyQ(self.db) as q:
            task = q.get_task(task_id)
        return task if task is not None and task.status == "done" else None

    def imported_at(self, pid: int) -> float:
        """When the worker process ``pid`` imported app.py."""
        return float((self.flags / f"imported-{pid}").read_text())


@pytest.fixture
def app(tmp_path: Path) -> App:
    made = App(tmp_path)
    made.src.mkdir()
    made.flags.mkdir()
    made.module.write_text(textwrap.dedent(APP))
    with SimplePyQ(made.db) as q:  # register the channel, as importing app.py would
        q.add_channel("work", lambda args: args)
    return made


def env_for(app: App, watcher: str | None = None) -> dict[str, str]:
    """The environment of a supervisor of ``app`` using ``watcher``. Without
    PYTHONDONTWRITEBYTECODE, so that the workers would write the bytecode caches that
    could hide an edit, were they allowed to."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("SIMPLEPYQ_DB", "PYTHONDONTWRITEBYTECODE", WATCH_ENV)}
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
               APP_DB=app.db, APP_FLAGS=str(app.flags))
    return env if watcher is None else {**env, WATCH_ENV: watcher}


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_of(parent: int) -> list[int]:
    """The processes whose parent is ``parent``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


class Supervised(Collected):
    """A ``simplepyq worker app:q --watch src --json`` process; its output lines are
    collected as they come. Whatever it and its workers left running when the test
    ends is killed then."""

    started: ClassVar[list[Supervised]] = []

    def __init__(self, app: App, watcher: str, *args: str) -> None:
        super().__init__([str(SCRIPT), "worker", "app:q", "--watch", str(app.src), "--json",
                          *args], app.src, env_for(app, watcher))
        Supervised.started.append(self)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Its events (and its workers') called ``name``, in order."""
        return [event for event in self._all() if event["event"] == name]

    def position(self, name: str, number: int) -> int:
        """Where the ``number``-th (from 1) event called ``name`` is in the output."""
        places = [i for i, event in enumerate(self._all()) if event["event"] == name]
        return places[number - 1]

    def _all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.out)]

    def worker(self, number: int) -> int:
        """The pid of the ``number``-th worker (from 1) to have started, once it has."""
        def started() -> int | None:
            events = self.events("started")
            return events[number - 1]["pid"] if len(events) >= number else None
        return wait_until(started)

    def children(self) -> list[int]:
        return [event["pid"] for event in self.events("spawned")]


    def close(self) -> None:
        """Kill it and its workers; close its output once read (a stream that a thread
        still reads cannot be closed: that would wait for the thread forever)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)  # so that it starts no other worker
        for pid in {*self.children(), *children_of(self.process.pid)}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        super().close()


@pytest.fixture(autouse=True)
def _nothing_left_running() -> Iterator[None]:
    yield
    while Supervised.started:
        Supervised.started.pop().close()


# -- restarts ----------------------------------------------
def test_a_changed_module_restarts_the_worker_which_runs_the_new_code(
        app: App, watcher: str) -> None:
    supervised = Supervised(app, watcher)
    first = supervised.worker(1)
    assert supervised.events("watching")[0]["watcher"] == watcher
    app.edit("VERSION = 1", "VERSION = 2")  # the same size, within the same second
    second = supervised.worker(2)
    [reloading] = supervised.events("reloading")
    assert (reloading["changed"], reloading["pid"]) == ([str(app.module)], first)
    assert not alive(first) and second != first
    task = wait_until(lambda: app.finished(app.enqueue("new")))
    assert task.result == 2


def test_a_burst_of_changes_restarts_the_worker_once(app: App, watcher: str) -> None:
    supervised = Supervised(app, watcher)
    supervised.worker(1)
    for version in range(2, 7):  # as an editor saving several files, one several times
        app.edit(f"VERSION = {version - 1}", f"VERSION = {version}")
    (app.src / "helper.py").write_text("HELP = 1\n")
    supervised.worker(2)
    task = wait_until(lambda: app.finished(app.enqueue("new")))
    assert task.result == 6
    assert len(supervised.events("reloading")) == 1
    assert len(supervised.children()) == 2


def test_a_restart_lets_the_running_task_finish_before_the_new_worker_starts(
        app: App, watcher: str) -> None:
    supervised = Supervised(app, watcher)
    first = supervised.worker(1)
    blocked = app.enqueue("block")
    wait_until(lambda: (app.flags / f"started-{first}").exists())
    app.edit("VERSION = 1", "VERSION = 2")
    wait_until(lambda: supervised.events("stopping"))  # the worker's own: it got SIGTERM
    assert alive(first) and supervised.children() == [first]
    (app.flags / "release").touch()
    second = supervised.worker(2)
    task = app.finished(blocked)
    assert task is not None and (task.result, task.attempts) == (1, 1)  # the old code ran it
    assert task.finished_at.timestamp() <= app.imported_at(second)
    assert supervised.events("stopped")[0]["reason"] == "SIGTERM"
    # The old worker said that it stopped before the supervisor started the new one.
    assert supervised.position("stopped", 1) < supervised.position("spawned", 2)


def test_a_syntax_error_keeps_the_supervisor_waiting_and_the_fix_brings_the_worker_back(
        app: App, watcher: str) -> None:
    supervised = Supervised(app, watcher)
    supervised.worker(1)
    app.edit("VERSION = 1", "VERSION = (")
    [exited] = wait_until(lambda: supervised.events("exited"))
    assert exited["code"] == 1
    assert supervised.process.poll() is None
    app.edit("VERSION = (", "VERSION = 3")
    supervised.worker(2)
    task = wait_until(lambda: app.finished(app.enqueue("fixed")))
    assert task.result == 3
    assert len(supervised.children()) == 3  # the first, the broken one, the fixed one
    assert any("SyntaxError" in line for line in supervised.err), supervised.err


# -- signals -----------------------------------------------
def test_sigterm_stops_the_worker_gracefully_and_the_supervisor_exits_0_leaving_nothing(
        app: App) -> None:
    supervised = Supervised(app, "poll")
    worker = supervised.worker(1)
    supervised.process.send_signal(signal.SIGTERM)
    assert supervised.finish() == 0, supervised.err
    assert not alive(worker)
    assert supervised.events("stopped") == [{"event": "stopped", "reason": "SIGTERM"}]
    assert supervised.events("exiting") == [{"event": "exiting", "code": 0}]


def test_a_second_signal_stops_the_worker_at_once(app: App) -> None:
    supervised = Supervised(app, "poll")
    worker = supervised.worker(1)
    app.enqueue("block")
    wait_until(lambda: (app.flags / f"started-{worker}").exists())
    supervised.process.send_signal(signal.SIGINT)
    wait_until(lambda: supervised.events("stopping"))
    assert supervised.process.poll() is None  # the task still runs
    supervised.process.send_signal(signal.SIGINT)
    assert supervised.finish() == 128 + signal.SIGINT
    assert not alive(worker)


def test_a_signal_during_a_restart_stops_the_worker_gracefully_and_starts_no_other(
        app: App) -> None:
    supervised = Supervised(app, "poll")
    worker = supervised.worker(1)
    blocked = app.enqueue("block")
    wait_until(lambda: (app.flags / f"started-{worker}").exists())
    app.edit("VERSION = 1", "VERSION = 2")
    wait_until(lambda: supervised.events("stopping"))
    supervised.process.send_signal(signal.SIGTERM)  # not passed on: it is stopping already
    wait_until(lambda: supervised.events("signal"))
    (app.flags / "release").touch()
    assert supervised.finish() == 0, supervised.err
    assert app.finished(blocked) is not None
    assert supervised.children() == [worker]


# -- bad arguments -----------------------------------------
@pytest.mark.parametrize(("args", "error"), [
    (["--watch", "nowhere"], "--watch 'nowhere': no such directory"),
    (["--watch", "src", "--watch", "src/app.py"], "--watch 'src/app.py': not a directory"),
    (["--watch", "src", "--burst"], "give one or the other"),
])
def test_a_bad_watch_is_a_one_line_usage_error(app: App, args: list[str], error: str) -> None:
    result = subprocess.run([str(SCRIPT), "worker", "app:q", *args], cwd=app.root,
                            capture_output=True, text=True, timeout=30, env=env_for(app))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and error in result.stderr, result.stderr
    assert result.stderr.startswith("simplepyq worker: error: ")
    assert not list(app.flags.iterdir())  # no worker imported the module


def test_an_unknown_watcher_named_in_the_environment_is_a_usage_error(app: App) -> None:
    result = subprocess.run([str(SCRIPT), "worker", "app:q", "--watch", "src"], cwd=app.root,
                            capture_output=True, text=True, timeout=30,
                            env=env_for(app, "inotify"))
    assert result.returncode == 2
    assert f"${WATCH_ENV} is 'inotify'" in result.stderr


# -- the pieces --------------------------------------------
def test_the_worker_runs_the_command_line_it_was_given_less_watch() -> None:
    given = ["--db", "s.db", "worker", "app:q", "--channels", "a,b", "--keep-done", "7d",
             "--keep-failed", "1.5", "--json", "--debug", "--watch", "src", "--watch", "lib"]
    parsed = build_parser().parse_args(given)
    command = worker_command(parsed)
    assert command[:5] == [sys.executable, "-B", "-m", "simplepyq", "worker"]
    again = build_parser().parse_args(command[4:])
    assert vars(again) == {**vars(parsed), "watch": None}
    # Every option of ``worker`` is carried over (or is --watch, or --burst, which --watch
    # refuses): an option added to the worker must be added to worker_command too.
    assert set(vars(parsed)) == {"command", "run", "target", "channels", "burst", "keep_done",
                                 "keep_failed", "watch", "db", "json", "debug"}


@pytest.mark.parametrize(("installed", "chosen", "expected"), [
    (True, "", NotifyWatcher), (True, "poll", PollingWatcher),
    (True, "watchfiles", NotifyWatcher), (False, "", PollingWatcher),
    (False, "poll", PollingWatcher), (False, "watchfiles", "not installed"),
    (True, "inotify", "is 'inotify'"),
])
def test_watchfiles_is_used_when_installed_unless_the_environment_asks_for_polling(
        monkeypatch: pytest.MonkeyPatch, installed: bool, chosen: str,
        expected: type | str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: (
        real(name) if installed or name != "watchfiles" else None))
    monkeypatch.setenv(WATCH_ENV, chosen)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            choose_watcher(["."])
    else:
        assert type(choose_watcher(["."])) is expected


def _watcher(kind: str, root: Path) -> Watcher:
    if kind == "poll":
        return PollingWatcher([str(root)], interval=0.05)
    pytest.importorskip("watchfiles")
    return NotifyWatcher([str(root)])


def _next_change(changes: Changes, expected: set[Path]) -> set[Path]:
    """The changes seen, gathered until they hold all of ``expected`` (or 10 s pass)."""
    seen: set[Path] = set()

    def complete() -> bool:
        seen.update(map(Path, next(changes)))
        return expected <= seen
    wait_until(complete)
    return seen


@pytest.mark.parametrize("kind", WATCHERS)
def test_a_watcher_tells_python_files_created_changed_renamed_and_deleted_and_nothing_else(
        tmp_path: Path, kind: str) -> None:
    root = tmp_path / "watched"
    root.mkdir()
    changes = _watcher(kind, root).changes()
    assert next(changes) == set()  # watching from now on
    for name in ["notes.txt", "__pycache__/a.py", ".git/b.py", ".venv/lib/c.py", "pkg/.#d.py",
                 "app.pyc"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x = 1\n")
    new = root / "new" / "new.py"  # in a directory just made: events may come too early
    new.parent.mkdir()
    new.write_text("x = 1\n")
    assert _next_change(changes, {new}) == {new}
    new.write_text("x = 2\n")
    assert _next_change(changes, {new}) == {new}
    renamed = new.with_name("renamed.py")
    new.rename(renamed)
    assert _next_change(changes, {new, renamed}) == {new, renamed}
    renamed.unlink()
    assert _next_change(changes, {renamed}) == {renamed}
    changes.close()


@pytest.mark.parametrize("kind", WATCHERS)
def test_a_watcher_tells_the_files_of_a_directory_moved_in_or_out(tmp_path: Path,
                                                                  kind: str) -> None:
    root, away = tmp_path / "watched", tmp_path / "away"
    (away / "pkg").mkdir(parents=True)
    root.mkdir()
    (away / "pkg" / "a.py").write_text("x = 1\n")
    changes = _watcher(kind, root).changes()
    assert next(changes) == set()
    (away / "pkg").rename(root / "pkg")
    assert _next_change(changes, {root / "pkg" / "a.py"}) == {root / "pkg" / "a.py"}
    (root / "pkg").rename(away / "pkg")
    assert _next_change(changes, {root / "pkg" / "a.py"}) == {root / "pkg" / "a.py"}
    changes.close()


def test_the_polling_watcher_gathers_changes_until_a_scan_finds_none(tmp_path: Path) -> None:
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    changes = PollingWatcher([str(tmp_path)], interval=0).changes()  # a scan each tick
    assert next(changes) == set()
    first.write_text("x = 1\n")
    assert next(changes) == set()  # a change: the burst may go on
    second.write_text("x = 1\n")
    assert next(changes) == set()  # it does
    assert next(changes) == {str(first), str(second)}  # a scan found nothing new: it ended
    assert next(changes) == set()
    changes.close()
