"""The Redis cache tier's connections: one client per event loop, its Lua
scripts, and the lanes that coalesce bursts of gets and sets.

Bursts: a redis-py command costs about 100 µs, mostly client CPU, so a
thousand concurrent misses sent one by one would take longer than any
sensible ``op_timeout_s`` (and open a thousand connections). Per event loop,
up to 4 gets and 4 sets run at once, each alone; calls arriving while those
are busy are sent together by the next one to finish: gets as one ``MGET``
(a few µs per key, and one copy of a hot key), sets as one pipeline. A lone
call never waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
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

_INVALIDATE_BATCH = 512
_LANE_WIDTH = 4
_MAX_GET_BATCH = 512
_MAX_SET_BATCH = 128
_SCAN_COUNT = 1000
_MISS = (False, None)

# KEYS[1] the value key, KEYS[2] the invalidation-epoch hash, KEYS[3] the
# prefix-epoch hash, KEYS[4..] index keys; ARGV: payload, ttl ms, member, since
# ('' = not checked), group ('' = none). Returns 0, storing nothing, if an
# invalidation of one of its indexes (or a clear, field '*'), or of a prefix
# of its group, took an epoch above `since` (the counter read with the
# value's GET). The prefixes are checked by whichever is fewer: the hash's
# fields, or the prefixes of the group's name.
_SET_AND_INDEX = """
if ARGV[4] ~= '' then
  local since = tonumber(ARGV[4])
  if tonumber(redis.call('HGET', KEYS[2], '*') or '0') > since then return 0 end
  for i = 4, #KEYS do
    if tonumber(redis.call('HGET', KEYS[2], KEYS[i]) or '0') > since then return 0 end
  end
  local group = ARGV[5]
  local n = group ~= '' and redis.call('HLEN', KEYS[3]) or 0
  if n > 0 and n < #group then
    local all = redis.call('HGETALL', KEYS[3])
    for i = 1, #all, 2 do
      local p = all[i]
      if string.sub(group, 1, #p) == p and tonumber(all[i + 1]) > since then return 0 end
    end
  elseif n > 0 then
    for len = 1, #group do
      local e = redis.call('HGET', KEYS[3], string.sub(group, 1, len))
      if e and tonumber(e) > since then return 0 end
    end
  end
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 4, #KEYS do
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
# epoch for the index before removing anything), and optionally a channel and
# a message, published once the index is empty: other processes then hear of
# the invalidation in the same round trip that removed the values, and never
# before they are gone.
# Returns {values unlinked, members left in the index, 1 if it published}.
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
local left = redis.call('ZCARD', KEYS[1])
local published = 0
if left == 0 and ARGV[4] and ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  published = 1
end
return {removed, left, published}
"""


# KEYS[1] the epoch counter, KEYS[2] the prefix-epoch hash; ARGV[1] a prefix:
# takes the next epoch for the prefix (see _SET_AND_INDEX).
_TAKE_PREFIX_EPOCH = """
return redis.call('HSET', KEYS[2], ARGV[1], redis.call('INCR', KEYS[1]))
"""


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

    __slots__ = ("count_batched", "inflight", "max_batch", "op_timeout", "queue", "run", "tasks")

    def __init__(
        self, run: Any, max_batch: int, op_timeout: float, count_batched: Callable[[int], None]
    ):
        self.run = run  # async (items) -> list of results or Exception instances
        self.max_batch = max_batch
        self.op_timeout = op_timeout
        self.count_batched = count_batched  # the tier's "batched" counter
        self.inflight = 0
        self.queue: list[tuple[Any, asyncio.Future[Any]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: Any) -> Any:
        """Runs ``item`` on this lane; raises what Redis raised."""
        if self.inflight < _LANE_WIDTH:
            self.inflight += 1
            try:
                result = (await self.run([item]))[0]
            finally:
                self.inflight -= 1
                if self.queue:
                    self._launch()
        else:
            fut = asyncio.get_running_loop().create_future()
            self.queue.append((item, fut))
            result = await fut
        if isinstance(result, Exception):
            raise result
        return result

    def _launch(self) -> None:
        batch, self.queue = self.queue[: self.max_batch], self.queue[self.max_batch :]
        self.inflight += 1
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_batch(self, batch: list[Any]) -> None:
        relaunch = True
        try:
            try:
                async with asyncio.timeout(self.op_timeout):
                    results = await self.run([item for item, _ in batch])
            except Exception as e:  # delivered to each waiter, which counts it
                results = [e] * len(batch)
            self.count_batched(len(batch))
            for (_, fut), r in zip(batch, results, strict=True):
                if not fut.done():  # its caller may have timed out already
                    fut.set_result(r)
        except BaseException:  # cancelled: the loop is shutting down
            relaunch = False
            for _, fut in batch + self.queue:
                fut.cancel()
            self.queue.clear()
            raise
        finally:
            self.inflight -= 1
            if relaunch and self.queue:
                self._launch()


class _Conn:
    """One event loop's client, its scripts and its coalescing lanes."""

    __slots__ = (
        "client",
        "epoch_key",
        "epochs_key",
        "gets",
        "invalidate",
        "prefix_epoch",
        "prefix_epochs_key",
        "set_and_index",
        "sets",
    )

    def __init__(
        self, client: Any, prefix: str, op_timeout: float, count_batched: Callable[[int], None]
    ):
        self.client = client
        # The invalidation counter and, per index ('*' for clear), the epoch
        # its last invalidation took; per invalidated prefix of step names,
        # the epoch it took (see _SET_AND_INDEX).
        self.epoch_key = prefix + "e"
        self.epochs_key = prefix + "ie"
        self.prefix_epochs_key = prefix + "pe"
        self.set_and_index = client.register_script(_SET_AND_INDEX)
        self.invalidate = client.register_script(_INVALIDATE_BATCH_SCRIPT)
        self.prefix_epoch = client.register_script(_TAKE_PREFIX_EPOCH)
        self.gets = _Lane(self._run_gets, _MAX_GET_BATCH, op_timeout, count_batched)
        self.sets = _Lane(self._run_sets, _MAX_SET_BATCH, op_timeout, count_batched)

    async def _run_gets(self, names: list[str]) -> list[Any]:
        """(value, invalidation counter) per name, in one MGET."""
        if len(names) == 1:
            value, epoch = await self.client.mget(names[0], self.epoch_key)
            return [(value, epoch)]
        unique = list(dict.fromkeys(names))  # a hot key asked for by many callers
        *values, epoch = await self.client.mget(*unique, self.epoch_key)
        found = dict(zip(unique, values, strict=True))
        return [(found[n], epoch) for n in names]

    async def _run_sets(
        self, items: list[tuple[str, bytes, int, list[str], str, str]]
    ) -> list[Any]:
        """True (stored), False (refused: an invalidation since) or an error.
        An item: value key, payload, ttl ms, index keys, since ('' = not
        checked), group ('' = none)."""
        if len(items) == 1:
            name, payload, ttl_ms, index_keys, since, group = items[0]
            if index_keys or since:
                stored = await self.set_and_index(
                    keys=[name, self.epochs_key, self.prefix_epochs_key, *index_keys],
                    args=[payload, ttl_ms, _member(name), since, group],
                )
                return [int(stored) == 1]
            await self.client.set(name, payload, px=ttl_ms)
            return [True]
        results: list[Any] = [None] * len(items)
        todo = list(range(len(items)))
        for _ in range(2):  # a second pass after reloading a flushed script
            async with self.client.pipeline(transaction=False) as pipe:
                for i in todo:
                    name, payload, ttl_ms, index_keys, since, group = items[i]
                    if index_keys or since:
                        pipe.evalsha(
                            self.set_and_index.sha,
                            3 + len(index_keys),
                            name,
                            self.epochs_key,
                            self.prefix_epochs_key,
                            *index_keys,
                            payload,
                            ttl_ms,
                            _member(name),
                            since,
                            group,
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


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | RedisTimeoutError)


def is_error_reply(exc: BaseException) -> bool:
    """An error reply from a live server (it is up; only this command failed)."""
    return isinstance(exc, ResponseError)


def check_url(url: str) -> None:
    """Raises on a malformed redis-py URL."""
    parse_url(url)


def new_client(url: str) -> Any:
    """A ``redis.asyncio`` client for ``url`` with no retries inside redis-py:
    one attempt per call, bounded by the tier's timeout; after a failure the
    tier's back-off decides when to try again."""
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))


__all__ = ["check_url", "is_error_reply", "is_timeout", "new_client", "redact_url"]
