"""Per-key and adaptive concurrency limits, and execute_many / map."""

import asyncio
import random

import pytest

from _probes import Probe, drive, until
from caudal import ExecutorCore, OptimizationConfig, OverloadedError, Step
from caudal.testing import ManualClock


class Backend:
    """An in-process backend with a hidden capacity: beyond it, latency grows
    with the load and requests fail with an overload error. Its time passes
    on ``clock`` (a ManualClock the test drives) when given."""

    def __init__(self, capacity, base_s=0.004, fail_with=OverloadedError, clock=None):
        self.capacity = capacity
        self.sleep = clock.sleep if clock is not None else asyncio.sleep
        self.base_s = base_s
        self.active = 0
        self.peak = 0
        self.fail_with = fail_with
        self.rng = random.Random(7)

    async def __call__(self, x):
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            load = max(1.0, self.active / self.capacity)
            if self.active > self.capacity and self.rng.random() < 0.5:
                await self.sleep(self.base_s / 5)
                raise self.fail_with("overloaded")
            await self.sleep(self.base_s * load)
            return x
        finally:
            self.active -= 1


NO_BREAKER = OptimizationConfig(enable_circuit_breaker=False)


def key_stats(ex, key):
    return ex.get_optimization_stats()["concurrency"]["keys"][key]


def keys(ex):
    return ex.get_optimization_stats()["concurrency"]["keys"]


# ------------------------------------------------------------ fixed per key


async def test_max_concurrency_limits_a_step_and_keeps_fifo_order():
    ex = ExecutorCore()
    probe = Probe()
    st = Step(probe, "p", max_concurrency=2)
    results = await asyncio.gather(*(ex.execute(st, i) for i in range(20)))
    assert [r.output for r in results] == list(range(20))
    assert probe.peak == 2
    assert probe.started == list(range(20))
    k = key_stats(ex, "p")
    assert k["mode"] == "fixed" and k["limit"] == 2
    assert k["in_flight"] == 0 and k["waiting"] == 0 and k["waited"] == 18


async def test_steps_sharing_a_key_share_its_limit():
    ex = ExecutorCore()
    probe = Probe()
    a = Step(probe, "a", concurrency_key="db", max_concurrency=3)
    b = Step(probe, "b", concurrency_key="db")
    await asyncio.gather(*(ex.execute(a if i % 2 else b, i) for i in range(30)))
    assert probe.peak == 3
    assert key_stats(ex, "db")["acquired"] == 30


async def test_conflicting_fixed_limits_on_one_key_are_refused():
    ex = ExecutorCore()
    await ex.execute(Step(Probe(0), "a", concurrency_key="db", max_concurrency=3), 1)
    with pytest.raises(ValueError, match="concurrency key 'db' already has max_concurrency=3"):
        await ex.execute(Step(Probe(0), "b", concurrency_key="db", max_concurrency=4), 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1"),
        ({"max_concurrency": True}, "max_concurrency must be an int >= 1"),
        ({"concurrency_key": ""}, "concurrency_key must be a non-empty str"),
    ],
)
def test_bad_limit_settings_name_the_step(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message) as info:
        Step(lambda x: x, "s", **kwargs)
    assert "'s'" in str(info.value)


async def test_cancelled_key_waiters_leak_no_permit():
    ex = ExecutorCore()
    probe = Probe(delay=0.01)
    st = Step(probe, "p", max_concurrency=2)
    tasks = [asyncio.create_task(ex.execute(st, i)) for i in range(30)]
    await asyncio.sleep(0)
    for i in random.Random(5).sample(range(30), 12):
        tasks[i].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert probe.peak <= 2
    k = key_stats(ex, "p")
    assert k["in_flight"] == 0 and k["waiting"] == 0
    # The limiter still works afterwards.
    assert (await ex.execute(st, 99)).output == 99


async def test_a_key_permit_held_while_waiting_for_a_global_slot_is_given_back():
    ex = ExecutorCore(OptimizationConfig(max_concurrent_executions=1))
    gate = asyncio.Event()

    async def held(x):
        await gate.wait()
        return x

    blocker = asyncio.create_task(ex.execute(Step(held, "other"), 0))
    await until(
        lambda: ex.get_optimization_stats()["concurrency"]["slots_in_use"] == 1,
        what="the blocker running",
    )
    st = Step(Probe(0), "p", max_concurrency=1)
    waiting = asyncio.create_task(ex.execute(st, 1))  # holds p's permit, waits for the slot
    await until(
        lambda: ex.get_optimization_stats()["concurrency"]["waiting"] == 1, what="p waiting"
    )
    assert key_stats(ex, "p")["in_flight"] == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert key_stats(ex, "p")["in_flight"] == 0
    gate.set()
    await blocker
    assert (await ex.execute(st, 2)).output == 2
    c = ex.get_optimization_stats()["concurrency"]
    assert c["slots_in_use"] == 0 and c["waiting"] == 0


