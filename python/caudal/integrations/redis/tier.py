"""RedisCacheTier: the shared (L2) result-cache tier in Redis — gets, sets,
health and statistics. The failure policy, key layout and stats are described
in :mod:`caudal.integrations.redis`."""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from caudal._invalidation import InvalidationResult
from caudal._trust import secret_bytes
from caudal.integrations.redis.connection import (
    _MISS,
    _Conn,
    check_url,
    is_error_reply,
    is_timeout,
    new_client,
    redact_url,
)
from caudal.integrations.redis.invalidation import _Invalidations
from caudal.integrations.redis.wire import (
    SECRET_ENV,
    PickleSerializer,
    Serializer,
    ValueCodec,
    _Unauthenticated,
)


class RedisCacheTier(_Invalidations):
    """A cache tier in Redis shared by every process using the same prefix.

    All methods are coroutines except ``stats()``; none of them raises because
    Redis is down, slow or returns garbage (see :mod:`caudal.integrations.redis`
    for the failure policy and key layout, and
    :mod:`caudal.integrations.redis.wire` for the value format).

    - ``url``: a redis-py URL (``redis://[[user]:password@]host:port/db``,
      ``rediss://`` for TLS, ``unix:///path.sock?db=0``).
    - ``prefix``: namespace of every key the tier writes; ``clear()`` removes
      only keys under it.
    - ``serializer``: object with ``dumps``/``loads`` for every value; by
      default type-exact JSON, else pickle (only with a ``secret``).
    - ``secret``: key (>= 16 bytes) that authenticates entries and
      invalidation messages; default ``$CAUDAL_CACHE_SECRET``, else none.
    - ``compression``: zstd-compress values longer than
      ``compression_threshold`` bytes at ``compression_level`` (only kept
      when smaller). Reading accepts compressed and raw values either way.
    - ``op_timeout_s``: bound on each Redis round trip.
    - ``reconnect_backoff_s``: how long Redis is left alone after a failure.
    - ``client``: an existing ``redis.asyncio.Redis`` to use instead of
      creating one per event loop from ``url``; the tier never closes it.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "caudal:",
        serializer: Serializer | None = None,
        compression: bool = False,
        compression_threshold: int = 1024,
        compression_level: int = 3,
        op_timeout_s: float = 0.05,
        reconnect_backoff_s: float = 1.0,
        client: Any = None,
        secret: bytes | str | None = None,
    ):
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
        if serializer is not None and not (
            callable(getattr(serializer, "dumps", None))
            and callable(getattr(serializer, "loads", None))
        ):
            raise TypeError(f"serializer must have dumps() and loads(), got {serializer!r}")
        for name, v in (
            ("op_timeout_s", op_timeout_s),
            ("reconnect_backoff_s", reconnect_backoff_s),
        ):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise TypeError(f"{name} must be a finite number, got {v!r}")
        if op_timeout_s <= 0:
            raise ValueError(f"op_timeout_s must be > 0, got {op_timeout_s!r}")
        if reconnect_backoff_s < 0:
            raise ValueError(f"reconnect_backoff_s must be >= 0, got {reconnect_backoff_s!r}")
        if isinstance(compression_threshold, bool) or not isinstance(compression_threshold, int):
            raise TypeError(f"compression_threshold must be an int, got {compression_threshold!r}")
        if compression_threshold < 0:
            raise ValueError(f"compression_threshold must be >= 0, got {compression_threshold!r}")

        if client is None:
            check_url(url)  # a malformed URL fails here, not on the first call
        self._url = url
        self._prefix = prefix
        self._value_prefix = prefix + "v:"
        # The default (and an explicit PickleSerializer): type-exact JSON when
        # it carries the value, else pickle, which only an authenticated
        # entry may hold. Another serializer is used for every value.
        self._custom = serializer is not None and type(serializer) is not PickleSerializer
        self._serializer: Serializer = serializer if self._custom else PickleSerializer()
        self._secret = secret_bytes(secret, SECRET_ENV, "RedisCacheTier")
        self._compression = bool(compression)
        self._threshold = compression_threshold
        self._level = int(compression_level)
        self._codec = ValueCodec(
            self._serializer,
            self._custom,
            self._secret,
            self._compression,
            self._threshold,
            self._level,
        )
        self._op_timeout = float(op_timeout_s)
        self._backoff = float(reconnect_backoff_s)
        self._given: _Conn | None = (
            _Conn(client, prefix, self._op_timeout, self._count_batched)
            if client is not None
            else None
        )
        if client is not None:
            kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
            self._url = f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"

        self._lock = threading.Lock()
        self._conns: Any = weakref.WeakKeyDictionary()
        self._healthy = True
        self._skip_until = 0.0
        self._probe_until = 0.0  # a probe is in flight until then
        self._last_error: str | None = None
        self._n = dict.fromkeys(
            (
                "hits",
                "misses",
                "sets",
                "errors",
                "timeouts",
                "skipped",
                "corrupt",
                "invalidations",
                "bytes_written",
                "bytes_read",
                "compressed_sets",
                "unserializable",
                "unauthenticated",
                "stale_sets",
                "batched",
                "invalidations_queued",
                "invalidations_delivered",
                "invalidations_heard",
                "invalidation_messages_rejected",
                "resyncs",
            ),
            0,
        )
        # Invalidations not yet delivered to Redis (it was unreachable), in
        # order: ("index", key), ("prefix", prefix) or ("clear", None). Delivered before any other
        # call uses Redis, and by a background task per event loop.
        self._pending: dict[tuple[str, str | None], None] = {}
        self._redeliver: Any = weakref.WeakKeyDictionary()  # loop -> task
        # Cross-process L1 invalidation: every delivered invalidation is
        # published on this channel; listeners (executors' in-process caches)
        # hear those of other tiers through one subscriber task.
        self._channel = prefix + "invalidations"
        self._origin = os.urandom(8).hex()
        self._listeners: list[Any] = []
        self._sub_task: asyncio.Task[None] | None = None
        self._subscribed = False  # listening now
        self._was_subscribed = False  # ever: a new subscription is a resync

    # ------------------------------------------------------------ public API
    async def get(self, key: bytes) -> tuple[bool, Any]:
        """``(True, value)`` on a hit, ``(False, None)`` otherwise."""
        found, value, _ = await self.get_versioned(key)
        return (True, value) if found else _MISS

    async def get_versioned(self, key: bytes) -> tuple[bool, Any, int | None]:
        """``get`` plus the tier's invalidation counter read with the value
        (None if Redis was not read). Pass it to ``set(..., since=)`` to store
        a result computed after this read only if no invalidation covering it
        (in any process) came in between."""
        name = self._value_key(key)
        if not self._admit():
            self._add("misses")
            return False, None, None
        conn = self._conn()
        if self._pending and not await self._deliver_pending(conn):
            self._add("misses")  # Redis may still hold what they remove
            return False, None, None
        try:
            async with asyncio.timeout(self._op_timeout):
                raw, epoch_raw = await conn.gets.submit(name)
        except Exception as e:
            self._failed(e)
            self._add("misses")
            return False, None, None
        self._succeeded()
        epoch = int(epoch_raw) if epoch_raw is not None else 0
        if raw is None:
            self._add("misses")
            return False, None, epoch
        try:
            value = self._codec.decode(name, raw)
        except Exception as e:
            unauthenticated = isinstance(e, _Unauthenticated)
            with self._lock:
                self._n["unauthenticated" if unauthenticated else "corrupt"] += 1
                self._n["misses"] += 1
                self._n["bytes_read"] += len(raw)
                what = "unauthenticated" if unauthenticated else "corrupt"
                self._last_error = f"{what} entry {name}: {type(e).__name__}: {e}"
            await self._delete_corrupt(conn, name, raw)
            return False, None, epoch
        with self._lock:
            self._n["hits"] += 1
            self._n["bytes_read"] += len(raw)
        return True, value, epoch

    async def set(
        self,
        key: bytes,
        value: Any,
        ttl_s: float,
        tags: Sequence[str] = (),
        group: str | None = None,
        *,
        since: int | None = None,
    ) -> bool:
        """Stores ``value`` under ``key`` for ``ttl_s`` seconds, indexed by its
        tags and group. True if Redis stored it. With ``since`` (the counter
        from ``get_versioned``), nothing is stored if an invalidation of one
        of its tags, its group, a prefix of its group or a clear came after
        that read (counted in ``stale_sets``)."""
        name = self._value_key(key)
        ttl_ms = self._ttl_ms(ttl_s)
        if isinstance(tags, str):
            tags = (tags,)
        index_keys = [self._tag_key(t) for t in tags]
        if group is not None:
            index_keys.append(self._group_key(group))
        admitted = self._admit()
        if not admitted:
            return False
        try:
            payload, compressed = self._codec.encode(name, value)
        except Exception as e:
            with self._lock:
                self._n["unserializable"] += 1
                self._last_error = f"unserializable value: {type(e).__name__}: {e}"
                if admitted == "probe":
                    self._probe_until = 0.0
            return False
        conn = self._conn()
        if self._pending and not await self._deliver_pending(conn):
            return False
        try:
            async with asyncio.timeout(self._op_timeout):
                stored = await conn.sets.submit(
                    (
                        name,
                        payload,
                        ttl_ms,
                        index_keys,
                        "" if since is None else str(int(since)),
                        group or "",
                    )
                )
        except Exception as e:
            self._failed(e)
            return False
        self._succeeded()
        if not stored:
            self._add("stale_sets")
            return False
        with self._lock:
            self._n["sets"] += 1
            self._n["bytes_written"] += len(payload)
            if compressed:
                self._n["compressed_sets"] += 1
        return True

    async def invalidate_tag(self, tag: str) -> InvalidationResult:
        """Removes every entry stored with ``tag``, in every process; returns
        how many values were removed (an ``int``). If Redis cannot be reached
        (or the tier is in its back-off) the invalidation is queued, not
        dropped: it returns 0 with ``.queued`` True and is delivered as soon
        as Redis answers, before the tier reads anything from it again."""
        return await self._invalidate(("index", self._tag_key(tag)))

    async def invalidate_group(self, group: str) -> InvalidationResult:
        """Removes every entry stored with ``group`` (a step's name, exactly);
        same result and queueing as :meth:`invalidate_tag`."""
        return await self._invalidate(("index", self._group_key(group)))

    async def invalidate_prefix(self, prefix: str) -> InvalidationResult:
        """Removes every entry stored with a group (a step's name) that starts
        with ``prefix``, in every process; same result and queueing as
        :meth:`invalidate_tag`. A write whose read came before is refused,
        also for a group first written after the invalidation started. An
        empty prefix is refused (``clear()`` removes everything)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {prefix!r}")
        if not prefix:
            raise ValueError("invalidate_prefix: the prefix is empty; clear() removes everything")
        return await self._invalidate(("prefix", prefix))

    async def clear(self) -> InvalidationResult:
        """Removes every key under this tier's prefix (SCAN + UNLINK, never
        FLUSHDB); returns the number of cached values removed. Each round
        trip (about 1,000 keys) is bounded by ``op_timeout_s``; a clear that
        fails part-way is queued and delivered whole, like an invalidation."""
        return await self._invalidate(("clear", None))

    async def deliver_pending(self) -> bool:
        """Tries now to deliver the queued invalidations (ignoring the
        back-off); True when none is left."""
        if not self._pending:
            return True
        ok = await self._deliver_pending(self._conn())
        if ok:
            self._succeeded()
        return ok

    @property
    def pending_invalidations(self) -> int:
        """Invalidations queued while Redis was unreachable, not yet delivered."""
        return len(self._pending)

    async def health(self) -> dict[str, Any]:
        """PINGs Redis (bounded by ``op_timeout_s``, ignoring the back-off) and
        updates the tier's health with the answer."""
        conn = self._conn()
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self._op_timeout):
                await conn.client.ping()
        except Exception as e:
            self._failed(e)
            return {
                "ok": False,
                "latency_ms": None,
                "error": self._last_error,
                "url": self.url,
                "pending_invalidations": len(self._pending),
            }
        self._succeeded()
        latency_ms = (time.perf_counter() - t0) * 1e3
        if self._pending:  # Redis answers: deliver what waits
            await self._deliver_pending(conn)
        return {
            "ok": True,
            "latency_ms": latency_ms,
            "error": None,
            "url": self.url,
            # Queued while Redis was unreachable; delivered by the next call.
            "pending_invalidations": len(self._pending),
        }

    async def close(self) -> None:
        """Closes the client of the running event loop (see the module
        docstring). The tier stays usable: a later call makes a new client."""
        loop = asyncio.get_running_loop()
        if self._pending:  # a last bounded attempt before the loop goes away
            await self.deliver_pending()
        task = self._redeliver.pop(loop, None)
        sub = self._sub_task
        if sub is not None and not sub.done() and sub.get_loop() is loop:
            self._sub_task = None
            sub.cancel()
            await asyncio.gather(sub, return_exceptions=True)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._given is not None:
            return
        with self._lock:
            conn = self._conns.pop(loop, None)
        if conn is None:
            return
        aclose = getattr(conn.client, "aclose", None) or conn.client.close
        try:
            async with asyncio.timeout(max(self._op_timeout, 1.0)):
                await aclose()
        except Exception:  # closing a broken connection must not raise either
            pass

    def stats(self) -> dict[str, Any]:
        """Counters since creation, current health, and where it points."""
        with self._lock:
            out: dict[str, Any] = dict(self._n)
            out["healthy"] = self._healthy
            out["last_error"] = self._last_error
            out["clients"] = len(self._conns) + (self._given is not None)
            out["pending_invalidations"] = len(self._pending)
        out["authenticated"] = self._secret is not None
        out["subscribed"] = self._subscribed
        out["url"] = self.url
        out["prefix"] = self._prefix
        out["compression"] = self._compression
        return out

    @property
    def url(self) -> str:
        """The URL, password redacted."""
        return redact_url(self._url)

    @property
    def healthy(self) -> bool:
        return self._healthy

    def __repr__(self) -> str:
        state = "healthy" if self._healthy else "unhealthy"
        return f"RedisCacheTier({self.url!r}, prefix={self._prefix!r}, {state})"

    # -------------------------------------------------------------- keys
    def _value_key(self, key: bytes) -> str:
        if not isinstance(key, bytes | bytearray):
            raise TypeError(f"cache key must be bytes, got {type(key).__name__}")
        return self._value_prefix + key.hex()

    def _tag_key(self, tag: str) -> str:
        if not isinstance(tag, str):
            raise TypeError(f"tag must be a string, got {tag!r}")
        return f"{self._prefix}t:{tag}"

    def _group_key(self, group: str) -> str:
        if not isinstance(group, str):
            raise TypeError(f"group must be a string, got {group!r}")
        return f"{self._prefix}g:{group}"

    @staticmethod
    def _ttl_ms(ttl_s: float) -> int:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
            raise TypeError(f"ttl_s must be a number of seconds, got {ttl_s!r}")
        if not (ttl_s > 0 and math.isfinite(ttl_s)):
            raise ValueError(f"ttl_s must be a positive finite number, got {ttl_s!r}")
        return max(1, math.ceil(ttl_s * 1000))

    async def _delete_corrupt(self, conn: _Conn, name: str, raw: bytes) -> None:
        # Only if it still holds the bad bytes: another process may have
        # replaced it meanwhile. (A plain DEL would be fine as well; this is
        # cheap and avoids dropping a good value.)
        try:
            async with asyncio.timeout(self._op_timeout):
                await conn.client.eval(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                    "return redis.call('DEL', KEYS[1]) end return 0",
                    1,
                    name,
                    raw,
                )
        except Exception as e:
            self._failed(e)

    # ------------------------------------------------- clients and health
    def _conn(self) -> _Conn:
        if self._listeners and (self._sub_task is None or self._sub_task.done()):
            self._start_subscriber()
        if self._given is not None:
            return self._given
        loop = asyncio.get_running_loop()
        conn = self._conns.get(loop)
        if conn is None:
            with self._lock:
                conn = self._conns.get(loop)
                if conn is None:
                    conn = _Conn(
                        self._new_client(), self._prefix, self._op_timeout, self._count_batched
                    )
                    try:
                        self._conns[loop] = conn
                    except TypeError:  # a loop type that cannot be weakly referenced
                        self._conns = dict(self._conns.items())
                        self._conns[loop] = conn
        return conn

    def _new_client(self) -> Any:
        # No retries inside redis-py: one attempt per call, bounded by our
        # timeout; after a failure the back-off decides when to try again.
        return new_client(self._url)

    def _admit(self) -> str | bool:
        """Whether a call may use Redis now: "ok", "probe", or False (skip)."""
        if self._healthy:
            return "ok"
        now = time.monotonic()
        with self._lock:
            if self._healthy:
                return "ok"
            if now < self._skip_until or now < self._probe_until:
                self._n["skipped"] += 1
                return False
            # A deadline rather than a flag: a probe that never reports back
            # (its caller was cancelled) cannot keep the tier off for good.
            self._probe_until = now + self._op_timeout
            return "probe"

    def _succeeded(self) -> None:
        if not self._healthy:
            with self._lock:
                self._healthy = True
                self._probe_until = 0.0

    def _failed(self, exc: BaseException) -> None:
        timeout = is_timeout(exc)
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        with self._lock:
            self._n["timeouts" if timeout else "errors"] += 1
            self._last_error = f"timeout after {self._op_timeout * 1e3:g} ms" if timeout else text
            self._probe_until = 0.0
            if is_error_reply(exc):
                # The server answered: it is up, only this command was refused.
                self._healthy = True
                return
            self._healthy = False
            self._skip_until = time.monotonic() + self._backoff

    def _add(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._n[counter] += n

    def _count_batched(self, n: int) -> None:
        self._add("batched", n)


__all__ = ["RedisCacheTier"]
