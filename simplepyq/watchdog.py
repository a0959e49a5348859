"""Time limits (internal): one thread per scheduler that interrupts runs at their limit
and gives up on those that do not stop.

At its limit a run is interrupted (see ``runs``), and again every ``GRACE / 4``
seconds while it goes on (an interruption raised while a garbage collector callback
or a finalizer runs in its thread is swallowed there). One that is still running
``GRACE`` seconds after its limit is stuck where no exception reaches it (a call
blocked in C): it is abandoned, and the scheduler starts another worker in its place, so the
channel keeps its capacity. The abandoned thread finishes its task whenever the
call returns, and its outcome is recorded then; until that, the task stays
``running`` under this process, so it never runs twice.

The thread starts with the first run that has a limit: channels without time
limits cost nothing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from simplepyq.runs import Run

log = logging.getLogger("simplepyq")

GRACE = 1.0
"""Seconds a run interrupted at its time limit has to end before it is abandoned."""
AGAIN = 3
"""How many more times a run still going is interrupted during ``GRACE``, evenly spaced."""


class Watchdog:
    """Interrupts runs at their deadline, and abandons (``on_abandon``) those still
    running ``GRACE`` seconds after."""

    def __init__(self, on_abandon: Callable[[Run], None]) -> None:
        self._on_abandon = on_abandon
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, int, Run]] = []  # (when, order, step, run)
        self._order = itertools.count()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def watch(self, run: Run) -> None:
        """Interrupt ``run`` at its deadline unless it has finished by then."""
        if run.deadline is None:
            return
        self._schedule(run.deadline, run, step=0)

    def stop(self) -> None:
        """End the thread; runs it watched are no longer interrupted."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _schedule(self, when: float, run: Run, step: int) -> None:
        """Act on ``run`` at ``when``: interrupt it (step 0), again (1 to AGAIN), abandon it."""
        with self._cond:
            if self._stopped:
                return
            heapq.heappush(self._due, (when, next(self._order), step, run))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="simplepyq-watchdog",
                                                daemon=True)
                self._thread.start()
            elif self._due[0][3] is run:
                self._cond.notify()

    def _watch(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (
                        not self._due or self._due[0][0] > time.monotonic()):
                    # (at most TIMEOUT_MAX: a limit of 1e300 s, or inf, waits in steps)
                    self._cond.wait(None if not self._due else min(
                        self._due[0][0] - time.monotonic(), threading.TIMEOUT_MAX))
                if self._stopped:
                    return
                _, _, step, run = heapq.heappop(self._due)
            if run.finished:
                continue
            if step == 0:
                if run.time_out():
                    log.warning("task %d of channel %r passed its time limit of %g s; "
                                "interrupted", run.task_id, run.channel, run.limit or 0)
                    self._schedule(time.monotonic() + GRACE / (AGAIN + 1), run, step=1)
            elif step <= AGAIN:
                run.interrupt_again()
                self._schedule(time.monotonic() + GRACE / (AGAIN + 1), run, step=step + 1)
            elif run.abandon(self._on_abandon):
                log.error("task %d of channel %r is still running %g s after its time "
                          "limit (blocked where no exception reaches it); its thread is "
                          "left to finish it, and another worker takes its place",
                          run.task_id, run.channel, GRACE)
