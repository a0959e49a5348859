"""Who may look and who may act: Basic auth, the cross-site check of actions, the headers.

Every response carries a Content-Security-Policy that allows only this
dashboard's own script and style sheet (no inline script or style anywhere), so
that a value a page failed to escape still could not run.

An action (a POST) is refused (403) when the browser says it comes from another
site: a ``Sec-Fetch-Site`` header that is not ``same-origin``, or an ``Origin``
that is not this request's own scheme://host. Browsers send at least one of the
two on every POST (all current ones send both), and a page of another site can
forge neither. A POST with neither (an old browser, a script) must carry the
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
        if site is not None and str(site).strip().lower() != "same-origin":
            raise HttpError(403, f"refused: the browser says this request comes from "
                            f"another site (Sec-Fetch-Site: {site})")
        if origin is not None and normal_origin(str(origin)) != request.origin:
            raise HttpError(403, f"refused: this request comes from {origin}, not from "
                            f"{request.origin}")
        if site is None and origin is None:
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
