"""Fixtures: every test gets its own real SQLite file under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simplepyq import SimplePyQ
from tests.soak import FACTOR, SOAKING

QUICK_TIMEOUT = 120
"""Seconds a test may take in a normal run (pyproject.toml's pytest timeout)."""


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    """Path of a task store file that does not exist yet."""
    return str(tmp_path / "tasks.db")


@pytest.fixture
def queue(store_path: str) -> Iterator[SimplePyQ]:
    """A queue on a fresh store, with a short poll interval; closed after the test."""
    q = SimplePyQ(store_path, poll_interval=0.01)
    yield q
    q.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In a soak (``SIMPLEPYQ_SOAK=N``) every test may take N times the usual time limit."""
    if SOAKING:
        for item in items:
            item.add_marker(pytest.mark.timeout(QUICK_TIMEOUT * FACTOR))
