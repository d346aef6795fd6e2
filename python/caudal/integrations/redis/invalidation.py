"""Invalidations of the Redis cache tier: delivered to Redis, queued while it
is unreachable (never dropped), and fanned out to every process's
in-process cache.

Every delivered invalidation is published on ``P invalidations`` after Redis
removed the values; a tier with listeners (``add_invalidation_listener``;
``ExecutorCore`` adds its L1) subscribes on a connection of its own and
passes on what other tiers publish, and ``("resync", None)`` after a lost
subscription came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import weakref
from typing import Any

from caudal._invalidation import InvalidationResult
from caudal._trust import hmac_tag, tags_equal
from caudal.integrations.redis.connection import (
    _INVALIDATE_BATCH,
    _SCAN_COUNT,
    _Conn,
    _glob_escape,
)


class _Invalidations:
    """RedisCacheTier's invalidation half (a base class of it, kept apart for
    reading). It uses the tier's state set up in ``RedisCacheTier.__init__``
    (``_lock``, ``_n``, ``_pending``, ``_redeliver``, ``_channel``,
    ``_origin``, ``_listeners``, ``_sub_task``, the settings) and its
    connection and health methods (``_conn``, ``_new_client``, ``_admit``,
    ``_succeeded``, ``_failed``, ``_add``)."""

    _lock: Any
    _n: dict[str, int]
    _pending: dict[tuple[str, str | None], None]
    _prefix: str
    _value_prefix: str
    _secret: bytes | None
    _op_timeout: float
    _backoff: float
    # A tag's or step's invalidation is published by the script that empties
    # its index (one round trip). False: by a PUBLISH of its own after it
    # (two round trips), what benchmarks/bench_invalidation.py compares with.
    _publish_with_removal = True

    # ------------------------------------------- other processes' caches
    def add_invalidation_listener(self, listener: Any) -> None:
        """Calls ``listener(kind, name)`` for every invalidation made through
        this tier or heard from another process's tier on the same Redis and
        prefix: ``("tag", tag)``, ``("group", step_name)`` (that step exactly),
        ``("prefix", prefix)`` (every step whose name starts with it),
        ``("clear", None)``,
        and ``("resync", None)`` after the subscription was lost and
        re-established (messages may have been missed: drop everything). A
        bound method is held weakly. ``ExecutorCore`` registers its in-process
        cache. The subscription starts with the tier's first call on an event
        loop, on a connection of its own."""
        ref = weakref.WeakMethod(listener) if inspect.ismethod(listener) else listener
        with self._lock:
            self._listeners.append(ref)

    def _notify(self, kind: str, name: str | None) -> None:
        dead = []
        for ref in list(self._listeners):
            fn = ref() if isinstance(ref, weakref.WeakMethod) else ref
            if fn is None:
                dead.append(ref)
                continue
            try:
                fn(kind, name)
            except Exception as e:  # a listener's bug must not break the tier
                with self._lock:
                    self._last_error = f"invalidation listener: {type(e).__name__}: {e}"
        if dead:
            with self._lock:
                self._listeners = [r for r in self._listeners if r not in dead]

    def _message(self, kind: str, name: str | None) -> bytes:
        body = json.dumps({"o": self._origin, "k": kind, "n": name}).encode()
        if self._secret is None:
            return b"-:" + body
        return self._inv_tag(body) + b":" + body

    def _inv_tag(self, body: bytes) -> bytes:
        """An invalidation message's tag (hex): bound to this channel."""
        return hmac_tag(self._secret, b"caudal-inv\0" + self._channel.encode(), body).hex().encode()

    def _heard(self, data: bytes) -> None:
        tag, sep, body = bytes(data).partition(b":")
        try:
            if not sep:
                raise ValueError("no separator")
            if self._secret is not None:
                if not tags_equal(self._inv_tag(body), tag):
                    raise ValueError("its tag does not verify")
            msg = json.loads(body)
            kind, name, origin = msg["k"], msg["n"], msg["o"]
            if kind not in ("tag", "group", "prefix", "clear") or not (
                name is None or isinstance(name, str)
            ):
                raise ValueError(f"unknown invalidation {kind!r}")
            if kind == "prefix" and not name:
                raise ValueError("a prefix invalidation without a prefix")
        except Exception as e:
            with self._lock:
                self._n["invalidation_messages_rejected"] += 1
                self._last_error = f"invalidation message rejected: {e}"
            return
        if origin == self._origin:
            return  # ours: our listeners heard it when it was made
        self._add("invalidations_heard")
        self._notify(kind, name)

    def _start_subscriber(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - the tier is used from coroutines
            return
        with self._lock:
            if self._sub_task is not None and not self._sub_task.done():
                return
            self._sub_task = loop.create_task(self._subscribe_loop())

    async def _subscribe_loop(self) -> None:
        """Listens on the tier's channel; after a lost subscription, listeners
        get ("resync", None): what was published meanwhile is gone."""
        client = self._given.client if self._given is not None else self._new_client()
        lost = self._was_subscribed  # a task started again after one that ended
        try:
            while True:
                pubsub = client.pubsub()
                try:
                    async with asyncio.timeout(max(self._op_timeout, 1.0)):
                        await pubsub.subscribe(self._channel)
                    self._subscribed = self._was_subscribed = True
                    if lost:
                        self._add("resyncs")
                        self._notify("resync", None)
                    while True:
                        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if msg is not None and msg.get("type") == "message":
                            self._heard(msg["data"])
                except Exception as e:
                    lost, self._subscribed = True, False
                    with self._lock:
                        self._last_error = f"invalidation subscription: {type(e).__name__}: {e}"
                    await asyncio.sleep(max(self._backoff, 0.05))
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
        finally:
            self._subscribed = False
            if self._given is None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    # -------------------------------------------------------- invalidation
    async def _invalidate(self, item: tuple[str, str | None]) -> InvalidationResult:
        """Delivers ``item`` (after whatever is queued), or queues it."""
        self._notify(*self._listener_args(item))
        if not self._admit():
            self._queue(item)
            return InvalidationResult(0, None, True)
        conn = self._conn()
        if self._pending and not await self._deliver_pending(conn):
            self._queue(item)
            return InvalidationResult(0, None, True)
        try:
            removed = await self._run_invalidation(conn, item)
        except Exception as e:
            self._failed(e)
            self._queue(item)  # part-way: delivered again, whole
            return InvalidationResult(0, None, True)
        self._succeeded()
        return InvalidationResult(removed, removed, False)

    def _queue(self, item: tuple[str, str | None]) -> None:
        with self._lock:
            if ("clear", None) in self._pending:
                pass  # a queued clear covers everything
            elif item[0] == "clear":
                self._pending = {item: None}
            else:
                self._pending[item] = None
            self._n["invalidations_queued"] += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - called from a coroutine
            return
        task = self._redeliver.get(loop)
        if task is None or task.done():
            self._redeliver[loop] = loop.create_task(self._redeliver_loop())

    async def _redeliver_loop(self) -> None:
        """Delivers the queue once Redis answers, with nobody else calling."""
        while self._pending:
            now = time.monotonic()
            await asyncio.sleep(max(self._skip_until - now, self._probe_until - now, 0.01))
            if not self._pending or not self._admit():
                continue
            if await self._deliver_pending(self._conn()):
                self._succeeded()
            elif self._healthy:  # an error reply from a live server: later
                await asyncio.sleep(max(self._backoff, 0.05))

    async def _deliver_pending(self, conn: _Conn) -> bool:
        """Runs the queued invalidations in order; False (the failure
        recorded) if one fails: the rest stay queued."""
        with self._lock:
            items = list(self._pending)
        for item in items:
            try:
                await self._run_invalidation(conn, item)
            except Exception as e:
                self._failed(e)
                return False
            with self._lock:
                self._pending.pop(item, None)
                self._n["invalidations_delivered"] += 1
        return True

    def _listener_args(self, item: tuple[str, str | None]) -> tuple[str, str | None]:
        kind, index_key = item
        if kind == "clear" or index_key is None:
            return "clear", None
        if kind == "prefix":
            return "prefix", index_key  # the prefix itself
        rest = index_key[len(self._prefix) :]
        return ("tag" if rest.startswith("t:") else "group"), rest[2:]

    async def _run_invalidation(self, conn: _Conn, item: tuple[str, str | None]) -> int:
        """One invalidation, then its message to other processes' in-process
        caches (after Redis no longer holds the values, so none of them reads
        a removed value back); each round trip bounded; raises on failure."""
        message = self._message(*self._listener_args(item))
        kind, arg = item
        if kind == "index" and self._publish_with_removal:
            assert arg is not None
            # The script publishes once the index is empty: one round trip
            # for the common case, an invalidation smaller than a batch.
            removed, published = await self._remove_index(conn, arg, message)
            if published:
                return removed
        elif kind == "index":  # the message in a round trip of its own
            assert arg is not None
            removed = (await self._remove_index(conn, arg))[0]
        elif kind == "prefix":
            assert arg is not None
            removed = await self._remove_prefix(conn, arg)
        else:
            removed = await self._clear_now(conn)
        async with asyncio.timeout(self._op_timeout):
            await conn.client.publish(self._channel, message)
        return removed

    async def _remove_prefix(self, conn: _Conn, prefix: str) -> int:
        """Every group index whose step name starts with ``prefix``. The
        prefix's epoch first: a write whose read came before is then refused
        (by _SET_AND_INDEX, which checks the prefixes of its group), also one
        of a group that has no index yet and that the SCAN cannot find."""
        async with asyncio.timeout(self._op_timeout):
            await conn.prefix_epoch(keys=[conn.epoch_key, conn.prefix_epochs_key], args=[prefix])
        pattern = _glob_escape(f"{self._prefix}g:{prefix}") + "*"
        found: set[str] = set()  # SCAN may return a key more than once
        cursor: int = 0
        while True:
            async with asyncio.timeout(self._op_timeout):
                cursor, names = await conn.client.scan(cursor, match=pattern, count=_SCAN_COUNT)
            found.update(n.decode() if isinstance(n, bytes) else n for n in names)
            if cursor == 0:
                break
        removed = 0
        for index_key in sorted(found):
            removed += (await self._remove_index(conn, index_key))[0]
        return removed

    async def _remove_index(
        self, conn: _Conn, index_key: str, message: bytes | None = None
    ) -> tuple[int, bool]:
        """Removes the index's values in batches; with ``message``, the
        batch that leaves the index empty publishes it. Returns (values
        removed, whether the message was published)."""
        removed = 0
        rounds_left: int | None = None
        while True:
            async with asyncio.timeout(self._op_timeout):
                n, left, published = await conn.invalidate(
                    keys=[index_key, conn.epoch_key, conn.epochs_key],
                    args=[
                        self._value_prefix,
                        _INVALIDATE_BATCH,
                        "1" if rounds_left is None else "",
                        *((self._channel, message) if message is not None else ()),
                    ],
                )
            removed += int(n)
            self._add("invalidations", int(n))
            if rounds_left is None:
                # Members added while we work are removed too, but a
                # writer faster than us must not keep us here forever.
                rounds_left = int(left) // _INVALIDATE_BATCH + 2
            rounds_left -= 1
            if not left or rounds_left <= 0:
                return removed, bool(published)

    async def _clear_now(self, conn: _Conn) -> int:
        pattern = _glob_escape(self._prefix) + "*"
        value_prefix = self._value_prefix.encode()
        # The epoch first (writes that read the counter before now are then
        # refused), and the epoch keys survive the clear.
        keep = {conn.epoch_key.encode(), conn.epochs_key.encode(), conn.prefix_epochs_key.encode()}
        async with asyncio.timeout(self._op_timeout):
            epoch = await conn.client.incr(conn.epoch_key)
            await conn.client.hset(conn.epochs_key, "*", epoch)
        cursor: int = 0
        removed = 0
        while True:
            async with asyncio.timeout(self._op_timeout):
                cursor, names = await conn.client.scan(cursor, match=pattern, count=_SCAN_COUNT)
            if names:
                values = [n for n in names if n.startswith(value_prefix)]
                others = [n for n in names if not n.startswith(value_prefix) and n not in keep]
                async with asyncio.timeout(self._op_timeout):
                    n = await conn.client.unlink(*values) if values else 0
                    if others:
                        await conn.client.unlink(*others)
                removed += n
                self._add("invalidations", n)
            if cursor == 0:
                return removed


__all__: list[str] = []
