"""The in-process result cache (L1) and single flight through ExecutorCore."""

import asyncio
import dataclasses
import enum
import threading

import pydantic
import pytest

from _probes import Gated, invalidate, until, wait_until
from caudal import ExecutorCore, OptimizationConfig, Step, _core
from caudal.testing import ManualClock


def cached_executor(clock=None, **kw):
    # Cache bounds are asserted exactly: memory pressure (the process's RSS
    # over memory_pressure_threshold_mb, as under ASan) must not shrink them.
    kw.setdefault("memory_pressure_threshold_mb", 1e6)
    return ExecutorCore(OptimizationConfig(enable_cache_optimization=True, **kw), clock=clock)


def misses(ex, step_name):
    """How many executions of the step looked in the cache (led or joined a flight)."""
    steps = ex.get_optimization_stats()["execution"]["steps"]
    return steps[step_name]["cache_misses"] if step_name in steps else 0


class Counted:
    def __init__(self, fn=None):
        self.calls = 0
        self.fn = fn or (lambda x: x)

    async def __call__(self, x):
        self.calls += 1
        return self.fn(x)


async def test_hit_returns_the_output_without_calling_the_step():
    ex = cached_executor()
    fn = Counted(lambda x: {"echo": x})
    step = Step(fn, "echo")
    first = await ex.execute(step, {"q": 1})
    second = await ex.execute(step, {"q": 1})
    assert fn.calls == 1
    assert first.cache_hit is False and second.cache_hit is True
    assert second.output == {"echo": {"q": 1}} and second.success and second.attempts == 0
    stats = ex.get_optimization_stats()["cache"]
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["hit_rate"] == 0.5
    assert ex.get_optimization_stats()["execution"]["steps"]["echo"]["cache_hits"] == 1

async def test_a_hit_counts_as_an_execution_and_a_success():
    ex = cached_executor()
    calls = []

    async def flaky(x):
        calls.append(x)
        if x < 0:
            raise ValueError("negative")
        return x

    step = Step(flaky, "flaky", max_retries=0)
    for x in (1, 1, 1, 2, -1, 2):  # a miss, two hits, a miss, a failure, a hit
        await ex.execute(step, x)
    row = ex.get_optimization_stats()["execution"]["steps"]["flaky"]
    assert calls == [1, 2, -1]
    assert row["cache_hits"] == 3
    assert (row["executions"], row["successes"], row["failures"]) == (6, 5, 1)
    totals = ex.get_optimization_stats()["execution"]
    assert totals["total_executions"] == 6 and totals["successes"] == 5



@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (1, 1.0, False),
        (1, True, False),
        (0.0, -0.0, True),
        (float("nan"), float("nan"), True),
        ([1, 2], (1, 2), False),
        ("12", 12, False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ({1, 2, 3}, {3, 2, 1}, True),
        ({1, 2}, frozenset({1, 2}), False),
        (b"x", "x", False),
        (2**100, 2**100, True),
        ([[1], [2]], [[1, 2]], False),
        # small all-str-key dicts (keyed in sorted key order) and the rest
        ({"x": 1, "y": {"b": 1, "a": 2}}, {"y": {"a": 2, "b": 1}, "x": 1}, True),
        ({"a": 1, "ab": 2}, {"ab": 1, "a": 2}, False),
        ({1: "a", "b": 2}, {"b": 2, 1: "a"}, True),
        ({str(i): i for i in range(9)}, {str(i): i for i in reversed(range(9))}, True),
        ({"a": 1}, [("a", 1)], False),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ({"k": 1}, {"k": 1.0}, False),
    ],
)
def test_key_equality_rules(a, b, same):
    assert (_core.cache_key(a, "s") == _core.cache_key(b, "s")) is same


def test_step_name_is_part_of_the_key():
    assert _core.cache_key(1, "a") != _core.cache_key(1, "b")


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Query:
    text: str
    k: int


class Model(pydantic.BaseModel):
    text: str
    k: int


class Hooked:
    def __init__(self, ident):
        self.ident = ident
        self.noise = object()

    def __caudal_key__(self):
        return ("hooked", self.ident)


