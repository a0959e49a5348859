"""Live progress of some channels: task counts per status and tasks finished per second.

``run_until_complete(progress=True)`` and the ``simplepyq worker`` command show
the same thing, from here. Counts come from the store, so they include every
process's work on those channels. Counting scans the channel's rows, so it is
sampled at most every ``interval`` seconds and less often when it is slow: the
display never costs more than a few percent of a core, however big the store.
On a terminal the lines are redrawn in place (log records are printed above
them); elsewhere each change of a channel's counts is one log line, or one
JSON object per line for machines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TextIO

from simplepyq.task import FINISHED, Status

log = logging.getLogger("simplepyq")

Counts = Callable[[], Mapping[str, Mapping[str, int]]]
"""Where counts come from: ``SimplePyQ.stats`` (``{channel: {status: count}}``)."""

STATUSES = tuple(status.value for status in Status)
SOMETIMES = (Status.BLOCKED.value,)
"""Statuses shown in tables and lines only while some task has them (only workflows
make tasks blocked): tables stay within 80 columns without them."""
COLUMNS = {status: max(len(status), 8) for status in STATUSES}
"""The width of each status's column in the terminal table: its name's, at least 8."""
WINDOW = 5.0
"""Seconds of samples that tasks/s is measured over: recent, yet not jumpy."""
COST_FACTOR = 20
"""Sample no more often than every COST_FACTOR times what one count took (<= 5% busy)."""


@dataclass(frozen=True)
class ChannelProgress:
    """One channel at one sample: its counts, what finished since the start, and its pace."""

    name: str
    counts: Mapping[str, int]
    finished: int
    """Tasks that became done or failed since progress began (by the counts' difference)."""
    rate: float
    """Tasks finished per second over the last ``WINDOW`` seconds."""
    changed: bool
    """The counts differ from the previous sample (always True for the first)."""

    def describe(self) -> str:
        """``pending 3, delayed 0, running 1, done 12, failed 0; +5 finished, 2.5 tasks/s``."""
        counts = ", ".join(f"{status} {self.counts.get(status, 0)}"
                           for status in shown_statuses([self.counts]))
        return f"{counts}; +{self.finished} finished, {self.rate:.1f} tasks/s"

    def as_dict(self) -> dict[str, object]:
        """The same, for JSON."""
        return {"channel": self.name, **{s: self.counts.get(s, 0) for s in STATUSES},
                "finished": self.finished, "rate": round(self.rate, 3)}


def shown_statuses(counts: Iterable[Mapping[str, int]]) -> list[str]:
    """The statuses to show for these counts: every one, but those of SOMETIMES that no
    count has."""
    present = {status for numbers in counts for status in SOMETIMES if numbers.get(status)}
    return [status for status in STATUSES if status not in SOMETIMES or status in present]


class View(Protocol):
    """How samples are shown."""

    def show(self, channels: Sequence[ChannelProgress], elapsed: float) -> None:
        """Show one sample of every channel; ``elapsed`` is seconds since progress began."""

    def close(self) -> None:
        """The last sample has been shown."""


class Progress:
    """Samples the counts of ``channels`` and hands them to a view, at a bounded rate."""

    def __init__(self, counts: Counts, channels: Sequence[str], view: View, *,
                 interval: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self._counts = counts
        self._channels = list(channels)
        self._view = view
        self._base_interval = interval
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._next = self._started
        self._first: dict[str, int] = {}
        self._last: dict[str, Mapping[str, int]] = {}
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def auto(cls, counts: Counts, channels: Sequence[str],
             stream: TextIO | None = None) -> Progress:
        """Redrawn lines on ``stream`` (stderr by default) if it is a terminal, else log lines."""
        stream = sys.stderr if stream is None else stream
        view: View = TerminalView(stream) if is_terminal(stream) else LogView()
        return cls(counts, channels, view)

    @property
    def interval(self) -> float:
        """Seconds until the next sample is due at the latest (grows when counting is slow)."""
        return self._interval

    def tick(self) -> None:
        """Take and show a sample if one is due; cheap to call often."""
        if self._clock() >= self._next:
            self.refresh()

    def refresh(self) -> None:
        """Take and show a sample now. A failure to count is logged, never raised."""
        with self._lock:
            began = self._clock()
            try:
                counts = self._counts()
            except Exception as exc:
                log.warning("progress: counting tasks failed (%s); will try again", exc)
                counts = None
            now = self._clock()
            self._interval = max(self._base_interval, (now - began) * COST_FACTOR)
            self._next = now + self._interval
            if counts is not None:
                self._view.show([self._sample(name, counts.get(name, {}), now)
                                 for name in self._channels], now - self._started)

    def close(self) -> None:
        """Show a last sample, then let the view finish."""
        self.refresh()
        self._view.close()

    def _sample(self, name: str, counts: Mapping[str, int], now: float) -> ChannelProgress:
        finished = sum(counts.get(status.value, 0) for status in FINISHED)
        first = self._first.setdefault(name, finished)
        samples = self._samples.setdefault(name, deque())
        samples.append((now, finished))
        while len(samples) > 2 and samples[1][0] <= now - WINDOW:
            samples.popleft()
        since, before = samples[0]
        rate = max(finished - before, 0) / (now - since) if now > since else 0.0
        changed = self._last.get(name) != counts
        self._last[name] = dict(counts)
        return ChannelProgress(name, dict(counts), max(finished - first, 0), rate, changed)


class TerminalView:
    """A table redrawn in place on a terminal; log records go above it (``log_handler``).

    Once closed it draws no more: the last table stays on the screen and what is
    written afterwards (the final log lines) goes below it, never under a redraw.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._closed = False
        self._interruptions: list[bytes] = []
        # Not re-entrant: a signal handler that interrupts a draw must not draw too.
        self._lock = threading.Lock()

    def show(self, channels: Sequence[ChannelProgress], elapsed: float) -> None:
        names = [cell(c.name) for c in channels]
        width = max([len("channel"), *map(display_width, names)])
        statuses = shown_statuses([c.counts for c in channels])
        lines = [padded("channel", width) + " "
                 + " ".join(f"{s:>{COLUMNS[s]}}" for s in statuses) + f" {'tasks/s':>8}"]
        for name, c in zip(names, channels, strict=True):
            lines.append(padded(name, width) + " "
                         + " ".join(f"{c.counts.get(s, 0):>{COLUMNS[s]}}" for s in statuses)
                         + f" {c.rate:>8.1f}")
        finished = sum(c.finished for c in channels)
        rate = sum(c.rate for c in channels)
        lines.append(f"{_clock_time(elapsed)} elapsed, {finished} finished, {rate:.1f} tasks/s")
        with self._drawing():
            if not self._closed:
                self._write(self._erasure() + _drawn(lines))
                self._lines = lines

    def above(self, text: str) -> None:
        """Print ``text`` above the table, which is redrawn below it."""
        with self._drawing():
            self._write(self._erasure() + text.rstrip("\n") + "\n" + _drawn(self._lines))

    def interrupt(self, line: bytes) -> None:
        """Print ``line`` above the table, from a signal handler.

        A handler may run in the middle of a draw, and buffered streams refuse to
        be re-entered: if a draw is under way, the line waits for its end;
        otherwise it goes straight to the file descriptor. (A draw by another
        thread ends within the short wait; one that this handler interrupted ends
        only after the handler returns.)
        """
        self._interruptions.append(line)
        if self._lock.acquire(timeout=0.05):
            try:
                self._write_interruptions()
            finally:
                self._lock.release()

    def log_handler(self) -> logging.Handler:
        """A logging handler that prints records above the table instead of through it."""
        return _AboveHandler(self)

    def close(self) -> None:
        """Leave the last table on the screen; later lines are printed below it."""
        with self._drawing():
            self._closed = True
            self._lines = []

    @contextmanager
    def _drawing(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            finally:
                self._write_interruptions()

    def _write_interruptions(self) -> None:
        while self._interruptions:
            line = self._interruptions.pop(0)
            os.write(self._stream.fileno(),
                     (self._erasure() + line.decode(errors="replace")
                      + _drawn(self._lines)).encode())

    def _erasure(self) -> str:
        """Back to the table's first line, and clear to the end of the screen."""
        return f"\r\x1b[{len(self._lines)}A\x1b[J" if self._lines else ""

    def _write(self, text: str) -> None:
        # One write per change, flushed, so that the stream's buffer is empty between
        # changes and a line written to the file descriptor lands after the whole table.
        self._stream.write(text)
        self._stream.flush()


def _drawn(lines: Sequence[str]) -> str:
    return "".join(line + "\n" for line in lines)


class _AboveHandler(logging.Handler):
    def __init__(self, view: TerminalView) -> None:
        super().__init__()
        self._view = view

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._view.above(self.format(record))
        except Exception:
            self.handleError(record)


class LogView:
    """One INFO log line per channel whose counts changed since the last sample."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger

    def show(self, channels: Sequence[ChannelProgress], elapsed: float) -> None:
        for channel in channels:
            if channel.changed:
                self._log.info("channel %s: %s", printable(channel.name), channel.describe())

    def close(self) -> None:
        pass


class JsonView:
    """One JSON object per line, ``{"event": "progress", "channel": ..., counts...}``,
    per channel whose counts changed since the last sample."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def show(self, channels: Sequence[ChannelProgress], elapsed: float) -> None:
        for channel in channels:
            if channel.changed:
                self._stream.write(json.dumps({"event": "progress", **channel.as_dict()}) + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


def is_terminal(stream: TextIO) -> bool:
    """True if ``stream`` is an interactive terminal (False for pipes, files, closed streams)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def printable(text: str) -> str:
    """``text`` with control characters escaped (a newline shows as ``\\n``), so that a
    name never breaks the line it is shown on."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: East Asian wide characters take two,
    combining marks none."""
    return sum(0 if unicodedata.combining(char) else
               2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def cell(text: str, width: int = 40) -> str:
    """``text`` fit for a table cell: printable, and cut to ``width`` columns with an
    ellipsis when longer."""
    text = printable(text)
    if display_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += display_width(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "\u2026"


def padded(text: str, width: int, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` columns, by display width."""
    fill = " " * max(width - display_width(text), 0)
    return fill + text if right else text + fill


def _clock_time(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"
