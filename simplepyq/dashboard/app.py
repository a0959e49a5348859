"""``Dashboard``: the WSGI application, its routes, and what every response carries."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from http import HTTPStatus
from importlib import resources
from os import PathLike
from typing import Any
from urllib.parse import parse_qsl, urlencode

from simplepyq.dashboard import actions, metrics, pages
from simplepyq.dashboard.http import (
    MAX_ID,
    HttpError,
    Params,
    Request,
    Response,
    bad_request,
    json_response,
    redirect,
)
from simplepyq.dashboard.layout import as_json, document, parts
from simplepyq.dashboard.markup import tag
from simplepyq.dashboard.security import HEADERS, Guard
from simplepyq.dashboard.widgets import Context
from simplepyq.queue import SimplePyQ

log = logging.getLogger("simplepyq")

StartResponse = Callable[..., Any]
PageHandler = Callable[[Context], "pages.Page | Response"]

PAGES: dict[str, PageHandler] = {
    "/": pages.overview, "/tasks": pages.tasks, "/failed": pages.failed,
    "/workflows": pages.workflows, "/periodic": pages.periodic, "/channels": pages.channels}
ONE = re.compile(r"/(tasks|workflows)/([^/]+)")
TASK_ACTION = re.compile(r"/tasks/([^/]+)/([a-z-]+)")
STATIC = {"dashboard.js": "text/javascript; charset=utf-8",
          "dashboard.css": "text/css; charset=utf-8"}
READ = ("GET", "HEAD")


class Dashboard:
    """The web dashboard of a store, as a WSGI application; it runs no workers.

    ``Dashboard(queue)`` shows the store of a ``SimplePyQ`` of yours;
    ``Dashboard("tasks.db")`` (or a ``postgresql://`` URL) opens its own queue on
    that store (creating it if missing, as ``SimplePyQ`` does), which ``close()``
    closes. Pages read the store through the queue's methods (never SQL of their
    own), and any number of threads may serve requests at once.
    ``read_only=True`` leaves out every action and refuses them (403). With
    ``password``, every URL (pages, JSON, ``/metrics``, ``/healthz``, static
    files) asks for it by HTTP Basic auth, under any user name; without, mount it
    behind your own login.

    Actions are POSTs, refused (403) when the browser says they come from another
    site: ``Sec-Fetch-Site`` other than ``same-origin`` or, from a browser that
    sends only ``Origin``, an ``Origin`` other than the request's own
    scheme://host (for those behind a proxy that terminates TLS, let the WSGI
    environ say ``https``, e.g. with werkzeug's ``ProxyFix``). A POST carrying
    neither header must carry the form's per-process token instead.

    It works under any prefix (every link is built from ``SCRIPT_NAME``). In
    Flask, with werkzeug::

        from werkzeug.middleware.dispatcher import DispatcherMiddleware
        app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {
            "/queue": Dashboard(queue, password=os.environ["QUEUE_PASSWORD"])})

    In Django, route a prefix to it from the project's WSGI module (Django's own
    URLs cannot hold a WSGI app, so dispatch before it)::

        from django.core.wsgi import get_wsgi_application
        from werkzeug.middleware.dispatcher import DispatcherMiddleware
        application = DispatcherMiddleware(get_wsgi_application(), {
            "/queue": Dashboard(os.environ["SIMPLEPYQ_DB"], read_only=True)})

    Or serve it alone: ``simplepyq dashboard`` (see the command line).
    """

    def __init__(self, queue_or_location: SimplePyQ | str | PathLike[str], *,
                 read_only: bool = False, password: str | None = None) -> None:
        if isinstance(queue_or_location, SimplePyQ):
            self.queue, self._own = queue_or_location, False
        else:
            self.queue, self._own = SimplePyQ(queue_or_location), True
        self.read_only = bool(read_only)
        self._guard = Guard(password)
        self._static = {name: (resources.files(__package__) / "static" / name).read_bytes()
                        for name in STATIC}
        self._static_urls = {name: f"/static/{name}?v="
                             f"{hashlib.sha256(body).hexdigest()[:12]}"
                             for name, body in self._static.items()}

    def close(self) -> None:
        """Close the queue the dashboard opened (not one it was given)."""
        if self._own:
            self.queue.close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        response = self._respond(environ)
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))), *response.headers, *HEADERS]
        if not any(name == "Cache-Control" for name, _ in response.headers):
            headers.append(("Cache-Control", "no-store"))
        start_response(response.status_line, headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else response.body]

    # -- routing -------------------------------------------
    def _respond(self, environ: dict[str, Any]) -> Response:
        request = None
        try:
            self._guard.check_auth(environ)
            request = Request.of(environ)
            return self._route(request)
        except HttpError as exc:
            return self._error(request, environ, exc)
        except Exception:
            log.exception("dashboard: %s %s failed", environ.get("REQUEST_METHOD"),
                          environ.get("PATH_INFO"))
            return self._error(request, environ, HttpError(
                500, "this page failed; the traceback is in the server's log"))

    def _route(self, request: Request) -> Response:
        path = request.path
        if path in PAGES:
            return self._page(request, lambda ctx: PAGES[path](ctx))
        if path in actions.STORE_ACTIONS:
            return self._act(request, lambda ctx, form: actions.STORE_ACTIONS[path](ctx, form))
        found = TASK_ACTION.fullmatch(path)
        if found and found[2] in actions.TASK_ACTIONS:
            run = actions.TASK_ACTIONS[found[2]]
            task_id = _id(found[1], "task id")
            return self._act(request, lambda ctx, form: run(ctx, form, task_id))
        found = ONE.fullmatch(path)
        if found:
            item_id = _id(found[2], f"{found[1][:-1]} id")
            show = pages.task if found[1] == "tasks" else pages.workflow
            return self._page(request, lambda ctx: show(ctx, item_id))
        if path == "/metrics":
            _allow(request, READ)
            text = metrics.exposition(self.queue, datetime.now(timezone.utc))
            return Response(200, text.encode(), metrics.CONTENT_TYPE)
        if path == "/healthz":
            _allow(request, READ)
            return self._health()
        if path.startswith("/static/") and path[8:] in STATIC:
            _allow(request, READ)
            return Response(200, self._static[path[8:]], STATIC[path[8:]],
                            [("Cache-Control", "private, max-age=86400")])
        raise HttpError(404, f"there is no page {path}")

    def _context(self, request: Request, back: str) -> Context:
        return Context(self.queue, request, self.read_only, self._guard.token,
                       datetime.now(timezone.utc), back)

    def _page(self, request: Request, handler: PageHandler) -> Response:
        _allow(request, READ)
        wanted = request.query.choice("format", ["html", "json"], "format")
        kept = _kept(request)
        here = request.path + (f"?{urlencode(kept)}" if kept else "")
        answer = handler(self._context(request, here))
        if isinstance(answer, Response):
            return answer
        if wanted == "json":
            return json_response(as_json(answer))
        live = request.link(request.path) + "?" + urlencode([*kept, ("format", "json")])
        body = document(request, answer.title, parts(answer), store=self.queue.store_path,
                        section=answer.section, read_only=self.read_only,
                        static=self._prefixed(request), live=live)
        return Response(200, body.encode())

    def _act(self, request: Request,
             run: Callable[[Context, Params], actions.Outcome]) -> Response:
        _allow(request, ("POST",))
        if self.read_only:
            raise HttpError(403, "this dashboard is read-only: actions are turned off")
        form = request.form()
        self._guard.check_action(request, form)
        back = _back(form)
        outcome = run(self._context(request, back), form)
        log.info("dashboard: %s", outcome.message)
        target = outcome.back or back
        joiner = "&" if "?" in target else "?"
        flash = urlencode({"flash": outcome.message, "level": "ok" if outcome.ok else "error"})
        return redirect(request.link(f"{target}{joiner}{flash}"))

    def _health(self) -> Response:
        try:
            self.queue.known_channels()
        except Exception as exc:
            log.warning("dashboard: the store does not answer: %s: %s", type(exc).__name__, exc)
            return Response(503, b"the store does not answer\n", "text/plain; charset=utf-8")
        return Response(200, b"ok\n", "text/plain; charset=utf-8")

    def _prefixed(self, request: Request) -> dict[str, str]:
        return {name: request.link(url) for name, url in self._static_urls.items()}

    def _error(self, request: Request | None, environ: dict[str, Any],
               error: HttpError) -> Response:
        """A page saying what went wrong, with the store and navigation around it."""
        if request is None:  # the query string itself is bad, or the auth failed
            request = Request.of({**environ, "QUERY_STRING": ""})
        if error.status == 401:  # say nothing of the store to a stranger
            return Response(401, (error.message + "\n").encode(),
                            "text/plain; charset=utf-8", error.headers)
        try:
            request.query.text("flash")  # (a bad flash must not fail the error page too)
            request.query.choice("level", ["ok", "error"], "level")
        except HttpError:
            request.query = Params([], "query string")
        title = f"{error.status} {HTTPStatus(error.status).phrase}"
        body = document(request, title, tag("p", {"class": "problem"}, error.message),
                        store=self.queue.store_path, section=None, read_only=self.read_only,
                        static=self._prefixed(request))
        return Response(error.status, body.encode(), headers=error.headers)


def _allow(request: Request, methods: tuple[str, ...]) -> None:
    if request.method not in methods:
        raise HttpError(405, f"{request.method} is not allowed here; use "
                        f"{' or '.join(methods)}", [("Allow", ", ".join(methods))])


def _id(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and 1 <= int(text) <= MAX_ID):
        raise bad_request(f"{what} {text!r} is not a whole number from 1 to {MAX_ID}")
    return int(text)


def _back(form: Params) -> str:
    """Where an action sends the browser back to: a path of this dashboard, never elsewhere."""
    back = form.text("back", 2000) or "/"
    if not back.startswith("/") or back.startswith("//") or "\\" in back \
            or any(ord(c) < 32 for c in back):
        raise bad_request(f"back={back!r} is not a path of this dashboard")
    return back


def _kept(request: Request) -> list[tuple[str, str]]:
    """The page's query without its flash message and format: what the page is, to come
    back to after an action, and to ask its JSON of."""
    pairs = parse_qsl(str(request.environ.get("QUERY_STRING", "")), keep_blank_values=True)
    return [(name, value) for name, value in pairs if name not in ("flash", "level", "format")]