def test_structured_values_are_keyed():
    assert _core.cache_key(Color.RED) != _core.cache_key(Color.BLUE)
    assert _core.cache_key(Query("a", 1)) == _core.cache_key(Query("a", 1))
    assert _core.cache_key(Query("a", 1)) != _core.cache_key(Query("a", 2))
    assert _core.cache_key(Model(text="a", k=1)) == _core.cache_key(Model(text="a", k=1))
    assert _core.cache_key(Model(text="a", k=1)) != _core.cache_key(Query("a", 1))
    assert _core.cache_key(Hooked(3)) == _core.cache_key(Hooked(3))
    for bad in (object(), (x for x in []), [object()]):
        with pytest.raises(TypeError, match="no stable key"):
            _core.cache_key(bad)
    deep = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(TypeError, match="nested too deeply"):
        _core.cache_key(deep)


async def test_unkeyable_input_runs_uncached_and_is_counted():
    ex = cached_executor()
    fn = Counted(lambda x: 1)
    step = Step(fn, "u")
    obj = object()
    await ex.execute(step, obj)
    await ex.execute(step, obj)
    assert fn.calls == 2
    cache = ex.get_optimization_stats()["cache"]
    assert cache["uncacheable"] == 2
    (reason,) = cache["uncacheable_reasons"]
    assert "no stable key" in reason


async def test_failures_are_not_cached():
    ex = cached_executor()
    state = {"n": 0}

    async def fails_once(x):
        state["n"] += 1
        if state["n"] == 1:
            raise ValueError("first")
        return x

    step = Step(fails_once, "f")
    assert not (await ex.execute(step, 1)).success
    assert (await ex.execute(step, 1)).success
    assert (await ex.execute(step, 1)).cache_hit


async def test_per_step_switch_and_ttl_override():
    clock = ManualClock()
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=False), clock=clock)
    fn = Counted()
    on = Step(fn, "on", cache=True, cache_ttl_s=30)
    await ex.execute(on, 1)
    clock.advance(29.9)
    assert (await ex.execute(on, 1)).cache_hit
    clock.advance(0.2)
    assert not (await ex.execute(on, 1)).cache_hit  # expired after its own TTL
    assert ex.get_optimization_stats()["cache"]["expirations"] == 1
    off = Step(Counted(), "off", cache=False)
    ex2 = cached_executor()
    await ex2.execute(off, 1)
    assert not (await ex2.execute(off, 1)).cache_hit


async def test_tags_prefix_and_clear():
    ex = cached_executor()
    a = Step(Counted(), "a", tags=("users",))
    b = Step(Counted(), "b", tags=("orders",))
    for step in (a, b):
        for x in range(3):
            await ex.execute(step, x)
    assert await ex.invalidate_by_tag("users") == 3
    assert not (await ex.execute(a, 0)).cache_hit
    assert (await ex.execute(b, 0)).cache_hit
    assert await ex.invalidate_prefix("b") == 3
    assert not (await ex.execute(b, 0)).cache_hit
    await ex.clear_cache()
    assert ex.get_optimization_stats()["cache"]["size"] == 0


# ---- invalidate_prefix (by name prefix) and invalidate_step (one name) ----
async def _fill(ex, *names):
    steps = {name: Step(Counted(), name) for name in names}
    for step in steps.values():
        for x in (1, 2):
            await ex.execute(step, x)
    return steps


async def _hit(ex, step) -> bool:
    return (await ex.execute(step, 1)).cache_hit


async def test_invalidate_prefix_drops_every_step_whose_name_starts_with_it():
    ex = cached_executor()
    steps = await _fill(ex, "call_llm", "call_llm_v2", "other", "call")
    n = await ex.invalidate_prefix("call_llm")
    assert n == 4 and n.l2 is None  # two entries of each of two steps
    assert not await _hit(ex, steps["call_llm"])
    assert not await _hit(ex, steps["call_llm_v2"])
    assert await _hit(ex, steps["other"])
    assert await _hit(ex, steps["call"])  # shorter than the prefix


async def test_invalidate_step_drops_exactly_that_step():
    ex = cached_executor()
    steps = await _fill(ex, "call_llm", "call_llm_v2")
    assert await ex.invalidate_step("call_llm") == 2
    assert not await _hit(ex, steps["call_llm"])
    assert await _hit(ex, steps["call_llm_v2"])
    assert await ex.invalidate_step("call_llm_v") == 0  # not a prefix
    assert await _hit(ex, steps["call_llm_v2"])


