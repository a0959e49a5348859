"""simplepyq's pytest plugin, loaded by pytest wherever simplepyq is installed.

It adds one fixture, ``simplepyq_queue``: a fresh queue in memory for each test
(see ``simplepyq.testing`` for an application's own queue, isolated).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simplepyq.queue import SimplePyQ


@pytest.fixture
def simplepyq_queue() -> Iterator[SimplePyQ]:
    """A queue on a store of its own in memory, closed after the test. Add channels,
    enqueue, then ``drain()`` it (or set ``eager = True`` first)."""
    queue = SimplePyQ(":memory:")
    try:
        yield queue
    finally:
        queue.close()
