"""Storage backends (internal). Every SQL statement of the library lives in this package."""

from __future__ import annotations

from os import PathLike

from simplepyq.storage.base import Store


def open_store(location: str | PathLike[str], busy_timeout: float,
               power_safe: bool = False) -> Store:
    """Open the store at ``location``: a SQLite file path (the only backend so far)."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        raise ValueError(
            f"cannot open {text.split('@')[-1]!r}: this version of simplepyq stores tasks "
            "in SQLite files only; pass a file path"
        )
    from simplepyq.storage.sqlite import SQLiteStore

    return SQLiteStore(text, busy_timeout=busy_timeout, power_safe=power_safe)


__all__ = ["Store", "open_store"]
