"""Events from the executor's native event bus (docs/events.md).

    async for event in executor.events(types=("step_finished", "step_failed")):
        print(event.type, event.step, event.value)

Each ``executor.events(...)`` iterator is one subscriber with its own
bounded buffer. Publishing never waits for a subscriber: when the buffer is
full the event is dropped for that subscriber and counted in ``dropped``.
The iterator subscribes on its first iteration (or on ``async with``) and
unsubscribes when the loop is left: ``break``, an exception, cancellation
(a cancelled wait for the next event ends the stream), or the iterator
being garbage collected; ``aclose()`` and ``async with`` make that
explicit.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from caudal._core import EVENT_TYPES

_INDEX = {name: i for i, name in enumerate(EVENT_TYPES)}


class Event:
    """One event: ``type`` (its name), ``time`` (seconds on the monotonic
    clock, comparable with ``time.monotonic()``), ``step`` (the step,
    breaker or limit it concerns; may be ""), ``value``, ``value2`` and
    ``detail`` (their meaning per type: docs/events.md)."""

    __slots__ = ("detail", "step", "time", "type", "value", "value2")

    def __init__(
        self,
        type: str,
        time: float,
        step: str = "",
        value: float = 0.0,
        value2: float = 0.0,
        detail: str = "",
    ) -> None:
        self.type = type
        self.time = time
        self.step = step
        self.value = value
        self.value2 = value2
        self.detail = detail

    def __repr__(self) -> str:
        parts = [f"{self.type}", f"time={self.time:.6f}"]
        if self.step:
            parts.append(f"step={self.step!r}")
        parts.append(f"value={self.value:g}")
        if self.value2:
            parts.append(f"value2={self.value2:g}")
        if self.detail:
            parts.append(f"detail={self.detail!r}")
        return f"Event({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


def _mask(types: Iterable[str] | str | None) -> int:
    if types is None:
        return (1 << len(EVENT_TYPES)) - 1
    if isinstance(types, str):
        types = (types,)
    mask = 0
    for t in types:
        i = _INDEX.get(t)
        if i is None:
            raise ValueError(f"unknown event type {t!r}; valid types: {', '.join(EVENT_TYPES)}")
        mask |= 1 << i
    if mask == 0:
        raise ValueError(f"types must name at least one of: {', '.join(EVENT_TYPES)}")
    return mask


class _Wake:
    """What the native bus calls when the buffer goes from empty to
    non-empty. Holds no reference to the stream, so the stream can be
    collected (and unsubscribe) while the bus still holds this."""

    __slots__ = ("fut", "loop", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        self.fut: asyncio.Future | None = None

    def __call__(self) -> None:
        try:
            if threading.get_ident() == self.thread:
                self.loop.call_soon(self._resolve)
            else:
                self.loop.call_soon_threadsafe(self._resolve)
        except RuntimeError:  # the loop is closed: nobody is waiting
            pass

    def _resolve(self) -> None:
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result(None)


class EventStream:
    """The async iterator returned by ``ExecutorCore.events()``."""

    __slots__ = ("_batch", "_buffer", "_engine", "_mask", "_sub", "_wake")

    def __init__(self, engine: Any, types: Iterable[str] | str | None, buffer: int) -> None:
        if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
            raise ValueError(f"buffer must be a positive int, got {buffer!r}")
        self._mask = _mask(types)
        self._buffer = buffer
        self._engine = engine
        self._sub: Any = None
        self._wake: _Wake | None = None
        self._batch: deque[Event] = deque()

    # -------------------------------------------------------------- life
    def _subscribe(self) -> None:
        if self._sub is None:
            self._wake = _Wake(asyncio.get_running_loop())
            self._sub = self._engine._subscribe_events(self._mask, self._buffer, self._wake)

    def close(self) -> None:
        """Unsubscribe now (idempotent). Events already buffered are still
        returned by further iteration, then it stops."""
        if self._sub is not None:
            self._sub.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> EventStream:
        self._subscribe()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        sub = getattr(self, "_sub", None)
        if sub is not None:
            sub.close()

    # ---------------------------------------------------------- counters
    @property
    def dropped(self) -> int:
        """Events lost because this subscriber's buffer was full."""
        return self._sub.dropped if self._sub is not None else 0

    @property
    def delivered(self) -> int:
        """Events stored in this subscriber's buffer so far."""
        return self._sub.delivered if self._sub is not None else 0

    @property
    def subscribed(self) -> bool:
        return self._sub is not None and not self._sub.closed

    def __repr__(self) -> str:
        state = "subscribed" if self.subscribed else "not subscribed"
        return (
            f"<EventStream {state} buffer={self._buffer} delivered={self.delivered} "
            f"dropped={self.dropped}>"
        )

    # --------------------------------------------------------- iteration
    def __aiter__(self) -> EventStream:
        return self

    def _fill(self) -> bool:
        got = self._sub.poll(256)
        if not got:
            return False
        append = self._batch.append
        for t, time_ns, step, value, value2, detail in got:
            append(Event(EVENT_TYPES[t], time_ns / 1e9, step, value, value2, detail))
        return True

    async def __anext__(self) -> Event:
        if self._sub is None:
            self._subscribe()
        batch = self._batch
        wake = self._wake
        while True:
            if batch:
                return batch.popleft()
            # Arm before polling: an event stored after the poll finds the
            # buffer empty and calls the waker, which resolves this future.
            fut = wake.loop.create_future()
            wake.fut = fut
            if self._fill():
                continue
            if self._sub.closed:
                raise StopAsyncIteration
            try:
                await fut
            except BaseException:
                # Cancelled while waiting: the `async for` is being left
                # (the traceback would keep this stream alive, so do not
                # wait for garbage collection to unsubscribe).
                self.close()
                raise
            finally:
                wake.fut = None


__all__ = ["EVENT_TYPES", "Event", "EventStream"]
