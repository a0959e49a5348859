"""Wake-ups between processes that share a SQLite file: a watch on its write-ahead log.

Every commit appends to the file's log (``FILE-wal``) with ``write()``. On Linux an
inotify watch on the file's directory hears of that at once, and the committer does
nothing more for it: no socket to send to, no file to keep, nothing for a process
that dies to leave behind, and a commit costs the same whether anyone listens or
not. The event comes as the log is written, a moment before the commit shows (SQLite
then updates its shared index), so the watcher confirms each change with ``PRAGMA
data_version``, looking again at growing pauses for a few milliseconds. What it
misses, and every change on a platform without inotify, is seen by the poll that
every process keeps (``poll_interval``): a missed wake-up costs a poll, never a task.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import struct
import sys
import threading
import time
from collections.abc import Callable

from simplepyq.callbacks import Callbacks

log = logging.getLogger("simplepyq")

_IN_MODIFY = 0x2
_IN_CREATE = 0x100
_IN_CLOEXEC = 0o2000000
_IN_NONBLOCK = 0o4000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows

CONFIRM_FIRST = 0.0002
"""Seconds before the first look again for a change that an event announced."""
CONFIRM_LONGEST = 0.01
"""Seconds after which an event whose change never showed is let go (a checkpoint
that rewrote the log, say: nothing to tell)."""


def _inotify() -> ctypes.CDLL | None:
    """The C library, if it has inotify (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "inotify_init1") else None


class WalWatch:
    """A thread that calls its callbacks soon after any process commits to one file.

    ``changed()`` says whether the file changed since it was last asked (the thread
    calls it alone). ``start`` returns False, and nothing runs, where the platform
    has no inotify or the watch cannot be set: callers then keep to polling.
    """

    def __init__(self, path: str, changed: Callable[[], bool]) -> None:
        self._directory = os.path.dirname(os.path.abspath(path)) or "."
        self._log_name = os.fsencode(os.path.basename(path) + "-wal")
        self._changed = changed
        self.callbacks: Callbacks[[]] = Callbacks()
        self._fd = -1
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> bool:
        """Set the watch and start the thread; False where that cannot be done."""
        libc = _inotify()
        if libc is None:
            return False
        fd = libc.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK)
        if fd < 0 or libc.inotify_add_watch(fd, os.fsencode(self._directory),
                                            _IN_MODIFY | _IN_CREATE) < 0:
            log.debug("cannot watch %s for commits (%s); polling", self._directory,
                      os.strerror(ctypes.get_errno()))
            if fd >= 0:
                os.close(fd)
            return False
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._watch, name="simplepyq-walwatch",
                                        daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """End the thread and let its file descriptors go."""
        if self._thread is None:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)
        self._thread = None

    def _watch(self) -> None:
        while not self._stopping:
            ready, _, _ = select.select([self._fd, self._wake_r], [], [])
            if self._stopping:
                return
            # With no callback left (the workers stopped), the file is not looked at: it
            # may even be another file by now, deleted and made again under its name.
            # Nor while none wants to hear (a busy process, whose own commits these
            # mostly are): the events are read, and let go.
            if self._fd in ready and self._log_written() and self.callbacks.wanted() \
                    and self._confirmed():
                self.callbacks.fire()

    def _log_written(self) -> bool:
        """Read the events waiting; whether one was of the file's log."""
        written = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return written
            offset = 0
            while offset < len(data):
                _, _, _, length = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                if data[start:start + length].rstrip(b"\0") == self._log_name:
                    written = True
                offset = start + length

    def _confirmed(self) -> bool:
        """Whether the file changed, looking again at growing pauses for a while."""
        pause = CONFIRM_FIRST
        while True:
            try:
                if self._changed():
                    return True
            except Exception as exc:  # the store closing under it, say: the poll goes on
                log.debug("looking for a commit in %s failed (%s)", self._directory, exc)
                return False
            if pause > CONFIRM_LONGEST or self._stopping:
                return False
            time.sleep(pause)
            pause *= 2
