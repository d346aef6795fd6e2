"""Record pool and memory pressure, seen through ExecutorCore (docs/memory.md).

Memory pressure is driven by an injected RSS source (the engine's
``_set_rss_source`` hook: the monitor reads a value this test controls
instead of /proc/self/statm); everything else is the real executor."""

from __future__ import annotations

import asyncio

from _probes import until
from caudal import ExecutorCore, OptimizationConfig, Step, _core

MB = 1024 * 1024


async def echo(x):
    return x


def memory(ex: ExecutorCore) -> dict:
    return ex.get_optimization_stats()["memory"]


class Rss:
    """An RSS source the test sets by hand (bytes)."""

    def __init__(self, mb: float) -> None:
        self.mb = mb
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return int(self.mb * MB)


def pressured(threshold_mb=100.0, **kw) -> tuple[ExecutorCore, Rss]:
    ex = ExecutorCore(
        OptimizationConfig(
            memory_pressure_threshold_mb=threshold_mb,
            enable_cache_optimization=True,
            cache_max_size=200,
            object_pool_max_size=8,
            object_pool_cleanup_threshold=1.0,
            **kw,
        )
    )
    rss = Rss(10)
    ex._engine._set_rss_source(rss)
    return ex, rss


async def test_memory_section_is_measured():
    # A threshold this process cannot reach (under ASan it holds ~600 MB).
    ex = ExecutorCore(OptimizationConfig(memory_pressure_threshold_mb=1e6))
    m = memory(ex)
    assert m["usage_mb"] > 1  # this process's real RSS
    assert m["memory_pressure_level"] == "normal"
    assert m["memory_pressure_threshold_mb"] == 1e6
    assert m["shrunk"] == []
    assert m["object_pool_enabled"] and m["memory_optimization_enabled"]
    assert set(m["object_pool"]) >= {"hits", "misses", "idle", "in_use", "utilization"}
    assert "not implemented" not in repr(m)


async def test_pool_serves_records_and_utilization_is_real():
    ex = ExecutorCore(OptimizationConfig(object_pool_max_size=4, memory_pressure_threshold_mb=1e6))
    step = Step(echo, "echo")
    for i in range(100):
        await ex.execute(step, i)
    pool = memory(ex)["object_pool"]
    assert pool["misses"] == 1 and pool["hits"] == 99  # one record, reused
    assert pool["in_use"] == 0 and pool["idle"] == 1
    assert memory(ex)["object_pool_utilization"] == 0.0  # nothing in use now

    started, release = asyncio.Event(), asyncio.Event()
    n = 0

    async def held(x):
        nonlocal n
        n += 1
        if n == 3:
            started.set()
        await release.wait()
        return x

    tasks = [asyncio.create_task(ex.execute(Step(held, "held"), i)) for i in range(3)]
    await started.wait()
    m = memory(ex)
    assert m["object_pool"]["in_use"] == 3
    assert m["object_pool_utilization"] == 1.0  # 3 in use, none idle
    release.set()
    await asyncio.gather(*tasks)
    pool = memory(ex)["object_pool"]
    assert pool["in_use"] == 0 and pool["idle"] == 3


async def test_pool_off_and_toggled_with_executions_in_flight():
    ex = ExecutorCore(
        OptimizationConfig(enable_object_pool=False, memory_pressure_threshold_mb=1e6)
    )
    for i in range(10):
        await ex.execute(Step(echo, "echo"), i)
    pool = memory(ex)["object_pool"]
    assert pool["hits"] + pool["misses"] == 0

    await ex.apply_optimization_config(
        OptimizationConfig(
            enable_object_pool=True,
            memory_pressure_threshold_mb=1e6,
            enable_concurrency_optimization=False,  # five at once, unlimited
        )
    )
    release = asyncio.Event()

    async def held(x):
        await release.wait()
        return x

    tasks = [asyncio.create_task(ex.execute(Step(held, "held"), i)) for i in range(5)]
    await until(lambda: memory(ex)["object_pool"]["in_use"] == 5, what="5 records in use")
    await ex.apply_optimization_config(
        OptimizationConfig(enable_object_pool=False, memory_pressure_threshold_mb=1e6)
    )
    release.set()
    results = await asyncio.gather(*tasks)
    assert all(r.success for r in results)
    pool = memory(ex)["object_pool"]
    # Each pooled record went back to its pool, which now keeps none.
    assert pool["in_use"] == 0 and pool["idle"] == 0 and pool["discards"] == 5