async def test_fallbacks_do_not_deadlock_on_the_permits_of_their_primary():
    async def broken(x):
        await asyncio.sleep(0.001)
        raise RuntimeError("down")

    async def spare(x):
        return -x

    ex = ExecutorCore(OptimizationConfig(max_concurrent_executions=2))
    st = Step(broken, "broken", fallback=Step(spare, "spare"), max_concurrency=2)
    results = await asyncio.wait_for(
        asyncio.gather(*(ex.execute(st, i) for i in range(10))), timeout=10
    )
    assert [r.output for r in results] == [-i for i in range(10)]
    assert all(r.metadata.get("fallback_triggered") for r in results)


# ------------------------------------------------------------------ adaptive


async def test_adaptive_is_the_default_and_starts_at_the_initial_limit():
    ex = ExecutorCore(OptimizationConfig(concurrency_initial_limit=4))
    probe = Probe(delay=0.001)
    await asyncio.gather(*(ex.execute(Step(probe, "p"), i) for i in range(8)))
    k = key_stats(ex, "p")
    assert k["mode"] == "adaptive"
    assert probe.peak <= 4
    assert ex.get_optimization_stats()["concurrency"]["mode"] == "adaptive"


async def test_adaptive_limit_grows_while_latency_holds():
    clock = ManualClock()
    ex = ExecutorCore(OptimizationConfig(concurrency_initial_limit=2), clock=clock)
    backend = Backend(capacity=1000, base_s=0.002, clock=clock)
    st = Step(backend, "wide")
    await drive(clock, ex.execute_many(st, range(600)), tick=0.0005)
    k = key_stats(ex, "wide")
    assert k["limit"] > 2 and k["limit_changes"] >= 1
    history = ex.concurrency_history()
    assert history and history[0]["key"] == "wide" and history[0]["from"] == 2
    assert history[0]["to"] > 2  # slow start: the first change is growth


async def test_adaptive_limit_finds_the_capacity_of_an_overloaded_backend():
    clock = ManualClock()
    ex = ExecutorCore(
        OptimizationConfig(concurrency_initial_limit=40, enable_circuit_breaker=False),
        clock=clock,
    )
    backend = Backend(capacity=8, clock=clock)
    st = Step(backend, "api")
    results = await drive(clock, ex.execute_many(st, range(1500)), tick=0.0005)
    k = key_stats(ex, "api")
    assert k["drops"] > 0
    assert k["limit"] < 40  # cut from 40 towards the capacity of 8
    assert any(h["to"] < h["from"] for h in ex.concurrency_history())
    assert sum(r.success for r in results) > 0


@pytest.mark.parametrize("status_attr", ["status_code", "status"])
async def test_http_overload_statuses_are_drops(status_attr):
    class HTTPError(Exception):
        def __init__(self, code):
            super().__init__(f"HTTP {code}")
            setattr(self, status_attr, code)

    async def throttled(x):
        await asyncio.sleep(0.0005)
        raise HTTPError(503 if x % 2 else 429)

    ex = ExecutorCore(NO_BREAKER)
    await ex.execute_many(Step(throttled, "t"), range(40))
    assert key_stats(ex, "t")["drops"] == 40


async def test_plain_errors_are_not_drops():
    async def buggy(x):
        await asyncio.sleep(0.0005)
        raise ValueError("bad input")

    ex = ExecutorCore(NO_BREAKER)
    await ex.execute_many(Step(buggy, "b"), range(40))
    assert key_stats(ex, "b")["drops"] == 0


async def test_timeouts_are_drops():
    async def slow(x):
        await asyncio.sleep(1)  # timed out: timeout_s runs on the loop's own clock

    ex = ExecutorCore(NO_BREAKER)
    results = await ex.execute_many(Step(slow, "s", timeout_s=0.002), range(12))
    assert not any(r.success for r in results)
    assert key_stats(ex, "s")["drops"] == 12


async def test_config_change_moves_keys_between_modes_and_wakes_waiters():
    ex = ExecutorCore(OptimizationConfig(concurrency_initial_limit=1))
    gate = asyncio.Event()
    active = []

    async def held(x):
        active.append(x)
        await gate.wait()
        return x

    st = Step(held, "p")
    tasks = [asyncio.create_task(ex.execute(st, i)) for i in range(6)]
    await until(lambda: "p" in keys(ex) and key_stats(ex, "p")["waiting"] == 5, what="5 waiting")
    assert active == [0]
    await ex.apply_optimization_config(OptimizationConfig(enable_concurrency_optimization=False))
    await until(lambda: len(active) == 6, what="all waiters released at once")
    gate.set()
    assert [r.output for r in await asyncio.gather(*tasks)] == list(range(6))
    assert key_stats(ex, "p")["mode"] == "unlimited"


def test_bad_adaptive_bounds_are_refused():
    cfg = OptimizationConfig(concurrency_min_limit=30, concurrency_initial_limit=20)
    assert any("concurrency_initial_limit" in p for p in cfg.validate())
    with pytest.raises(ValueError, match="concurrency_initial_limit"):
        ExecutorCore(cfg)


