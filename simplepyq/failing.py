"""Logging a failure that repeats (internal), without flooding the log.

A step that the library retries on its own (committing outcomes, a housekeeping
step) can fail hundreds of times a second while a disk is full or a server is
down. One traceback says what is wrong; a thousand copies of it only bury the rest
of the log and fill the disk further. So the first failure is logged with its
traceback, the repeats are counted and summed up at growing intervals (one line
after 1 s, 2 s, 4 s ... at most ``LONGEST_SILENCE`` apart), and one line says when
the step works again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("simplepyq")

FIRST_SUMMARY = 1.0
"""Seconds after the first failure before repeats are summed up in a line."""
LONGEST_SILENCE = 300.0
"""The summaries' interval doubles up to this many seconds while the failure lasts."""


class RepeatedFailure:
    """The log of one retried step: a traceback once, then counts, then the recovery.

    ``what`` names the step in every line, e.g. "recording task outcomes".
    ``clock`` is the monotonic time source (tests give a fake one).
    """

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._total = 0
        self._unreported = 0
        self._reported_at = 0.0
        self._interval = FIRST_SUMMARY
        self._last_error = ""

    @property
    def failing(self) -> bool:
        """Whether the step's last try failed."""
        return self._failing_since is not None

    def failed(self, exc: BaseException, consequence: str = "will try again") -> None:
        """Record one failure of the step (call from the ``except`` block that caught ``exc``).

        The first of a run is logged at ERROR with its traceback; later ones at most
        once per interval, as a WARNING counting the repeats since the last line.
        """
        now = self._clock()
        with self._lock:
            self._total += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            if self._failing_since is None:
                self._failing_since = self._reported_at = now
                self._interval = FIRST_SUMMARY
                first = True
            else:
                first = False
                self._unreported += 1
                if now - self._reported_at < self._interval:
                    return
                repeats, since = self._unreported, now - self._reported_at
                self._unreported = 0
                self._reported_at = now
                self._interval = min(self._interval * 2, LONGEST_SILENCE)
        if first:
            log.error("%s failed; %s", self.what, consequence, exc_info=exc)
        else:
            log.warning("%s still failing: %d time(s) in the last %.0f s, %d in all "
                        "(last error: %s); %s", self.what, repeats, since, self._total,
                        self._last_error, consequence)

    def succeeded(self) -> None:
        """Record that the step worked: if it was failing, say once that it recovered."""
        if self._failing_since is None:  # the common case, without taking the lock
            return
        now = self._clock()
        with self._lock:
            since = self._failing_since
            if since is None:
                return
            total = self._total
            self._failing_since = None
            self._total = self._unreported = 0
        log.warning("%s works again, after %d failure(s) in %.1f s", self.what, total,
                    now - since)
