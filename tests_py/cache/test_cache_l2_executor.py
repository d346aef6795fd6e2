"""ExecutorCore with the Redis tier behind its in-process cache (a real
redis-server started by the fixtures)."""

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from _probes import Gated, invalidate
from caudal import ExecutorCore, OptimizationConfig, Step, _core
from caudal.integrations.redis import RedisCacheTier

# A live server's round trip on a busy machine can take far longer than the
# tier's 50 ms default; no test here is about timeouts.
LIVE_TIMEOUT_S = 10.0


def make_executor(url, prefix, **kw):
    tier = RedisCacheTier(url, prefix=prefix, op_timeout_s=LIVE_TIMEOUT_S, reconnect_backoff_s=0.2)
    cfg = OptimizationConfig(enable_cache_optimization=True, **kw)
    return ExecutorCore(cfg, cache_l2=tier), tier


class Counted:
    def __init__(self):
        self.calls = 0

    async def __call__(self, x):
        self.calls += 1
        return {"value": x, "n": self.calls}


async def test_l1_miss_goes_to_l2_and_promotes(redis_server):
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    fn = Counted()
    step = Step(fn, "enrich", tags=("users",))
    a, tier_a = make_executor(redis_server, prefix)
    r = await a.execute(step, 1)
    assert r.success and not r.cache_hit
    await a.flush()  # the L2 write is asynchronous
    # A second executor (another process, in effect) shares L2 only.
    b, tier_b = make_executor(redis_server, prefix)
    r = await b.execute(step, 1)
    assert r.cache_hit and r.metadata["cache_tier"] == "l2" and r.output == {"value": 1, "n": 1}
    assert fn.calls == 1
    r = await b.execute(step, 1)  # now an L1 hit
    assert r.cache_hit and r.metadata == {}
    stats = b.get_optimization_stats()["cache"]
    assert stats["l2"]["hits"] == 1
    # Invalidation by tag reaches the shared tier.
    await a.invalidate_by_tag("users")
    c, tier_c = make_executor(redis_server, prefix)
    assert not (await c.execute(step, 1)).cache_hit
    assert fn.calls == 2
    for ex in (a, b, c):
        await ex.aclose()


async def test_two_processes_share_results_and_invalidation(redis_server, tmp_path):
    prefix = f"p{uuid.uuid4().hex[:8]}:"
    # Both processes import the same def (results belong to what runs, not
    # to the name alone); WHO, a global, is not part of its identity, which
    # shows whose run produced a result.
    (tmp_path / "shared_work.py").write_text(
        "WHO = None\n\n\nasync def work(x):\n    return {'from': WHO, 'x': x}\n"
    )
    child = tmp_path / "child.py"
    child.write_text(
        textwrap.dedent(f"""
        import asyncio, json, sys
        from caudal import ExecutorCore, OptimizationConfig, Step
        from caudal.integrations.redis import RedisCacheTier
        import shared_work
        from shared_work import work

        shared_work.WHO = "child"

        async def main():
            tier = RedisCacheTier({redis_server!r}, prefix={prefix!r}, op_timeout_s=10)
            ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True), cache_l2=tier)
            if sys.argv[1] == "run":
                r = await ex.execute(Step(work, "shared", tags=("t",)), 5)
            else:
                await ex.invalidate_by_tag("t")
            await ex.aclose()

        asyncio.run(main())
    """)
    )
    subprocess.run([sys.executable, str(child), "run"], check=True, timeout=60)
    sys.path.insert(0, str(tmp_path))
    try:
        import shared_work
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shared_work", None)
    shared_work.WHO = "parent"
    parent_work = shared_work.work

    ex, _ = make_executor(redis_server, prefix)
    r = await ex.execute(Step(parent_work, "shared", tags=("t",)), 5)
    assert r.cache_hit and r.output == {"from": "child", "x": 5}
    await ex.clear_cache()  # clears L1 and this prefix in L2
    subprocess.run([sys.executable, str(child), "run"], check=True, timeout=60)
    subprocess.run([sys.executable, str(child), "invalidate"], check=True, timeout=60)
    ex2, _ = make_executor(redis_server, prefix)
    r = await ex2.execute(Step(parent_work, "shared", tags=("t",)), 5)
    assert not r.cache_hit and r.output == {"from": "parent", "x": 5}
    await ex.aclose()
    await ex2.aclose()


