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
        self._wants: list[Callable[[], bool] | None] = []

    def add(self, callback: Callable[P, None],
            wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
        """Call ``callback`` at every ``fire`` from now on; return what stops that.
        ``wanted``, if given, says whether the callback would act now (see ``wanted``)."""
        with self._lock:
            self._callbacks.append(callback)
            self._wants.append(wanted)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    del self._wants[self._callbacks.index(callback)]
                    self._callbacks.remove(callback)

        return remove

    def __bool__(self) -> bool:
        """Whether any callback is added (read without the lock: a hint)."""
        return bool(self._callbacks)

    def wanted(self) -> bool:
        """Whether a ``fire`` now would matter to some callback: one added without a
        ``wanted``, or whose ``wanted`` says so. Lets a firer skip costly work."""
        with self._lock:
            wants = list(self._wants)
        return any(want is None or want() for want in wants)

    def fire(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every callback, outside the lock (one may remove itself)."""
        if not self._callbacks:  # the usual case: nobody listens
            return
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(*args, **kwargs)
