"""A development worker that restarts when its code changes: ``simplepyq worker ... --watch DIR``.

With ``--watch`` the ``simplepyq worker`` process never imports the user's module: it
is a ``Supervisor`` that runs the same command, less ``--watch``, in a child process,
watches the directories, and when a ``*.py`` file under them is created, modified,
deleted or renamed, stops the child as SIGTERM does (its running tasks finish, its
unstarted ones stay pending) and then starts a new one, which imports the new code.
A worker that exits by itself (a crash, or an import error from a file saved half
edited) is started again by the next change, never in a loop.

Files are watched by the ``watchfiles`` library (the ``watch`` extra) when it is
installed, and otherwise by a scan of the files' sizes and times every
``POLL_INTERVAL`` seconds. ``SIMPLEPYQ_WATCH=poll`` forces the scan and
``SIMPLEPYQ_WATCH=watchfiles`` requires the library, so that tests run both.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any, Protocol

WATCH_ENV = "SIMPLEPYQ_WATCH"
"""Which watcher to use: ``watchfiles``, ``poll``, or unset (``watchfiles`` if installed)."""
TICK = 0.1
"""Seconds the supervisor may take to notice a signal or the end of its worker."""
POLL_INTERVAL = 0.5
"""Seconds between two scans of the watched directories, without ``watchfiles``."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals passed on to the worker: it stops as it would have without a supervisor."""
RELAY_WAIT = 2.0
"""Seconds to wait for the last output of a worker that has exited. Longer only if a
process it started still holds its stderr open."""
SHOWN_CHANGES = 3
"""How many changed files a reload's message names."""


class Say(Protocol):
    """Tells of an event: one line on stderr, or one JSON object on stdout with ``--json``."""

    def __call__(self, event: str, message: str, **fields: Any) -> None: ...


# -- what is watched ---------------------------------------
def watched_dirs(dirs: Sequence[str]) -> list[str]:
    """``dirs`` as absolute paths, each once; ValueError names one that is not a directory."""
    found: list[str] = []
    for given in dirs:
        if not os.path.isdir(given):
            problem = "not a directory" if os.path.exists(given) else "no such directory"
            raise ValueError(f"--watch {given!r}: {problem}; give the directory of the code "
                             "to watch")
        path = os.path.realpath(given)
        if path not in found:
            found.append(path)
    return found


Files = dict[str, tuple[int, int, int, int]]
"""Python source files by path, each with what tells that it changed: its inode, size,
and modification and change times in nanoseconds (so that an edit that keeps the size,
within the same second, is seen too)."""


def scan(dirs: Sequence[str]) -> Files:
    """The Python source files under ``dirs``: ``*.py`` files outside ``__pycache__`` and
    hidden directories (``.git``, ``.venv``), and not hidden themselves (an editor's lock
    file). Only the part of a path under a watched directory counts, so that a project
    kept in a hidden directory is watched all the same."""
    found: Files = {}
    for root in dirs:
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = [name for name in subfolders if not _skipped(name)]
            for name in names:
                if name.endswith(".py") and not _skipped(name):
                    path = os.path.join(folder, name)
                    try:
                        info = os.stat(path)
                    except OSError:  # deleted since it was listed
                        continue
                    found[path] = (info.st_ino, info.st_size, info.st_mtime_ns,
                                   info.st_ctime_ns)
    return found


def changed_files(before: Files, after: Files) -> set[str]:
    """The files created, deleted or changed between two scans (a rename is both)."""
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__"


Changes = Generator[set[str], None, None]
"""What a watcher yields: sets of the paths that changed."""


class Watcher(Protocol):
    """Watches directories for changes of their Python source files (see ``scan``)."""

    name: str
    """How it watches, as told in the supervisor's first event."""

    def changes(self) -> Changes:
        """Yield an empty set once watching has begun, so that every change after that
        is seen; then, at least every ``TICK`` seconds, the files that changed since
        the last yield: a burst of changes (an editor writes several files, or one
        several times) comes as one set, once the files have been quiet for a moment."""
        ...


class NotifyWatcher:
    """Watches with ``watchfiles``: the operating system tells when something changed,
    and a scan then finds which source files did.

    The scan, rather than the events' paths, says what changed, for the two watchers
    to agree, and because events miss some changes: a file created in a directory
    just created may come before the directory is watched, and a directory moved
    away is one event that names none of its files.
    """

    name = "watchfiles"

    def __init__(self, dirs: Sequence[str]) -> None:
        self._dirs = list(dirs)

    def changes(self) -> Changes:
        import watchfiles

        # The supervisor tells of the changes that matter; watchfiles would log every batch.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        batches = watchfiles.watch(*self._dirs, watch_filter=lambda _, path: self._seen(path),
                                   rust_timeout=round(TICK * 1000), yield_on_timeout=True,
                                   raise_interrupt=False)
        with contextlib.closing(batches):  # stops its thread when the supervisor is done
            next(batches)  # (the first comes after rust_timeout, once the watch has begun)
            files = scan(self._dirs)
            yield set()
            for events in batches:
                changed: set[str] = set()
                if events:
                    latest = scan(self._dirs)
                    changed, files = changed_files(files, latest), latest
                yield changed

    def _seen(self, path: str) -> bool:
        """Whether an event about ``path`` may be about source files: one outside the
        directories that ``scan`` skips (any file: it may have been a directory)."""
        for root in self._dirs:
            parts = os.path.relpath(path, root).split(os.sep)
            if parts[0] != os.pardir:
                return not any(map(_skipped, parts))
        return False


class PollingWatcher:
    """Watches without dependencies: scans the files every ``POLL_INTERVAL`` seconds,
    and every ``TICK`` while they keep changing (a burst ends with a scan that finds
    nothing new)."""

    name = "poll"

    def __init__(self, dirs: Sequence[str], interval: float = POLL_INTERVAL) -> None:
        self._dirs = list(dirs)
        self._interval = interval

    def changes(self) -> Changes:
        files = scan(self._dirs)
        yield set()
        burst: set[str] = set()
        scanned = time.monotonic()
        while True:
            time.sleep(TICK)
            if not burst and time.monotonic() - scanned < self._interval:
                yield set()
                continue
            latest, scanned = scan(self._dirs), time.monotonic()
            changed, files = changed_files(files, latest), latest
            if changed or not burst:
                burst |= changed
                yield set()
            else:
                yield burst
                burst = set()


def choose_watcher(dirs: Sequence[str]) -> Watcher:
    """The watcher that ``SIMPLEPYQ_WATCH`` asks for: by default ``watchfiles`` when it
    is installed, else the polling scan. ValueError for a value it does not know, or
    for ``watchfiles`` when that is not installed."""
    choice = os.environ.get(WATCH_ENV) or "auto"
    if choice not in ("auto", NotifyWatcher.name, PollingWatcher.name):
        raise ValueError(f"${WATCH_ENV} is {choice!r}; give {NotifyWatcher.name} or "
                         f"{PollingWatcher.name}, or leave it unset")
    installed = importlib.util.find_spec("watchfiles") is not None
    if choice == NotifyWatcher.name and not installed:
        raise ValueError(f"${WATCH_ENV} asks for watchfiles, which is not installed: "
                         "pip install 'simplepyq[watch]'")
    if installed and choice != PollingWatcher.name:
        return NotifyWatcher(dirs)
    return PollingWatcher(dirs)


# -- the worker in a child process -------------------------
def worker_command(args: argparse.Namespace) -> list[str]:
    """The command a child runs: the ``simplepyq worker`` that ``args`` were parsed
    from, less ``--watch``. ``-B``: the child writes no bytecode cache, because Python
    trusts a cached module whose source has the same size and the same mtime in whole
    seconds, and an edit within a second of the last restart would run the old code."""
    command = [sys.executable, "-B", "-m", "simplepyq", "worker", args.target]
    if args.channels:
        command += ["--channels", ",".join(args.channels)]
    for option, seconds in (("--keep-done", args.keep_done), ("--keep-failed", args.keep_failed)):
        if seconds is not None:
            command += [option, f"{seconds:f}"]
    if getattr(args, "db", None):
        command += ["--db", args.db]
    return command + [flag for flag in ("--json", "--debug") if getattr(args, flag[2:], False)]


@dataclass
class _Child:
    """A worker process, the thread copying its stderr to ours, and how many stop
    signals it was sent."""

    process: subprocess.Popen[bytes]
    relay: threading.Thread
    stop_signals: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, signum: int) -> None:
        self.stop_signals += 1
        self.process.send_signal(signum)

    def exit_code(self) -> int | None:
        """None while it runs; else its exit code, 128 + N if signal N ended it."""
        code = self.process.poll()
        if code is None:
            return None
        self.relay.join(RELAY_WAIT)  # its last lines come before ours
        return 128 - code if code < 0 else code


def _relay(source: IO[bytes], target: int) -> None:
    """Copy a worker's stderr to ours (the file descriptor ``target``) as it comes."""
    with source:
        while chunk := os.read(source.fileno(), 65536):
            while chunk:
                chunk = chunk[os.write(target, chunk):]


