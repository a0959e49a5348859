"""The frame around every page: the header (store, navigation), the flash message, the
parts; and the same page as JSON for the script. No inline script or style: the
Content-Security-Policy forbids them, and the page needs none.
"""

from __future__ import annotations

import hashlib
from typing import Any

from simplepyq.dashboard.http import Request
from simplepyq.dashboard.markup import Html, join, tag
from simplepyq.dashboard.pages import Page

NAV = [("overview", "/", "Overview"), ("tasks", "/tasks", "Tasks"),
       ("failed", "/failed", "Failed"), ("workflows", "/workflows", "Workflows"),
       ("periodic", "/periodic", "Periodic"), ("channels", "/channels", "Channels")]
REFRESH_MS = 2000
LEVELS = ["ok", "error"]


def document(request: Request, title: str, body: Html, *, store: str, section: str | None,
             read_only: bool, static: dict[str, str], live: str | None = None) -> Html:
    """A whole HTML page; ``live`` is the URL of its JSON when its parts refresh."""
    nav = [tag("a", {"href": request.url(path), "aria-current": "page" if name == section
                     else None}, text) for name, path, text in NAV]
    header = tag(
        "header", {},
        tag("a", {"class": "brand", "href": request.url("/")}, "simplepyq"),
        tag("nav", {}, nav),
        tag("span", {"class": "store", "title": "the task store"}, store),
        tag("span", {"class": "badge mode"}, "read-only") if read_only else "",
        tag("span", {"id": "live-state", "class": "live-state"}, "live" if live else ""))
    head = tag("head", {}, tag("meta", {"charset": "utf-8"}),
               tag("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}),
               tag("title", {}, f"{title} · simplepyq"),
               tag("link", {"rel": "icon", "href": "data:,"}),
               tag("link", {"rel": "stylesheet", "href": static["dashboard.css"]}),
               tag("script", {"src": static["dashboard.js"], "defer": True}))
    page = tag("body", {"data-live": live, "data-refresh": REFRESH_MS if live else None},
               header, tag("main", {}, _flash(request), tag("h1", {}, title), body))
    return Html("<!doctype html>\n" + tag("html", {"lang": "en"}, head, page))


def parts(page: Page) -> Html:
    """The page's parts, each live one in a section the script finds by its id."""
    return join(tag("section", {"id": f"part-{part.id}", "data-version": version(part.html)},
                    part.html) if part.id else part.html for part in page.parts)


def as_json(page: Page) -> dict[str, Any]:
    """What the script needs to refresh the page: its live parts, and the chart's series."""
    return {"title": page.title,
            "parts": {part.id: {"html": part.html, "version": version(part.html)}
                      for part in page.parts if part.id},
            "chart": None if page.chart is None else page.chart.data()}


def version(markup: str) -> str:
    """A short digest of a part: the script swaps a part only when it changed, so that a
    fold the user opened in an unchanged part stays open."""
    return hashlib.sha1(markup.encode(), usedforsecurity=False).hexdigest()[:16]


def _flash(request: Request) -> Html:
    """The message an action sent back in the query string, escaped like any value."""
    message = request.query.text("flash")
    level = request.query.choice("level", LEVELS, "level") or "ok"
    if message is None:
        return Html("")
    return tag("p", {"class": f"flash flash-{level}", "role": "status"}, message)
