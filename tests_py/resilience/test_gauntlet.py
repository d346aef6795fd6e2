"""A batch through a real flaky, rate-limited HTTP API on loopback, written
the obvious way (httpx, ``raise_for_status()``, ``Step(get, max_retries=5,
timeout_s=..., cache=True)``, ``execute_many``), with caudal's defaults.

The API (tests_py/_flaky_api.py) runs in its own process: it serves at most
a few requests at once and answers one more with HTTP 429 + Retry-After,
fails 20 % of the requests it serves with 500, answers some slowly, and can
go down (503) or change capacity mid-run. These tests check outcomes
(every item right, none refused without an attempt), never timings; the
speed side by side with a hand-made stack is benchmarks/bench_gauntlet.py.
"""

from __future__ import annotations

import random

import httpx
import pytest

from _flaky_api import FlakyApi, value_of
from _probes import drive
from caudal import CircuitOpenError, ExecutorCore, OptimizationConfig, Step
from caudal.testing import ManualClock


@pytest.fixture(scope="module")
def api():
    with FlakyApi() as a:
        yield a


def keys(n: int, repeats: int) -> list[str]:
    rng = random.Random(3)
    distinct = [f"k{i:03d}" for i in range(n - repeats)]
    out = distinct + [rng.choice(distinct) for _ in range(repeats)]
    rng.shuffle(out)
    return out


async def run_batch(api, items, *, timeout_s=1.0, config=None):
    async with httpx.AsyncClient(base_url=api.url, timeout=None) as client:

        async def get(key):
            r = await client.get(f"/item/{key}")
            r.raise_for_status()
            return r.json()

        step = Step(get, max_retries=5, timeout_s=timeout_s, cache=True)
        async with ExecutorCore(config) as executor:
            results = await executor.execute_many(step, items)
            stats = executor.get_optimization_stats()
    return results, stats


def check_all_right(items, results):
    wrong = [
        (k, r.error, r.attempts, r.metadata)
        for k, r in zip(items, results, strict=True)
        if not (r.success and r.output == {"key": k, "value": value_of(k)})
    ]
    assert not wrong, f"{len(wrong)} of {len(items)} items wrong or failed: {wrong[:5]}"


async def test_the_obvious_code_gets_a_flaky_rate_limited_batch_done(api):
    api.scenario(capacity=4, slow_s=[0.5, 1.5])
    items = keys(150, 30)
    results, stats = await run_batch(api, items)
    check_all_right(items, results)
    served = api.stats()
    # The API said 429 (it does, the batch starts above its capacity)...
    assert served["by_status"].get("500", 0) > 0
    # ...and the breaker never opened on it, nor did fail-fast stop a retry.
    assert stats["circuit_breaker"]["open_count"] == 0
    assert stats["error_handling"]["fail_fast"] == 0
    # Repeats were served from the cache or shared a flight.
    assert served["by_status"]["200"] < len(items)


async def test_an_outage_does_not_use_up_the_batch(api):
    # 503 for everything for 1.5 s, early in the run, no Retry-After.
    api.scenario(capacity=4, slow_rate=0.0, outage=[0.3, 1.5])
    items = keys(80, 0)
    results, _ = await run_batch(api, items)
    check_all_right(items, results)
    assert api.stats()["by_status"].get("503", 0) > 0


async def test_capacity_halving_mid_run_is_followed(api):
    api.scenario(capacity=6, slow_rate=0.0, capacity_changes=[[0.5, 3]])
    items = keys(120, 0)
    results, _ = await run_batch(api, items)
    check_all_right(items, results)


@pytest.mark.parametrize("retry_after", ["1", "date+1", "ms=400"])
async def test_the_stated_wait_is_read_in_each_form_and_honoured(api, retry_after):
    # Capacity 0 for 0.8 s: the first request meets 429 with the wait in
    # one of its three forms; the retry comes after it, and succeeds.
    api.scenario(
        capacity=0, fail_rate=0.0, slow_rate=0.0, retry_after=retry_after,
        capacity_changes=[[0.8, 4]],
    )  # fmt: skip
    results, stats = await run_batch(api, ["only"])
    check_all_right(["only"], results)
    times = api.stats(times=True)["times"]["only"]
    assert len(times) >= 2
    # Never earlier than asked ("date+1" has whole-second resolution).
    asked = {"1": 1.0, "date+1": 0.0, "ms=400": 0.4}[retry_after]
    assert times[1] - times[0] >= asked
    assert stats["circuit_breaker"]["failure_count"] == 0


async def test_a_stated_wait_beyond_the_allowed_ends_at_once(api):
    api.scenario(capacity=0, retry_after="3600")
    results, _ = await run_batch(api, ["only"])
    (r,) = results
    assert not r.success and r.attempts == 1
    assert isinstance(r.error, httpx.HTTPStatusError) and r.error.response.status_code == 429
    assert r.metadata["retry_stopped"] == "retry_after_too_long"
    # Raising the setting waits it out instead (here: a shorter wait).
    api.scenario(capacity=0, retry_after="2", capacity_changes=[[1.0, 4]])
    cfg = OptimizationConfig(retry_after_max_seconds=1.5)
    results, _ = await run_batch(api, ["only"], config=cfg)
    assert results[0].metadata["retry_stopped"] == "retry_after_too_long"


async def test_queued_executions_wait_for_the_half_open_probe():
    # A backend that is hard down (connection refused) for 0.6 s: the
    # breaker opens; queued executions wait for its probe instead of
    # failing with attempts=0, and all succeed once it is back. In-process,
    # on a manual clock: calls, back-off and recovery take no wall time.
    clock = ManualClock()
    up_at = clock.now() + 0.6
    calls = {"n": 0}

    async def backend(x):
        calls["n"] += 1
        await clock.sleep(0.005)  # a call takes 5 ms
        if clock.now() < up_at:
            raise ConnectionRefusedError("connection refused")
        return x * 2

    cfg = OptimizationConfig(
        circuit_breaker_failure_threshold=3,
        circuit_breaker_recovery_timeout_seconds=0.25,
        max_concurrent_executions=4,
    )
    async with ExecutorCore(cfg, clock=clock) as ex:
        step = Step(backend, "api", max_retries=5)
        results = await drive(clock, ex.execute_many(step, range(60)), tick=0.005)
        stats = ex.get_optimization_stats()
    assert [r.output for r in results] == [x * 2 for x in range(60)], [
        (r.error, r.attempts) for r in results if not r.success
    ][:5]
    assert stats["circuit_breaker"]["open_count"] >= 1
    # Waiting costs no calls: far fewer than 60 items x 6 attempts.
    assert calls["n"] < 60 + 30


async def test_failing_fast_on_an_open_breaker_stays_available():
    async def down(x):
        raise ConnectionRefusedError("connection refused")

    cfg = OptimizationConfig(
        circuit_breaker_failure_threshold=3,
        circuit_breaker_recovery_timeout_seconds=60,
        circuit_breaker_wait_for_probe=False,
        max_concurrent_executions=1,
    )
    clock = ManualClock()  # the back-off between attempts passes on it
    async with ExecutorCore(cfg, clock=clock) as ex:
        step = Step(down, "api", max_retries=5)
        results = await drive(clock, ex.execute_many(step, range(10)), tick=0.05)
    refused = [r for r in results if isinstance(r.error, CircuitOpenError)]
    assert refused and all(r.attempts == 0 for r in refused)
    assert all(r.metadata["retry_stopped"] == "breaker_open" for r in refused)
