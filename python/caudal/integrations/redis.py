"""The shared (L2) result-cache tier, kept in Redis.

Every process that points a ``RedisCacheTier`` at the same Redis (and the same
``prefix``) shares one cache: a result computed by one worker is a hit for all
of them, and an invalidation by tag or by group (step name) from any process
removes the entries for every process. The executor consults this tier on its
slow path only, after a miss in its in-process (L1) cache.

Layout in Redis (``P`` is ``prefix``, ``"caudal:"`` by default)
----------------------------------------------------------------
- ``P v:<hex key>`` — one cached value: a string with the entry's TTL
  (``SET ... PX``). ``<hex key>`` is the caller's key in lowercase hex (the
  16-byte ``caudal._core.cache_key`` gives 32 characters).
- ``P e`` and ``P ie`` — the invalidation counter and, per index (``*``
  for clear), the value its last invalidation took (no TTL); a set with
  ``since`` (the counter read by ``get_versioned``) is refused if a
  covering invalidation took a higher value.
- ``P t:<tag>`` and ``P g:<group>`` — the tag and group indexes: sorted sets
  whose members are ``<hex key>`` and whose scores are the member's expiry
  time (Unix ms, Redis's own clock). A set stores the value and adds it to
  its indexes in one Lua script, so the index never misses a stored value;
  the same script drops members that have expired (``ZREMRANGEBYSCORE``) and
  extends the index's own TTL to at least the new entry's, so an index lives
  exactly as long as its longest-lived member and busy tags do not grow
  without bound.
- Invalidating a tag or group pops its members in batches (``ZPOPMIN``, 512
  at a time) and ``UNLINK``s their values, in a Lua script per batch; the
  count returned is the number of values that still existed. Other indexes
  may keep a member whose value is gone; it is harmless (unlinking a missing
  key is a no-op) and pruned once its expiry passes.

Value format (version 2)
------------------------
::

    byte 0      0x02  format version
    byte 1      codec: 0x4A type-exact JSON, 0x50 pickle (authenticated
                entries only), 0x53 the tier's own serializer
    byte 2      0x00 no tag, or 0x01: a 32-byte HMAC-SHA256 tag follows,
                over the value key, bytes 0..2 and the frame
    then        a ``caudal._core.compress`` frame: 0xC0 raw, 0xC1 zstd

With compression off the raw frame is built directly (no call into C++);
with it on, values longer than ``compression_threshold`` are compressed when
that makes them smaller (large ones with the GIL released). A reader accepts
both frames whatever its own setting. Anything that does not parse is a
corrupt entry; one that is not authenticated (below) an unauthenticated
one: both are misses, counted, and the key is deleted.

Trust: with a ``secret`` (or ``$CAUDAL_CACHE_SECRET``) every entry and
invalidation message is tagged and verified before it is decoded; values
that JSON carries exactly (same types back: no tuples, sets, int dict keys,
int subclasses, ...) are JSON, the others pickles. Without a secret nothing
is pickled or unpickled: only JSON-exact values are shared. A custom
``serializer`` is used for every value (authenticated with a secret).

Failure policy
--------------
The tier is an optimisation; Redis being down or slow must cost the caller
at most ``op_timeout_s`` once, and never an exception:

- Every call waits at most ``op_timeout_s`` for Redis
  (``asyncio.timeout``; ``invalidate_*`` and ``clear`` make one bounded
  round trip per batch of keys).
- A timeout or a connection failure is counted (``timeouts`` / ``errors``),
  recorded in ``last_error``, marks the tier unhealthy and makes the call
  return a miss (``get``) or ``False`` (``set``).
- An invalidation that cannot reach Redis is queued, never dropped: it
  returns 0 with ``.queued`` True; the queue is delivered as soon as Redis
  answers (a background task per loop, and any call first), and until then
  ``get`` misses and ``set`` writes nothing.
- While unhealthy, calls do not touch Redis for ``reconnect_backoff_s``
  (counted as ``skipped``). After that one call is let through as a probe
  (the others keep skipping until it ends, or for ``op_timeout_s`` at
  most); its success marks the tier healthy again. redis-py reconnects by
  itself on that call.
- An error *reply* from a live server (e.g. ``OOM`` when Redis is full) is
  counted in ``errors`` and fails that call only: the server answered, so
  the tier counts as healthy.
- A value that cannot be stored is not (counted as ``unserializable``); the
  caller still has its result.
- ``asyncio.CancelledError`` always propagates.
- Programming errors (a key that is not bytes, a TTL that is not positive)
  raise at once, as usual.

Other processes' in-process caches: every delivered invalidation is
published on ``P invalidations`` after Redis removed the values; a tier with
listeners (``add_invalidation_listener``; ``ExecutorCore`` adds its L1)
subscribes on a connection of its own and passes on what other tiers
publish, and ``("resync", None)`` after a lost subscription came back.

Bursts
------
A redis-py command costs about 100 µs, mostly client CPU, so a thousand
concurrent misses sent one by one would take longer than any sensible
``op_timeout_s`` (and open a thousand connections). Per event loop, up to 4 gets and 4 sets
run at once, each alone; calls arriving while those are busy are sent
together by the next one to finish: gets as one ``MGET`` (a few µs per key,
and one copy of a hot key), sets as one pipeline. A lone call never waits.

Stats
-----
``stats()``: ``hits``, ``misses`` (every ``get`` that returned no value,
whatever the reason, so ``hits + misses`` is the number of gets), ``sets``
(values stored), ``errors`` (failed calls other than timeouts),
``timeouts``, ``skipped`` (calls not sent during the back-off),
``corrupt``, ``unauthenticated``, ``stale_sets`` (sets refused: an
invalidation came after their ``since`` read), ``unserializable``, ``invalidations``
(values removed by ``invalidate_*`` and ``clear``), ``invalidations_queued``,
``invalidations_delivered``, ``pending_invalidations``,
``invalidations_heard``, ``invalidation_messages_rejected``, ``resyncs``,
``bytes_written`` / ``bytes_read`` (stored sizes), ``compressed_sets``,
``batched`` (calls sent in a coalesced batch), ``healthy``, ``last_error``,
``url`` (password redacted), ``prefix``, ``compression``, ``clients`` (event
loops with a live client), ``authenticated``, ``subscribed``.

Event loops and threads
-----------------------
A ``redis.asyncio`` client belongs to the event loop it first ran on. The
tier therefore creates one client (with its own connection pool) per running
event loop, lazily, in a dictionary keyed weakly by the loop, so one tier —
and an ``ExecutorCore`` holding it — can serve loops in several threads.
Health and counters are shared by all loops (Redis is one server).
``close()`` closes the client of the loop it is awaited on: call it on every
loop that used the tier before that loop ends (``asyncio.run`` ends the loop
as soon as the main coroutine returns), or redis-py reports the open
connections as ``ResourceWarning``. A ``client=`` passed in is used as-is on
every loop (it must belong to the one loop that uses the tier) and is
never closed by the tier.

Deployment notes: needs Redis >= 5 (``ZPOPMIN``, script effects
replication); a standalone server or a Sentinel-managed primary. The
invalidation script touches value keys it finds in an index, so on Redis
Cluster use a prefix with a hash tag (``"{caudal}:"``) to keep everything
in one slot. Prefixes of tiers sharing a database must not be prefixes of
each other (``clear()`` of ``"a:"`` would clear ``"a:b:"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import os
import pickle
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:
    import redis.asyncio as aioredis
    from redis.asyncio.connection import parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError, ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as e:  # pragma: no cover - exercised only without redis-py
    raise ImportError(
        "caudal.integrations.redis needs redis-py >= 5: pip install 'caudal[redis]'"
    ) from e

from caudal import _core
from caudal._invalidation import InvalidationResult
from caudal._trust import hmac_tag, json_bytes, secret_bytes, tags_equal

__all__ = [
    "FORMAT_VERSION",
    "SECRET_ENV",
    "InvalidationResult",
    "PickleSerializer",
    "RedisCacheTier",
    "Serializer",
    "redact_url",
]

FORMAT_VERSION = 0x02
_FRAME_RAW = 0xC0
_FRAME_ZSTD = 0xC1
_CODEC_JSON = 0x4A  # "J": type-exact JSON (None, bool, int, float, str, list, str-keyed dict)
_CODEC_PICKLE = 0x50  # "P": pickle protocol 5, only ever read from an authenticated entry
_CODEC_CUSTOM = 0x53  # "S": the tier's own serializer (serializer=)
_AUTH_NONE = 0x00
_AUTH_HMAC = 0x01  # HMAC-SHA256 tag of 32 bytes follows
_TAG_LEN = 32
_TAG_CONTEXT = b"caudal-cache-v2\0"
SECRET_ENV = "CAUDAL_CACHE_SECRET"

_INVALIDATE_BATCH = 512
_LANE_WIDTH = 4
_MAX_GET_BATCH = 512
_MAX_SET_BATCH = 128
_SCAN_COUNT = 1000
_MISS = (False, None)

# KEYS[1] the value key, KEYS[2] the invalidation-epoch hash, KEYS[3..] index
# keys; ARGV: payload, ttl ms, member, since ('' = not checked). Returns 0,
# storing nothing, if an invalidation of one of its indexes (or a clear, field
# '*') took an epoch above `since` (the counter read with the value's GET).
_SET_AND_INDEX = """
if ARGV[4] ~= '' then
  local since = tonumber(ARGV[4])
  if tonumber(redis.call('HGET', KEYS[2], '*') or '0') > since then return 0 end
  for i = 3, #KEYS do
    if tonumber(redis.call('HGET', KEYS[2], KEYS[i]) or '0') > since then return 0 end
  end
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 3, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. now)
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
"""

# KEYS[1] an index, KEYS[2] the epoch counter, KEYS[3] the epoch hash; ARGV:
# value-key prefix, batch size, "1" for the first batch (which takes the next
# epoch for the index before removing anything).
# Returns {values unlinked, members left in the index}.
_INVALIDATE_BATCH_SCRIPT = """
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[3], KEYS[1], redis.call('INCR', KEYS[2]))
end
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[2]))
local removed = 0
if #popped > 0 then
  local keys = {}
  for i = 1, #popped, 2 do
    keys[#keys + 1] = ARGV[1] .. popped[i]
  end
  removed = redis.call('UNLINK', unpack(keys))
end
return {removed, redis.call('ZCARD', KEYS[1])}
"""


class Serializer(Protocol):
    def dumps(self, value: Any, /) -> bytes: ...
    def loads(self, data: bytes, /) -> Any: ...


class PickleSerializer:
    """The default serializer: ``pickle`` protocol 5."""

    protocol = 5

    def dumps(self, value: Any, /) -> bytes:
        return pickle.dumps(value, protocol=self.protocol)

    def loads(self, data: bytes, /) -> Any:
        return pickle.loads(data)


class _CorruptEntry(Exception):
    pass


class _Unauthenticated(Exception):
    pass


class _Lane:
    """Coalesces one kind of command (gets, or sets) on one event loop.

    Up to ``_LANE_WIDTH`` calls run at once, each on its own, with no added
    latency. Calls arriving while the lane is full wait in ``queue``; the
    next call to finish sends everything waiting as one batch (one MGET, or
    one pipeline), in a task of its own. A burst of N calls thus costs a few
    round trips and at most ``_LANE_WIDTH`` connections instead of N of each
    — a redis-py command costs ~100 µs, mostly client CPU, but an MGET a few
    µs per key, so a burst of a thousand misses would otherwise outlast any
    sane ``op_timeout_s``.
    """

    __slots__ = ("inflight", "queue", "run", "tasks")

    def __init__(self, run: Any):
        self.run = run  # async (items) -> list of results or Exception instances
        self.inflight = 0
        self.queue: list[tuple[Any, asyncio.Future[Any]]] = []
        self.tasks: set[asyncio.Task[None]] = set()


class _Conn:
    """One event loop's client, its scripts and its coalescing lanes."""

    __slots__ = ("client", "epoch_key", "epochs_key", "gets", "invalidate", "set_and_index", "sets")

    def __init__(self, client: Any, prefix: str):
        self.client = client
        # The invalidation counter and, per index ('*' for clear), the epoch
        # its last invalidation took (see _SET_AND_INDEX).
        self.epoch_key = prefix + "e"
        self.epochs_key = prefix + "ie"
        self.set_and_index = client.register_script(_SET_AND_INDEX)
        self.invalidate = client.register_script(_INVALIDATE_BATCH_SCRIPT)
        self.gets = _Lane(self._run_gets)
        self.sets = _Lane(self._run_sets)

    async def _run_gets(self, names: list[str]) -> list[Any]:
        """(value, invalidation counter) per name, in one MGET."""
        if len(names) == 1:
            value, epoch = await self.client.mget(names[0], self.epoch_key)
            return [(value, epoch)]
        unique = list(dict.fromkeys(names))  # a hot key asked for by many callers
        *values, epoch = await self.client.mget(*unique, self.epoch_key)
        found = dict(zip(unique, values, strict=True))
        return [(found[n], epoch) for n in names]

    async def _run_sets(self, items: list[tuple[str, bytes, int, list[str], str]]) -> list[Any]:
        """True (stored), False (refused: an invalidation since) or an error."""
        if len(items) == 1:
            name, payload, ttl_ms, index_keys, since = items[0]
            if index_keys or since:
                stored = await self.set_and_index(
                    keys=[name, self.epochs_key, *index_keys],
                    args=[payload, ttl_ms, _member(name), since],
                )
                return [int(stored) == 1]
            await self.client.set(name, payload, px=ttl_ms)
            return [True]
        results: list[Any] = [None] * len(items)
        todo = list(range(len(items)))
        for _ in range(2):  # a second pass after reloading a flushed script
            async with self.client.pipeline(transaction=False) as pipe:
                for i in todo:
                    name, payload, ttl_ms, index_keys, since = items[i]
                    if index_keys or since:
                        pipe.evalsha(
                            self.set_and_index.sha,
                            2 + len(index_keys),
                            name,
                            self.epochs_key,
                            *index_keys,
                            payload,
                            ttl_ms,
                            _member(name),
                            since,
                        )
                    else:
                        pipe.set(name, payload, px=ttl_ms)
                replies = await pipe.execute(raise_on_error=False)
            for i, r in zip(todo, replies, strict=True):
                results[i] = r if isinstance(r, Exception) else r is True or int(r) == 1
            todo = [i for i in todo if isinstance(results[i], NoScriptError)]
            if not todo:
                break
            self.set_and_index.sha = await self.client.script_load(_SET_AND_INDEX)
        return results


def _member(value_key: str) -> str:
    return value_key[value_key.rindex(":") + 1 :]


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo or ``?password=``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | RedisTimeoutError)


