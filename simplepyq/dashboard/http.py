"""Requests and responses of the dashboard, read strictly: bad input is a 400 naming it.

WSGI hands over the raw environ; this module turns it into a ``Request`` whose
query string and form are ``Params`` (each value given at most once, checked
against what the page accepts), and builds every link from ``SCRIPT_NAME``, so
that the dashboard works mounted under any prefix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

MAX_FORM = 64 * 1024
"""Bytes a form may take: the dashboard's forms hold a few short fields."""
MAX_FIELDS = 50
MAX_TEXT = 1000
"""Characters a text value may take (a key, a channel name, a flash message)."""
MAX_ID = 2**63 - 1
"""The largest id a task or workflow can have (the stores' 64-bit integers)."""
FORM_TYPE = "application/x-www-form-urlencoded"
URL_SAFE = "/-._~!$&'()*+,;=:@%?"
"""What a link keeps as it is: a path's and query's own characters (and escapes)."""


class HttpError(Exception):
    """Ends a request with ``status`` and a page saying ``message``."""

    def __init__(self, status: int, message: str,
                 headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def bad_request(message: str) -> HttpError:
    return HttpError(400, message)


@dataclass
class Response:
    """What a handler answers; the app adds the security headers to every one."""

    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False).encode(),
                    "application/json; charset=utf-8")


def redirect(location: str) -> Response:
    """303: after a POST, the browser GETs ``location`` (a reload does not post again)."""
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location)])


class Params:
    """A query string or a form: names to values, each given at most once, read by type.

    Every reader returns None for a value absent or empty, and raises a 400
    naming the value when it is not what the page takes; a name given twice is
    refused, since which of the two was meant cannot be known.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], where: str) -> None:
        self._where = where
        self._values: dict[str, str] = {}
        for name, value in pairs:
            if name in self._values:
                raise bad_request(f"{name} is given twice in the {where}")
            self._values[name] = value

    @classmethod
    def parse(cls, text: str, where: str) -> Params:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS,
                              errors="strict")
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"the {where} cannot be read: {exc}") from None
        return cls(pairs, where)

    def text(self, name: str, max_length: int = MAX_TEXT) -> str | None:
        value = self._values.get(name, "").strip()
        if len(value) > max_length:
            raise bad_request(f"{name} is {len(value)} characters long; at most "
                              f"{max_length} are taken")
        return value or None

    def integer(self, name: str, minimum: int = 1, maximum: int = MAX_ID) -> int | None:
        value = self.text(name, 40)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise bad_request(f"{name}={value!r} is not a whole number") from None
        if not minimum <= number <= maximum:
            raise bad_request(f"{name}={number} is out of range: give {minimum} to {maximum}")
        return number

    def choice(self, name: str, choices: Sequence[str], what: str) -> str | None:
        value = self.text(name)
        if value is not None and value not in choices:
            raise bad_request(f"{name}={value!r} is not a known {what}; known: "
                              f"{', '.join(choices) or 'none'}")
        return value


@dataclass
class Request:
    """One request: its method, its path below the mount point, its query string."""

    environ: dict[str, Any]
    method: str
    path: str
    script_name: str
    query: Params

    @classmethod
    def of(cls, environ: dict[str, Any]) -> Request:
        return cls(environ, str(environ.get("REQUEST_METHOD", "GET")).upper(),
                   _text(environ.get("PATH_INFO", "")) or "/",
                   _text(environ.get("SCRIPT_NAME", "")).rstrip("/"),
                   Params.parse(_text(environ.get("QUERY_STRING", "")), "query string"))

    def url(self, path: str, **params: object) -> str:
        """The link to ``path`` (below the mount point) with the params that are not None."""
        shown = {name: str(value) for name, value in params.items() if value is not None}
        return self.link(path) + (f"?{urlencode(shown)}" if shown else "")

    def link(self, path: str) -> str:
        """``path`` (below the mount point) as the absolute path a browser follows."""
        return quote(self.script_name + path, safe=URL_SAFE)

    @property
    def origin(self) -> str:
        """This request's own scheme://host[:port], as a browser writes it in ``Origin``."""
        scheme = str(self.environ.get("wsgi.url_scheme", "http"))
        host = self.environ.get("HTTP_HOST")
        if not host:
            host = f"{self.environ.get('SERVER_NAME', '')}:{self.environ.get('SERVER_PORT', '')}"
        return normal_origin(f"{scheme}://{host}")

    def form(self) -> Params:
        """The body of a form POST; 400 if it is no form, 413 if it is too long."""
        kind = str(self.environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
        if kind != FORM_TYPE:
            raise bad_request(f"a form is sent as {FORM_TYPE}, not {kind or 'nothing'!r}")
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise bad_request("Content-Length is not a number") from None
        if length > MAX_FORM:
            raise HttpError(413, f"a form of {length} bytes is too long (at most {MAX_FORM})")
        body = self.environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("the form is not UTF-8") from None
        return Params.parse(text, "form")


def normal_origin(origin: str) -> str:
    """``scheme://host[:port]`` lower-cased and without the scheme's default port."""
    origin = origin.strip().lower().rstrip("/")
    for scheme, port in (("http", ":80"), ("https", ":443")):
        if origin.startswith(f"{scheme}://") and origin.endswith(port):
            return origin[: -len(port)]
    return origin


def _text(value: object) -> str:
    """A WSGI string (bytes carried as Latin-1, PEP 3333) read as the UTF-8 it was sent as."""
    text = str(value or "")
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text
