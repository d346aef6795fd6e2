"""Resilience: circuit breaker and retries, side by side (issue: resilience).

1. Outage scenario: a backend fails 100% for a while, then recovers; callers
   keep calling. Reports backend calls made while the breaker was open
   (target: only the permitted probes) and time from recovery to the first
   success (target: at most the recovery timeout plus one probe).
2. Closed-state breaker cost per call: caudal with the breaker on vs off,
   against pybreaker (``with breaker.calling()``) and the ``circuitbreaker``
   package (``@circuit``) around the same await.
3. Retry overhead per attempt, sleeps excluded: a step failing twice then
   succeeding, with zero back-off, through caudal vs tenacity's AsyncRetrying.

    python benchmarks/bench_resilience.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import caudal
from _harness import interleaved, save
from caudal import ExecutorCore, OptimizationConfig, RetryStrategy, Step


async def outage(quick: bool) -> dict:
    recovery = 0.2
    outage_s = 0.6 if quick else 1.5
    ex = ExecutorCore(
        OptimizationConfig(
            circuit_breaker_failure_threshold=5, circuit_breaker_recovery_timeout_seconds=recovery
        )
    )
    loop = asyncio.get_running_loop()
    state = {"down": True, "calls": 0, "calls_while_open": 0}
    t0 = loop.time()

    async def backend(x):
        state["calls"] += 1
        if ex.get_optimization_stats()["circuit_breaker"]["state"] != "CLOSED":
            state["calls_while_open"] += 1  # a probe (half-open)
        if state["down"]:
            raise ConnectionError("down")
        return x

    step = Step(backend, "backend")
    rejected = 0
    recovered_at = first_success = None
    while True:
        now = loop.time() - t0
        if state["down"] and now >= outage_s:
            state["down"] = False
            recovered_at = now
        r = await ex.execute(step, 1)
        if isinstance(r.error, caudal.CircuitOpenError):
            rejected += 1
        if r.success:
            first_success = loop.time() - t0
            break
        await asyncio.sleep(0.001)  # a caller issuing ~1000 requests/s
    opens = ex.get_optimization_stats()["circuit_breaker"]["open_count"]
    return {
        "outage_s": outage_s,
        "recovery_timeout_s": recovery,
        "backend_calls": state["calls"],
        "calls_refused_by_breaker": rejected,
        "probe_calls": state["calls_while_open"],
        "times_opened": opens,
        "time_to_recover_s": first_success - recovered_at,
    }


async def closed_cost(quick: bool) -> dict:
    import circuitbreaker
    import pybreaker

    async def step(x):
        return x

    on = ExecutorCore(OptimizationConfig(enable_circuit_breaker=True))
    off = ExecutorCore(OptimizationConfig(enable_circuit_breaker=False))
    pb = pybreaker.CircuitBreaker(fail_max=10, reset_timeout=60)

    async def with_pybreaker(x):
        with pb.calling():
            return await step(x)

    cb_step = circuitbreaker.circuit(failure_threshold=10, recovery_timeout=60)(step)
    contenders = {
        "bare await": step,
        "caudal execute, breaker off": lambda x: off.execute(step, x),
        "caudal execute, breaker on": lambda x: on.execute(step, x),
        "pybreaker around the await": with_pybreaker,
        "circuitbreaker around the await": cb_step,
    }
    rounds, batch = (11, 300) if quick else (31, 1000)
    return await interleaved(contenders, rounds=rounds, batch=batch)


async def retry_cost(quick: bool) -> dict:
    from tenacity import AsyncRetrying, stop_after_attempt, wait_none

    class Flaky:
        """Fails twice, succeeds on the third call; resets each execution."""

        def __init__(self):
            self.n = 0

        async def __call__(self, x):
            self.n += 1
            if self.n % 3:
                raise ConnectionError("transient")
            return x

    bare_fn = Flaky()

    async def bare(x):  # the three calls with no machinery at all
        for _ in range(3):
            try:
                return await bare_fn(x)
            except ConnectionError:
                pass
        return None

    caudal_fn = Flaky()
    ex = ExecutorCore(OptimizationConfig(enable_circuit_breaker=False))
    cstep = Step(
        caudal_fn, "flaky", retry=RetryStrategy(max_attempts=3, base_delay=0.0, max_backoff=0.0)
    )

    async def with_caudal(x):
        r = await ex.execute(cstep, x)
        assert r.success
        return r.output

    ten_fn = Flaky()

    async def with_tenacity(x):
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(3), wait=wait_none(), reraise=True
        ):
            with attempt:
                return await ten_fn(x)
        return None

    contenders = {
        "bare 3 calls": bare,
        "caudal retries": with_caudal,
        "tenacity AsyncRetrying": with_tenacity,
    }
    rounds, batch = (11, 200) if quick else (31, 500)
    return await interleaved(contenders, rounds=rounds, batch=batch)


async def main(quick: bool) -> None:
    sc = await outage(quick)
    print(
        "1. outage: backend down for {outage_s} s, recovery timeout {recovery_timeout_s} s".format(
            **sc
        )
    )
    print(
        f"   backend calls {sc['backend_calls']} (threshold 5 + probes {sc['probe_calls']}), "
        f"refused by the breaker {sc['calls_refused_by_breaker']}, opened {sc['times_opened']}x"
    )
    print(
        f"   time from recovery to first success: {sc['time_to_recover_s'] * 1e3:.0f} ms "
        f"(bound: recovery timeout {sc['recovery_timeout_s'] * 1e3:.0f} ms + one probe)"
    )

    cc = await closed_cost(quick)
    bare = cc["bare await"]["median_us"]
    off = cc["caudal execute, breaker off"]["median_us"]
    print("\n2. closed-state breaker cost (median µs per call)")
    for name, r in cc.items():
        print(f"   {name:34} {r['median_us']:8.3f}")
    caudal_breaker = cc["caudal execute, breaker on"]["median_us"] - off
    pyb = cc["pybreaker around the await"]["median_us"] - bare
    cbk = cc["circuitbreaker around the await"]["median_us"] - bare
    print(
        f"   breaker's own cost: caudal {caudal_breaker * 1e3:+.0f} ns, "
        f"pybreaker {pyb * 1e3:.0f} ns, "
        f"circuitbreaker {cbk * 1e3:.0f} ns"
    )

    rc = await retry_cost(quick)
    base = rc["bare 3 calls"]["median_us"]
    per_c = (rc["caudal retries"]["median_us"] - base) / 3
    per_t = (rc["tenacity AsyncRetrying"]["median_us"] - base) / 3
    print("\n3. retry overhead per attempt, sleeps excluded (3 attempts per execution)")
    for name, r in rc.items():
        print(f"   {name:34} {r['median_us']:8.3f} µs per execution")
    print(
        f"   per attempt: caudal {per_c:.3f} µs, tenacity {per_t:.3f} µs "
        f"-> caudal {per_t / per_c:.1f}x lower"
    )
    save(
        "resilience",
        {
            "quick": quick,
            "outage": sc,
            "closed_cost": cc,
            "retry_cost": rc,
            "derived": {
                "caudal_breaker_ns": caudal_breaker * 1e3,
                "pybreaker_ns": pyb * 1e3,
                "circuitbreaker_ns": cbk * 1e3,
                "caudal_retry_per_attempt_us": per_c,
                "tenacity_retry_per_attempt_us": per_t,
            },
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    asyncio.run(main(p.parse_args().quick))
