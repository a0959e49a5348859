"""Periodic tasks: schedules stored by name, whose ticks any process running workers
enqueues, exactly one task per tick across every process and host.

A schedule row holds its spec (JSON), its args, the next tick not yet enqueued
(``next_at``) and a counter of how often it was fired. A process whose housekeeper
finds ``next_at`` past enqueues the tick's task in the transaction that moves
``next_at`` on, and only if the counter is still the one it read (a compare-and-set):
every other process finds it changed and enqueues nothing. No leader is elected.

Ticks come from a cron expression (cronsim: Debian cron's rules, its daylight-saving
behaviour included, in the schedule's time zone) or a fixed ``every``. After
downtime, ``catch_up`` says which missed ticks still run (see ``Spec.due``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from simplepyq.storage.base import NewTick, Store

log = logging.getLogger("simplepyq")

SPEC_VERSION = 1
"""The version of the stored spec; a row of a newer one is reported and skipped."""
CATCH_UP = ("latest", "all", "none")
MAX_CATCH_UP = 100
"""The most missed ticks ``catch_up="all"`` enqueues at once (the most recent ones)."""
ON_TIME = 1.0
"""How late a tick may be and still count as on time, whatever ``catch_up`` says:
the lateness of a running process's housekeeping, not downtime."""
LOOK_EVERY = 1.0
"""Seconds between a housekeeper's reads of the schedules (new ones, changed ones)."""
NICKNAMES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
             "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
             "@hourly": "0 * * * *"}


@dataclass(frozen=True)
class Spec:
    """When a schedule ticks, and what happens to ticks missed while nothing ran."""

    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    catch_up: str = "latest"
    max_delay: float | None = None
    """How late the most recent missed tick may be and still run (``latest``); None:
    one period, at most an hour."""
    retries: int = 0
    priority: int = 0
    overlap: bool = True
    time_limit: float | None = None
    version: int = SPEC_VERSION

    def check(self) -> Spec:
        """This spec, or ``ValueError`` naming what is wrong with it."""
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron= and every=")
        if self.every is not None and not self.every > 0:
            raise ValueError(f"every must be more than 0 seconds, not {self.every!r}")
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.tz!r} (give an IANA name such as "
                             f"'Europe/Berlin'): {exc}") from None
        if self.cron is not None:
            try:
                CronSim(_expression(self.cron), datetime.now(zone))
            except CronSimError as exc:
                raise ValueError(f"invalid cron expression {self.cron!r}: {exc}") from None
        if self.catch_up not in CATCH_UP:
            raise ValueError(f"catch_up must be one of {', '.join(CATCH_UP)}, not "
                             f"{self.catch_up!r}")
        return self

    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def read(cls, text: str) -> Spec:
        """The spec stored as ``text``; ``ValueError`` for one this version cannot run."""
        try:
            fields = json.loads(text)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
            if int(fields.get("version", 0)) > SPEC_VERSION:
                raise ValueError(f"written by a newer simplepyq (spec {fields['version']})")
            return cls(**fields).check()
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"unreadable schedule ({exc})") from None

    def after(self, moment: float, anchor: float) -> float:
        """The first tick after ``moment`` (``every`` counts from ``anchor``)."""
        if self.every is not None:
            # On a grid of microseconds: ticks counted from one another do not drift.
            steps = max(math.floor((moment - anchor) / self.every) + 1, 0)
            while round(anchor + steps * self.every, 6) <= moment:  # the division rounds
                steps += 1
            return round(anchor + steps * self.every, 6)
        assert self.cron is not None
        start = datetime.fromtimestamp(moment, ZoneInfo(self.tz))
        return next(iter(CronSim(_expression(self.cron), start))).timestamp()

    def period(self, around: float) -> float:
        """The time between the tick after ``around`` and the one after that."""
        if self.every is not None:
            return self.every
        first = self.after(around, around)
        return self.after(first, first) - first

    def due(self, next_at: float, now: float) -> tuple[list[float], float]:
        """The ticks to enqueue at ``now`` of a schedule whose next tick not yet
        enqueued is ``next_at``, and the next tick after ``now``.

        Every tick from ``next_at`` up to ``now`` is due; those at most ON_TIME late
        run (a short period can have several due at one look). The others were
        missed while nothing ran: ``latest`` (the default) runs only the most recent
        of them, if no tick is on time and it is at most ``max_delay`` late (one
        period, at most an hour, by default); ``all`` runs each; ``none`` runs none.
        At most the MAX_CATCH_UP most recent ticks run at once.
        """
        ticks: list[float] = []
        tick = next_at
        while tick <= now:
            ticks.append(tick)
            if len(ticks) > MAX_CATCH_UP:
                del ticks[0]
            if self.every is not None and (now - tick) > self.every * (MAX_CATCH_UP + 1):
                tick = self.after(now - self.every * MAX_CATCH_UP, next_at)  # jump ahead
                continue
            tick = self.after(tick, next_at)
        if self.catch_up == "all":
            return ticks, tick
        on_time = [t for t in ticks if now - t <= ON_TIME]
        if on_time or self.catch_up == "none":
            return on_time, tick
        late = self.max_delay if self.max_delay is not None else min(self.period(now), 3600.0)
        return [t for t in ticks[-1:] if now - t <= late], tick


