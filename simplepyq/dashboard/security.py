"""Who may look and who may act: Basic auth, the cross-site check of actions, the headers.

Every response carries a Content-Security-Policy that allows only this
dashboard's own script and style sheet (no inline script or style anywhere), so
that a value a page failed to escape still could not run.

An action (a POST) is refused (403) when the browser says it comes from another
site. Where it sends ``Sec-Fetch-Site`` (every current browser does), that header
decides: ``same-origin`` or nothing. The browser compared the page's origin with
the address it posts to, both as the user sees them, so the answer holds behind a
proxy that terminates TLS, where this process sees ``http`` and the browser's
``Origin`` says ``https``. Where it sends only ``Origin`` (an older browser), that
must be this request's own scheme://host. A page of another site can forge
neither header. A POST with neither (an old browser, a script) must carry the
per-process token that every form of the dashboard holds, compared in constant
time: a page of another site cannot read it. The token is per process, so that
check alone would fail behind a server that spreads requests over processes;
the headers do not.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from typing import Any

from simplepyq.dashboard.http import HttpError, Params, Request, normal_origin

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
]
"""Sent with every response, errors included."""
TOKEN_FIELD = "csrf"
REALM = 'Basic realm="simplepyq dashboard", charset="UTF-8"'


class Guard:
    """Checks a request's credentials and, for an action, that it comes from this site."""

    def __init__(self, password: str | None) -> None:
        self._password = password.encode() if password else None
        self.token = secrets.token_urlsafe(32)
        """This process's anti-forgery token, held by every form."""

    @property
    def protected(self) -> bool:
        return self._password is not None

    def check_auth(self, environ: dict[str, Any]) -> None:
        """Without a password, anyone may look; with one, 401 unless Basic auth gives it
        (under any user name)."""
        if self._password is None:
            return
        given = _basic_password(str(environ.get("HTTP_AUTHORIZATION", "")))
        if given is None or not hmac.compare_digest(given, self._password):
            raise HttpError(401, "this dashboard needs its password (HTTP Basic auth, any "
                            "user name)", [("WWW-Authenticate", REALM)])

    def check_action(self, request: Request, form: Params) -> None:
        """403 unless the POST comes from a page of this dashboard (see the module)."""
        site = request.environ.get("HTTP_SEC_FETCH_SITE")
        origin = request.environ.get("HTTP_ORIGIN")
        if site is not None:
            if str(site).strip().lower() != "same-origin":
                raise HttpError(403, f"refused: the browser says this request comes from "
                                f"another site (Sec-Fetch-Site: {site})")
        elif origin is not None:
            if normal_origin(str(origin)) != request.origin:
                raise HttpError(403, f"refused: this request comes from {origin}, not from "
                                f"{request.origin}")
        else:
            token = form.text(TOKEN_FIELD) or ""
            if not hmac.compare_digest(token.encode(), self.token.encode()):
                raise HttpError(403, "refused: a request without Origin or Sec-Fetch-Site "
                                "needs the form's token")


def _basic_password(header: str) -> bytes | None:
    """The password of an ``Authorization: Basic`` header, or None if it has none."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    _user, colon, password = decoded.partition(b":")
    return password if colon else None
