"""Storage backends (internal). Every SQL statement of the library lives in this package."""

from __future__ import annotations

from os import PathLike

from simplepyq.storage.base import Store


def is_database_url(location: str | PathLike[str]) -> bool:
    """True if ``location`` names a PostgreSQL database rather than a SQLite file."""
    return str(location).startswith(("postgresql://", "postgres://"))


def open_store(location: str | PathLike[str], busy_timeout: float,
               power_safe: bool = False) -> Store:
    """Open the store at ``location``: a ``postgresql://`` (or ``postgres://``) URL, or
    else the path of a SQLite file.

    ``power_safe`` applies to SQLite; PostgreSQL's durability is the server's setting.
    """
    text = str(location)
    if is_database_url(text):
        from simplepyq.storage.postgres import PostgresStore

        return PostgresStore(text, busy_timeout=busy_timeout)
    from simplepyq.storage.sqlite import SQLiteStore

    return SQLiteStore(text, busy_timeout=busy_timeout, power_safe=power_safe)


__all__ = ["Store", "is_database_url", "open_store"]
