"""The storage backends the tests run against: a SQLite file, or a PostgreSQL schema.

PostgreSQL tests need a real server: ``SIMPLEPYQ_TEST_POSTGRES_URL`` names a
database on it (``.ci/postgres.sh`` starts one and sets it). Each test gets a
schema of its own in that database, dropped afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Sequence
from contextlib import closing
from typing import Any

import pytest

URL_VARIABLE = "SIMPLEPYQ_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgres")


def postgres_url() -> str:
    """The test server's URL; skips the test when there is none (fails it under CI)."""
    url = os.environ.get(URL_VARIABLE)
    if url:
        return url
    reason = (f"{URL_VARIABLE} is not set: start a server with '. .ci/postgres.sh' "
              "(see docs/development.rst)")
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL tests, but {reason}")
    pytest.skip(reason)


def new_schema_location(url: str) -> tuple[str, str]:
    """A store URL naming a fresh schema of the test database, and that schema."""
    schema = "t_" + uuid.uuid4().hex[:16]
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}schema={schema}", schema


def drop_schema(url: str, schema: str) -> None:
    """Delete a test's schema and everything in it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '20s'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def is_postgres(location: str) -> bool:
    """True if a test's ``store_path`` is a PostgreSQL URL."""
    return location.startswith(("postgresql://", "postgres://"))


def store_exists(location: str) -> bool:
    """Whether anything exists at a store's location: the file, or the schema."""
    if is_postgres(location):
        return raw_sql(location, "SELECT current_schema()") != [(None,)]
    return os.path.exists(location)


def raw_sql(location: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the store behind the library's back, in its own transaction;
    the rows it returns. Placeholders are ``?``, whatever the backend."""
    if not is_postgres(location):
        with closing(sqlite3.connect(location)) as conn, conn:
            return conn.execute(statement, tuple(params)).fetchall()
    import psycopg

    url, schema = split_location(location)
    with psycopg.connect(url, options=f"-c search_path={schema}") as pg:
        cursor = pg.execute(statement.replace("?", "%s"), tuple(params))
        return cursor.fetchall() if cursor.description else []


def split_location(location: str) -> tuple[str, str]:
    """The test database's URL and the schema named in a store URL."""
    base, _, query = location.partition("?")
    kept = [pair for pair in query.split("&") if pair and not pair.startswith("schema=")]
    schema = next((pair[7:] for pair in query.split("&") if pair.startswith("schema=")),
                  "simplepyq")
    return base + ("?" + "&".join(kept) if kept else ""), schema


def pg_connect(location: str) -> Any:
    """A raw psycopg connection to a PostgreSQL store's schema (a transaction opens with
    its first statement), to hold locks while the library waits on them."""
    import psycopg

    url, schema = split_location(location)
    return psycopg.connect(url, options=f"-c search_path={schema}")


def blocked_by(location: str, pid: int) -> int | None:
    """The backend pid of a PostgreSQL session waiting for a lock that session ``pid``
    holds, or None: for tests that hold a transaction open until another waits on it."""
    rows = raw_sql(location, "SELECT pid FROM pg_stat_activity "
                             "WHERE ? = ANY(pg_blocking_pids(pid))", (pid,))
    return int(rows[0][0]) if rows else None