async def test_an_empty_prefix_is_refused():
    ex = cached_executor()
    steps = await _fill(ex, "a")
    with pytest.raises(ValueError, match="prefix is empty; clear_cache") as e:
        await ex.invalidate_prefix("")
    assert type(e.value) is ValueError
    with pytest.raises(TypeError, match="prefix must be a str"):
        await ex.invalidate_prefix(None)
    assert await _hit(ex, steps["a"])


async def test_a_prefix_invalidation_keeps_out_a_step_never_cached_before():
    # The step stores its first result after the invalidation began: its
    # name was unknown to the cache then, yet its result is stale.
    ex = cached_executor()
    fn = Gated()
    step = Step(fn, "call_llm_v3", cache_key="call_llm_v3")
    task = asyncio.create_task(ex.execute(step, 1))
    await fn.started.wait()
    assert await ex.invalidate_prefix("call_llm") == 0
    fn.release.set()
    assert not (await task).cache_hit
    assert not (await ex.execute(step, 1)).cache_hit  # not stored
    assert ex.get_optimization_stats()["cache"]["stale"] == 1
    assert (await ex.execute(step, 1)).cache_hit  # began after: stored


async def test_a_shared_tier_without_invalidate_prefix_is_refused_before_anything():
    tier = _MemoryTier()
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True), cache_l2=tier)
    steps = await _fill(ex, "call_llm")
    with pytest.raises(TypeError, match="invalidate_prefix"):
        await ex.invalidate_prefix("call")
    assert await _hit(ex, steps["call_llm"])  # nothing dropped
    r = await ex.invalidate_step("call_llm")  # the exact name uses invalidate_group
    assert r == 2 and r.l2 == 0
    await ex.aclose()


async def test_entry_and_byte_bounds():
    ex = cached_executor(cache_max_size=2)
    step = Step(Counted(), "s")
    for x in range(5):
        await ex.execute(step, x)
    stats = ex.get_optimization_stats()["cache"]
    assert stats["size"] == 2 and stats["evictions"] == 3
    assert (await ex.execute(step, 4)).cache_hit  # the most recent stay
    big = cached_executor(cache_max_bytes=2_000_000)
    blob = Step(Counted(lambda n: "x" * n), "blob")
    for n in range(10):
        await big.execute(blob, 300_000 + n)
    stats = big.get_optimization_stats()["cache"]
    assert stats["bytes"] <= 2_000_000 and stats["size"] < 10


async def test_mutable_outputs_shared_by_default_copied_on_request():
    step = Step(Counted(lambda x: {"items": [x]}), "m")
    shared = cached_executor()
    r1 = await shared.execute(step, 1)
    r2 = await shared.execute(step, 1)
    assert r2.output is r1.output  # the same object: do not mutate cached outputs
    copied = cached_executor(cache_copy_outputs=True)
    r1 = await copied.execute(step, 1)
    r1.output["items"].append("mutated by the caller")
    r2 = await copied.execute(step, 1)
    assert r2.output == {"items": [1]} and r2.output is not r1.output


async def test_context_fields_join_the_key():
    ex = cached_executor()
    fn = Counted()
    step = Step(fn, "ctx", cache_context=("lang",))
    await ex.execute(step, 1, context={"lang": "en", "other": 1})
    assert (await ex.execute(step, 1, context={"lang": "en", "other": 2})).cache_hit
    assert not (await ex.execute(step, 1, context={"lang": "fr"})).cache_hit
    assert fn.calls == 2


async def test_single_flight_runs_concurrent_identical_misses_once():
    ex = cached_executor()
    release = asyncio.Event()
    calls = []

    async def slow(x):
        calls.append(x)
        await release.wait()
        return x * 10

    # `slow` captures an Event, which has no stable key: without a cache_key
    # the step would run uncached (docs/cache.md, "Cache identity").
    step = Step(slow, "slow", cache_key="slow")
    tasks = [asyncio.create_task(ex.execute(step, 7)) for _ in range(50)]
    await until(lambda: misses(ex, "slow") == 50, what="50 executions in the flight")
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == [7]
    assert all(r.success and r.output == 70 for r in results)
    assert sum(r.metadata.get("single_flight", False) for r in results) == 49
    assert ex.get_optimization_stats()["execution"]["steps"]["slow"]["shared_flights"] == 49


