"""executor.events(): the native event bus seen from asyncio."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from _probes import drive
from caudal import ExecutorCore, OptimizationConfig, Step
from caudal.events import EVENT_TYPES, Event
from caudal.testing import ManualClock


async def echo(x):
    return x


async def boom(x):
    raise ValueError("bad")


def executor(clock=None, **kw) -> ExecutorCore:
    """An executor whose memory-pressure level cannot depend on this test
    process's RSS (under ASan it is several hundred MB): these tests count
    events exactly."""
    kw.setdefault("memory_pressure_threshold_mb", 1e6)
    return ExecutorCore(OptimizationConfig(**kw), clock=clock)


def subscribers(ex: ExecutorCore) -> int:
    return ex.get_optimization_stats()["events"]["subscribers"]


async def take(stream, n: int) -> list[Event]:
    out = []
    async for e in stream:
        out.append(e)
        if len(out) == n:
            break
    return out


def test_event_types_are_stable_names():
    assert EVENT_TYPES[:10] == (
        "step_started",
        "step_finished",
        "step_failed",
        "cache_hit",
        "cache_miss",
        "breaker_transition",
        "limit_changed",
        "memory_pressure",
        "config_changed",
        "pool_queue_full",
    )
    assert "step_cancelled" in EVENT_TYPES


async def test_subscriber_sees_step_events_in_order():
    ex = executor()
    step = Step(echo, "echo")
    async with ex.events() as stream:
        t0 = time.monotonic()
        for i in range(3):
            assert (await ex.execute(step, i)).success
        events = await take(stream, 6)
    assert [e.type for e in events] == ["step_started", "step_finished"] * 3
    assert all(e.step == "echo" for e in events)
    assert [e.value for e in events[0::2]] == [1, 1, 1]  # attempt number
    assert all(e.value >= 0 and e.value2 == 1 for e in events[1::2])  # latency, attempts
    times = [e.time for e in events]
    assert times == sorted(times) and t0 <= times[0] <= time.monotonic()
    assert "step_finished" in repr(events[1]) and "'echo'" in repr(events[1])
    stats = ex.get_optimization_stats()["events"]
    assert stats["published"] == 6 and stats["delivered"] == 6 and stats["dropped"] == 0


async def test_types_filter_and_failures():
    clock = ManualClock()  # the back-off between attempts passes on it
    ex = executor(clock)
    async with ex.events(types=("step_failed",)) as failed:
        await ex.execute(Step(echo, "ok"), 1)
        r = await drive(clock, ex.execute(Step(boom, "bad", max_retries=1), 1))
        assert not r.success
        (e,) = await take(failed, 1)
    assert (e.type, e.step, e.value2) == ("step_failed", "bad", 2)
    assert failed.delivered == 1


async def test_retries_publish_one_started_event_per_attempt():
    clock = ManualClock()  # the back-off between attempts passes on it
    ex = executor(clock)
    async with ex.events(types="step_started") as s:
        await drive(clock, ex.execute(Step(boom, "bad", max_retries=2), 1))
        events = await take(s, 3)
    assert [e.value for e in events] == [1, 2, 3]


async def test_unknown_type_lists_valid_ones():
    ex = executor()
    with pytest.raises(ValueError, match=r"unknown event type .step_done.*step_finished"):
        ex.events(types=("step_done",))
    with pytest.raises(ValueError, match="buffer"):
        ex.events(buffer=0)


async def test_slow_subscriber_loses_counted_events_and_never_blocks():
    ex = executor()
    step = Step(echo, "echo")
    async with ex.events(types="step_finished", buffer=5) as slow:
        results = [await ex.execute(step, i) for i in range(50)]
        assert all(r.success for r in results)
        assert slow.delivered == 5 and slow.dropped == 45
        # The buffer kept the oldest five.
        kept = await take(slow, 5)
    assert len(kept) == 5
    stats = ex.get_optimization_stats()["events"]
    assert stats["dropped"] == 45 and stats["delivered"] == 5 and stats["published"] == 50


async def test_break_unsubscribes():
    ex = executor()
    step = Step(echo, "echo")

    async def first():
        async for e in ex.events():
            return e

    task = asyncio.create_task(first())
    await asyncio.sleep(0)
    assert subscribers(ex) == 1
    await ex.execute(step, 1)
    assert (await task).type == "step_started"
    assert subscribers(ex) == 0
    before = ex.get_optimization_stats()["events"]["published"]
    await ex.execute(step, 1)  # nobody wants it: not even published
    assert ex.get_optimization_stats()["events"]["published"] == before


async def test_exception_in_loop_body_unsubscribes():
    ex = executor()

    async def reader():
        async for _ in ex.events():
            raise KeyError("stop")

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    assert subscribers(ex) == 1
    await ex.execute(Step(echo, "echo"), 1)
    with pytest.raises(KeyError):
        await task
    assert subscribers(ex) == 0


async def test_garbage_collected_iterator_unsubscribes():
    ex = executor()
    stream = ex.events()
    assert subscribers(ex) == 0  # subscribes on first iteration only
    it = aiter(stream)
    task = asyncio.create_task(anext(it))
    await asyncio.sleep(0)
    assert subscribers(ex) == 1
    await ex.execute(Step(echo, "echo"), 1)
    await task
    del stream, it, task
    gc.collect()
    assert subscribers(ex) == 0


async def test_several_subscribers_each_get_everything():
    ex = executor()
    step = Step(echo, "echo")
    async with ex.events() as a, ex.events(types="step_finished") as b, ex.events() as c:
        assert subscribers(ex) == 3
        for i in range(4):
            await ex.execute(step, i)
        ea, eb, ec = await take(a, 8), await take(b, 4), await take(c, 8)
    assert [e.type for e in ea] == [e.type for e in ec] == ["step_started", "step_finished"] * 4
    assert [e.type for e in eb] == ["step_finished"] * 4
    assert subscribers(ex) == 0


async def test_cancelling_a_waiting_reader_unsubscribes():
    ex = executor()
    seen: list[Event] = []

    async def reader():
        async for e in ex.events():
            seen.append(e)

    task = asyncio.create_task(reader())
    await ex.execute(Step(echo, "echo"), 1)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert subscribers(ex) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert subscribers(ex) == 0
    await ex.execute(Step(echo, "echo"), 1)  # still fine with no reader


async def test_reader_woken_from_another_thread():
    ex = executor()
    step = Step(echo, "echo")
    async with ex.events(types="step_finished") as s:

        def other_loop():
            asyncio.run(ex.execute(step, "from thread"))

        t = threading.Thread(target=other_loop)
        got = asyncio.create_task(take(s, 1))
        await asyncio.sleep(0)
        t.start()
        (e,) = await asyncio.wait_for(got, 30)
        t.join()
    assert e.step == "echo"


async def test_config_changed():
    ex = executor()
    async with ex.events(types="config_changed") as s:
        await ex.apply_optimization_config(
            OptimizationConfig(
                cache_max_size=123,
                enable_cache_optimization=True,
                memory_pressure_threshold_mb=1e6,
            )
        )
        (e,) = await take(s, 1)
    assert e.type == "config_changed"
    assert set(e.detail.split(",")) == {"cache_max_size", "enable_cache_optimization"}
    assert e.value >= 2  # the config generation


async def test_breaker_transitions():
    ex = executor(
        circuit_breaker_failure_threshold=2, circuit_breaker_recovery_timeout_seconds=0.01
    )
    step = Step(boom, "api")
    async with ex.events(types=("breaker_transition", "step_failed")) as s:
        for _ in range(3):
            await ex.execute(step, 1)
        events = await take(s, 4)
    assert [e.type for e in events] == [
        "step_failed",
        "breaker_transition",
        "step_failed",
        "step_failed",
    ]
    tr = events[1]
    assert (tr.step, tr.detail, tr.value, tr.value2) == ("api", "closed->open", 0, 1)
    assert events[3].detail == "rejected"


async def test_cache_hit_and_miss_events():
    ex = executor(enable_cache_optimization=True)
    step = Step(echo, "cached")
    async with ex.events(types=("cache_hit", "cache_miss")) as s:
        await ex.execute(step, 1)
        await ex.execute(step, 1)
        events = await take(s, 2)
    assert [(e.type, e.step) for e in events] == [("cache_miss", "cached"), ("cache_hit", "cached")]


async def test_cancelled_execution_event():
    ex = executor()
    started = asyncio.Event()

    async def slow(x):
        started.set()
        await asyncio.sleep(30)  # cancelled by the test

    async with ex.events(types="step_cancelled") as s:
        task = asyncio.create_task(ex.execute(Step(slow, "slow"), 1))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (e,) = await take(s, 1)
    assert (e.type, e.step) == ("step_cancelled", "slow")


async def test_closed_stream_drains_then_stops():
    ex = executor()
    stream = ex.events()
    async with stream:
        await ex.execute(Step(echo, "echo"), 1)
    assert not stream.subscribed
    assert [e.type async for e in stream] == ["step_started", "step_finished"]