class RedisCacheTier:
    """A cache tier in Redis shared by every process using the same prefix.

    All methods are coroutines except ``stats()``; none of them raises because
    Redis is down, slow or returns garbage (see the module docstring for the
    failure policy, key layout and value format).

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
            parse_url(url)  # a malformed URL fails here, not on the first call
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
        self._op_timeout = float(op_timeout_s)
        self._backoff = float(reconnect_backoff_s)
        self._given: _Conn | None = _Conn(client, prefix) if client is not None else None
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
        # order: ("index", key) or ("clear", None). Delivered before any other
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
                raw, epoch_raw = await self._submit(conn.gets, name, _MAX_GET_BATCH)
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
            value = self._decode(name, raw)
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
        of its tags, its group or a clear came after that read (counted in
        ``stale_sets``)."""
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
            payload, compressed = self._encode(name, value)
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
                stored = await self._submit(
                    conn.sets,
                    (name, payload, ttl_ms, index_keys, "" if since is None else str(int(since))),
                    _MAX_SET_BATCH,
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
        """Removes every entry stored with ``group`` (a step's name); same
        result and queueing as :meth:`invalidate_tag`."""
        return await self._invalidate(("index", self._group_key(group)))

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

    # ------------------------------------------- other processes' caches
    def add_invalidation_listener(self, listener: Any) -> None:
        """Calls ``listener(kind, name)`` for every invalidation made through
        this tier or heard from another process's tier on the same Redis and
        prefix: ``("tag", tag)``, ``("group", step_name)``, ``("clear", None)``,
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
            if kind not in ("tag", "group", "clear") or not (name is None or isinstance(name, str)):
                raise ValueError(f"unknown invalidation {kind!r}")
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

    # ------------------------------------------------------------ values
    def _encode(self, name: str, value: Any) -> tuple[bytes, bool]:
        data: Any = None
        if self._custom:
            codec, data = _CODEC_CUSTOM, self._serializer.dumps(value)
        else:
            data = json_bytes(value)
            if data is not None:
                codec = _CODEC_JSON
        if data is None:
            if self._secret is None:
                raise TypeError(
                    f"a {type(value).__name__} is not exactly JSON, and a pickle needs a "
                    f"secret (RedisCacheTier(secret=...) or ${SECRET_ENV}): not shared"
                )
            codec, data = _CODEC_PICKLE, self._serializer.dumps(value)
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"serializer.dumps returned {type(data).__name__}, not bytes")
        compressed = False
        if self._compression and len(data) > self._threshold:
            frame = _core.compress(bytes(data), self._threshold, self._level)
            compressed = frame[0] == _FRAME_ZSTD
        else:
            frame = bytes((_FRAME_RAW,)) + data
        if self._secret is None:
            return bytes((FORMAT_VERSION, codec, _AUTH_NONE)) + frame, compressed
        header = bytes((FORMAT_VERSION, codec, _AUTH_HMAC))
        return header + self._tag(name, header, frame) + frame, compressed

    def _tag(self, name: str, header: bytes, frame: Any) -> bytes:
        # Bound to the value's key: a tagged entry copied under another key
        # does not verify.
        return hmac_tag(self._secret or b"", _TAG_CONTEXT, name.encode(), b"\0", header, frame)

    def _decode(self, name: str, raw: bytes) -> Any:
        if len(raw) < 4 or raw[0] != FORMAT_VERSION:
            raise _CorruptEntry(
                f"unknown format version byte 0x{raw[0]:02x}" if raw else "empty entry"
            )
        codec, auth = raw[1], raw[2]
        if codec not in (_CODEC_JSON, _CODEC_PICKLE, _CODEC_CUSTOM):
            raise _CorruptEntry(f"unknown codec byte 0x{codec:02x}")
        view = memoryview(raw)
        if auth == _AUTH_HMAC:
            if len(raw) < 4 + _TAG_LEN:
                raise _CorruptEntry("truncated tag")
            frame = view[3 + _TAG_LEN :]
            if self._secret is not None:
                if not tags_equal(self._tag(name, raw[:3], frame), raw[3 : 3 + _TAG_LEN]):
                    raise _Unauthenticated("its tag does not verify with this tier's secret")
            elif codec == _CODEC_PICKLE:
                raise _Unauthenticated("a pickle, and this tier has no secret to verify it")
        elif auth == _AUTH_NONE:
            frame = view[3:]
            if self._secret is not None:
                raise _Unauthenticated("no tag, and this tier requires one (it has a secret)")
            if codec == _CODEC_PICKLE:
                raise _Unauthenticated("an unauthenticated pickle")
        else:
            raise _CorruptEntry(f"unknown auth byte 0x{auth:02x}")
        kind = frame[0]
        if kind == _FRAME_RAW:
            body: Any = frame[1:]
        elif kind == _FRAME_ZSTD:
            body = _core.decompress(bytes(frame))
        else:
            raise _CorruptEntry(f"unknown frame byte 0x{kind:02x}")
        if codec == _CODEC_JSON:
            return json.loads(bytes(body))
        if codec == _CODEC_PICKLE:
            return pickle.loads(body)
        if not self._custom:
            raise _CorruptEntry("written with a custom serializer; this tier has none")
        return self._serializer.loads(bytes(body))

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
        rest = index_key[len(self._prefix) :]
        return ("tag" if rest.startswith("t:") else "group"), rest[2:]

    async def _run_invalidation(self, conn: _Conn, item: tuple[str, str | None]) -> int:
        """One invalidation, then its message to other processes' in-process
        caches (after Redis no longer holds the values, so none of them reads
        a removed value back); each round trip bounded; raises on failure."""
        removed = await self._remove(conn, item)
        async with asyncio.timeout(self._op_timeout):
            await conn.client.publish(self._channel, self._message(*self._listener_args(item)))
        return removed

    async def _remove(self, conn: _Conn, item: tuple[str, str | None]) -> int:
        kind, index_key = item
        if kind == "clear":
            return await self._clear_now(conn)
        assert index_key is not None
        removed = 0
        rounds_left: int | None = None
        while True:
            async with asyncio.timeout(self._op_timeout):
                n, left = await conn.invalidate(
                    keys=[index_key, conn.epoch_key, conn.epochs_key],
                    args=[
                        self._value_prefix,
                        _INVALIDATE_BATCH,
                        "1" if rounds_left is None else "",
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
                return removed

    async def _clear_now(self, conn: _Conn) -> int:
        pattern = _glob_escape(self._prefix) + "*"
        value_prefix = self._value_prefix.encode()
        # The epoch first (writes that read the counter before now are then
        # refused), and the epoch keys survive the clear.
        keep = {conn.epoch_key.encode(), conn.epochs_key.encode()}
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

    # ------------------------------------------------------- coalescing
    async def _submit(self, lane: _Lane, item: Any, max_batch: int) -> Any:
        """Runs ``item`` on ``lane`` (see ``_Lane``); raises what Redis raised."""
        if lane.inflight < _LANE_WIDTH:
            lane.inflight += 1
            try:
                result = (await lane.run([item]))[0]
            finally:
                lane.inflight -= 1
                if lane.queue:
                    self._launch(lane, max_batch)
        else:
            fut = asyncio.get_running_loop().create_future()
            lane.queue.append((item, fut))
            result = await fut
        if isinstance(result, Exception):
            raise result
        return result

    def _launch(self, lane: _Lane, max_batch: int) -> None:
        batch, lane.queue = lane.queue[:max_batch], lane.queue[max_batch:]
        lane.inflight += 1
        task = asyncio.get_running_loop().create_task(self._run_batch(lane, batch, max_batch))
        lane.tasks.add(task)
        task.add_done_callback(lane.tasks.discard)

    async def _run_batch(self, lane: _Lane, batch: list[Any], max_batch: int) -> None:
        relaunch = True
        try:
            try:
                async with asyncio.timeout(self._op_timeout):
                    results = await lane.run([item for item, _ in batch])
            except Exception as e:  # delivered to each waiter, which counts it
                results = [e] * len(batch)
            self._add("batched", len(batch))
            for (_, fut), r in zip(batch, results, strict=True):
                if not fut.done():  # its caller may have timed out already
                    fut.set_result(r)
        except BaseException:  # cancelled: the loop is shutting down
            relaunch = False
            for _, fut in batch + lane.queue:
                fut.cancel()
            lane.queue.clear()
            raise
        finally:
            lane.inflight -= 1
            if relaunch and lane.queue:
                self._launch(lane, max_batch)

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
                    conn = _Conn(self._new_client(), self._prefix)
                    try:
                        self._conns[loop] = conn
                    except TypeError:  # a loop type that cannot be weakly referenced
                        self._conns = dict(self._conns.items())
                        self._conns[loop] = conn
        return conn

    def _new_client(self) -> Any:
        # No retries inside redis-py: one attempt per call, bounded by our
        # timeout; after a failure the back-off decides when to try again.
        return aioredis.Redis.from_url(self._url, retry=Retry(NoBackoff(), 0))

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
        timeout = _is_timeout(exc)
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        with self._lock:
            self._n["timeouts" if timeout else "errors"] += 1
            self._last_error = f"timeout after {self._op_timeout * 1e3:g} ms" if timeout else text
            self._probe_until = 0.0
            if isinstance(exc, ResponseError):
                # The server answered: it is up, only this command was refused.
                self._healthy = True
                return
            self._healthy = False
            self._skip_until = time.monotonic() + self._backoff

    def _add(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._n[counter] += n