async def test_redis_killed_mid_run_l1_keeps_serving(redis_restartable):
    server = redis_restartable
    prefix = f"k{uuid.uuid4().hex[:8]}:"
    fn = Counted()
    step = Step(fn, "k")
    ex, tier = make_executor(server.url, prefix)
    await ex.execute(step, 1)
    await ex.flush()
    server.kill()
    # L1 still serves; new inputs run uncached in L2 without any exception.
    assert (await ex.execute(step, 1)).cache_hit
    for x in range(2, 6):
        r = await ex.execute(step, x)
        assert r.success and not r.cache_hit
    await ex.flush()
    stats = ex.get_optimization_stats()["cache"]["l2"]
    assert stats["healthy"] is False and stats["errors"] + stats["timeouts"] + stats["skipped"] > 0
    server.restart()
    await _until(lambda: time.monotonic() > tier._skip_until)  # past the reconnect back-off
    await ex.execute(step, 99)
    await ex.flush()
    ex2, _ = make_executor(server.url, prefix)
    r = await ex2.execute(step, 99)
    assert r.cache_hit and r.metadata["cache_tier"] == "l2"  # the tier recovered by itself
    await ex.aclose()
    await ex2.aclose()


async def test_single_flight_with_l2(redis_server):
    prefix = f"s{uuid.uuid4().hex[:8]}:"
    release = asyncio.Event()
    calls = []

    async def slow(x):
        calls.append(x)
        await release.wait()
        return x

    ex, _ = make_executor(redis_server, prefix)
    # The closure captures an Event, which has no stable key: the step names
    # its cache namespace.
    tasks = [
        asyncio.create_task(ex.execute(Step(slow, "sf", cache_key="sf"), 3)) for _ in range(10)
    ]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == [3] and all(r.output == 3 for r in results)
    await ex.aclose()


# ------------------------------------------------- invalidation vs in flight
@pytest.mark.parametrize("how", ["tag", "prefix", "clear"])
async def test_in_flight_execution_stores_nothing_after_an_invalidation(redis_server, how):
    prefix = f"i{uuid.uuid4().hex[:8]}:"
    fn = Gated()
    step = Step(fn, "fetch_user", tags=("users",), cache_key="fetch_user")
    ex, tier = make_executor(redis_server, prefix)
    reader, _ = make_executor(redis_server, prefix)  # another process, in effect
    for n in range(20):
        fn.started.clear()
        fn.release.clear()
        task = asyncio.create_task(ex.execute(step, n))
        await fn.started.wait()
        await invalidate(ex, how)
        fn.release.set()
        assert not (await task).cache_hit
        await ex.flush()
        # Neither tier holds the result of the execution that began before.
        assert await tier.get(_core.cache_key(n, "fetch_user")) == (False, None), (how, n)
        r = await reader.execute(step, n)
        assert not r.cache_hit, (how, n)
        await reader.flush()
        # ex gets the reader's fresh result (from Redis), not its own stale one.
        assert (await ex.execute(step, n)).output == r.output
    await ex.aclose()
    await reader.aclose()


class GatedTier:
    """The real tier, whose get() hands its answer back only when released."""

    def __init__(self, tier):
        self.tier = tier
        self.fetched = asyncio.Event()
        self.release = asyncio.Event()

    async def get(self, key):
        found = await self.tier.get(key)
        self.fetched.set()
        await self.release.wait()
        return found

    async def get_versioned(self, key):
        found = await self.tier.get_versioned(key)
        self.fetched.set()
        await self.release.wait()
        return found

    def __getattr__(self, name):
        return getattr(self.tier, name)


async def test_a_value_read_from_l2_before_an_invalidation_is_not_promoted(redis_server):
    prefix = f"j{uuid.uuid4().hex[:8]}:"
    fn = Gated()
    fn.release.set()
    step = Step(fn, "fetch_user", tags=("users",), cache_key="fetch_user")
    writer, _ = make_executor(redis_server, prefix)
    await writer.execute(step, 1)
    await writer.flush()
    tier = RedisCacheTier(redis_server, prefix=prefix, op_timeout_s=LIVE_TIMEOUT_S)
    gated = GatedTier(tier)
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True), cache_l2=gated)
    task = asyncio.create_task(ex.execute(step, 1))
    async with asyncio.timeout(10):  # a hang is a failure
        await gated.fetched.wait()  # read from Redis, not yet returned
    await ex.invalidate_by_tag("users")
    gated.release.set()
    r = await task
    assert r.cache_hit and r.metadata["cache_tier"] == "l2"  # a read racing the invalidation
    # ... but it was not kept in L1: the next execution misses L1 (and L2).
    r = await ex.execute(step, 1)
    assert not r.cache_hit and fn.calls == 2
    await ex.aclose()
    await writer.aclose()


