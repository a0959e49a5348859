"""Lifecycle hooks: user functions called on the events of tasks this process runs.

``SimplePyQ.on(event, handler, channel=None)`` adds a handler. The scheduler hands
over events after the commit that made them, each with the task's row as that
transaction left it (read inside it), and one thread per queue calls the handlers,
in commit order: workers and the group commit never wait for user code. A handler's
exception is logged and changes nothing. Hooks are at most once: events not yet
handled when the process dies are lost (a durable reaction is a follow-up step).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from simplepyq import waiting
from simplepyq.task import Task

log = logging.getLogger("simplepyq")

EVENTS = ("started", "succeeded", "retrying", "deferred", "failed", "cancelled")
"""``started``: a worker here began a run. The others: the outcome of a run was
recorded; ``failed`` only once no retry is left, ``retrying`` when one is."""

Handler = Callable[[Task], Any]


class Hooks:
    """The handlers of one queue, and the thread that calls them."""

    def __init__(self) -> None:
        self._handlers: list[tuple[str, str | None, Handler]] = []
        self._events: queue.SimpleQueue[list[tuple[str, Task]] | threading.Event | None] = \
            queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.active = False
        """Whether any handler was added (workers then read rows for events)."""

    def add(self, event: str, handler: Handler, channel: str | None) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
        if not callable(handler):
            raise TypeError(f"a hook handler must be callable, not {handler!r}")
        with self._lock:
            self._handlers.append((event, channel, handler))
            self.active = True

    def wants(self, event: str, channel: str) -> bool:
        """Whether a handler would be called for ``event`` of a task of ``channel``."""
        return any(wanted == event and scope in (None, channel)
                   for wanted, scope, _ in self._handlers)

    def emit(self, events: Sequence[tuple[str, Task]]) -> None:
        """Queue events (committed already) for the hook thread, started on first use."""
        if not events:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._call, name="simplepyq-hooks",
                                                daemon=True)
                self._thread.start()
        self._events.put(list(events))

    def drain(self, timeout: float | None) -> bool:
        """Wait until the handlers of the events queued so far have been called (at once
        from the hook thread itself: a handler that stops the queue must not wait for
        itself); False if they were still running after ``timeout`` seconds."""
        with self._lock:
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        reached = threading.Event()
        self._events.put(reached)
        return waiting.wait_for(reached, timeout)

    def close(self, timeout: float | None) -> bool:
        """Call the handlers of the events queued so far, then end the thread; False if
        they were still running after ``timeout`` seconds."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return True
        self._events.put(None)
        return waiting.join(thread, timeout)

    def _call(self) -> None:
        while (batch := self._events.get()) is not None:
            if isinstance(batch, threading.Event):
                batch.set()
                continue
            for event, task in batch:
                for wanted, scope, handler in list(self._handlers):
                    if wanted == event and scope in (None, task.channel):
                        try:
                            handler(task)
                        except Exception:  # a handler's failure changes nothing
                            log.exception("hook %r for %s of task %d failed", handler, event,
                                          task.id)


def outcome_event(status: str, outcome: str | None) -> str:
    """The event of a recorded run: the task's status as committed, and how the run
    ended (``Decision.outcome``: None for a success)."""
    if status in ("done", "failed", "cancelled"):
        return {"done": "succeeded", "failed": "failed", "cancelled": "cancelled"}[status]
    return "deferred" if outcome == "deferred" else "retrying"