async def test_single_flight_shares_failures_and_can_be_turned_off():
    ex = cached_executor()
    release = asyncio.Event()
    calls = []

    async def broken(x):
        calls.append(x)
        await release.wait()
        raise RuntimeError("down")

    tasks = [asyncio.create_task(ex.execute(Step(broken, "b", cache_key="b"), 1)) for _ in range(5)]
    await until(lambda: misses(ex, "b") == 5, what="5 executions in the flight")
    release.set()
    results = await asyncio.gather(*tasks)
    assert len(calls) == 1 and all(isinstance(r.error, RuntimeError) for r in results)
    calls.clear()
    release.clear()
    tasks = [
        asyncio.create_task(ex.execute(Step(broken, "b2", single_flight=False), 1))
        for _ in range(3)
    ]
    await until(lambda: len(calls) == 3, what="3 executions running")
    release.set()
    await asyncio.gather(*tasks)
    assert len(calls) == 3


async def test_followers_run_themselves_when_the_leader_is_cancelled():
    ex = cached_executor()
    started = asyncio.Event()
    calls = []

    async def slow(x):
        calls.append(x)
        started.set()
        if len(calls) == 1:
            await asyncio.sleep(3600)  # the leader: cancelled by the test
        return x

    # A cache_key: `slow` captures an Event, and an uncached step has no flight.
    step = Step(slow, "s", cache_key="s")
    leader = asyncio.create_task(ex.execute(step, 1))
    await started.wait()
    follower = asyncio.create_task(ex.execute(step, 1))
    await until(lambda: misses(ex, "s") == 2, what="the follower in the flight")
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    r = await follower
    assert r.success and r.output == 1 and len(calls) == 2


async def test_cancelled_follower_leaves_the_flight():
    ex = cached_executor()
    release = asyncio.Event()

    async def slow(x):
        await release.wait()
        return x

    step = Step(slow, "s", cache_key="s")  # captures an Event: a flight needs a key
    leader = asyncio.create_task(ex.execute(step, 1))
    await until(lambda: misses(ex, "s") == 1, what="the leader running")
    follower = asyncio.create_task(ex.execute(step, 1))
    await until(lambda: misses(ex, "s") == 2, what="the follower in the flight")
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    release.set()
    assert (await leader).success


def test_single_flight_across_event_loops_in_threads():
    ex = cached_executor()
    gate = threading.Event()
    calls = []

    def blocking(x):  # a sync step: runs in a worker thread
        calls.append(x)
        gate.wait(5)
        return x + 1

    step = Step(blocking, "t", cache_key="t")  # captures a threading.Event
    results = []

    def worker():
        results.append(asyncio.run(ex.execute(step, 41)))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: misses(ex, "t") == 3, what="3 threads in the flight")
    gate.set()
    for t in threads:
        t.join()
    assert [r.output for r in results] == [42, 42, 42] and calls == [41]


# ----------------------------------------------------- cache admission


async def test_caching_a_cheap_step_whose_inputs_never_repeat_is_skipped():
    ex = cached_executor()
    fn = Counted(lambda x: x + 1)
    step = Step(fn, "cheap")
    results = [await ex.execute(step, i) for i in range(2000)]
    assert [r.output for r in results] == [i + 1 for i in range(2000)]
    s = ex.get_optimization_stats()["execution"]["steps"]["cheap"]
    # After the first 256 lookups found nothing, most executions skip the
    # cache; one in 256 still looks, to notice if inputs start repeating.
    assert s["cache_bypassed"] > 1000
    assert s["cache_misses"] + s["cache_bypassed"] == 2000


async def test_a_forced_cache_and_an_expensive_step_are_never_skipped():
    clock = ManualClock()

    async def slow(x):
        clock.advance(0.001)  # each execution takes 1 ms on the executor's clock
        return x

    ex = cached_executor(clock)
    forced = Step(Counted(), "forced", cache=True)
    # `slow` captures the clock: a cache_key keeps it cacheable.
    expensive = Step(slow, "expensive", cache_key="expensive")
    for i in range(300):
        await ex.execute(forced, i)
        await ex.execute(expensive, i)
    steps = ex.get_optimization_stats()["execution"]["steps"]
    assert steps["forced"]["cache_bypassed"] == 0
    assert steps["expensive"]["cache_bypassed"] == 0
    assert steps["forced"]["cache_misses"] == steps["expensive"]["cache_misses"] == 300


