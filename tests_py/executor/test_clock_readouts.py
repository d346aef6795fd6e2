"""ExecutorCore(clock=ManualClock()): the read-outs follow the executor's
clock too — CPU and memory figures, breaker ages, event and tuner time
stamps, the worker pool's queue timeout and the latency recorder's interval.
Nothing here sleeps on the wall clock; time moves only when advanced.
"""

import asyncio
import threading

import pytest

from caudal import ExecutorCore, OptimizationConfig, Step
from caudal.errors import PoolTimeoutError
from caudal.testing import ManualClock
from caudal.worker_pool import WorkerPool


async def _settle(turns: int = 20) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def echo(x):
    return x


def executor(clock: ManualClock, **cfg) -> ExecutorCore:
    return ExecutorCore(OptimizationConfig(**cfg), clock=clock)


async def test_engine_now_is_the_manual_clock():
    clock = ManualClock()
    ex = executor(clock)
    assert ex._engine.now_ns() == clock.now_ns()
    clock.advance(2.5)
    assert ex._engine.now_ns() == clock.now_ns()
    assert ex._engine._clock is clock._native


async def test_cpu_figures_cover_the_executor_clock():
    clock = ManualClock()
    ex = executor(clock)
    cpu = [0]
    ex._engine._set_cpu_source(lambda: cpu[0], allowed_cpus=1)
    ex.get_optimization_stats()  # the first sample
    clock.advance(2.0)
    cpu[0] += 1_000_000_000  # one CPU second in two seconds
    system = ex.get_optimization_stats()["system"]
    assert system["cpu_window_s"] == 2.0
    assert system["cpu_percent_per_core"] == 50.0


async def test_memory_read_on_the_executor_clock():
    clock = ManualClock()
    ex = executor(
        clock,
        memory_pressure_threshold_mb=100.0,
        enable_cache_optimization=True,
        cache_ttl_seconds=60.0,
    )
    mb = [10]
    ex._engine._set_rss_source(lambda: int(mb[0] * 2**20))
    await ex.execute(Step(echo, "e"), 1)  # cached until 60 s later on the clock
    async with ex.events(types="memory_pressure") as events:
        mb[0] = 130
        m = ex.get_optimization_stats()["memory"]  # this read finds the pressure
        e = await asyncio.wait_for(anext(aiter(events)), 10)
    assert m["memory_pressure_level"] == "critical"
    # The entry has not expired on the executor's clock: shrinking evicts it
    # for room, not as expired.
    assert m["shrunk"] and not [s for s in m["shrunk"] if "expired" in s]
    assert e.time == clock.now()


async def test_breaker_ages_on_the_executor_clock():
    clock = ManualClock()
    ex = executor(clock, circuit_breaker_failure_threshold=1)

    async def boom(x):
        raise ValueError("down")

    step = Step(boom, "down")
    assert not (await ex.execute(step, 1)).success
    clock.advance(5.0)
    (b,) = ex.get_optimization_stats()["circuit_breaker"]["breakers"].values()
    assert b["state"] == "open"
    assert b["last_transition_age_s"] == 5.0
    (t,) = ex.get_optimization_stats()["circuit_breaker"]["transitions"]
    assert t["age_s"] == 5.0


async def test_published_event_time_is_the_executor_clock():
    clock = ManualClock()
    ex = executor(clock)
    async with ex.events(types="optimization_applied") as events:
        assert ex._engine._publish_event("optimization_applied", "f", 1.0, 0.0, "why")
        e = await asyncio.wait_for(anext(aiter(events)), 10)
    assert e.time == clock.now()


async def test_tuner_commit_time_is_the_executor_clock():
    clock = ManualClock()
    ex = executor(clock)
    clock.advance(7.0)
    await ex.run_optimization_analysis()
    last = ex.get_optimization_stats()["automatic_optimization"]["last_analysis"]
    assert last["time"] == clock.now()


async def test_pool_queue_timeout_on_a_manual_clock():
    clock = ManualClock()
    pool = WorkerPool(workers=1, queue_size=4, task_timeout=1.0, clock=clock)
    release = threading.Event()
    started = threading.Event()

    def hold():
        started.set()
        return release.wait()

    try:
        busy = pool.submit(hold)
        await asyncio.to_thread(started.wait)  # the worker took it
        queued = pool.submit(lambda: "ran")
        clock.advance(2.0)  # the queued task has waited 2 s on the clock
        release.set()
        assert await busy is True
        with pytest.raises(PoolTimeoutError):
            await queued
    finally:
        release.set()
        pool.close()


async def test_pool_clock_must_be_a_manual_clock():
    with pytest.raises(TypeError, match="WorkerPool: clock must be"):
        WorkerPool(workers=1, clock=object())


async def test_executor_pool_follows_the_executor_clock():
    clock = ManualClock()
    ex = executor(
        clock, worker_pool_size=1, worker_pool_queue_size=4, worker_pool_task_timeout_seconds=1.0
    )
    release = threading.Event()
    started = threading.Event()

    def blocker(x):
        started.set()
        release.wait()
        return x

    def quick(x):
        return x

    try:
        first = asyncio.create_task(ex.execute(Step(blocker, "blocker"), 1))
        while not started.is_set():
            await asyncio.sleep(0)
        second = asyncio.create_task(ex.execute(Step(quick, "quick"), 2))
        await _settle()
        clock.advance(2.0)  # quick waited in the queue past the timeout
        release.set()
        assert (await first).success
        result = await second
        assert not result.success
        assert isinstance(result.error, PoolTimeoutError), result
    finally:
        release.set()


async def test_recorder_samples_on_the_executor_clock():
    clock = ManualClock()
    ex = executor(clock)
    await ex.execute(Step(echo, "e"), 1)
    rec = ex.start_latency_recorder(interval_s=3600.0)
    try:
        await _settle()
        assert rec.samples() == []  # an hour has not passed on the clock
        clock.advance(3600.0)
        await _settle()
        (s,) = rec.samples()
        assert s["time_s"] == clock.now()
        assert rec.started_at == clock.now() - 3600.0
    finally:
        rec.stop()
