"""ManualClock: time that moves only when a test says so.

Pass one to ``ExecutorCore(clock=...)``: the executor's native engine then
reads all of its time from it (cache TTLs, the breaker's recovery timeout,
the adaptive limit's windows, latencies), and the executor sleeps on it
(retry back-off, waits for an open breaker's probe), so a test jumps over
minutes instead of sleeping through them::

    clock = ManualClock()
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True), clock=clock)
    await ex.execute(step, 1)      # stored, TTL 300 s
    clock.advance(301)
    await ex.execute(step, 1)      # expired: runs again

Step timeouts (``timeout_s``) stay on the event loop's own clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading

from caudal import _core


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class ManualClock:
    """A clock that moves only when :meth:`advance` is called.

    ``start_s`` is its initial reading in seconds. Thread-safe: any thread
    may advance it; each sleeper is woken on its own event loop."""

    __slots__ = ("_lock", "_native", "_seq", "_sleepers")

    def __init__(self, start_s: float = 1000.0) -> None:
        self._native = _core.ManualClock(start_s)
        self._lock = threading.Lock()
        # (deadline_ns, seq, future), earliest first.
        self._sleepers: list[tuple[int, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def now_ns(self) -> int:
        """The time, in nanoseconds."""
        return self._native.now_ns()

    def now(self) -> float:
        """The time, in seconds."""
        return self._native.now_ns() / 1e9

    def advance(self, seconds: float) -> None:
        """Move the time forward by ``seconds`` (>= 0) and wake every
        :meth:`sleep` whose deadline it reached. The woken sleepers run at
        their loop's next turn (``await asyncio.sleep(0)`` lets them)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"ManualClock.advance: seconds must be a number >= 0, got {seconds!r}")
        now = self._native.advance(float(seconds))
        due: list[asyncio.Future] = []
        with self._lock:
            while self._sleepers and self._sleepers[0][0] <= now:
                due.append(heapq.heappop(self._sleepers)[2])
        for fut in due:
            if not fut.done():
                try:
                    fut.get_loop().call_soon_threadsafe(_wake, fut)
                except RuntimeError:  # its loop is closed: nobody waits
                    pass

    async def sleep(self, seconds: float) -> None:
        """Wait until :meth:`advance` moves the time ``seconds`` past now
        (``seconds <= 0``: one turn of the loop, as ``asyncio.sleep(0)``)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        deadline = self._native.now_ns() + int(seconds * 1e9)
        with self._lock:
            heapq.heappush(self._sleepers, (deadline, next(self._seq), fut))
        if self._native.now_ns() >= deadline:  # advanced meanwhile
            self.advance(0)
        await fut

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now():.9g} s)"
