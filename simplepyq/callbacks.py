"""Callbacks: functions to call when something happens, added and removed from any thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, ParamSpec

P = ParamSpec("P")


class Callbacks(Generic[P]):
    """A set of callbacks (cheap ones: each is called in the thread that fires), each
    called with what ``fire`` is given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[P, None]] = []

    def add(self, callback: Callable[P, None]) -> Callable[[], None]:
        """Call ``callback`` at every ``fire`` from now on; return what stops that."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def __bool__(self) -> bool:
        """Whether any callback is added (read without the lock: a hint)."""
        return bool(self._callbacks)

    def fire(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every callback, outside the lock (one may remove itself)."""
        if not self._callbacks:  # the usual case: nobody listens
            return
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(*args, **kwargs)
