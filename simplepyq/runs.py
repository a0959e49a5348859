"""One run of a task in this process (internal): what its worker, the watchdog, the
cancel requests and the task's own context (``current_task()``) share.

A run can be interrupted from another thread: at its time limit, or, for an
``async def`` task, by a cancel. An ``async def`` task is cancelled as asyncio
cancels anything, at its next ``await``. A sync task's thread gets ``TaskTimeout``
raised in it with ``PyThreadState_SetAsyncExc``, which takes effect at the next
Python instruction that thread runs; a call blocked in C (a socket read,
``time.sleep``) is not interrupted, and the exception comes when it returns.

Such an exception can arrive anywhere in the thread, so the run's ``lock`` orders
it with the end of the run: an interruption is made only while the run is not
finished, and ``finish`` (in the worker) withdraws one that is still pending. The
worker's call is written so that one arriving at any point ends as the run's
failure, never in the worker's own code (see ``Run.call``). A run without a time
limit is never interrupted that way (a cancel only sets a flag, or cancels an
asyncio task, which is harmless once it has ended), so it needs no lock: most
runs are of that kind, and a run is made for every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

from simplepyq.errors import TaskTimeout

CURRENT: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "simplepyq_current_run", default=None)
"""The run of an ``async def`` task, set in its asyncio task's context (and so in the
asyncio tasks that one makes, however long they last)."""


class Seat:
    """A thread's place for running tasks: the run of the sync task it runs now (a sync
    task's code runs in its worker's thread), and the event loop its ``async def``
    tasks run on, made on first need and kept for the next. A worker takes its seat
    once (``seat()``) and sets it for every task: far cheaper than setting a
    thread-local or a context variable each time."""

    __slots__ = ("loop", "run", "store")

    def __init__(self) -> None:
        self.run: Run | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.store: object = None
        """The store of the queue whose worker this thread is, once it is one."""

    def close_loop(self) -> None:
        """Close the event loop, if one was made (the thread runs no more tasks)."""
        if self.loop is not None:
            self.loop.close()
            self.loop = None


_this_thread = threading.local()


def seat() -> Seat:
    """The calling thread's seat, made on first use."""
    here: Seat | None = getattr(_this_thread, "seat", None)
    if here is None:
        here = _this_thread.seat = Seat()
    return here


def running_in(store: object) -> Run | None:
    """The run of the task the caller is part of, if it is a task of ``store`` (run by a
    worker of a queue of that store)."""
    here: Seat | None = getattr(_this_thread, "seat", None)
    return running() if here is not None and here.store is store else None


def store_here() -> object:
    """The store of the queue whose worker the calling thread is (None in any other)."""
    here: Seat | None = getattr(_this_thread, "seat", None)
    return None if here is None else here.store


