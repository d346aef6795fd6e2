"""The Ray backend's watch over its cluster (caudal.integrations.ray uses it):
a lost cluster ends the remote attempts in flight with ClusterLostError,
and later ones at once, until its GCS answers again (docs/scale-out.md,
"Errors, retries, cancellation")."""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from typing import Any

from caudal.errors import ClusterLostError

_LOST_AFTER_ENV = "CAUDAL_RAY_LOST_AFTER_S"
_LOST_AFTER_S = 15.0
_PROBE_EVERY_S = 1.0


class _ClusterWatch:
    """One event loop's watch over its Ray cluster.

    While remote attempts are in flight on the loop, a task probes the
    cluster's GCS every second (a TCP connection to its address, closed at
    once). When it has not answered for ``lost_after_s``, every attempt in
    flight is cancelled and ends with ClusterLostError (no ``timeout_s``
    needed), and later attempts fail at once with it, without being sent,
    until a probe succeeds again. A GCS that accepts connections but hangs
    is not detected: give such steps a ``timeout_s``.
    """

    def __init__(self, ray: Any, lost_after_s: float) -> None:
        self._ray = ray
        self.lost_after_s = lost_after_s
        self._inflight: dict[asyncio.Task, None] = {}
        self._ended: set[asyncio.Task] = set()  # cancelled by this watch
        self._probing: asyncio.Task | None = None
        self._failing_since: float | None = None
        self.lost: bool = False
        self.address = ""

    def enter(self, task: asyncio.Task) -> None:
        self._inflight[task] = None
        if self._probing is None or self._probing.done():
            if not self.lost:  # an outage counts from a probe of this watch
                self._failing_since = None
            self._probing = asyncio.get_running_loop().create_task(self._probe_loop())

    def leave(self, task: asyncio.Task) -> None:
        self._inflight.pop(task, None)
        self._ended.discard(task)

    def ended_by_us(self, task: asyncio.Task | None) -> bool:
        return task is not None and task in self._ended

    def error(self, name: str) -> ClusterLostError:
        since = self._failing_since
        lost_for = time.monotonic() - since if since is not None else self.lost_after_s
        return ClusterLostError(name, self.address, lost_for)

    async def check(self, name: str) -> None:
        """Before an attempt is sent: ClusterLostError at once if the
        cluster is lost and its GCS still does not answer."""
        if await self._probe():
            self._failing_since, self.lost = None, False
        else:
            raise self.error(name)

    async def _probe(self) -> bool:
        # Asked each time: ray.shutdown() and ray.init() of another cluster
        # may have happened since.
        try:
            if not self._ray.is_initialized():
                return True  # not connected: nothing to watch
            self.address = self._ray.get_runtime_context().gcs_address
        except Exception:
            return True
        host, _, port = self.address.rpartition(":")
        try:
            async with asyncio.timeout(_PROBE_EVERY_S):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, TimeoutError, ValueError):
            return False
        writer.close()
        return True

    async def _probe_loop(self) -> None:
        while self._inflight:
            now = time.monotonic()
            if await self._probe():
                self._failing_since, self.lost = None, False
            else:
                if self._failing_since is None:
                    self._failing_since = now
                if now - self._failing_since >= self.lost_after_s:
                    self.lost = True
                    for task in list(self._inflight):
                        if task not in self._ended:
                            self._ended.add(task)
                            task.cancel(msg="caudal: the Ray cluster was lost")
            await asyncio.sleep(_PROBE_EVERY_S)


_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ClusterWatch] = (
    weakref.WeakKeyDictionary()
)


def _lost_after_s() -> float:
    raw = os.environ.get(_LOST_AFTER_ENV, "")
    try:
        return float(raw) if raw.strip() else _LOST_AFTER_S
    except ValueError:
        return _LOST_AFTER_S


_last_watch: tuple[Any, _ClusterWatch | None] = (None, None)  # (loop, its watch)


def _watch(ray: Any) -> _ClusterWatch | None:
    """The running loop's watch; None if ``CAUDAL_RAY_LOST_AFTER_S`` is 0."""
    global _last_watch
    loop = asyncio.get_running_loop()
    last_loop, watch = _last_watch
    if last_loop is loop:  # the common case: one loop
        return watch
    watch = _WATCHES.get(loop)
    if watch is None and _lost_after_s() > 0:
        watch = _WATCHES.setdefault(loop, _ClusterWatch(ray, _lost_after_s()))
    _last_watch = (loop, watch)
    return watch


__all__ = ["_ClusterWatch", "_watch"]
