"""Values as people type them: ages (``90``, ``30m``, ``7d``) and channel limits
(``10/s``, ``5``, ``none``), read alike by the command line and the dashboard's forms.

Each raises ``ValueError`` naming the text and saying what it should look like;
the command line turns that into a usage error, the dashboard into a 400.
"""

from __future__ import annotations

import re

from simplepyq.limits import Rate, check_max_running, parse_rate

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
NO_LIMIT = "none"
"""What a limit takes to be removed."""

_AGE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*")


def age(text: str) -> float:
    """Seconds from a number with an optional unit s, m, h or d: ``90``, ``1.5h``."""
    match = _AGE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: give a number with an optional unit "
                         "s, m, h or d (90, 30m, 7d)")
    return float(match[1]) * UNITS[match[2] or "s"]


def rate(text: str) -> Rate | None:
    """A rate limit (``10/s``, ``100/m``, ``5/30s``), or None for ``none``: no limit."""
    if _no_limit(text):
        return None
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise ValueError(f"{exc}; or {NO_LIMIT} removes the limit") from None


def max_running(text: str) -> int | None:
    """How many tasks may run at once (at least 1), or None for ``none``: no limit."""
    if _no_limit(text):
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number (at least 1) or {NO_LIMIT}") from None
    try:
        return check_max_running(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; or {NO_LIMIT} removes the limit") from None


def _no_limit(text: str) -> bool:
    return text.strip().lower() == NO_LIMIT
