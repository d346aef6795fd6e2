"""max_concurrent_executions: a native FIFO limit on executions in flight."""

import asyncio
import random
import threading

import pytest

from _probes import Probe, until
from caudal import ExecutorCore, OptimizationConfig, Step


def limited(n):
    return ExecutorCore(OptimizationConfig(max_concurrent_executions=n))


def waiting(ex):
    return ex.get_optimization_stats()["concurrency"]["waiting"]


async def test_limit_is_never_exceeded_and_waiters_start_in_order():
    ex = limited(3)
    probe = Probe()
    results = await asyncio.gather(*(ex.execute(Step(probe, "p"), i) for i in range(30)))
    assert [r.output for r in results] == list(range(30))
    assert probe.peak == 3
    assert probe.started == list(range(30))  # FIFO
    c = ex.get_optimization_stats()["concurrency"]
    assert c["slots_in_use"] == 0 and c["waiting"] == 0 and c["waited"] == 27
    assert c["max_waiting"] == 27


async def test_cancelled_waiters_leak_no_slot():
    ex = limited(2)
    probe = Probe(delay=0.01)
    rng = random.Random(3)
    tasks = [asyncio.create_task(ex.execute(Step(probe, "p"), i)) for i in range(40)]
    await asyncio.sleep(0)
    cancelled = set(rng.sample(range(40), 15))
    for i in cancelled:
        tasks[i].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    ran = [i for i, o in enumerate(outcomes) if not isinstance(o, BaseException)]
    assert all(isinstance(outcomes[i], asyncio.CancelledError) for i in cancelled if i not in ran)
    assert probe.peak <= 2
    c = ex.get_optimization_stats()["concurrency"]
    assert c["slots_in_use"] == 0 and c["waiting"] == 0
    # The executor still works at full capacity afterwards.
    probe2 = Probe()
    await asyncio.gather(*(ex.execute(Step(probe2, "q"), i) for i in range(6)))
    assert probe2.peak == 2


async def test_a_permit_handed_on_within_one_loop_does_not_go_through_its_self_pipe():
    # call_soon_threadsafe writes to the loop's self-pipe and costs the loop
    # one more pass per wake-up; on the waiter's own loop it is not needed.
    loop = asyncio.get_running_loop()
    woken_threadsafe = []
    real = loop.call_soon_threadsafe

    def recording(cb, *args, **kwargs):
        woken_threadsafe.append(cb)
        return real(cb, *args, **kwargs)

    loop.call_soon_threadsafe = recording
    try:
        ex = limited(1)
        results = await asyncio.gather(*(ex.execute(Step(Probe(0.001), "p"), i) for i in range(8)))
    finally:
        del loop.call_soon_threadsafe
    assert [r.output for r in results] == list(range(8))
    assert ex.get_optimization_stats()["concurrency"]["waited"] == 7
    assert woken_threadsafe == []


def test_a_permit_released_on_another_threads_loop_wakes_the_waiter():
    ex = limited(1)
    holding = threading.Event()
    release = threading.Event()

    def hold(x):  # a sync step: runs in a worker thread, holds the permit
        holding.set()
        release.wait(5)
        return x

    def holder():
        asyncio.run(ex.execute(Step(hold, "h"), 0))

    t = threading.Thread(target=holder)
    t.start()
    assert holding.wait(5)
    got = []

    async def waiter():
        task = asyncio.create_task(ex.execute(Step(Probe(0.0), "w"), 1))
        await until(lambda: waiting(ex) == 1, what="the waiter queued")
        release.set()  # the permit is released on the holder's loop
        got.append(await asyncio.wait_for(task, 5))

    asyncio.run(waiter())
    t.join(5)
    assert got[0].output == 1


async def test_cancelling_a_running_execution_hands_its_slot_on():
    ex = limited(1)
    started = asyncio.Event()

    async def forever(x):
        started.set()
        await asyncio.sleep(3600)  # cancelled by the test

    blocker = asyncio.create_task(ex.execute(Step(forever, "f"), 0))
    await started.wait()
    waiter = asyncio.create_task(ex.execute(Step(Probe(), "p"), 1))
    await until(lambda: waiting(ex) == 1, what="the waiter queued")
    assert not waiter.done()
    blocker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocker
    assert (await waiter).output == 1


async def test_raising_or_removing_the_limit_wakes_waiters():
    ex = limited(1)
    gate = asyncio.Event()

    async def held(x):
        await gate.wait()
        return x

    tasks = [asyncio.create_task(ex.execute(Step(held, "h"), i)) for i in range(5)]
    await until(lambda: waiting(ex) == 4, what="4 executions queued")
    await ex.apply_optimization_config(OptimizationConfig(max_concurrent_executions=3))
    await until(lambda: waiting(ex) == 2, what="2 waiters woken")
    await ex.apply_optimization_config(OptimizationConfig())  # None: no limit
    await until(lambda: waiting(ex) == 0, what="every waiter woken")
    gate.set()
    assert [r.output for r in await asyncio.gather(*tasks)] == list(range(5))


async def test_cache_hits_need_no_slot():
    ex = ExecutorCore(
        OptimizationConfig(max_concurrent_executions=1, enable_cache_optimization=True)
    )
    started = asyncio.Event()

    async def forever(x):
        started.set()
        await asyncio.sleep(3600)  # cancelled by the test

    async def quick(x):
        return x

    await ex.execute(Step(quick, "q"), 1)  # cached
    blocker = asyncio.create_task(ex.execute(Step(forever, "f"), 0))
    await started.wait()
    r = await asyncio.wait_for(ex.execute(Step(quick, "q"), 1), timeout=5)
    assert r.cache_hit
    blocker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocker
