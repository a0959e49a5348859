"""The pieces pages are made of: tables, status badges, times, values, action buttons.

Each takes what it shows and returns ``Html`` built with ``markup.tag``, so that
every value is escaped on the way. Values and times are shown as the command line
shows them (``simplepyq show``): the same plain form of args and results, times in
UTC marked Z, ages as ``1m 5s``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from simplepyq import display
from simplepyq.dashboard.http import Request
from simplepyq.dashboard.markup import Html, join, tag
from simplepyq.dashboard.security import TOKEN_FIELD
from simplepyq.queue import SimplePyQ
from simplepyq.task import Status

STATUSES = [status.value for status in Status]
SHORT = 2000
"""Characters of a value shown before the rest is folded away."""
CELL = 80
"""Characters of a value shown in a table cell."""


@dataclass
class Context:
    """What a page or action needs: the queue, the request, and how the dashboard runs."""

    queue: SimplePyQ
    request: Request
    read_only: bool
    token: str
    now: datetime
    back: str
    """The page shown (path and query below the mount point, without its flash
    message): where an action's form sends the browser back to."""

    def link(self, path: str, text: object, **params: object) -> Html:
        return tag("a", {"href": self.request.url(path, **params)}, text)

    def task_link(self, task_id: int) -> Html:
        return self.link(f"/tasks/{task_id}", f"#{task_id}")


def badge(status: str) -> Html:
    """A status in its colour; a status this version does not know shows plain."""
    kind = status if status in STATUSES else "other"
    return tag("span", {"class": f"badge status-{kind}"}, status)


def when(moment: datetime | None) -> Html:
    if moment is None:
        return Html("-")
    stamp = moment.astimezone(timezone.utc).isoformat()
    return tag("time", {"datetime": stamp}, display.when(moment))


def number(value: int | float | None) -> Html:
    return Html("-") if value is None else tag("span", {}, f"{value:,}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          numeric: Sequence[int] = (), empty: str = "none") -> Html:
    """A table; the columns numbered in ``numeric`` are right-aligned."""
    if not rows:
        return tag("p", {"class": "empty"}, empty)
    head = tag("tr", {}, [tag("th", {"class": "num" if i in numeric else None}, text)
                          for i, text in enumerate(headers)])
    body = [tag("tr", {}, [tag("td", {"class": "num" if i in numeric else None}, cell)
                           for i, cell in enumerate(row)]) for row in rows]
    return tag("table", {}, tag("thead", {}, head), tag("tbody", {}, body))


def fields(pairs: Sequence[tuple[str, object]]) -> Html:
    """Name: value lines, as a definition list."""
    return tag("dl", {"class": "fields"},
               [[tag("dt", {}, name), tag("dd", {}, value)] for name, value in pairs])


def plain(value: Any) -> str:
    """A task's args or result as JSON text, in the plain form the command line shows."""
    try:
        return json.dumps(display.jsonable(value), ensure_ascii=False, indent=2)
    except (TypeError, ValueError):  # a type JSON cannot hold even made plain
        return repr(value)


def short(value: Any, length: int = CELL) -> str:
    """A value on one line, cut to ``length`` characters: for a table cell."""
    try:
        text = json.dumps(display.jsonable(value), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= length else text[: length - 1] + "…"


def long_text(text: str, length: int = SHORT) -> Html:
    """``text`` in a block; past ``length`` characters the rest is behind "show all"."""
    if len(text) <= length:
        return tag("pre", {"class": "value"}, text)
    return join([tag("pre", {"class": "value"}, text[:length] + "…"),
                 tag("details", {"class": "more"},
                     tag("summary", {}, f"show all {len(text):,} characters"),
                     tag("pre", {"class": "value"}, text))])


def hidden(name: str, value: object) -> Html:
    return tag("input", {"type": "hidden", "name": name, "value": value})


def action(ctx: Context, path: str, label: str, values: dict[str, object] | None = None,
           danger: bool = False, inputs: Sequence[object] = ()) -> Html:
    """A POST form of one button (and ``inputs``) that runs an action and comes back here;
    nothing in read-only mode."""
    if ctx.read_only:
        return Html("")
    return tag("form", {"method": "post", "action": ctx.request.url(path), "class": "action"},
               hidden(TOKEN_FIELD, ctx.token), hidden("back", ctx.back),
               [hidden(name, value) for name, value in (values or {}).items()
                if value is not None],
               list(inputs),
               tag("button", {"type": "submit", "class": "danger" if danger else None}, label))


def text_input(name: str, label: str, value: object = None, size: int = 10,
               placeholder: str | None = None) -> Html:
    return tag("label", {}, label + " ",
               tag("input", {"type": "text", "name": name, "value": value, "size": size,
                             "placeholder": placeholder}))


def select(name: str, label: str, options: Sequence[str], chosen: str | None,
           anything: str = "any") -> Html:
    """A drop-down of ``options``, the first of which means "no choice" (``anything``)."""
    shown = [tag("option", {"value": ""}, anything)] + [
        tag("option", {"value": option, "selected": option == chosen}, option)
        for option in options]
    return tag("label", {}, label + " ", tag("select", {"name": name}, shown))
