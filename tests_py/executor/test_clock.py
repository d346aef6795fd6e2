"""ExecutorCore(clock=ManualClock()): time moves only when the test says so.

Cache TTLs, the breaker's recovery timeout, retry back-off and breaker waits
all follow the injected clock; nothing here sleeps on the wall clock.
"""

import asyncio

import pytest

from caudal import ExecutorCore, OptimizationConfig, Step
from caudal.errors import CircuitOpenError
from caudal.resilience import RetryStrategy
from caudal.testing import ManualClock


async def _settle(turns: int = 20) -> None:
    """Let the loop run what is ready (no time passes on the manual clock)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class Counted:
    def __init__(self, fail: int = 0, exc: type[Exception] = ValueError):
        self.calls = 0
        self.fail = fail
        self.exc = exc

    async def __call__(self, x):
        self.calls += 1
        if self.calls <= self.fail:
            raise self.exc(f"failure {self.calls}")
        return x


async def test_manual_clock_moves_only_when_advanced():
    clock = ManualClock()
    t0 = clock.now_ns()
    await _settle()
    assert clock.now_ns() == t0
    clock.advance(1.5)
    assert clock.now_ns() == t0 + 1_500_000_000
    with pytest.raises(ValueError, match="advance"):
        clock.advance(-1)


async def test_sleep_ends_when_advance_passes_its_deadline():
    clock = ManualClock()
    woke: list[str] = []

    async def sleeper(name, s):
        await clock.sleep(s)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper("a", 2.0)), asyncio.create_task(sleeper("b", 1.0))]
    await _settle()
    assert woke == []
    clock.advance(0.5)
    await _settle()
    assert woke == []
    clock.advance(0.5)  # b's deadline, exactly
    await _settle()
    assert woke == ["b"]
    clock.advance(10)
    await _settle()
    assert woke == ["b", "a"]
    await asyncio.gather(*tasks)


async def test_a_cancelled_sleep_is_forgotten():
    clock = ManualClock()
    task = asyncio.create_task(clock.sleep(1))
    await _settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    clock.advance(2)  # waking a cancelled sleeper is harmless
    await _settle()


async def test_cache_ttl_expires_on_the_manual_clock():
    clock = ManualClock()
    ex = ExecutorCore(
        OptimizationConfig(enable_cache_optimization=True, cache_ttl_seconds=60), clock=clock
    )
    step = Step(Counted(), "ttl", cache=True)
    assert not (await ex.execute(step, 1)).cache_hit
    clock.advance(59)
    assert (await ex.execute(step, 1)).cache_hit
    clock.advance(2)  # 61 s after the store: expired
    r = await ex.execute(step, 1)
    assert not r.cache_hit
    assert step.fn.calls == 2
    await ex.aclose()


async def test_breaker_recovers_to_half_open_after_the_timeout():
    clock = ManualClock()
    ex = ExecutorCore(
        OptimizationConfig(
            circuit_breaker_failure_threshold=1,
            circuit_breaker_recovery_timeout_seconds=30,
            circuit_breaker_wait_for_probe=False,
        ),
        clock=clock,
    )
    flaky = Counted(fail=1)
    step = Step(flaky, "svc")
    assert not (await ex.execute(step, 1)).success  # opens the breaker
    r = await ex.execute(step, 1)
    assert isinstance(r.error, CircuitOpenError) and flaky.calls == 1
    assert r.error.retry_after_s == pytest.approx(30)
    clock.advance(29)
    assert isinstance((await ex.execute(step, 1)).error, CircuitOpenError)
    clock.advance(1)  # the recovery timeout has passed: a probe is let through
    breaker = ex._engine.breaker_section()["breakers"]["svc"]
    assert breaker["open_for_s"] == 0
    r = await ex.execute(step, 1)
    assert r.success and flaky.calls == 2
    breaker = ex._engine.breaker_section()["breakers"]["svc"]
    assert breaker["state"] in ("half_open", "closed")
    await ex.aclose()


async def test_retry_back_off_waits_on_the_manual_clock():
    clock = ManualClock()
    ex = ExecutorCore(clock=clock)
    flaky = Counted(fail=2)
    retry = RetryStrategy(max_attempts=3, strategy="fixed", base_delay=5.0, max_backoff=10)
    task = asyncio.create_task(ex.execute(Step(flaky, "backoff", retry=retry), 7))
    await _settle()
    assert flaky.calls == 1 and not task.done()
    clock.advance(4.9)
    await _settle()
    assert flaky.calls == 1  # the back-off is 5 s
    clock.advance(0.1)
    await _settle()
    assert flaky.calls == 2 and not task.done()
    clock.advance(5)
    await _settle()
    r = await task
    assert r.success and r.output == 7 and r.attempts == 3
    await ex.aclose()


async def test_a_refused_execution_waits_for_the_probe_on_the_manual_clock():
    clock = ManualClock()
    ex = ExecutorCore(
        OptimizationConfig(
            circuit_breaker_failure_threshold=1, circuit_breaker_recovery_timeout_seconds=20
        ),
        clock=clock,
    )
    healthy = Counted()
    retry = RetryStrategy(max_attempts=3, strategy="fixed", base_delay=0, max_backoff=60)
    step = Step(healthy, "probe", retry=retry)
    opener = Step(Counted(fail=1), "probe")
    assert not (await ex.execute(opener, 1)).success  # opens the shared breaker
    task = asyncio.create_task(ex.execute(step, 1))
    await _settle()
    assert healthy.calls == 0 and not task.done()  # waiting for the probe
    clock.advance(19)
    await _settle()
    assert healthy.calls == 0 and not task.done()
    clock.advance(11)  # past the recovery timeout and its spread (+20 %)
    await _settle()
    r = await task
    assert r.success and healthy.calls == 1
    await ex.aclose()


def test_clock_must_be_a_manual_clock():
    with pytest.raises(TypeError, match="clock"):
        ExecutorCore(clock=object())