async def _until(predicate, seconds=10.0):
    """Polls ``predicate`` (a liveness bound, not a timing assertion)."""
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_an_invalidation_reaches_another_process_in_process_cache(redis_server):
    prefix = f"x{uuid.uuid4().hex[:8]}:"
    fn = Counted()
    step = Step(fn, "enrich", tags=("users",))
    a, _ = make_executor(redis_server, prefix)
    b, tier_b = make_executor(redis_server, prefix)  # its own tier: another process
    await a.execute(step, 1)
    await a.flush()
    assert (await b.execute(step, 1)).metadata["cache_tier"] == "l2"
    assert (await b.execute(step, 1)).metadata == {}  # now in b's L1
    await _until(lambda: tier_b.stats()["subscribed"])
    for how in ("tag", "prefix", "clear"):
        heard = tier_b.stats()["invalidations_heard"]
        if how == "tag":
            await a.invalidate_by_tag("users")
        elif how == "prefix":
            await a.invalidate_prefix("enrich")
        else:
            await a.clear_cache()
        await _until(lambda heard=heard: tier_b.stats()["invalidations_heard"] > heard)
        calls = fn.calls
        r = await b.execute(step, 1)  # b's L1 copy is gone too
        assert not r.cache_hit and fn.calls == calls + 1, how
        await b.flush()
        assert (await b.execute(step, 1)).cache_hit
    await a.aclose()
    await b.aclose()


async def test_prefix_and_step_invalidations_reach_both_tiers_of_every_executor(redis_server):
    prefix = f"q{uuid.uuid4().hex[:8]}:"
    fns = {name: Counted() for name in ("call_llm", "call_llm_v2", "other")}
    steps = {name: Step(fn, name) for name, fn in fns.items()}
    a, _ = make_executor(redis_server, prefix)
    b, tier_b = make_executor(redis_server, prefix)  # its own tier: another process
    for step in steps.values():
        await a.execute(step, 1)
    await a.flush()
    for step in steps.values():  # into b's L1, from Redis
        assert (await b.execute(step, 1)).metadata["cache_tier"] == "l2"
    await _until(lambda: tier_b.stats()["subscribed"])

    async def refilled(name):
        """Whether b ran the step again (neither tier had it), then refills."""
        calls = fns[name].calls
        await b.execute(steps[name], 1)
        await b.flush()
        return fns[name].calls == calls + 1

    heard = tier_b.stats()["invalidations_heard"]
    r = await a.invalidate_step("call_llm")
    assert r == 1 and r.l2 == 1
    await _until(lambda: tier_b.stats()["invalidations_heard"] > heard)
    assert [await refilled(n) for n in steps] == [True, False, False]

    heard = tier_b.stats()["invalidations_heard"]
    r = await a.invalidate_prefix("call_llm")
    assert r == 1  # a's L1: call_llm_v2 (call_llm went above)
    assert r.l2 == 2  # Redis: call_llm (refilled by b) and call_llm_v2
    await _until(lambda: tier_b.stats()["invalidations_heard"] > heard)
    assert [await refilled(n) for n in steps] == [True, True, False]
    await a.aclose()
    await b.aclose()


async def test_a_prefix_invalidation_elsewhere_keeps_out_a_step_never_cached_before(redis_server):
    prefix = f"w{uuid.uuid4().hex[:8]}:"
    fn = Gated()
    step = Step(fn, "call_llm_v3", cache_key="call_llm_v3")
    a, tier_a = make_executor(redis_server, prefix)
    b, _ = make_executor(redis_server, prefix)  # another process, in effect
    task = asyncio.create_task(a.execute(step, 1))
    await fn.started.wait()  # a asked Redis (a miss) and runs the step
    assert await b.invalidate_prefix("call_llm") == 0  # nothing of it anywhere yet
    fn.release.set()
    await task
    await a.flush()
    assert await tier_a.get(_core.cache_key(1, "call_llm_v3")) == (False, None)
    await a.aclose()
    await b.aclose()