def running() -> Run | None:
    """The run of the task the caller is part of: its asyncio task's, else its thread's."""
    run = CURRENT.get()
    if run is None:
        here: Seat | None = getattr(_this_thread, "seat", None)
        run = None if here is None else here.run
    return run


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class Run:
    """One run of one task: who runs it, until when, and what was asked of it."""

    # Defaults as class attributes: a run sets only what differs (it is made per task).
    deadline: float | None = None
    """When the time limit passes (``time.monotonic()``), if the run has one."""
    cancel_requested = False
    timed_out = False
    finished = False
    abandoned = False
    _injected = False
    _armed = False
    _async = False
    _loop: asyncio.AbstractEventLoop | None = None
    _future: asyncio.Future[Any] | None = None
    thread: threading.Thread
    lock: threading.Lock
    """Held to interrupt, abandon or finish a run with a time limit (see above)."""

    def __init__(self, task_id: int, channel: str, attempt: int, limit: float | None,
                 progress: Callable[[int, bytes], None]) -> None:
        self.task_id = task_id
        self.channel = channel
        self.attempt = attempt
        self.limit = limit
        self.progress = progress
        """Where ``set_progress`` puts a value (the scheduler's ``ProgressBox.put``)."""
        if limit is not None:
            self.deadline = time.monotonic() + limit
            self.thread = threading.current_thread()
            self.lock = threading.Lock()

    # -- the worker's side ---------------------------------
    def call(self, func: Callable[[Any], Any], args: Any, here: Seat
             ) -> tuple[Any, BaseException | None]:
        """Run ``func(args)`` as this run in the thread whose seat is ``here`` (awaiting
        it on the seat's event loop if it is async): (its value, None), or (None, what
        it raised); never raises. A run without a time limit takes the short way:
        nothing can interrupt it (see above), and it is the case of nearly every task."""
        outer, here.run = here.run, self
        try:
            if self.limit is not None:
                return self._guarded(func, args, here)
            try:
                value = func(args)
            except BaseException as exc:  # the task's failure, whatever it is
                self.finished = True
                return None, exc
            if value is not None and inspect.isawaitable(value):
                return self._guarded(lambda awaitable: awaitable, value, here)
            self.finished = True
            return value, None
        finally:
            here.run = outer

    def _guarded(self, func: Callable[[Any], Any], args: Any, here: Seat
                 ) -> tuple[Any, BaseException | None]:
        """``call`` for a run that can be interrupted, and for an async one.

        An interruption that comes as the function returns lands in ``finish`` (in
        the ``finally``) or is withdrawn by it; either way it lands inside the outer
        ``try``, and once ``finish`` has run none can come; none comes before
        ``_arm``, inside it. One that comes before an awaitable is handed to the loop
        leaves a coroutine never awaited: it is closed.
        """
        value: Any = None
        try:
            try:
                self._arm()
                value = func(args)
                if value is not None and inspect.isawaitable(value):
                    self._go_async()
                    loop = here.loop = here.loop or asyncio.new_event_loop()
                    token = CURRENT.set(self)  # copied into the asyncio task's context
                    try:
                        future = asyncio.ensure_future(value, loop=loop)
                    finally:
                        CURRENT.reset(token)
                    self._attach(loop, future)
                    value = loop.run_until_complete(future)
                return value, None
            finally:
                self.finish()
        except BaseException as exc:  # the task's failure, whatever it is, is reported
            with contextlib.suppress(TaskTimeout):  # cannot come (finish withdraws it)
                self.finish()
            if inspect.iscoroutine(value) and \
                    inspect.getcoroutinestate(value) == inspect.CORO_CREATED:
                value.close()
            return None, exc

    def finish(self) -> None:
        """The run is over: no interruption may come after this returns."""
        if self.limit is None:
            self.finished = True
            if self._future is not None:
                self._loop = self._future = None
            return
        with self.lock:
            if self.finished:
                return
            self.finished = True
            if self._injected and self._future is None:
                # Withdraw one still pending (a NULL exception clears it). Called from
                # the run's own thread, it may land first: then it is raised here.
                _set_async_exc(self.thread.ident or 0, ctypes.py_object())
            self._loop = self._future = None

    def _arm(self) -> None:
        """The worker is inside ``call``'s ``try``: from now on an interruption may be
        raised in its thread (before, it would have landed in the worker's own code).
        If the limit passed already, it is raised here."""
        if self.limit is None:
            return
        with self.lock:
            self._armed = True
            if self.timed_out:
                raise TaskTimeout(f"task {self.task_id} passed its time limit of "
                                  f"{self.limit:g} s before it started")

    def _go_async(self) -> None:
        """The task is async: from now on an interruption cancels its asyncio task
        (in ``_attach`` if it comes first) instead of raising in this thread, where it
        could land in the event loop's own code; one raised already is withdrawn."""
        if self.limit is None:
            return
        with self.lock:
            self._async = True
            if self._injected:
                _set_async_exc(self.thread.ident or 0, ctypes.py_object())
                self._injected = False

    def _attach(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        """The task is async: interruptions cancel ``future`` from now on (and at once, if
        one came while the coroutine was being made)."""
        with self._locked():
            self._loop, self._future = loop, future
            if self.timed_out or self.cancel_requested:
                future.cancel()

    # -- other threads' side -------------------------------
    def request_cancel(self) -> None:
        """A cancel was requested: the task sees it in ``cancelled()``/``check()``; an
        async one is cancelled at its next ``await``."""
        with self._locked():
            self.cancel_requested = True
            if not self.finished:
                self._cancel_future()

    def time_out(self) -> bool:
        """The time limit passed: interrupt the run; False if it had finished already."""
        with self.lock:
            if self.finished or self.timed_out:
                return False
            self.timed_out = True
            if self._future is not None:
                self._cancel_future()
            elif self._armed and not self._async and self.thread.ident is not None:
                self._injected = bool(_set_async_exc(self.thread.ident, TaskTimeout))
            return True

    def interrupt_again(self) -> None:
        """Interrupt a run still going past its limit once more: the last interruption may
        have been lost (raised while a garbage collector callback or a finalizer ran in
        its thread, which swallow exceptions), or caught by the task."""
        with self.lock:
            if self.finished or not self.timed_out:
                return
            if self._future is not None:
                self._cancel_future()
            elif self._armed and not self._async and self.thread.ident is not None:
                self._injected = bool(_set_async_exc(self.thread.ident, TaskTimeout))

    def abandon(self, then: Callable[[Run], None]) -> bool:
        """Give the run up (it ignored its interruption past the grace period) and call
        ``then(self)`` under the run's lock, so that the worker, whose ``finish`` takes
        that lock, sees it done completely or not at all; False if it had finished."""
        with self.lock:
            if self.finished:
                return False
            self.abandoned = True
            then(self)
            return True

    def _locked(self) -> contextlib.AbstractContextManager[Any]:
        """The run's lock, or none for a run without a time limit (see above): there,
        a cancel sets its flag before it looks for the future, and ``_attach`` sets the
        future before it looks at the flag, so one of them cancels it."""
        return self.lock if self.limit is not None else contextlib.nullcontext()

    def _cancel_future(self) -> None:
        loop, future = self._loop, self._future
        if loop is not None and future is not None:
            # A run without a time limit takes no lock: its loop may have closed as the
            # run ended (its worker stopping), and then there is nothing left to cancel.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(future.cancel)
