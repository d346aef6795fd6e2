"""The shared (L2) result-cache tier, kept in Redis.

Every process that points a ``RedisCacheTier`` at the same Redis (and the same
``prefix``) shares one cache: a result computed by one worker is a hit for all
of them, and an invalidation by tag, by group (a step's name) or by a prefix
of step names from any process removes the entries for every process. The
executor consults this tier on its slow path only, after a miss in its
in-process (L1) cache.

Layout in Redis (``P`` is ``prefix``, ``"caudal:"`` by default)
----------------------------------------------------------------
- ``P v:<hex key>`` — one cached value: a string with the entry's TTL
  (``SET ... PX``). ``<hex key>`` is the caller's key in lowercase hex (the
  16-byte ``caudal._core.cache_key`` gives 32 characters).
- ``P e`` and ``P ie`` — the invalidation counter and, per index (``*``
  for clear), the value its last invalidation took (no TTL); a set with
  ``since`` (the counter read by ``get_versioned``) is refused if a
  covering invalidation took a higher value.
- ``P pe`` — per invalidated prefix of step names, the value its last
  ``invalidate_prefix`` took (no TTL; one field per distinct prefix): a set
  with ``since`` and a group under that prefix is refused the same way, also
  when the group had no index yet.
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
  key is a no-op) and pruned once its expiry passes. Invalidating a prefix
  takes its epoch in ``P pe``, then SCANs ``P g:<prefix>*`` (glob characters
  escaped) and invalidates each group index found.

Value format and trust: :mod:`caudal.integrations.redis.wire`.

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

Bursts of gets and sets are coalesced per event loop
(:mod:`caudal.integrations.redis.connection`).

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

Modules: ``tier`` (:class:`RedisCacheTier`: gets, sets, health, stats),
``invalidation`` (delivering, queueing and hearing invalidations),
``connection`` (clients, scripts, coalescing), ``wire`` (the value format).
redis-py is imported with this package; nothing in caudal imports it unless
the user does (``pip install 'caudal[redis]'``).
"""

from caudal._invalidation import InvalidationResult
from caudal.integrations.redis.connection import redact_url
from caudal.integrations.redis.tier import RedisCacheTier
from caudal.integrations.redis.wire import (
    FORMAT_VERSION,
    SECRET_ENV,
    PickleSerializer,
    Serializer,
)

__all__ = [
    "FORMAT_VERSION",
    "SECRET_ENV",
    "InvalidationResult",
    "PickleSerializer",
    "RedisCacheTier",
    "Serializer",
    "redact_url",
]
