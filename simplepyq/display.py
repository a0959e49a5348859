"""How stored values, moments and ages read to people: the command line and the
dashboard show them alike.

Args, results and progress may hold what JSON cannot (bytes, sets, datetimes,
Decimals...): ``jsonable`` makes them plain and readable. Times are shown in UTC,
marked Z, so that times read on different hosts, or by people in different zones,
compare as they are.
"""

from __future__ import annotations

import base64
import json
from datetime import date, datetime, timedelta, timezone
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any
from uuid import UUID

BYTES_TAG, DICT_TAG = "$bytes", "$dict"
TAGS = {BYTES_TAG, DICT_TAG}
TIME_FORMAT = "%Y-%m-%d %H:%M:%SZ"
"""How times are shown: in UTC, marked Z."""


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold made plain and readable.

    Bytes become ``{"$bytes": BASE64}``. A dict of the task's own whose only key is
    ``"$bytes"`` or ``"$dict"`` is wrapped as ``{"$dict": {...}}``, so that the two
    never look alike. A tuple becomes a list, a set or frozenset a list sorted when
    its members compare (else by their JSON), and the other types simplepyq stores
    their usual text (see ``_text_of``). A dict key that is not a str becomes its
    text, or else its JSON.
    """
    if isinstance(value, (bytes, bytearray)):
        return {BYTES_TAG: base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        plain = {_key_text(k): jsonable(v) for k, v in value.items()}
        return {DICT_TAG: plain} if len(plain) == 1 and set(plain) & TAGS else plain
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return _members(value)
    return _text_of(value)


def _text_of(value: Any) -> Any:
    """A datetime, date or time in ISO 8601 (``2024-05-01T12:00:00+02:00``), a timedelta as
    an ISO 8601 duration (``P1DT2H0.5S``), a Decimal or UUID as its str; else ``value``."""
    if isinstance(value, timedelta):
        return iso_duration(value)
    if isinstance(value, (date, time_of_day)):  # a datetime is a date
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    return value


def iso_duration(span: timedelta) -> str:
    """``span`` as an ISO 8601 duration, exact to the microsecond: ``P3DT4H5M6.5S``,
    ``-PT0.25S`` (a sign in front, as XML Schema writes it), ``PT0S``. Days are not
    turned into months or years, which have no fixed length."""
    sign, span = ("-", -span) if span < timedelta(0) else ("", span)
    hours, rest = divmod(span.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    fraction = f".{span.microseconds:06d}".rstrip("0") if span.microseconds else ""
    parts = [(hours, "H"), (minutes, "M"), (f"{seconds}{fraction}", "S")]
    clock = "".join(f"{count}{unit}" for count, unit in parts if count not in (0, "0"))
    days = f"{span.days}D" if span.days else ""
    if not days and not clock:
        return "PT0S"
    return f"{sign}P{days}{'T' if clock else ''}{clock}"


def _members(value: set[Any] | frozenset[Any]) -> list[Any]:
    """A set's members made plain, sorted when they compare (else by their JSON), so that
    a set reads the same on every run."""
    try:
        return [jsonable(item) for item in sorted(value)]
    except (TypeError, ArithmeticError):  # 1 and "a" do not compare, nor does a Decimal NaN
        plain = [jsonable(item) for item in value]
        return sorted(plain, key=lambda item: json.dumps(item, ensure_ascii=False))


def _key_text(key: Any) -> str:
    """A dict key as JSON needs it, a str: its readable text (a datetime's ISO 8601), or
    its JSON (``1``, ``[1, 2]``)."""
    plain = jsonable(key)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False)


def to_json(value: Any) -> str:
    """``value`` made plain, as one line of JSON."""
    return json.dumps(jsonable(value), ensure_ascii=False)


def when(moment: datetime | None) -> str:
    """A moment as listings show it, ``2026-05-01 12:00:00Z``; ``-`` for none."""
    return "-" if moment is None else moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


def age(seconds: float | None) -> str:
    """A span in its two largest units, ``1m 5s``, ``3d 4h``; ``-`` for none."""
    if seconds is None:
        return "-"
    left = max(int(seconds), 0)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])
