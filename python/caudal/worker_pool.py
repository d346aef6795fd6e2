"""WorkerPool: native threads with work-stealing deques for blocking work.

The executor runs sync (``def``) steps on one of these instead of asyncio's
default thread pool; it can also be used directly::

    pool = caudal.WorkerPool(workers=8, queue_size=1000)
    fut = pool.submit(parse, text)        # QueueFullError at once if full
    value = await pool.run(parse, text)   # waits for room instead

Each task takes the GIL while it runs Python code; callables that release it
(I/O, ``time.sleep``, NumPy, native code) run truly in parallel. Results come
back to the submitting event loop in batches (one ``call_soon_threadsafe``
per burst of completions).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from caudal import _core
from caudal._bounds import check_count, check_duration
from caudal.errors import QueueFullError

_live: weakref.WeakSet[WorkerPool] = weakref.WeakSet()
# A waiter for room also retries on its own this often, in case the drain
# that would have woken it ran on another event loop's thread.
_ROOM_POLL_S = 0.05


def _native_clock(clock: Any) -> Any:
    """The native clock of ``clock``: a caudal.testing.ManualClock, the
    native one itself (an executor's, ``Engine._clock``), or None."""
    if clock is None or isinstance(clock, _core.ManualClock):
        return clock
    native = getattr(clock, "_native", None)
    if isinstance(native, _core.ManualClock):
        return native
    raise TypeError(
        "WorkerPool: clock must be a caudal.testing.ManualClock or None, "
        f"got {type(clock).__name__}"
    )


def default_workers() -> int:
    """asyncio's default for its thread pool: min(32, CPUs + 4)."""
    return min(32, (os.cpu_count() or 1) + 4)


class WorkerPool:
    """A fixed set of native worker threads with a bounded task queue.

    - ``workers``: threads (None: ``min(32, CPUs + 4)``, asyncio's default).
    - ``queue_size``: tasks accepted but not yet started; beyond it
      :meth:`submit` raises :class:`caudal.QueueFullError` ("task queue is
      full") and :meth:`run` waits for room.
    - ``task_timeout``: seconds a task may wait in the queue; one that waited
      longer is not run and its future gets :class:`caudal.PoolTimeoutError`.
      A task that has started is never interrupted.
    - ``clock``: a :class:`caudal.testing.ManualClock` the queue wait is
      measured on (tests; an ``ExecutorCore(clock=...)`` gives its own pool
      the executor's clock). None: the monotonic clock.

    Cancelling :meth:`run` while its task is queued withdraws the task: it
    never runs and its queue place is free at once (``stats()["withdrawn"]``).
    A :meth:`submit` task whose future is cancelled before a worker starts
    it is not called either. A task cancelled while it runs finishes, and
    its result is dropped.
    """

    __slots__ = (
        "__weakref__",
        "_native",
        "_room",
        "_room_waits",
        "queue_size",
        "task_timeout",
        "workers",
    )

    def __init__(
        self,
        workers: int | None = None,
        queue_size: int = 1000,
        task_timeout: float | None = None,
        clock: Any = None,
    ) -> None:
        if workers is None:
            workers = default_workers()
        # The config's bounds (worker_pool_size, worker_pool_queue_size,
        # worker_pool_task_timeout_seconds): past them the native pool's
        # int and int64-nanosecond fields would overflow.
        check_count("WorkerPool: workers", workers, 1024)
        check_count("WorkerPool: queue_size", queue_size, 100_000_000)
        task_timeout = check_duration(
            "WorkerPool: task_timeout", task_timeout, positive=True, none_ok=True
        )
        self.workers = workers
        self.queue_size = queue_size
        self.task_timeout = task_timeout
        self._room: deque[asyncio.Future] = deque()
        self._room_waits = 0  # run() calls that found the queue full and waited
        self._native = _core.WorkerPool(
            workers, queue_size, float(task_timeout or 0.0), self._on_drained, _native_clock(clock)
        )
        _live.add(self)

    # ---------------------------------------------------------------- tasks
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> asyncio.Future:
        """Queue ``fn(*args, **kwargs)``; the asyncio future of its result
        (or exception). Raises :class:`QueueFullError` at once when the queue
        is full. Call from a running event loop."""
        return self._native.submit(fn, args, kwargs or None)

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the pool; waits for room in the queue
        when it is full (backpressure), then for the result."""
        return await self._run_call(fn, args, kwargs or None)

    async def _run_call(self, fn: Callable[..., Any], args: tuple, kw: dict | None) -> Any:
        """``fn(*args, **kw)`` as :meth:`run` (the executor's sync steps).
        Cancelled while the task is queued: the task is taken out of the
        queue (it never runs, its place is free at once); while it runs:
        its result is dropped."""
        native = self._native
        try:
            fut, ticket = native.submit_withdrawable(fn, args, kw)
        except QueueFullError:
            fut, ticket = await self._submit_when_room(fn, args, kw)
        try:
            return await fut
        except BaseException:
            if fut.cancelled() and native.withdraw(ticket):
                self._on_drained(1)  # its place in the queue is free: wake a waiter
            raise

    async def _submit_when_room(self, fn: Any, args: tuple, kw: Any) -> Any:
        """Submit (withdrawably) once the queue has room: (future, ticket)."""
        submit = self._native.submit_withdrawable
        loop = asyncio.get_running_loop()
        self._room_waits += 1
        while True:
            waiter = loop.create_future()
            self._room.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), _ROOM_POLL_S)
            except TimeoutError:
                pass
            finally:
                try:
                    self._room.remove(waiter)
                except ValueError:
                    pass
            try:
                return submit(fn, args, kw)
            except QueueFullError:
                continue

    def _on_drained(self, n: int) -> None:
        """n tasks finished (on some loop's thread): as many queued tasks can
        start, so wake that many callers waiting for room."""
        room = self._room
        while n > 0 and room:
            w = room.popleft()
            if w.done():
                continue
            n -= 1
            loop = w.get_loop()
            try:
                if loop is asyncio.get_running_loop():
                    w.set_result(None)
                    continue
            except RuntimeError:
                pass
            loop.call_soon_threadsafe(_wake, w)

    # ------------------------------------------------------------ lifecycle
    def close(self, cancel_pending: bool = False) -> None:
        """Stop accepting tasks and join the threads. Queued tasks still run
        unless ``cancel_pending`` (their futures then get CancelledError).
        Blocks until running tasks finish; from async code prefer
        :meth:`aclose`."""
        self._native.close(cancel_pending)

    async def aclose(self, cancel_pending: bool = False) -> None:
        """:meth:`close` without blocking the event loop (results of the
        tasks that still run keep arriving while it waits)."""
        if self._native.closed:
            return
        await asyncio.get_running_loop().run_in_executor(None, self._native.close, cancel_pending)

    @property
    def closed(self) -> bool:
        return self._native.closed

    async def __aenter__(self) -> WorkerPool:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def stats(self) -> dict[str, Any]:
        """active, queued, completed, failed (always 0: a Python exception is
        the task's result, delivered to its future), rejected (queue full or
        closed), timed_out, cancelled, withdrawn (cancelled before they
        started: not run), steals, average_latency_ms (queue wait
        plus run time), room_waiters (waiting for room now), room_waits
        (run() calls that found the queue full and waited, so far)."""
        s = self._native.stats()
        s["room_waiters"] = len(self._room)
        s["room_waits"] = self._room_waits
        return s

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"WorkerPool(workers={self.workers}, queue_size={self.queue_size}, {state})"


def _wake(w: asyncio.Future) -> None:
    if not w.done():
        w.set_result(None)


@atexit.register
def _close_all() -> None:
    # Native threads must be joined while the interpreter can still give
    # them the GIL.
    for pool in list(_live):
        pool.close(cancel_pending=True)


__all__ = ["WorkerPool", "default_workers"]
