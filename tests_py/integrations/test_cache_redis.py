"""The shared (L2) cache tier against a real redis-server (see conftest.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

import caudal
from _servers import free_port
from caudal import _core
from caudal.integrations.redis import RedisCacheTier, redact_url

HERE = Path(__file__).resolve().parents[1]  # tests_py
# The secret of the tiers made by make_tier (and of the child processes):
# entries are authenticated, so any value (pickle) can be shared.
SECRET = b"test-secret-0123456789abcdef"


@dataclasses.dataclass
class Point:
    x: int
    y: float


def key(value, ns="step") -> bytes:
    return _core.cache_key(value, ns)


# Tests run on busy machines: a live server's round trip may take far longer
# than the tier's 50 ms default. Tiers get LIVE_TIMEOUT_S unless a test is
# about timeouts; those that make a frozen server time out use FROZEN_TIMEOUT_S
# (waited out once per frozen call, still long for a live server). A back-off
# a test must act within is BACKOFF_S; one it must see end is waited out.
LIVE_TIMEOUT_S = 10.0
FROZEN_TIMEOUT_S = 1.0
BACKOFF_S = 2.0


@asynccontextmanager
async def no_stall(seconds=30.0):
    """Turns a hang into a failure (a liveness guard, not a timing assertion)."""
    async with asyncio.timeout(seconds):
        yield


async def until(predicate, what: str, seconds: float = 30.0) -> None:
    """Polls ``predicate`` (sync or async) until true; a deadline turns a hang
    into a failure (a liveness guard, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while True:
        got = predicate()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {seconds:g} s")
        await asyncio.sleep(0.01)


async def backoff_over(tier: RedisCacheTier) -> None:
    """Waits until the tier's back-off after its last failure has ended."""
    await asyncio.sleep(max(0.0, tier._skip_until - time.monotonic()) + 0.001)


@pytest.fixture
def prefix():
    return f"ct{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def raw(redis_server):
    client = redis.Redis.from_url(redis_server)
    yield client
    client.close()


@pytest.fixture
async def make_tier(redis_server, prefix):
    """Creates tiers on this test's loop (session server and prefix by default)
    and closes them afterwards."""
    tiers = []

    def make(url=None, **kw):
        kw.setdefault("prefix", prefix)
        kw.setdefault("secret", SECRET)
        kw.setdefault("op_timeout_s", LIVE_TIMEOUT_S)
        tier = RedisCacheTier(url or redis_server, **kw)
        tiers.append(tier)
        return tier

    yield make
    for t in tiers:
        await t.close()


def stored_bytes(raw, tier: RedisCacheTier, k: bytes) -> bytes | None:
    return raw.get(tier._value_key(k))


def frame_of(stored: bytes) -> bytes:
    """The compression frame of a stored entry (after its header and tag)."""
    assert stored[0] == 0x02
    return stored[3 + 32 :] if stored[2] == 0x01 else stored[3:]


# ------------------------------------------------------------------ basics
VALUES = [
    None,
    0,
    -17,
    2**100,
    1.5,
    float("inf"),
    "text",
    "ünïcødé ✓",
    b"\x00\xff bytes",
    bytearray(b"mutable"),
    [1, [2, [3]]],
    (1, "two", 3.0),
    {"a": {"b": [1, 2]}, "c": None},
    {1, 2, 3},
    frozenset({"x"}),
    Point(1, 2.5),
    b"z" * (1 << 20),
]


async def test_round_trip_of_various_values(make_tier):
    tier = make_tier()
    for i, v in enumerate(VALUES):
        assert await tier.set(key(i), v, ttl_s=30)
    for i, v in enumerate(VALUES):
        found, got = await tier.get(key(i))
        assert found, i
        assert got == v and type(got) is type(v)
    s = tier.stats()
    assert s["hits"] == len(VALUES) and s["sets"] == len(VALUES)
    assert s["misses"] == 0 and s["errors"] == 0 and s["healthy"]
    assert s["bytes_read"] == s["bytes_written"] > (1 << 20)


async def test_step_result_round_trips(make_tier):
    tier = make_tier()
    r = caudal.StepResult(name="fetch", output={"rows": [1, 2]}, attempts=2, cache_hit=False)
    await tier.set(key("in", "fetch"), r, ttl_s=30, group="fetch")
    found, got = await tier.get(key("in", "fetch"))
    assert found
    assert (got.name, got.output, got.attempts, got.success) == ("fetch", {"rows": [1, 2]}, 2, True)


async def test_stored_none_is_a_hit_and_absent_key_a_miss(make_tier):
    tier = make_tier()
    await tier.set(key("none"), None, ttl_s=30)
    assert await tier.get(key("none")) == (True, None)
    assert await tier.get(key("absent")) == (False, None)
    s = tier.stats()
    assert (s["hits"], s["misses"]) == (1, 1)


async def test_overwrite_replaces_the_value(make_tier):
    tier = make_tier()
    await tier.set(key(1), "old", ttl_s=30)
    await tier.set(key(1), "new", ttl_s=30)
    assert await tier.get(key(1)) == (True, "new")


async def test_key_layout(make_tier, raw, prefix):
    tier = make_tier()
    k = key("layout")
    await tier.set(k, 1, ttl_s=30, tags=["t1"], group="g1")
    assert raw.exists(f"{prefix}v:{k.hex()}")
    assert raw.zrange(f"{prefix}t:t1", 0, -1) == [k.hex().encode()]
    assert raw.zrange(f"{prefix}g:g1", 0, -1) == [k.hex().encode()]
    stored = raw.get(f"{prefix}v:{k.hex()}")
    assert stored[:3] == b"\x02J\x01" and frame_of(stored) == b"\xc01"  # JSON, tagged


# -------------------------------------------------------------------- TTL
async def test_ttl_expiry(make_tier, raw):
    tier = make_tier()
    await tier.set(key("short"), "v", ttl_s=1, tags=["t"])
    await tier.set(key("long"), "v", ttl_s=60)
    assert 0 < raw.pttl(tier._value_key(key("short"))) <= 1000
    assert await tier.get(key("short")) == (True, "v")
    await until(lambda: not raw.exists(tier._value_key(key("short"))), "the entry to expire")
    assert await tier.get(key("short")) == (False, None)
    assert await tier.get(key("long")) == (True, "v")


async def test_index_lives_as_long_as_its_longest_member(make_tier, raw, prefix):
    tier = make_tier()
    await tier.set(key(1), 1, ttl_s=10, tags=["t"])
    assert 0 < raw.pttl(f"{prefix}t:t") <= 10_000
    await tier.set(key(2), 2, ttl_s=600, tags=["t"])
    assert 10_000 < raw.pttl(f"{prefix}t:t") <= 600_000
    await tier.set(key(3), 3, ttl_s=10, tags=["t"])  # a shorter member does not shorten it
    assert 10_000 < raw.pttl(f"{prefix}t:t") <= 600_000


async def test_expired_members_are_pruned_from_indexes(make_tier, raw, prefix):
    tier = make_tier()
    for i in range(5):
        await tier.set(key(i), i, ttl_s=0.05, tags=["busy"], group="g")
    names = [tier._value_key(key(i)) for i in range(5)]
    await until(lambda: raw.exists(*names) == 0, "the members to expire")
    await tier.set(key("fresh"), 0, ttl_s=30, tags=["busy"], group="g")
    assert raw.zrange(f"{prefix}t:busy", 0, -1) == [key("fresh").hex().encode()]
    assert raw.zcard(f"{prefix}g:g") == 1


async def test_bad_arguments_raise(make_tier):
    tier = make_tier()
    with pytest.raises(TypeError):
        await tier.get("not bytes")
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            await tier.set(key(1), 1, ttl_s=bad)
    with pytest.raises(TypeError):
        await tier.set(key(1), 1, ttl_s=1, tags=[3])
    with pytest.raises(ValueError):
        RedisCacheTier("http://example.invalid/")
    with pytest.raises(ValueError):
        RedisCacheTier(prefix="")
    assert tier.stats()["errors"] == 0


# ----------------------------------------------------- tags and groups
async def test_invalidate_tag_and_group(make_tier, raw, prefix):
    tier = make_tier()
    await tier.set(key("a"), "a", ttl_s=30, tags=["x"], group="stepA")
    await tier.set(key("b"), "b", ttl_s=30, tags=["x", "y"], group="stepB")
    await tier.set(key("c"), "c", ttl_s=30, tags="y", group="stepA")  # a str is one tag
    await tier.set(key("d"), "d", ttl_s=30)

    assert await tier.invalidate_tag("x") == 2
    assert [(await tier.get(key(k)))[0] for k in "abcd"] == [False, False, True, True]
    assert not raw.exists(f"{prefix}t:x")
    # "b" was also under "y": its stale member is harmless.
    assert await tier.invalidate_tag("y") == 1
    assert (await tier.get(key("c")))[0] is False

    await tier.set(key("e"), "e", ttl_s=30, group="stepA")
    await tier.set(key("f"), "f", ttl_s=30, group="stepB")
    assert await tier.invalidate_group("stepA") == 1
    assert [(await tier.get(key(k)))[0] for k in "def"] == [True, False, True]
    assert await tier.invalidate_tag("never-used") == 0
    assert await tier.invalidate_group("never-used") == 0
    assert tier.stats()["invalidations"] == 4


async def test_invalidate_prefix_drops_every_group_under_it(make_tier, raw, prefix):
    tier = make_tier()
    for name in ("call_llm", "call_llm_v2", "other", "call"):
        for n in (1, 2):
            await tier.set(key(f"{name}-{n}"), n, ttl_s=30, group=name)
    r = await tier.invalidate_prefix("call_llm")
    assert r == 4 and r.l2 == 4 and not r.queued
    found = {name: (await tier.get(key(f"{name}-1")))[0] for name in ("call_llm", "call_llm_v2")}
    assert found == {"call_llm": False, "call_llm_v2": False}
    assert await tier.get(key("other-1")) == (True, 1)
    assert await tier.get(key("call-2")) == (True, 2)
    assert not raw.exists(f"{prefix}g:call_llm_v2")
    assert await tier.invalidate_prefix("nothing-here") == 0


async def test_glob_characters_in_a_prefix_are_literal(make_tier):
    tier = make_tier()
    names = ("a*b", "a*bc", "axb", "a?", "a[1]x", "a1x", "a\\z", "a\\\\z")
    for name in names:
        await tier.set(key(name), name, ttl_s=30, group=name)
    assert await tier.invalidate_prefix("a*") == 2
    assert await tier.invalidate_prefix("a[1]") == 1
    assert await tier.invalidate_prefix("a?") == 1
    assert await tier.invalidate_prefix("a\\") == 2
    left = [name for name in names if (await tier.get(key(name)))[0]]
    assert left == ["axb", "a1x"]


async def test_invalidate_step_is_exact_and_an_empty_prefix_is_refused(make_tier):
    tier = make_tier()
    await tier.set(key("a"), 1, ttl_s=30, group="call_llm")
    await tier.set(key("b"), 2, ttl_s=30, group="call_llm_v2")
    with pytest.raises(ValueError, match="clear"):
        await tier.invalidate_prefix("")
    with pytest.raises(TypeError, match="prefix"):
        await tier.invalidate_prefix(None)
    assert await tier.invalidate_group("call_llm") == 1
    assert await tier.get(key("b")) == (True, 2)


async def test_invalidate_a_tag_larger_than_one_batch(make_tier):
    tier = make_tier()
    n = 1300  # more than two batches of 512
    await asyncio.gather(*(tier.set(key(i), i, ttl_s=30, tags=["big"]) for i in range(n)))
    await tier.set(key("other"), 0, ttl_s=30, tags=["small"])
    assert await tier.invalidate_tag("big") == n
    assert not any([(await tier.get(key(i)))[0] for i in range(0, n, 97)])
    assert await tier.get(key("other")) == (True, 0)


@pytest.mark.parametrize("size", [3, 1300])  # within one batch; over two batches of 512
async def test_each_invalidation_is_one_message_sent_after_its_values_are_gone(
    make_tier, raw, prefix, redis_server, size
):
    """Other processes learn of an invalidation from one message on the
    tier's channel, whichever round trip sends it (the script that empties
    an index, or a PUBLISH of its own), and never while Redis still holds
    a value it removes: a process that drops its L1 on the message and
    reads Redis again must not read the old value back."""
    tier = make_tier()
    channel = f"{prefix}invalidations"
    heard: list[tuple[bytes, list[bool]]] = []
    names = {"tag": [], "group": [], "prefix": []}

    def listen(ready: threading.Event, stop: threading.Event) -> None:
        client = redis.Redis.from_url(redis_server)
        sub = client.pubsub()
        sub.subscribe(channel)
        ready.set()
        while not stop.is_set():
            msg = sub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if msg is not None:  # which of the values are still there, now
                still = [bool(raw.exists(n)) for kind in names.values() for n in kind]
                heard.append((msg["data"], still))
        sub.close()
        client.close()

    for kind, n in (("tag", size), ("group", size), ("prefix", 2)):
        for i in range(n):
            k = key(f"{kind}-{i}")
            if kind == "tag":
                await tier.set(k, i, ttl_s=30, tags=["big"])
            else:
                await tier.set(k, i, ttl_s=30, group="grp" if kind == "group" else f"pre_{i}")
            names[kind].append(tier._value_key(k))
    assert all(raw.exists(n) for kind in names.values() for n in kind)
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=listen, args=(ready, stop))
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, 10)
        assert await tier.invalidate_tag("big") == size
        assert await tier.invalidate_group("grp") == size
        assert await tier.invalidate_prefix("pre_") == 2
        assert await tier.clear() == 0
        await until(lambda: len(heard) >= 4, "four messages")
        await asyncio.sleep(0.2)  # a duplicate would have arrived by now
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10)
    kinds = [json.loads(data.partition(b":")[2])["k"] for data, _ in heard]
    assert kinds == ["tag", "group", "prefix", "clear"]
    # Each message came after its own values were gone.
    tag_n, group_n = len(names["tag"]), len(names["group"])
    assert not any(heard[0][1][:tag_n])
    assert not any(heard[1][1][: tag_n + group_n])
    assert not any(heard[2][1])


