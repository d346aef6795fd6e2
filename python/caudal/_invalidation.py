"""What an invalidation reached (``ExecutorCore.invalidate_by_tag`` /
``invalidate_prefix`` / ``invalidate_step`` / ``clear_cache``, and the Redis
tier's own ``invalidate_tag`` / ``invalidate_group`` / ``invalidate_prefix`` /
``clear``)."""

from __future__ import annotations

from typing import Any


class InvalidationResult(int):
    """An ``int`` — the count the call always returned — that also says what
    the shared tier did.

    - The int value: for ``ExecutorCore``, the in-process (L1) entries
      removed; for ``RedisCacheTier``, the values removed from Redis (0 when
      Redis could not be reached).
    - ``l2``: values removed from the shared tier; ``None`` without a shared
      tier, or when the invalidation could not be delivered yet.
    - ``queued``: the shared tier was unreachable (or in its reconnect
      back-off): the invalidation waits in the tier's queue and is delivered
      as soon as Redis answers again, before the tier serves any read from
      it. Nothing is dropped; ``RedisCacheTier.stats()["pending_invalidations"]``
      counts what waits, and ``await tier.deliver_pending()`` retries now.
    """

    l2: int | None
    queued: bool

    def __new__(cls, n: int, l2: int | None = None, queued: bool = False) -> InvalidationResult:
        self = super().__new__(cls, n)
        self.l2 = l2
        self.queued = queued
        return self

    @classmethod
    def of(cls, n: int, reached: Any) -> InvalidationResult:
        """``n`` local entries plus what a shared tier's call returned (an
        InvalidationResult, or a plain count from a tier of one's own)."""
        queued = bool(getattr(reached, "queued", False))
        l2 = None if queued or reached is None else int(reached)
        return cls(n, l2, queued)

    __str__ = int.__repr__  # prints as the count

    def __reduce__(self) -> tuple:
        return (type(self), (int(self), self.l2, self.queued))

    def __repr__(self) -> str:
        return f"InvalidationResult({int(self)}, l2={self.l2!r}, queued={self.queued!r})"
