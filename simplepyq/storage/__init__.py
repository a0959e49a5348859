"""Storage backends (internal). Every SQL statement of the library lives in this package."""

from __future__ import annotations

import os
import re
from os import PathLike

from simplepyq.storage.base import Store

DATABASE_SCHEMES = ("postgresql", "postgres")
"""The URL schemes of the databases a store may live in (PostgreSQL's two names)."""

MEMORY = ":memory:"
"""The location of a store private to one process, in its memory (see ``SQLiteStore``)."""

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SUPPORTED = "a SQLite file's path, or a postgresql:// (or postgres://) URL"


def is_database_url(location: str | PathLike[str]) -> bool:
    """True if ``location`` names a PostgreSQL database rather than a SQLite file."""
    return str(location).startswith(tuple(f"{scheme}://" for scheme in DATABASE_SCHEMES))


def store_location(location: object) -> str:
    """``location`` as the text that names a store, or an error with the way out.

    ``TypeError`` unless it is a ``str`` or a path (so that ``None`` from an unset
    environment variable names no file ``None``); ``ValueError`` for a URL of
    anything but PostgreSQL (so that ``mysql://h/db`` is not taken for a directory
    ``mysql:``). Checked before anything is opened or created.
    """
    text = os.fspath(location) if isinstance(location, PathLike) else location
    if not isinstance(text, str):
        shown = "None" if location is None else f"{type(location).__name__} {location!r}"
        raise TypeError(f"store_path must be a str or a path object ({_SUPPORTED}), "
                        f"not {shown}{_hint(location)}")
    url = _URL.match(text)
    if url is not None and not is_database_url(text):
        scheme = url.group(1)
        raise ValueError(f"store_path '{scheme}://...': the scheme {scheme!r} is not "
                         f"supported; a store is {_SUPPORTED}"
                         f"{_scheme_hint(scheme, text[url.end():])}")
    return text


def open_store(location: str | PathLike[str], busy_timeout: float,
               power_safe: bool = False) -> Store:
    """Open the store at ``location``: a ``postgresql://`` (or ``postgres://``) URL, or
    else the path of a SQLite file (see ``store_location`` for what is refused).

    ``power_safe`` applies to SQLite; PostgreSQL's durability is the server's setting.
    """
    text = store_location(location)
    if is_database_url(text):
        from simplepyq.storage.postgres import PostgresStore

        return PostgresStore(text, busy_timeout=busy_timeout)
    from simplepyq.storage.sqlite import SQLiteStore

    return SQLiteStore(text, busy_timeout=busy_timeout, power_safe=power_safe)


def _hint(location: object) -> str:
    """How a location of the wrong type most likely came about, and what to do."""
    if location is None:
        return " (an environment variable that is not set?)"
    if isinstance(location, (bytes, bytearray)):
        return "; decode it to a str"
    if isinstance(location, PathLike):
        return f"; os.fspath() of it is a {type(os.fspath(location)).__name__}, not a str"
    return ""


def _scheme_hint(scheme: str, rest: str) -> str:
    """The way out for a URL of an unsupported scheme; ``rest`` is what follows ``://``."""
    if scheme.lower() in DATABASE_SCHEMES:
        return f"; write the scheme in lower case: {scheme.lower()}://"
    if scheme.lower() in ("sqlite", "sqlite3", "file"):
        # sqlite:///x.db names x.db, sqlite:////x.db names /x.db; file:///x.db names /x.db.
        path = rest[1:] if scheme.lower() != "file" else rest
        if rest.startswith("/") and path:
            return f"; for SQLite give the file's path itself, e.g. {path!r}"
        return "; for SQLite give the file's path itself"
    return ""


__all__ = ["DATABASE_SCHEMES", "MEMORY", "Store", "is_database_url", "open_store", "store_location"]
