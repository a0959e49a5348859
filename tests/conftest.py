"""Fixtures: every test gets its own real SQLite file under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simplepyq import SimplePyQ


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
