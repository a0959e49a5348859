"""Running a suspect task alone (internal): so that a task which kills its process is
the only one blamed for it.

A task that was running when its worker's process died is a *suspect*: it may be
what killed the process, or it may have been running beside the culprit. The
store counts each task's recoveries in a row and fails a task at a limit, so the
count must only grow for the guilty. A suspect therefore runs with nothing else of
its process in flight: no other task running, none claimed and waiting, no outcome
uncommitted. If the process dies then, the suspect alone is recovered; if it
succeeds, its count starts again from zero.

``SoloGate`` is the process's side of that rule: every claim and every task
taken from a hand is in the gate (a lock and a counter, cheap), and a suspect waits
for the gate to hold nothing but itself, and keeps others out until it has run.
"""

from __future__ import annotations

import threading


class SoloGate:
    """Lets many ordinary tasks run at once, or one suspect alone."""

    def __init__(self) -> None:
        # Ordinary tasks take the lock itself (cheaper than the condition's methods);
        # only a suspect waits on the condition.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = 0
        self._alone = False

    def enter(self) -> bool:
        """Start an ordinary task or claim; False while a suspect runs or waits to run."""
        with self._lock:
            if self._alone:
                return False
            self._active += 1
            return True

    def leave(self) -> None:
        """End what ``enter`` started."""
        with self._lock:
            self._active -= 1
            if self._alone and self._active <= 1:
                self._cond.notify_all()

    def begin(self) -> bool:
        """From inside the gate (after ``enter``): keep others out and wait until nothing
        else runs; False (and nothing done) if another suspect has the gate already.

        Whoever holds a task when a suspect begins is still in the gate, and gives the
        task back before leaving, so that the suspect starts with none held but its own.
        """
        with self._cond:
            if self._alone:
                return False
            self._alone = True
            while self._active > 1:
                self._cond.wait()
            return True

    def end(self) -> None:
        """Let ordinary tasks in again."""
        with self._cond:
            self._alone = False
            self._cond.notify_all()

    def wait_open(self, timeout: float) -> None:
        """Sleep while a suspect has the gate, up to ``timeout`` seconds."""
        with self._cond:
            if self._alone:
                self._cond.wait(timeout)