# --------------------------------------------------------------- execute_many


async def test_execute_many_returns_results_in_input_order():
    async def jittery(x):
        await asyncio.sleep(random.random() * 0.003)
        return x * x

    ex = ExecutorCore()
    results = await ex.execute_many(Step(jittery, "j"), range(200))
    assert [r.output for r in results] == [x * x for x in range(200)]


async def test_execute_many_never_has_more_in_flight_than_the_limit():
    started = 0
    finished = 0
    worst = 0

    async def counted(x):
        nonlocal worst, finished
        worst = max(worst, started - finished)
        await asyncio.sleep(0.001)
        finished += 1
        return x

    def inputs():
        nonlocal started
        for i in range(300):
            started += 1  # an item is taken only when it may start
            yield i

    ex = ExecutorCore()
    results = await ex.execute_many(Step(counted, "c"), inputs(), max_concurrency=7)
    assert len(results) == 300
    assert worst <= 7


async def test_execute_many_follows_the_key_limit():
    ex = ExecutorCore()
    probe = Probe(delay=0.002)
    await ex.execute_many(Step(probe, "p", max_concurrency=3), range(50))
    assert probe.peak == 3
    assert key_stats(ex, "p")["waited"] == 0  # it never queued in the limiter


async def test_execute_many_runs_trivial_steps_inline_and_keeps_failures():
    async def half(x):
        if x % 2:
            raise ValueError(x)
        return x

    ex = ExecutorCore()
    results = await ex.execute_many(Step(half, "h"), range(5000))
    assert [r.success for r in results[:4]] == [True, False, True, False]
    assert isinstance(results[1].error, ValueError)
    assert len(results) == 5000


async def test_execute_many_with_timeouts_times_out_the_step_not_the_batch():
    async def maybe_slow(x):
        await asyncio.sleep(1 if x == 3 else 0)  # timeout_s runs on the loop's own clock
        return x

    ex = ExecutorCore()
    results = await ex.execute_many(Step(maybe_slow, "m", timeout_s=0.05), range(6))
    assert [r.success for r in results] == [True, True, True, False, True, True]


async def test_execute_many_of_nothing():
    assert await ExecutorCore().execute_many(Step(Probe(0), "p"), []) == []


async def test_cancelling_execute_many_cancels_what_is_in_flight():
    ex = ExecutorCore()
    probe = Probe(delay=10)
    st = Step(probe, "p", max_concurrency=5)
    task = asyncio.create_task(ex.execute_many(st, range(100)))
    await until(lambda: probe.active == 5, what="5 in flight")
    await asyncio.sleep(0)
    assert probe.active == 5
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert probe.active == 0
    k = key_stats(ex, "p")
    assert k["in_flight"] == 0 and k["waiting"] == 0
    assert ex.get_optimization_stats()["execution"]["in_flight"] == 0


async def test_map_streams_results_in_input_order():
    async def jittery(x):
        await asyncio.sleep(random.random() * 0.002)
        return x

    ex = ExecutorCore()
    seen = [r.output async for r in ex.map(Step(jittery, "j"), range(100), max_concurrency=10)]
    assert seen == list(range(100))


async def test_execute_many_shows_a_progress_bar_when_asked(capsys):
    ex = ExecutorCore()
    await ex.execute_many(Step(Probe(0), "bar_step"), range(20), progress=True)
    err = capsys.readouterr().err
    assert "bar_step" in err and "20/20" in err
    await ex.execute_many(Step(Probe(0), "quiet"), range(20))  # not a terminal: off
    assert "quiet" not in capsys.readouterr().err


async def test_execute_many_checks_max_concurrency():
    with pytest.raises(ValueError, match="max_concurrency"):
        await ExecutorCore().execute_many(Step(Probe(0), "p"), [1], max_concurrency=0)


async def test_every_limit_change_is_an_event():
    clock = ManualClock()
    ex = ExecutorCore(OptimizationConfig(concurrency_initial_limit=2), clock=clock)
    backend = Backend(capacity=1000, base_s=0.002, clock=clock)
    st = Step(backend, "evented")
    async with ex.events(types="limit_changed") as events:
        await drive(clock, ex.execute_many(st, range(300)), tick=0.0005)
        await ex.apply_optimization_config(
            OptimizationConfig(enable_concurrency_optimization=False)
        )
        history = ex.concurrency_history()
        seen = []
        async for e in events:
            seen.append(e)
            if len(seen) == len(history):
                break
    assert [(e.step, e.value2, e.value) for e in seen] == [
        (h["key"], h["from"], float("inf") if h["to"] is None else h["to"]) for h in history
    ]
    assert seen[0].detail == "adaptive" and seen[0].value > seen[0].value2
    assert seen[-1].detail == "unlimited" and seen[-1].value == float("inf")
