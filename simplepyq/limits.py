"""What a channel's limits mean, and how they are written: ``"10/s"``, ``max_running=3``.

Parsing and checking only. The limits are kept in the store, on the channel's row,
and enforced there, in the transaction that claims tasks (see ``storage``): a rule
that spans processes cannot be kept by any one of them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
"""The units a rate may be given in, in seconds."""
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d*)?|\.\d+)?\s*([a-z]+)\s*")


@dataclass(frozen=True)
class Rate:
    """At most ``count`` tasks of a channel start in any window of ``period`` seconds."""

    count: int
    """How many tasks may start in a window."""
    period: float
    """The window's length, in seconds."""

    def __str__(self) -> str:
        """The rate as it is written: ``10/s``, ``100/m``, ``5/30s`` for other periods."""
        for unit, seconds in PERIODS.items():
            if self.period == seconds:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.period:g}s"

    @property
    def per_second(self) -> float:
        """The rate as tasks per second."""
        return self.count / self.period


@dataclass(frozen=True)
class Limits:
    """A channel's limits, as the store keeps them; None where there is none."""

    rate_limit: Rate | None = None
    """At most this many of its tasks start in any window of its period, anywhere."""
    max_running: int | None = None
    """At most this many of its tasks run at once, anywhere."""

    def __str__(self) -> str:
        parts = [f"rate {self.rate_limit}" if self.rate_limit else "",
                 f"at most {self.max_running} running" if self.max_running else ""]
        return ", ".join(part for part in parts if part) or "no limits"

    @classmethod
    def from_stored(cls, rate_count: object, rate_period: object,
                    max_running: object) -> Limits:
        """The limits of a channel row (NULL, or a bad value written by hand: no limit)."""
        rate = None
        if isinstance(rate_count, int) and isinstance(rate_period, (int, float)) \
                and rate_count >= 1 and rate_period > 0:
            rate = Rate(rate_count, float(rate_period))
        running = max_running if isinstance(max_running, int) and max_running >= 1 else None
        return cls(rate, running)


def parse_rate(value: object) -> Rate:
    """A rate from ``"10/s"`` (also ``/m``, ``/h``, ``/d``, and ``"5/30s"`` for 5 in any
    30 seconds) or a ``Rate``; ``ValueError`` naming the value if it is none of those."""
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise TypeError(f"rate_limit must be a str such as '10/s', not "
                        f"{type(value).__name__} {value!r}")
    found = _RATE.fullmatch(value)
    unit = found.group(3) if found else ""
    if found is None or unit not in PERIODS:
        raise ValueError(f"rate_limit {value!r} is not a rate: write COUNT/UNIT with a unit "
                         f"of s, m, h or d, such as '10/s' or '100/m'")
    count = int(found.group(1))
    multiple = float(found.group(2)) if found.group(2) else 1.0
    period = multiple * PERIODS[unit]
    if count < 1 or not period > 0 or not math.isfinite(period):
        raise ValueError(f"rate_limit {value!r} must allow at least 1 task in a period "
                         f"longer than 0")
    if count >= 2**31:
        raise ValueError(f"rate_limit {value!r} counts more tasks than a limit can "
                         f"(at most {2**31 - 1})")
    return Rate(count, period)


def check_max_running(value: object) -> int:
    """``max_running`` checked: an int of at least 1."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"max_running must be an int, not {type(value).__name__} {value!r}")
    if not 1 <= value < 2**31:
        raise ValueError(f"max_running must be at least 1 (and below 2**31), got {value}")
    return value


def check_time_limit(value: object) -> float:
    """A time limit in seconds, from seconds or a ``timedelta``: finite and more than 0."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"time_limit must be a number of seconds or a timedelta, not "
                        f"{type(value).__name__} {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"time_limit must be a finite number of seconds above 0, "
                         f"got {value!r}")
    return seconds