async def test_pressure_shrinks_publishes_recommends_and_restores():
    ex, rss = pressured()
    # Forced: a trivial step with distinct inputs would otherwise stop being
    # cached once caching is seen not to pay (docs/cache.md).
    step = Step(echo, "cached", cache=True)
    for i in range(200):
        await ex.execute(step, i)
    before = ex.get_optimization_stats()["cache"]["size"]
    assert before > 150  # sharded LRU: each shard holds its share of 200
    assert memory(ex)["memory_pressure_level"] == "normal"
    assert not [r for r in ex.get_performance_recommendations() if "Memory" in r["description"]]

    async with ex.events(types="memory_pressure") as events:
        rss.mb = 110
        m = memory(ex)
        assert m["usage_mb"] == 110
        assert m["memory_pressure_level"] == "elevated"
        cache = ex.get_optimization_stats()["cache"]
        assert cache["max_size"] == 100 and cache["size"] <= 100
        evicted = before - cache["size"]
        assert m["shrunk"][-1] == f"result_cache: max entries 200 -> 100 ({evicted} evicted)"
        assert m["shrunk"][0].startswith("object_pool: max idle records 8 -> 4")
        (rec,) = [r for r in ex.get_performance_recommendations() if "Memory" in r["description"]]
        assert "elevated" in rec["description"] and "result_cache" in rec["description"]

        rss.mb = 200
        m = memory(ex)
        assert m["memory_pressure_level"] == "critical"
        assert ex.get_optimization_stats()["cache"]["max_size"] == 20
        assert m["object_pool"]["max_idle"] == 0

        rss.mb = 50
        m = memory(ex)
        assert m["memory_pressure_level"] == "normal" and m["shrunk"] == []
        assert ex.get_optimization_stats()["cache"]["max_size"] == 200
        assert m["object_pool"]["max_idle"] == 8
        seen = []
        async for e in events:
            seen.append((e.detail, e.value, e.value2))
            if len(seen) == 3:
                break
    assert seen == [
        ("normal->elevated", 110.0, 1.0),
        ("elevated->critical", 200.0, 2.0),
        ("critical->normal", 50.0, 0.0),
    ]
    # Executions still work and the cache grows back.
    for i in range(200):
        await ex.execute(step, i + 1000)
    assert ex.get_optimization_stats()["cache"]["size"] > 150


async def test_pressure_detected_on_the_execution_path():
    ex, rss = pressured()
    ex._engine._set_memory_interval(0.0)  # every execution may read
    step = Step(echo, "e")
    async with ex.events(types="memory_pressure") as events:
        rss.mb = 130
        await ex.execute(step, 1)  # no stats read: the execution polled
        e = await anext(aiter(events))
    assert e.detail == "normal->critical"
    assert memory(ex)["memory_pressure_level"] == "critical"


async def test_reads_are_rate_limited():
    ex, rss = pressured()
    ex._engine._set_memory_interval(3600.0)
    step = Step(echo, "e")
    await ex.execute(step, 0)  # the first maintenance round reads once
    calls = rss.calls
    for i in range(500):
        await ex.execute(step, i)
    assert rss.calls == calls  # no reading per execution
    assert memory(ex)["rss_interval_s"] == 3600.0


async def test_only_with_memory_optimization():
    ex, rss = pressured(enable_memory_optimization=False)
    rss.mb = 1000
    m = memory(ex)
    assert m["usage_mb"] == 1000  # still read for the stats
    assert m["memory_pressure_level"] == "normal" and m["shrunk"] == []
    assert ex.get_optimization_stats()["cache"]["max_size"] == 200


async def test_failing_source_counts_errors():
    ex = ExecutorCore()

    def broken():
        raise OSError("no /proc here")

    ex._engine._set_rss_source(broken)
    m = memory(ex)
    assert m["rss_read_errors"] >= 1 and m["memory_pressure_level"] == "normal"
    ex._engine._set_rss_source(None)  # back to /proc/self/statm
    assert memory(ex)["usage_mb"] > 1


def test_native_allocation_counter_only_in_instrumented_builds():
    n = _core._native_allocations()
    assert n is None or isinstance(n, int)
