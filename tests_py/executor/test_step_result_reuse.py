"""A StepResult's memory is reused for later results (a free list in
cpp/bindings/step_result.cc): a result made from reused memory must be
indistinguishable from a new one. Nothing of the result that was there
before may show through, whatever that one had: a weak reference, metadata,
an output, a pending attempt, a place in a reference cycle."""

from __future__ import annotations

import asyncio
import gc
import weakref

from caudal import ExecutorCore, OptimizationConfig, Step, StepResult


async def boxed(x):
    return [x]


async def suspends(x):
    await asyncio.sleep(0)
    return [x]


def fresh(r: StepResult, x: int, *, hit: bool = False) -> None:
    assert r.success and r.output == [x], r
    assert r.feedback is None and r.error is None
    assert r.cache_hit is hit
    assert r.metadata == {}
    assert r.attempts == (0 if hit else 1)  # a hit runs no attempt
    assert gc.is_tracked(r)


async def test_a_dropped_result_leaves_nothing_in_the_next():
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=False))
    r = await ex.execute(boxed, 1)
    r.metadata["kept"] = "from the first"
    r.feedback = "stale"
    called = []
    ref = weakref.ref(r, lambda _: called.append(1))
    del r
    assert called == [1] and ref() is None
    for x in range(2, 300):
        r = await ex.execute(boxed, x)
        fresh(r, x)
        # The weak reference stays dead: it never reaches a result made in
        # the old one's memory.
        assert ref() is None
        del r


async def test_many_results_alive_at_once_are_each_their_own():
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=False))
    for rnd in range(3):
        base = rnd * 1000
        results = await asyncio.gather(*(ex.execute(boxed, base + i) for i in range(500)))
        assert len({id(r) for r in results}) == 500
        for i, r in enumerate(results):
            fresh(r, base + i)
        del results


async def test_results_of_suspended_attempts_and_user_made_ones_are_reused_cleanly():
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=False))
    # Results made by hand (the type's own constructor) and results whose
    # attempt suspended (pending while awaited) go back to the free list too.
    made = [StepResult(name="by-hand", output=i, success=False, feedback="f") for i in range(200)]
    pending = [await ex.execute(suspends, i) for i in range(200)]
    for i, r in enumerate(pending):
        fresh(r, i)
    del made, pending
    for x in range(400):
        r = await (ex.execute(suspends, x) if x % 2 else ex.execute(boxed, x))
        fresh(r, x)
        assert r.name == ("suspends" if x % 2 else "boxed")


async def test_results_freed_by_the_collector_are_reused_cleanly():
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=False))
    for _ in range(50):
        r = await ex.execute(boxed, 0)
        r.metadata["self"] = r  # a cycle only the collector frees
        del r
    gc.collect()
    for x in range(200):
        fresh(await ex.execute(boxed, x), x)


async def test_cache_hits_from_reused_memory_carry_their_own_entry():
    # No shrinking under memory pressure (a sanitizer build's RSS is large):
    # every entry stays.
    ex = ExecutorCore(
        OptimizationConfig(enable_cache_optimization=True, memory_pressure_threshold_mb=1e6)
    )

    async def keyed(x):
        return [x]

    # Cached whatever the cache admission would judge of so cheap a step.
    step = Step(keyed, cache=True)
    for x in range(100):
        fresh(await ex.execute(step, x), x)
    for x in reversed(range(100)):
        fresh(await ex.execute(step, x), x, hit=True)