async def test_clear_touches_only_its_prefix(make_tier, raw, prefix):
    # A prefix with glob characters: SCAN's MATCH must take them literally.
    mine = make_tier(prefix=f"{prefix}[ab]*?:")
    other = make_tier(prefix=f"{prefix}other:")
    for i in range(30):
        await mine.set(key(i), i, ttl_s=30, tags=["t"], group="g")
    await other.set(key(0), "kept", ttl_s=30, tags=["t"])
    raw.set(f"{prefix}a-zz:x", "matches the unescaped pattern")
    raw.set(f"{prefix}unrelated", "kept")

    assert await mine.clear() == 30
    # Only the invalidation counter and epochs remain (they outlive a clear).
    left = raw.keys(f"{prefix}\\[ab\\]\\*\\?:*")
    assert sorted(left) == [f"{prefix}[ab]*?:e".encode(), f"{prefix}[ab]*?:ie".encode()]
    assert await other.get(key(0)) == (True, "kept")
    assert raw.get(f"{prefix}a-zz:x") == b"matches the unescaped pattern"
    assert raw.get(f"{prefix}unrelated") == b"kept"
    assert await mine.clear() == 0


# ------------------------------------------------------------ compression
BIG = {"text": "lorem ipsum dolor sit amet " * 4000, "n": list(range(100))}


