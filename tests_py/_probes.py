"""Steps shared by the concurrency and cache tests."""

import asyncio


class Probe:
    """A step that records how many executions run at once, and start order."""

    def __init__(self, delay=0.005):
        self.active = 0
        self.peak = 0
        self.started = []
        self.delay = delay

    async def __call__(self, x):
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.started.append(x)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        return x


class Gated:
    """A step that waits for ``release`` (set by the test) once it started:
    the test invalidates while it is in flight. No sleeps."""

    def __init__(self):
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, x):
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return {"x": x, "computed_by_call": self.calls}


async def invalidate(ex, how):
    """Invalidate what a ``fetch_user`` step tagged ``users`` stored: by
    tag, by its step (prefix), or the whole cache."""
    if how == "tag":
        return await ex.invalidate_by_tag("users")
    if how == "prefix":
        return await ex.invalidate_prefix("fetch_user")
    return await ex.clear_cache()


async def settle(turns: int = 20) -> None:
    """Let the event loop run what is ready, ``turns`` times (no time passes
    on a manual clock)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(cond, within: float = 10.0, what: str = "the condition") -> None:
    """Let the loop run until ``cond()`` holds: each turn at first, then
    every millisecond (for what other threads do); fails after ``within``
    seconds, a generous bound that a passing test never comes near."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    turns = 0
    while not cond():
        assert loop.time() < deadline, f"{what} did not happen within {within} s"
        turns += 1
        await asyncio.sleep(0 if turns < 100 else 0.001)


def wait_until(cond, within: float = 10.0, what: str = "the condition") -> None:
    """``until`` for a test without an event loop (threads): polls every ms."""
    import time

    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, f"{what} did not happen within {within} s"
        time.sleep(0.001)


async def drive(clock, aw, tick: float = 0.01, limit_s: float = 3600.0):
    """Await ``aw`` while moving the manual ``clock`` forward by ``tick``
    seconds each time the loop has run what was ready: the executor's timers
    (back-off, a breaker's recovery) pass without wall time. Fails once the
    clock moved ``limit_s`` without ``aw`` finishing."""
    task = asyncio.ensure_future(aw)
    start = clock.now()
    while True:
        await settle()
        if task.done():
            return task.result()
        assert clock.now() - start < limit_s, f"not done after {limit_s} s on the clock"
        clock.advance(tick)