async def test_a_lost_subscription_drops_the_in_process_cache(redis_restartable):
    prefix = f"y{uuid.uuid4().hex[:8]}:"
    fn = Counted()
    step = Step(fn, "enrich")
    ex, tier = make_executor(redis_restartable.url, prefix)
    await ex.execute(step, 1)
    await _until(lambda: tier.stats()["subscribed"])
    assert (await ex.execute(step, 1)).cache_hit
    redis_restartable.kill()  # invalidations published meanwhile would be missed
    await _until(lambda: not tier.stats()["subscribed"])
    redis_restartable.start()
    await _until(lambda: tier.stats()["resyncs"] == 1)
    r = await ex.execute(step, 1)
    assert not r.cache_hit and fn.calls == 2
    await ex.aclose()


@pytest.mark.parametrize("how", ["tag", "prefix", "clear"])
async def test_another_process_invalidating_keeps_an_in_flight_result_out_of_redis(
    redis_server, how
):
    prefix = f"z{uuid.uuid4().hex[:8]}:"
    fn = Gated()
    step = Step(fn, "fetch_user", tags=("users",), cache_key="fetch_user")
    a, tier_a = make_executor(redis_server, prefix)
    b, _ = make_executor(redis_server, prefix)  # another process, in effect
    for n in range(5):
        fn.started.clear()
        fn.release.clear()
        task = asyncio.create_task(a.execute(step, n))
        await fn.started.wait()  # a asked Redis (a miss) and runs the step
        await invalidate(b, how)
        fn.release.set()
        await task
        await a.flush()
        assert await tier_a.get(_core.cache_key(n, "fetch_user")) == (False, None), (how, n)
    await a.aclose()
    await b.aclose()


class _Child:
    """tests_py/_l1_child.py: another process with its own executor."""

    def __init__(self, url: str, prefix: str) -> None:
        from pathlib import Path

        here = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, str(here / "_l1_child.py"), url, prefix],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=here,
        )  # fmt: skip

    async def ask(self, command: str) -> dict:
        import json

        def talk():
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

        return await asyncio.to_thread(talk)

    async def until(self, predicate, what: str, seconds: float = 20.0) -> dict:
        """Polls the child's tier stats (a liveness bound, not a timing test)."""
        deadline = time.monotonic() + seconds
        while True:
            stats = await self.ask("stats")
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                pytest.fail(f"a child process never reached {what}: {stats}")
            await asyncio.sleep(0.02)

    def close(self) -> None:
        try:
            self.proc.communicate("quit\n", timeout=20)  # and closes the pipes
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


async def test_an_invalidation_reaches_the_in_process_caches_of_two_other_processes(
    redis_restartable,
):
    """Three real processes share a Redis tier: this one and two children,
    each with results in its own in-process cache. An invalidation made
    here drops them there; so does a subscription lost mid-run (Redis
    restarted), when it comes back."""
    prefix = f"p{uuid.uuid4().hex[:8]}:"
    url = redis_restartable.url
    a, _ = make_executor(url, prefix)

    async def enrich(x):
        return {"value": x, "pid": os.getpid()}

    step = Step(enrich, "enrich", tags=("users",), cache_key="enrich-v1")  # as the children's
    await a.execute(step, 1)
    await a.flush()
    children = [_Child(url, prefix), _Child(url, prefix)]
    try:
        from_l1 = {"hit": True, "tier": None, "calls": 0, "by": os.getpid()}
        for c in children:
            assert (await c.ask("exec 1"))["tier"] == "l2"  # from Redis
            assert await c.ask("exec 1") == from_l1  # now from its own L1
        heard = [await c.until(lambda s: s["subscribed"], "a subscription") for c in children]
        await a.invalidate_by_tag("users")
        for c, before in zip(children, heard, strict=True):
            n = before["invalidations_heard"]
            await c.until(lambda s, n=n: s["invalidations_heard"] > n, "the invalidation")
            # Its L1 copy went with Redis's: a result computed since (by the
            # first child, then in Redis for the second), never this one's.
            r = await c.ask("exec 1")
            assert r["by"] != os.getpid() and not (r["hit"] and r["tier"] is None), r
        # A subscription lost mid-run: what is published meanwhile is not
        # heard, so each child drops its whole L1 when it is back.
        redis_restartable.kill()
        for c in children:
            await c.until(lambda s: not s["subscribed"], "a lost subscription")
        redis_restartable.start()
        for c in children:
            await c.until(lambda s: s["resyncs"] >= 1 and s["subscribed"], "a resync")
            r = await c.ask("exec 1")
            assert not (r["hit"] and r["tier"] is None), r  # not from its L1
    finally:
        for c in children:
            c.close()
        await a.aclose()