async def test_compression_on_stores_big_values_smaller(make_tier, raw):
    tier = make_tier(compression=True)
    plain = json.dumps(BIG).encode()
    await tier.set(key("big"), BIG, ttl_s=30)
    stored = stored_bytes(raw, tier, key("big"))
    assert frame_of(stored)[:1] == b"\xc1"
    assert len(stored) < len(plain) // 10
    assert await tier.get(key("big")) == (True, BIG)
    s = tier.stats()
    assert s["compressed_sets"] == 1 and s["bytes_written"] == len(stored)

    # Under the threshold, or incompressible: stored raw.
    await tier.set(key("small"), "small", ttl_s=30)
    assert frame_of(stored_bytes(raw, tier, key("small")))[:1] == b"\xc0"
    noise = os.urandom(8000)
    await tier.set(key("noise"), noise, ttl_s=30)
    assert frame_of(stored_bytes(raw, tier, key("noise")))[:1] == b"\xc0"
    assert await tier.get(key("noise")) == (True, noise)
    assert tier.stats()["compressed_sets"] == 1


async def test_compression_off_stores_raw_frames(make_tier, raw):
    tier = make_tier(compression=False)
    await tier.set(key("big"), BIG, ttl_s=30)
    stored = stored_bytes(raw, tier, key("big"))
    assert frame_of(stored) == b"\xc0" + json.dumps(BIG, separators=(",", ":")).encode()
    assert tier.stats()["compressed_sets"] == 0


async def test_readers_accept_both_frames_whatever_their_setting(make_tier):
    on = make_tier(compression=True, compression_threshold=64)
    off = make_tier(compression=False)
    await on.set(key("from-on"), BIG, ttl_s=30)
    await off.set(key("from-off"), BIG, ttl_s=30)
    for tier in (on, off):
        assert await tier.get(key("from-on")) == (True, BIG)
        assert await tier.get(key("from-off")) == (True, BIG)


# --------------------------------------------------- corrupt, serializers
def sealed(tier, k, codec, frame):
    """An entry as ``tier`` would write it: header, its HMAC tag, ``frame``."""
    header = bytes((0x02, ord(codec), 0x01))
    return header + tier._codec.tag(tier._value_key(k), header, frame) + frame


CORRUPT = {
    "empty": lambda t: b"",
    "version byte only": lambda t: b"\x02",
    "old format version": lambda t: b"\x01\xc0" + pickle.dumps(1),
    "unknown codec": lambda t: b"\x02Q\x00\xc0" + pickle.dumps(1),
    "unknown frame byte": lambda t: sealed(t, key("bad"), "J", b"\xc7abc"),
    "bad zstd frame": lambda t: sealed(t, key("bad"), "J", b"\xc1(\xb5/\xfdgarbage"),
    "truncated zstd": lambda t: sealed(t, key("bad"), "J", _core.compress(b"x" * 5000)[:12]),
    "not JSON": lambda t: sealed(t, key("bad"), "J", b"\xc0{not json"),
    "not a pickle": lambda t: sealed(t, key("bad"), "P", b"\xc0this is not a pickle"),
    "pickle of a missing class": lambda t: sealed(
        t, key("bad"), "P", b"\xc0" + pickle.dumps(Point(1, 2)).replace(b"Point", b"Pnint")
    ),
}