def _expression(cron: str) -> str:
    return NICKNAMES.get(cron.strip().lower(), cron)


@dataclass(frozen=True)
class Periodic:
    """A stored schedule, as ``SimplePyQ.periodics`` lists it.

    ``name`` and ``channel`` are those given to ``add_periodic``, with its ``cron``
    expression read in the zone ``tz``, or its period ``every`` (in seconds).
    ``next_run`` is the next tick, ``last_tick`` the last one enqueued (aware UTC
    times, None before the first), ``last_task`` that tick's task and
    ``last_status`` its status now (None once the task is deleted).
    """

    name: str
    channel: str
    cron: str | None
    every: float | None
    tz: str
    next_run: datetime | None
    last_tick: datetime | None
    last_task: int | None
    last_status: str | None
    error: str | None = None
    """Why this process cannot run the schedule (a newer version's, or damaged)."""


def listed(row: tuple[Any, ...]) -> Periodic:
    """A row of ``Store.schedules`` as a ``Periodic``."""
    name, channel, text, _, next_at, _, last_tick, last_task, status = row
    try:
        spec, error = Spec.read(text), None
    except ValueError as exc:
        spec, error = Spec(every=1.0), str(exc)
    return Periodic(name, channel, None if error else spec.cron,
                    None if error else spec.every, spec.tz, _when(next_at), _when(last_tick),
                    None if last_task is None else int(last_task),
                    None if status is None else str(status), error)


def _when(epoch: Any) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(float(epoch), timezone.utc)


class Ticker:
    """Fires the due schedules of a store, from one process's housekeeper."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._next_look = 0.0
        self._next_due: float | None = None
        self._reported: set[tuple[str, str]] = set()

    def tick(self) -> int:
        """Enqueue the tasks of every tick due now (if another process has not); how
        many. Reads the schedules at most every LOOK_EVERY seconds, or when one is due."""
        now = self._clock()
        if now < self._next_look and (self._next_due is None or now < self._next_due):
            return 0
        self._next_look, self._next_due = now + LOOK_EVERY, None
        made = 0
        for row in self._store.schedules():
            name, channel, text, args, next_at, fired = row[:6]
            if next_at is None:
                continue
            try:
                spec = Spec.read(text)
            except ValueError as exc:
                self._report(name, str(exc))
                continue
            if float(next_at) <= now:
                made += self._fire(name, channel, spec, args, float(next_at), int(fired), now)
            else:
                self._next_due = min(self._next_due or math.inf, float(next_at))
        return made

    def _fire(self, name: str, channel: str, spec: Spec, args: bytes | None, next_at: float,
              fired: int, now: float) -> int:
        ticks, following = spec.due(next_at, now)
        task = NewTick(channel, None if args is None else bytes(args), spec.retries,
                       spec.priority, spec.time_limit,
                       None if spec.overlap else f"periodic:{name}")
        made = self._store.fire(name, fired, following, ticks, task)
        self._next_due = min(self._next_due or math.inf, following)
        if made is None:
            return 0  # another process fired it first
        skipped = len(ticks) - len(made)
        if skipped:
            log.info("schedule %r skipped %d tick(s): its previous task is still unfinished "
                     "(overlap=False)", name, skipped)
        return len(made)

    def _report(self, name: str, error: str) -> None:
        """Say once per schedule and reason that it cannot be run here."""
        if (name, error) not in self._reported:
            self._reported.add((name, error))
            log.warning("schedule %r is skipped: %s", name, error)