async def test_a_cheap_step_that_hits_keeps_its_cache():
    ex = cached_executor()
    fn = Counted()
    step = Step(fn, "repeats")
    for i in range(1000):
        await ex.execute(step, i % 10)
    s = ex.get_optimization_stats()["execution"]["steps"]["repeats"]
    assert s["cache_bypassed"] == 0 and fn.calls == 10


# ------------------------------------------------- invalidation vs in flight
@pytest.mark.parametrize("how", ["tag", "prefix", "clear"])
async def test_an_execution_in_flight_during_an_invalidation_does_not_store(how):
    ex = cached_executor()
    fn = Gated()
    step = Step(fn, "fetch_user", tags=("users",), cache_key="fetch_user")
    for round_ in range(20):
        fn.started.clear()
        fn.release.clear()
        task = asyncio.create_task(ex.execute(step, round_))
        await fn.started.wait()  # the step is running (began before the invalidation)
        await invalidate(ex, how)
        fn.release.set()
        first = await task
        assert first.success and not first.cache_hit
        # Its result predates the invalidation: the next execution runs the step.
        second = await ex.execute(step, round_)
        assert not second.cache_hit, (how, round_)
        assert second.output["computed_by_call"] == first.output["computed_by_call"] + 1
        # ... and that one, which began after the invalidation, was stored.
        assert (await ex.execute(step, round_)).cache_hit
    stats = ex.get_optimization_stats()["cache"]
    assert stats["stale"] == 20


async def test_an_invalidation_of_another_tag_does_not_keep_a_result_out():
    ex = cached_executor()
    fn = Gated()
    step = Step(fn, "fetch_user", tags=("users",), cache_key="fetch_user")
    task = asyncio.create_task(ex.execute(step, 1))
    await fn.started.wait()
    await ex.invalidate_by_tag("orders")
    await ex.invalidate_prefix("another_step")
    fn.release.set()
    await task
    assert (await ex.execute(step, 1)).cache_hit
    assert ex.get_optimization_stats()["cache"]["stale"] == 0


class _MemoryTier:
    """A shared tier in a dict (the interface of RedisCacheTier)."""

    def __init__(self):
        self.data, self.sets = {}, 0

    async def get(self, key):
        return (key in self.data, self.data.get(key))

    async def set(self, key, value, ttl_s, tags, group):
        self.sets += 1
        self.data[key] = value

    async def invalidate_tag(self, tag):
        return 0

    async def invalidate_group(self, group):
        return 0

    async def clear(self):
        self.data.clear()

    def stats(self):
        return {"sets": self.sets}


async def test_a_fallbacks_result_is_stored_in_neither_tier():
    async def fallback(x):
        return "from the fallback"

    def fail(x):
        raise ValueError("down")

    primary = Counted(fail)
    for tier in (None, _MemoryTier()):
        ex = ExecutorCore(
            OptimizationConfig(enable_cache_optimization=True, enable_circuit_breaker=False),
            cache_l2=tier,
        )
        step = Step(primary, "primary", fallback=Step(fallback, "fb", cache=False))
        for _ in range(2):
            r = await ex.execute(step, 1)
            assert r.success and r.output == "from the fallback"
            assert r.metadata["fallback_triggered"]
        await asyncio.sleep(0)  # a shared-tier write would be under way now
        assert ex.get_optimization_stats()["cache"]["size"] == 0
        if tier is not None:
            assert tier.sets == 0
        await ex.aclose()
    assert primary.calls == 4  # never answered from a cache


async def test_a_steps_own_success_is_stored_in_both_tiers():
    tier = _MemoryTier()
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True), cache_l2=tier)
    step = Step(Counted(), "own", cache=True)
    assert (await ex.execute(step, 1)).output == 1
    await asyncio.sleep(0)
    assert tier.sets == 1
    assert (await ex.execute(step, 1)).cache_hit
    await ex.aclose()
