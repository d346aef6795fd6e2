"""ExecutorCore's cache invalidations, in both tiers (a mixin).

Each first drops the in-process entries and raises the core's invalidation
epoch (executions in flight then store nothing in either tier), waits for
shared-tier writes that were already under way on this loop, then
invalidates the shared tier. The result is an ``int`` (in-process entries
removed, as always) that also says what the shared tier did
(caudal._invalidation.InvalidationResult).
"""

from __future__ import annotations

import asyncio
from typing import Any

from caudal._invalidation import InvalidationResult


class Invalidations:
    """clear_cache, invalidate_by_tag / _prefix / _step, and applying the
    invalidations other processes publish through the shared tier. Reads
    ``_engine``, ``_l2`` and ``_l2_writes`` of the executor."""

    __slots__ = ()

    _engine: Any
    _l2: Any
    _l2_writes: Any

    async def clear_cache(self) -> InvalidationResult:
        """Drop every cached result, in both tiers."""
        n = self._engine.cache_stats()["size"]
        self._engine.clear_cache()
        return await self._invalidate_l2(n, "clear", None)

    async def invalidate_by_tag(self, tag: str) -> InvalidationResult:
        """Drop the cached results of every step carrying ``tag``, in both
        tiers. Returns how many in-process entries went (an ``int`` with
        ``.l2`` and ``.queued``: docs/cache.md, "Invalidation")."""
        n = self._engine.invalidate_tag(tag)
        return await self._invalidate_l2(n, "invalidate_tag", tag)

    async def invalidate_prefix(self, prefix: str) -> InvalidationResult:
        """Drop every cached result of every step whose name starts with
        ``prefix``, in both tiers (same result as :meth:`invalidate_by_tag`).
        An empty prefix is refused (ValueError): :meth:`clear_cache` drops
        everything."""
        if not isinstance(prefix, str):
            raise TypeError(f"invalidate_prefix: prefix must be a str, got {type(prefix).__name__}")
        if not prefix:
            raise ValueError(
                "invalidate_prefix: the prefix is empty; clear_cache() drops every cached result"
            )
        if self._l2 is not None and not callable(getattr(self._l2, "invalidate_prefix", None)):
            raise TypeError("cache_l2 has no invalidate_prefix() method")
        n = self._engine.invalidate_prefix(prefix)
        return await self._invalidate_l2(n, "invalidate_prefix", prefix)

    async def invalidate_step(self, step_name: str) -> InvalidationResult:
        """Drop every cached result of the step named exactly ``step_name``,
        in both tiers (same result as :meth:`invalidate_by_tag`)."""
        n = self._engine.invalidate_step(step_name)
        return await self._invalidate_l2(n, "invalidate_group", step_name)

    async def _invalidate_l2(self, n: int, method: str, arg: Any) -> InvalidationResult:
        if self._l2 is None:
            return InvalidationResult(n)
        await self._l2_settled()
        call = getattr(self._l2, method)
        reached = await (call() if arg is None else call(arg))
        return InvalidationResult.of(n, reached)

    def _on_l2_invalidation(self, kind: str, name: str | None) -> None:
        """An invalidation heard through the shared tier (another process's,
        or another executor's sharing the tier): applied to this L1 (entries
        and epochs). "resync": messages may have been missed: drop all."""
        engine = self._engine
        if kind == "tag":
            engine.invalidate_tag(name)
        elif kind == "group":
            engine.invalidate_step(name)
        elif kind == "prefix":
            engine.invalidate_prefix(name)
        else:
            engine.clear_cache()

    async def _l2_settled(self) -> None:
        """Wait for this loop's pending shared-tier writes (each bounded by
        the tier's timeout): a write checked before an invalidation lands
        before it, so the invalidation removes it."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._l2_writes if t.get_loop() is loop]
        if mine:
            await asyncio.wait(mine)