class Supervisor:
    """Runs ``command`` (a worker) in a child process and restarts it when a Python file
    under ``dirs`` changes.

    The child has a session of its own, so that a Ctrl-C on the terminal reaches it only
    through the supervisor, once. Its stderr is copied to the supervisor's, so that the
    two write whole lines and the worker, off a terminal, draws no table that would
    erase the supervisor's lines.

    SIGINT, SIGTERM and SIGHUP are passed on to the child, and the supervisor exits with
    its code once it is gone; the child gets as many stop signals as the user sent,
    counting the SIGTERM of a reload, so that a second signal always stops it at once.
    """

    def __init__(self, command: Sequence[str], dirs: Sequence[str], say: Say) -> None:
        """ValueError if a directory is missing or ``$SIMPLEPYQ_WATCH`` is wrong."""
        self._say = say
        self._command = list(command)
        self._dirs = watched_dirs(dirs)
        self._watcher = choose_watcher(self._dirs)
        self._child: _Child | None = None
        self._signals: list[int] = []  # appended by the handler, taken by the loop
        self._asked = 0  # how many stop signals the user sent

    def run(self) -> int:
        """Supervise until a stop signal; return the exit code of the last worker (0 if
        none was running)."""
        say = self._say
        previous = {number: signal.signal(number, self._handle) for number in STOP_SIGNALS}
        changes = self._watcher.changes()
        try:
            next(changes)  # watching: what changes from now on is seen
            say("watching", f"watching {', '.join(self._dirs)} for changes to Python files "
                f"({self._watcher.name}); supervisor {os.getpid()}", pid=os.getpid(),
                dirs=self._dirs, watcher=self._watcher.name)
            self._start()
            while (code := self._step(next(changes))) is None:
                pass
            say("exiting", f"supervisor {os.getpid()} exiting with code {code}", code=code)
            return code
        finally:
            changes.close()
            self._abandon()
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # (the loop acts on it within TICK)

    def _step(self, changed: set[str]) -> int | None:
        """Act on what happened since the last tick; the exit code once it is time to exit."""
        code = self._take_signals()
        if code is not None:
            return code
        child = self._child
        if child is not None and (code := child.exit_code()) is not None:
            self._child = None
            if self._asked:
                return code
            if not child.stop_signals:
                self._say("exited", f"worker {child.pid} exited with code {code}; waiting for "
                          "a change to a Python file to start it again", pid=child.pid,
                          code=code)
            else:
                self._start()  # it stopped for a reload
                return None
        if changed:
            self._reload(changed)
        return None

    def _take_signals(self) -> int | None:
        """Pass on the signals received, or return 0 for one that finds no worker."""
        while self._signals:
            signum = self._signals.pop(0)
            self._asked += 1
            name = signal.Signals(signum).name
            child = self._child
            if child is None:
                self._say("signal", f"{name}: no worker is running", signal=name, pid=None)
                return 0
            if child.stop_signals < self._asked:
                self._say("signal", f"{name}: passed on to worker {child.pid}", signal=name,
                          pid=child.pid)
                child.stop(signum)
            else:
                self._say("signal", f"{name}: worker {child.pid} is stopping already, for a "
                          "reload; it will not be started again (signal again to stop it at "
                          "once)", signal=name, pid=child.pid)
        return None

    def _reload(self, changed: set[str]) -> None:
        """Stop the worker gracefully (the next tick after it exits starts a new one), or
        start one if none runs. Changes while it stops need nothing more: the new worker
        imports the code as it is then."""
        child = self._child
        if child is not None and child.stop_signals:
            return
        shown = sorted(os.path.relpath(path) for path in changed)
        names = ", ".join(shown[:SHOWN_CHANGES]) + (
            f" and {len(shown) - SHOWN_CHANGES} more" if len(shown) > SHOWN_CHANGES else "")
        action = (f"stopping worker {child.pid} (running tasks finish) to start it again"
                  if child is not None else "starting the worker")
        self._say("reloading", f"changed: {names}; {action}", changed=sorted(changed),
                  pid=None if child is None else child.pid)
        if child is None:
            self._start()
        else:
            child.stop(signal.SIGTERM)

    def _start(self) -> None:
        process = subprocess.Popen(self._command, stderr=subprocess.PIPE,
                                   start_new_session=True)
        assert process.stderr is not None
        relay = threading.Thread(target=_relay, args=(process.stderr, sys.stderr.fileno()),
                                 name="simplepyq-relay", daemon=True)
        relay.start()
        self._child = _Child(process, relay)
        self._say("spawned", f"started worker process {process.pid}", pid=process.pid)

    def _abandon(self) -> None:
        """On the way out (after an error too), leave no worker behind: a graceful stop,
        then a kill if it has not ended within a few seconds."""
        child, self._child = self._child, None
        if child is None or child.process.poll() is not None:
            return
        child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(10)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()