@pytest.mark.parametrize("payload", CORRUPT.values(), ids=CORRUPT.keys())
async def test_corrupt_value_is_a_counted_miss_and_deleted(make_tier, raw, payload):
    tier = make_tier(compression=True)
    name = tier._value_key(key("bad"))
    raw.set(name, payload(tier))
    assert await tier.get(key("bad")) == (False, None)
    s = tier.stats()
    assert (s["corrupt"], s["misses"], s["hits"]) == (1, 1, 0)
    assert s["healthy"] and s["errors"] == 0
    assert "corrupt" in s["last_error"]
    assert not raw.exists(name)
    # The tier stays usable, and a good value written there reads back.
    await tier.set(key("bad"), "good", ttl_s=30)
    assert await tier.get(key("bad")) == (True, "good")


async def test_unserializable_value_is_not_stored_and_does_not_raise(make_tier):
    tier = make_tier()
    assert await tier.set(key("lock"), threading.Lock(), ttl_s=30) is False
    assert await tier.set(key("fn"), lambda: 1, ttl_s=30) is False
    s = tier.stats()
    assert s["unserializable"] == 2 and s["sets"] == 0 and s["errors"] == 0 and s["healthy"]
    assert await tier.get(key("lock")) == (False, None)


class JsonSerializer:
    def __init__(self):
        self.loaded_types = set()

    def dumps(self, value):
        return json.dumps(value).encode()

    def loads(self, data):
        self.loaded_types.add(type(data))
        return json.loads(data)


async def test_custom_serializer(make_tier, raw):
    ser = JsonSerializer()
    tier = make_tier(serializer=ser, compression=True, compression_threshold=16, secret=None)
    await tier.set(key("j"), {"a": [1, 2, 3], "b": "x" * 100}, ttl_s=30)
    await tier.set(key("s"), [1], ttl_s=30)
    assert await tier.get(key("j")) == (True, {"a": [1, 2, 3], "b": "x" * 100})
    assert await tier.get(key("s")) == (True, [1])
    assert ser.loaded_types == {bytes}
    assert stored_bytes(raw, tier, key("s")) == b"\x02S\x00\xc0[1]"  # custom, no tag
    assert await tier.set(key("bad"), {1, 2}, ttl_s=30) is False  # json cannot
    with pytest.raises(TypeError):
        RedisCacheTier(serializer=object())


