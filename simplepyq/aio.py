"""The asyncio face: the calls an async app makes, awaitable, never blocking its loop.

Each call runs the queue's own synchronous call in a small pool of threads of the
queue's, so that a wait for another writer's lock (up to ``busy_timeout``) holds a
thread, never the event loop. ``wait`` is written for the loop itself: it sleeps on
an asyncio event that the same signals as ``SimplePyQ.wait`` set (a commit here, a
NOTIFY on PostgreSQL), looking at the store's change token at least every
``poll_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

THREADS = 4
"""Threads a queue lends its async calls: enough for a few calls waiting on a lock."""


class Offloader:
    """Runs blocking calls of one queue in its threads, for the event loop to await."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    async def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)`` in a thread of the queue's; its result or exception."""
        loop = asyncio.get_running_loop()  # outside a running loop: RuntimeError, at once
        return await loop.run_in_executor(self._threads(), functools.partial(func, *args,
                                                                              **kwargs))

    def _threads(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="simplepyq-async")
            return self._pool

    def close(self) -> None:
        """Let the threads go once their calls end (at the queue's close)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


async def until(offload: Offloader, look: Callable[[], T], over: Callable[[T], bool],
                unfinished: Callable[[T | None], str], timeout: float | None, poll: float,
                token: Callable[[], int],
                subscribe: Callable[[Callable[[], None]], Callable[[], None]]) -> T:
    """``SimplePyQ._until`` for a coroutine: look again (in a thread) whenever the store
    changes, until ``over(look())``; that value. ``subscribe(callback)`` asks to be
    called at every change it can tell of, and returns what stops it."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(changed.set)

    deadline = None if timeout is None else loop.time() + timeout
    stop = await offload.call(subscribe, wake)
    try:
        seen_token: int | None = None
        last: T | None = None
        while True:
            changed.clear()
            current = await offload.call(token)
            if current != seen_token:
                seen_token = current
                last = await offload.call(look)
                if over(last):
                    return last
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            if remaining == 0:
                raise TimeoutError(f"{unfinished(last)} after {timeout}s")
            with contextlib.suppress(asyncio.TimeoutError):  # a look at least every poll
                await asyncio.wait_for(changed.wait(), poll if remaining is None
                                       else min(poll, remaining))
    finally:
        stop()
