"""Fixtures: every test gets its own real store, run once per backend.

A test that takes ``store_path`` (or ``queue``) runs against a SQLite file under
tmp_path and against a fresh schema of a real PostgreSQL database, unless it is
marked ``sqlite_only`` because it is about SQLite itself.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from simplepyq import SimplePyQ
from tests.backends import (
    BACKENDS,
    URL_VARIABLE,
    drop_schema,
    new_schema_location,
    postgres_url,
)
from tests.soak import FACTOR, SOAKING

QUICK_TIMEOUT = 120
"""Seconds a test may take in a normal run (pyproject.toml's pytest timeout)."""
LEFT_OUT = pytest.StashKey[int]()
"""How many PostgreSQL variants a run without a server left out."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses a store once per backend, or on the one it is marked for."""
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker
        chosen = ("sqlite",) if marker("sqlite_only") else (
            ("postgres",) if marker("postgres_only") else BACKENDS)
        metafunc.parametrize("backend", chosen)


@pytest.fixture
def store_path(backend: str, tmp_path: Path) -> Iterator[str]:
    """Where a task store that does not exist yet lives: a file path, or a PostgreSQL URL."""
    if backend == "sqlite":
        yield str(tmp_path / "tasks.db")
        return
    url = postgres_url()
    location, schema = new_schema_location(url)
    yield location
    drop_schema(url, schema)


@pytest.fixture
def queue(store_path: str) -> Iterator[SimplePyQ]:
    """A queue on a fresh store, with a short poll interval; closed after the test."""
    q = SimplePyQ(store_path, poll_interval=0.01)
    yield q
    q.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a soak (``SIMPLEPYQ_SOAK=N``) every test may take N times the usual time limit.

    Without a PostgreSQL server to test against, the PostgreSQL variants are left
    out here, and the summary says so once, instead of one "skipped" line per test
    (under CI they run, and fail: CI must test both backends).
    """
    if SOAKING:
        for item in items:
            item.add_marker(pytest.mark.timeout(QUICK_TIMEOUT * FACTOR))
    if os.environ.get(URL_VARIABLE) or os.environ.get("CI"):
        return
    postgres = [item for item in items if _backend(item) == "postgres"]
    if postgres:
        config.hook.pytest_deselected(items=postgres)
        items[:] = [item for item in items if _backend(item) != "postgres"]
    config.stash[LEFT_OUT] = len(postgres)


def _backend(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("backend")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Skips for want of a PostgreSQL server all point at ``postgres_url``, so that the
    summary folds them into one line, wherever the test asked for the server."""
    report = yield
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and URL_VARIABLE in longrepr[2]:
        report.longrepr = (inspect.getsourcefile(postgres_url) or longrepr[0],
                           inspect.getsourcelines(postgres_url)[1], longrepr[2])
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say how the PostgreSQL runs went, so that a run which skipped them all shows it."""
    left_out = config.stash.get(LEFT_OUT, None)
    if left_out is not None:
        terminalreporter.write_line(
            f"PostgreSQL backend: not tested, {left_out} variant(s) left out: {URL_VARIABLE} "
            "is not set; start a server with '. .ci/postgres.sh' (see docs/development.rst)")
        return
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        reports = terminalreporter.stats.get(outcome, [])
        counts[outcome] = sum(1 for report in reports
                              if "[postgres" in getattr(report, "nodeid", "")
                              and getattr(report, "when", "call") in ("call", "setup"))
    terminalreporter.write_line(
        "PostgreSQL backend: " + ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
    )