# --------------------------------------------------------- processes
def run_child(url, prefix, *args) -> dict:
    proc = subprocess.run(
        [sys.executable, str(HERE / "_redis_child.py"), url, prefix, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CAUDAL_CACHE_SECRET": SECRET.decode()},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def test_two_processes_share_values_and_invalidations(make_tier, redis_server, prefix):
    tier = make_tier()
    child = await asyncio.to_thread(run_child, redis_server, prefix, "set", "a", "b", "own-c")
    assert child["stored"] == {"a": True, "b": True, "own-c": True}
    child_pid = None
    for v in ("a", "b", "own-c"):
        found, value = await tier.get(key(v, "stepA"))
        assert found and value["input"] == v
        child_pid = value["pid"]
    assert child_pid != os.getpid()

    # The parent adds one more under the shared tag; the child invalidates it.
    await tier.set(key("d", "stepA"), {"input": "d"}, ttl_s=60, tags=["shared"], group="stepA")
    child = await asyncio.to_thread(run_child, redis_server, prefix, "invalidate-tag", "shared")
    assert child["removed"] == 3
    assert [(await tier.get(key(v, "stepA")))[0] for v in ("a", "b", "own-c", "d")] == [
        False,
        False,
        True,
        False,
    ]

    # And the other way round: the parent invalidates the group, the child sees it.
    assert await tier.invalidate_group("stepA") == 1
    child = await asyncio.to_thread(run_child, redis_server, prefix, "get", "own-c")
    assert child["found"] == {"own-c": None}
    assert child["stats"]["misses"] == 1


# ------------------------------------------------------------ coalescing
async def test_a_burst_is_coalesced_on_few_connections(make_tier, redis_restartable):
    tier = make_tier(redis_restartable.url)
    n = 1000
    stored = await asyncio.gather(
        *(
            tier.set(key(i), {"i": i}, ttl_s=60, tags=[f"t{i % 3}"] if i % 2 else (), group="g")
            for i in range(n)
        )
    )
    assert all(stored)
    # Hits, misses and one hot key asked for many times, all at once.
    asks = [*range(n), *range(n, n + 100), *([7] * 200)]
    got = await asyncio.gather(*(tier.get(key(i)) for i in asks))
    assert got == [(True, {"i": i}) if i < n else (False, None) for i in asks]
    s = tier.stats()
    assert s["batched"] > n  # most calls went out in batches
    assert (s["sets"], s["hits"], s["misses"], s["errors"], s["timeouts"]) == (n, 1200, 100, 0, 0)
    with redis.Redis.from_url(redis_restartable.url) as admin:
        clients = admin.client_list()
        assert len(clients) <= 2 * 4 + 2, clients  # two lanes of 4, admin, slack
        assert admin.zcard(f"{tier._prefix}g:g") == n
    assert await tier.invalidate_tag("t1") == len([i for i in range(n) if i % 2 and i % 3 == 1])


async def test_batched_sets_reload_a_flushed_script(make_tier, redis_restartable):
    tier = make_tier(redis_restartable.url)
    assert await tier.set(key("first"), 0, ttl_s=60, tags=["t"])  # script loaded
    admin = redis.Redis.from_url(redis_restartable.url)
    admin.script_flush()  # as a restarted server would have
    # A batch of three, as the lane would send it: one pipeline, NOSCRIPT, reload, again.
    conn = tier._conn()
    items = [
        (
            tier._value_key(key(i)),
            tier._codec.encode(tier._value_key(key(i)), i)[0],
            60_000,
            [f"{tier._prefix}t:t"],
            "",  # since: not checked
            "",  # group: none
        )
        for i in range(3)
    ]
    assert await conn._run_sets(items) == [True, True, True]
    assert admin.zcard(f"{tier._prefix}t:t") == 4
    admin.close()
    assert [await tier.get(key(i)) for i in range(3)] == [(True, 0), (True, 1), (True, 2)]
    assert await tier.invalidate_tag("t") == 4


# ------------------------------------------------------------- failures
async def test_redis_killed_mid_run_then_recovered(make_tier, redis_restartable):
    tier = make_tier(redis_restartable.url, reconnect_backoff_s=BACKOFF_S)
    await tier.set(key(1), "v", ttl_s=60, tags=["t"])
    assert await tier.get(key(1)) == (True, "v")

    redis_restartable.kill()
    async with no_stall():
        assert await tier.get(key(1)) == (False, None)
        s = tier.stats()
        assert s["errors"] == 1 and not s["healthy"] and s["last_error"]
        # Within the back-off nothing reaches Redis: fast misses, counted.
        assert await tier.get(key(1)) == (False, None)
        assert await tier.set(key(2), "w", ttl_s=60) is False
        assert await tier.invalidate_tag("t") == 0
        assert await tier.clear() == 0
        s = tier.stats()
        assert s["skipped"] == 4 and s["errors"] == 1 and s["misses"] == 2

    redis_restartable.start()  # same port, empty (nothing persisted)
    # After the back-off the tier delivers the queued invalidations by
    # itself: that probe finds Redis back.
    await until(lambda: tier.stats()["healthy"], "the tier to recover")
    async with no_stall():
        assert await tier.get(key(1)) == (False, None)  # a real miss: the data died
        assert tier.stats()["pending_invalidations"] == 0
        assert await tier.set(key(1), "again", ttl_s=60, tags=["t"])  # script reloaded
        assert await tier.get(key(1)) == (True, "again")
        assert await tier.invalidate_tag("t") == 1
    assert tier.stats()["errors"] == 1


async def test_unreachable_from_the_start(make_tier):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    tier = make_tier(url, reconnect_backoff_s=60)
    async with no_stall():
        assert await tier.get(key(1)) == (False, None)
        assert await tier.set(key(1), 1, ttl_s=1, tags=["t"], group="g") is False
        assert await tier.invalidate_tag("t") == 0
        assert await tier.invalidate_group("g") == 0
        assert await tier.clear() == 0
        h = await tier.health()  # health() always asks Redis
    assert h["ok"] is False and h["error"]
    s = tier.stats()
    assert s["errors"] == 2 and s["skipped"] == 4 and not s["healthy"]
    assert "Connect" in s["last_error"] or "connect" in s["last_error"]


async def test_slow_server_times_out_to_a_miss(make_tier, redis_restartable):
    tier = make_tier(
        redis_restartable.url, op_timeout_s=FROZEN_TIMEOUT_S, reconnect_backoff_s=BACKOFF_S
    )
    await tier.set(key(1), "v", ttl_s=60)
    redis_restartable.freeze()  # answers nothing until thawed
    try:
        async with no_stall():
            assert await tier.get(key(1)) == (False, None)
        s = tier.stats()
        assert s["timeouts"] == 1 and s["errors"] == 0 and not s["healthy"]
        assert "timeout" in s["last_error"]
        assert await tier.get(key(1)) == (False, None)
        assert tier.stats()["skipped"] == 1
    finally:
        redis_restartable.thaw()
    await backoff_over(tier)
    assert await tier.get(key(1)) == (True, "v")
    s = tier.stats()
    assert s["healthy"] and s["timeouts"] == 1


async def test_one_probe_at_a_time_after_the_backoff(make_tier, redis_restartable):
    tier = make_tier(redis_restartable.url, op_timeout_s=FROZEN_TIMEOUT_S, reconnect_backoff_s=0.05)
    await tier.set(key(1), "v", ttl_s=60)
    redis_restartable.freeze()
    try:
        assert await tier.get(key(1)) == (False, None)  # times out: unhealthy
        await backoff_over(tier)
        # Still frozen: one call probes (and times out); the others skip at once.
        results = await asyncio.gather(*(tier.get(key(1)) for _ in range(10)))
        assert results == [(False, None)] * 10
        s = tier.stats()
        assert s["timeouts"] == 2 and s["skipped"] == 9
    finally:
        redis_restartable.thaw()


async def test_a_cancelled_probe_does_not_keep_the_tier_off(make_tier, redis_restartable):
    tier = make_tier(redis_restartable.url, op_timeout_s=FROZEN_TIMEOUT_S, reconnect_backoff_s=0.05)
    await tier.set(key(1), "v", ttl_s=60)
    redis_restartable.freeze()
    try:
        assert await tier.get(key(1)) == (False, None)  # times out: unhealthy
        await backoff_over(tier)
        probe = asyncio.create_task(tier.get(key(1)))
        await until(lambda: tier._probe_until, "the probe to start")
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
    finally:
        redis_restartable.thaw()

    async def hit():  # skipped until the abandoned probe's deadline has passed
        return await tier.get(key(1)) == (True, "v")

    await until(hit, "a hit after the abandoned probe's deadline")
    assert tier.stats()["healthy"]


async def test_cancellation_propagates_and_is_not_counted(make_tier, redis_restartable):
    tier = make_tier(redis_restartable.url)
    await tier.set(key(1), "v", ttl_s=60)
    redis_restartable.freeze()
    try:
        task = asyncio.create_task(tier.get(key(1)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        redis_restartable.thaw()
    s = tier.stats()
    assert (s["errors"], s["timeouts"], s["hits"]) == (0, 0, 0) and s["healthy"]
    assert await tier.get(key(1)) == (True, "v")


async def test_health_and_stats(make_tier, redis_server):
    tier = make_tier()
    h = await tier.health()
    assert h["ok"] is True and h["latency_ms"] >= 0 and h["error"] is None
    s = tier.stats()
    for field in (
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
        "healthy",
        "last_error",
        "url",
        "unauthenticated",
        "stale_sets",
        "invalidations_queued",
        "invalidations_delivered",
        "pending_invalidations",
        "invalidations_heard",
        "invalidation_messages_rejected",
        "resyncs",
        "authenticated",
        "subscribed",
    ):
        assert field in s
    assert s["url"] == redis_server and s["last_error"] is None and s["clients"] == 1
    assert h["pending_invalidations"] == 0 and s["authenticated"] and not s["subscribed"]


def test_url_password_is_redacted():
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("rediss://user:s3cret@host/1") == "rediss://user:***@host/1"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
    assert "s3cret" not in redact_url("unix:///tmp/r.sock?db=0&password=s3cret")
    tier = RedisCacheTier("redis://:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in tier.stats()["url"] and "s3cret" not in repr(tier)


# ---------------------------------------------------- loops and clients
async def test_event_loops_in_several_threads_share_one_tier(make_tier):
    tier = make_tier()
    await tier.set(key("main"), "from the main loop", ttl_s=60)
    n_threads, n_keys = 4, 40
    errors = []
    barrier = threading.Barrier(n_threads)

    async def worker(t):
        try:
            for i in range(n_keys):
                assert await tier.set(key((t, i)), (t, i), ttl_s=60, tags=[f"thread{t}"])
            barrier.wait(timeout=10)  # every thread has written: read the others' values
            for i in range(n_keys):
                other = (t + 1) % n_threads
                assert await tier.get(key((other, i))) == (True, (other, i))
            assert await tier.get(key("main")) == (True, "from the main loop")
        finally:
            await tier.close()  # this loop's client, before asyncio.run ends the loop

    def run(t):
        try:
            asyncio.run(worker(t))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not errors, errors
    s = tier.stats()
    assert s["hits"] == n_threads * (n_keys + 1)
    assert s["sets"] == n_threads * n_keys + 1
    assert s["clients"] == 1  # only the main loop's is left
    assert await tier.invalidate_tag("thread2") == n_keys


async def test_close_then_use_again(make_tier):
    tier = make_tier()
    await tier.set(key(1), 1, ttl_s=30)
    await tier.close()
    assert tier.stats()["clients"] == 0
    assert await tier.get(key(1)) == (True, 1)  # a new client, lazily
    assert tier.stats()["clients"] == 1


async def test_given_client_is_used_and_not_closed(redis_server, prefix):
    client = aioredis.Redis.from_url(redis_server)
    try:
        tier = RedisCacheTier(prefix=prefix, client=client, op_timeout_s=LIVE_TIMEOUT_S)
        await tier.set(key(1), "v", ttl_s=30, tags=["t"])
        assert await tier.get(key(1)) == (True, "v")
        await tier.close()
        assert await client.ping()  # still open
        assert tier.stats()["url"].startswith("redis://127.0.0.1:")
    finally:
        await client.aclose()


# ------------------------------------------------------------ trust
class _Payload:
    """Unpickling this runs ``os.system`` (writes a file)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def planted_pickles(path):
    evil = pickle.dumps(_Payload(path), protocol=5)
    return {
        "old format": b"\x01\xc0" + evil,
        "bare pickle": evil,
        "pickle codec, no tag": b"\x02P\x00\xc0" + evil,
        "pickle codec, forged tag": b"\x02P\x01" + b"\x00" * 32 + b"\xc0" + evil,
    }


@pytest.mark.parametrize("with_secret", [True, False], ids=["secret", "no-secret"])
async def test_a_planted_pickle_never_runs_and_is_a_counted_miss(
    make_tier, raw, tmp_path, with_secret
):
    tier = make_tier(secret=SECRET if with_secret else None)
    marker = tmp_path / "pwned"
    for i, (what, payload) in enumerate(planted_pickles(marker).items()):
        name = tier._value_key(key(("planted", i)))
        raw.set(name, payload)
        assert await tier.get(key(("planted", i))) == (False, None), what
        assert not raw.exists(name), what  # deleted (it still held those bytes)
    assert not marker.exists()  # the payload never ran
    s = tier.stats()
    assert s["unauthenticated"] + s["corrupt"] == 4 and s["hits"] == 0
    assert s["unauthenticated"] >= 2


async def test_a_planted_plain_value_is_a_miss_with_a_secret(make_tier, raw):
    tier = make_tier()
    k = key("user:1")
    name = tier._value_key(k)
    raw.set(name, b'\x02J\x00\xc0{"admin": true}')  # well-formed, but no tag
    assert await tier.get(k) == (False, None)
    # A genuine entry copied under another key does not verify either.
    await tier.set(key("user:2"), {"admin": False}, ttl_s=30)
    raw.set(name, stored_bytes(raw, tier, key("user:2")))
    assert await tier.get(k) == (False, None)
    # Nor one written with another secret.
    other = make_tier(secret=b"another-secret-0123456789")
    await other.set(k, {"admin": True}, ttl_s=30)
    assert await tier.get(k) == (False, None)
    assert tier.stats()["unauthenticated"] == 3
    assert await tier.get(key("user:2")) == (True, {"admin": False})


SortOrder = enum.IntEnum("SortOrder", "ASC DESC")

JSON_EXACT = [
    None,
    True,
    0,
    -17,
    2**100,
    1.0,
    -0.0,
    1.5,
    float("inf"),
    "ünïcødé ✓ 😀",
    [],
    {},
    [1, 1.0, True, None, "1"],
    {"a": {"b": [1, 2.0]}, "c": None, "": [{}]},
]

NOT_JSON = [
    (1, 2),
    [1, (2,)],
    {1: "int key"},
    {"a": {True: 1}},
    {1, 2},
    b"bytes",
    Point(1, 2.5),
    SortOrder.ASC,
    [SortOrder.DESC],
    "lone surrogate \ud83d",  # JSON would turn an escaped pair into one character
]


async def test_json_values_round_trip_type_exactly_without_pickle(make_tier, raw):
    tier = make_tier(secret=None)  # no secret: JSON only, never a pickle
    for i, v in enumerate(JSON_EXACT):
        assert await tier.set(key(("j", i)), v, ttl_s=30), v
        stored = stored_bytes(raw, tier, key(("j", i)))
        assert stored[:3] == b"\x02J\x00" and b"\x80\x05" not in stored[:6]

        def same(a, b):
            assert type(a) is type(b), (a, b)
            if isinstance(a, list):
                assert len(a) == len(b)
                for x, y in zip(a, b, strict=True):
                    same(x, y)
            elif isinstance(a, dict):
                assert a.keys() == b.keys()
                for k in a:
                    same(a[k], b[k])
            else:
                assert a == b or (a != a and b != b)
                if isinstance(a, float):
                    assert str(a) == str(b)  # -0.0 stays -0.0

        found, got = await tier.get(key(("j", i)))
        assert found
        same(got, v)
    # What JSON would change (tuple -> list, int key -> str, IntEnum -> int,
    # ...) is not shared without a secret rather than returned changed.
    for i, v in enumerate(NOT_JSON):
        assert await tier.set(key(("n", i)), v, ttl_s=30) is False, v
        assert await tier.get(key(("n", i))) == (False, None)
    s = tier.stats()
    assert s["unserializable"] == len(NOT_JSON) and not s["authenticated"]
    assert "secret" in s["last_error"]


async def test_with_a_secret_other_values_are_authenticated_pickles(make_tier, raw):
    tier = make_tier()
    for i, v in enumerate(NOT_JSON):
        assert await tier.set(key(("n", i)), v, ttl_s=30), v
        assert stored_bytes(raw, tier, key(("n", i)))[:3] == b"\x02P\x01"
        found, got = await tier.get(key(("n", i)))
        assert found and got == v and type(got) is type(v)
    assert tier.stats()["authenticated"]


def test_a_short_secret_is_refused(monkeypatch):
    with pytest.raises(caudal.ConfigurationError, match="secret"):
        RedisCacheTier(secret="short")
    monkeypatch.setenv("CAUDAL_CACHE_SECRET", "short")
    with pytest.raises(caudal.ConfigurationError, match="CAUDAL_CACHE_SECRET"):
        RedisCacheTier()
    monkeypatch.setenv("CAUDAL_CACHE_SECRET", SECRET.decode())
    assert RedisCacheTier().stats()["authenticated"]


# ------------------------------------------- invalidations are never lost
async def test_an_invalidation_during_the_backoff_is_queued_and_delivered(
    make_tier, redis_restartable
):
    url = redis_restartable.url
    tier = make_tier(url, op_timeout_s=FROZEN_TIMEOUT_S, reconnect_backoff_s=BACKOFF_S)
    other = make_tier(url)  # another process's tier, in effect
    await tier.set(key(1), "stale", ttl_s=600, tags=["t"], group="g")
    await tier.set(key(2), "kept", ttl_s=600, tags=["u"])
    redis_restartable.freeze()
    try:
        async with no_stall():
            assert await tier.get(key(1)) == (False, None)  # one timeout: back-off
        assert not tier.stats()["healthy"]
        r = await tier.invalidate_tag("t")  # within the back-off
        assert r == 0 and r.queued and r.l2 is None
        assert tier.stats()["pending_invalidations"] == 1
        assert tier.pending_invalidations == 1
    finally:
        redis_restartable.thaw()
    # Nobody calls the tier: it delivers the queued invalidation by itself
    # once the back-off is over.
    async with no_stall():
        while tier.pending_invalidations:
            await asyncio.sleep(0.02)
    assert await other.get(key(1)) == (False, None)
    assert await other.get(key(2)) == (True, "kept")
    s = tier.stats()
    assert (s["invalidations_queued"], s["invalidations_delivered"]) == (1, 1)
    assert s["healthy"] and s["pending_invalidations"] == 0


async def test_a_prefix_invalidation_is_queued_and_delivered(make_tier, redis_restartable):
    url = redis_restartable.url
    tier = make_tier(url, op_timeout_s=FROZEN_TIMEOUT_S, reconnect_backoff_s=60)
    other = make_tier(url)
    await tier.set(key(1), "stale", ttl_s=600, group="call_llm_v2")
    await tier.set(key(2), "kept", ttl_s=600, group="other")
    redis_restartable.freeze()
    try:
        async with no_stall():
            r = await tier.invalidate_prefix("call_llm")
            assert r == 0 and r.queued and r.l2 is None
            assert (await tier.invalidate_prefix("call_llm")).queued  # once in the queue
        assert tier.pending_invalidations == 1
    finally:
        redis_restartable.thaw()
    assert await tier.deliver_pending()
    assert await other.get(key(1)) == (False, None)
    assert await other.get(key(2)) == (True, "kept")
    assert tier.stats()["invalidations_delivered"] == 1


async def test_prefix_and_step_invalidations_reach_other_tiers_listeners(make_tier):
    a, b = make_tier(), make_tier()
    heard = []
    b.add_invalidation_listener(lambda kind, name: heard.append((kind, name)))
    await b.get(key("x"))  # starts b's subscription
    await until(lambda: b.stats()["subscribed"], "the subscription")
    await a.invalidate_prefix("call_llm")
    await a.invalidate_group("call_llm")
    await until(lambda: len(heard) == 2, "both messages")
    assert heard == [("prefix", "call_llm"), ("group", "call_llm")]
    # A message with an empty prefix (or none) is refused, not passed on.
    for bad in ("", None):
        b._heard(b._message("prefix", bad))
    assert len(heard) == 2 and b.stats()["invalidation_messages_rejected"] == 2


async def test_a_failed_invalidation_is_queued_and_reads_wait_for_it(make_tier, redis_restartable):
    url = redis_restartable.url
    tier = make_tier(url, op_timeout_s=FROZEN_TIMEOUT_S, reconnect_backoff_s=60)
    other = make_tier(url)
    await tier.set(key(1), "stale", ttl_s=600, group="g")
    redis_restartable.freeze()
    try:
        async with no_stall():
            r = await tier.invalidate_group("g")  # healthy until this times out
            assert r == 0 and r.queued
            c = await tier.clear()  # during the back-off: queued, covers the rest
            assert c == 0 and c.queued
        assert tier.pending_invalidations == 1
    finally:
        redis_restartable.thaw()
    # The back-off (60 s) is not over; a health check (which always asks
    # Redis) delivers the queue, as a caller may with deliver_pending().
    h = await tier.health()
    assert h["ok"] and h["pending_invalidations"] == 0
    assert await tier.deliver_pending()
    assert await other.get(key(1)) == (False, None)
    assert tier.pending_invalidations == 0 and tier.stats()["healthy"]


async def test_reads_never_see_what_a_queued_invalidation_removes(make_tier, redis_restartable):
    url = redis_restartable.url
    tier = make_tier(url, reconnect_backoff_s=BACKOFF_S)
    await tier.set(key(1), "stale", ttl_s=600, tags=["t"])
    redis_restartable.kill()
    async with no_stall():
        r = await tier.invalidate_tag("t")  # connection refused: queued
    assert r.queued
    redis_restartable.start()  # same port (empty: nothing persisted)
    # Put the stale value back as if the server had kept it.
    other = make_tier(url)
    await other.set(key(1), "stale", ttl_s=600, tags=["t"])
    assert tier.pending_invalidations == 1  # still queued: the back-off is not over
    await backoff_over(tier)
    # The next call is the probe (it delivers first, then reads), or is
    # skipped while the tier's own redelivery probes: a miss either way.
    async with no_stall():
        assert await tier.get(key(1)) == (False, None)
    await until(lambda: tier.pending_invalidations == 0, "the delivery")
    assert await tier.get(key(1)) == (False, None)  # the invalidation removed it
    assert await other.get(key(1)) == (False, None)


async def test_executor_invalidation_reports_what_it_reached(make_tier, redis_restartable):
    tier = make_tier(redis_restartable.url, op_timeout_s=FROZEN_TIMEOUT_S, reconnect_backoff_s=60)
    ex = caudal.ExecutorCore(
        caudal.OptimizationConfig(enable_cache_optimization=True), cache_l2=tier
    )

    async def fetch(x):
        return {"x": x}

    step = caudal.Step(fetch, "fetch", tags=("t",))
    await ex.execute(step, 1)
    await ex.flush()
    r = await ex.invalidate_by_tag("t")
    assert r == 1 and r.l2 == 1 and not r.queued
    await ex.execute(step, 1)
    await ex.flush()
    redis_restartable.freeze()
    try:
        async with no_stall():
            r = await ex.invalidate_by_tag("t")
        assert r == 1 and r.queued and r.l2 is None
        r = await ex.invalidate_prefix("fetch")
        assert r == 0 and r.queued
    finally:
        redis_restartable.thaw()
    await ex.aclose()  # delivers what is queued before closing
    assert tier.pending_invalidations == 0


# ------------------------------- writes racing other processes' invalidations
@pytest.mark.parametrize("how", ["tag", "group", "clear"])
async def test_a_write_read_before_an_invalidation_elsewhere_is_refused(make_tier, how):
    a = make_tier()  # the process whose execution is in flight
    b = make_tier()  # another process, invalidating meanwhile
    k = key("in-flight")
    found, _, since = await a.get_versioned(k)
    assert not found and since is not None
    if how == "tag":
        await b.invalidate_tag("t")
    elif how == "group":
        await b.invalidate_group("g")
    else:
        await b.clear()
    assert await a.set(k, "computed before", ttl_s=60, tags=["t"], group="g", since=since) is False
    assert await b.get(k) == (False, None)
    assert a.stats()["stale_sets"] == 1
    # Read after the invalidation: stored.
    _, _, since = await a.get_versioned(k)
    assert await a.set(k, "fresh", ttl_s=60, tags=["t"], group="g", since=since)
    assert await b.get(k) == (True, "fresh")


async def test_a_write_read_before_a_prefix_invalidation_elsewhere_is_refused(
    make_tier, raw, prefix
):
    a, b = make_tier(), make_tier()
    k = key("in-flight")
    _, _, since = await a.get_versioned(k)
    # "call_llm_v9" has never been written: no group index to find; the
    # prefix's epoch refuses the write all the same.
    await b.invalidate_prefix("call_llm")
    assert await a.set(k, "computed before", ttl_s=60, group="call_llm_v9", since=since) is False
    assert await a.set(k, "computed before", ttl_s=60, group="call_llm", since=since) is False
    assert a.stats()["stale_sets"] == 2
    # Outside the prefix, or read after it: stored.
    assert await a.set(k, "other", ttl_s=60, group="call_ll", since=since)
    _, _, since = await a.get_versioned(k)
    assert await a.set(k, "fresh", ttl_s=60, group="call_llm_v9", since=since)
    assert await b.get(k) == (True, "fresh")
    # A clear keeps the prefixes' epochs, like the others.
    await b.clear()
    assert raw.hexists(f"{prefix}pe", "call_llm")


async def test_prefix_epochs_are_checked_whether_fewer_prefixes_or_fewer_name_lengths(make_tier):
    # The write's script looks up whichever is fewer: the invalidated
    # prefixes (above: one prefix, a long name), or the name's own prefixes
    # (here: a two-letter name, four prefixes invalidated).
    a, b = make_tier(), make_tier()
    k = key("short")
    _, _, since = await a.get_versioned(k)
    for p in ("x1", "x2", "y", "zz"):
        await b.invalidate_prefix(p)
    assert await a.set(k, "v", ttl_s=60, group="x1", since=since) is False
    assert await a.set(k, "v", ttl_s=60, group="y9", since=since) is False
    assert await a.set(k, "v", ttl_s=60, group="x", since=since)  # not under any
    assert await a.set(k, "v", ttl_s=60, group="z", since=since)
    assert a.stats()["stale_sets"] == 2


async def test_an_invalidation_of_something_else_does_not_refuse_a_write(make_tier):
    a, b = make_tier(), make_tier()
    k = key("unrelated")
    _, _, since = await a.get_versioned(k)
    await b.invalidate_tag("other-tag")
    await b.invalidate_group("other-step")
    assert await a.set(k, "v", ttl_s=60, tags=["t"], group="g", since=since)
    # Without since (a caller that did not read first), nothing is checked.
    await b.invalidate_tag("t")
    assert await a.set(k, "w", ttl_s=60, tags=["t"], group="g")
    assert await b.get(k) == (True, "w")
