"""Sync steps: a plain ``def`` step run by caudal against ``asyncio.to_thread``.

1. Latency: one call at a time, awaited (a trivial function), median µs per
   call over interleaved rounds: ``executor.execute(step, x)`` of a sync
   step, ``caudal.WorkerPool.run(fn, x)`` and ``asyncio.to_thread(fn, x)``.
2. Throughput: ``asyncio.gather`` of 1,000 calls, trivial and of a function
   that releases the GIL for ~50 µs (``time.sleep(0.00005)``), calls per
   second (median over interleaved rounds).

Inputs are new on every call (no cache hit). The executor runs with the
default config (cache on: each call is a miss and a store) and its own pool
(``worker_pool_size`` 0: asyncio's default thread count, as to_thread's);
for the gathers also without the adaptive concurrency limit, which starts at
4 executions in flight and so holds a gather back by design.

Curve: µs per call of a gather of 1 ... 1,000 trivial calls (the executor
without the concurrency limit, and to_thread).

Floors: execute's median latency below to_thread's; its throughput (no
concurrency limit) at least to_thread's, for both gathers. The default
config's figures are printed and saved alongside.

``--quick``: a CI-sized run (a few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from _floors import Curve, Floor, record
from _harness import save
from caudal import ExecutorCore, OptimizationConfig, WorkerPool
from caudal.worker_pool import default_workers

# The executor without the adaptive concurrency limit: the limit starts at 4
# executions in flight and grows with measured latency, a policy that holds a
# gather of 1,000 back on purpose (bench_concurrency.py measures it).
OPEN = "caudal execute, no concurrency limit"


def trivial(x):
    return x


def sleepy(x):
    time.sleep(0.00005)  # releases the GIL for ~50 µs
    return x


async def latency(quick: bool) -> dict[str, float]:
    ex = ExecutorCore()
    pool = WorkerPool(workers=default_workers(), queue_size=100_000)
    counter = iter(range(10**12))

    async def via_execute():
        r = await ex.execute(trivial, next(counter))
        assert r.success

    async def via_pool():
        await pool.run(trivial, next(counter))

    async def via_to_thread():
        await asyncio.to_thread(trivial, next(counter))

    contenders = {
        "caudal execute (sync step)": via_execute,
        "caudal WorkerPool.run": via_pool,
        "asyncio.to_thread": via_to_thread,
    }
    for call in contenders.values():
        for _ in range(100):
            await call()
    rounds, batch = (9, 100) if quick else (31, 300)
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    rng = random.Random(7)
    for _ in range(rounds):
        rng.shuffle(names)
        for name in names:
            call = contenders[name]
            t0 = time.perf_counter_ns()
            for _ in range(batch):
                await call()
            samples[name].append((time.perf_counter_ns() - t0) / batch / 1000.0)
    await ex.aclose()
    await pool.aclose()
    return {k: statistics.median(v) for k, v in samples.items()}


async def throughput(fn, quick: bool) -> dict[str, float]:
    ex = ExecutorCore()
    ex_open = ExecutorCore(OptimizationConfig(enable_concurrency_optimization=False))
    pool = WorkerPool(workers=default_workers(), queue_size=100_000)
    n = 1000
    base = iter(range(0, 10**12, n))

    async def gather_on(executor):
        b = next(base)
        rs = await asyncio.gather(*(executor.execute(fn, b + i) for i in range(n)))
        assert all(r.success and r.output == b + i for i, r in enumerate(rs))

    async def via_execute():
        await gather_on(ex)

    async def via_execute_open():
        await gather_on(ex_open)

    async def via_pool():
        b = next(base)
        await asyncio.gather(*(pool.run(fn, b + i) for i in range(n)))

    async def via_to_thread():
        b = next(base)
        await asyncio.gather(*(asyncio.to_thread(fn, b + i) for i in range(n)))

    contenders = {
        "caudal execute (sync step)": via_execute,
        OPEN: via_execute_open,
        "caudal WorkerPool.run": via_pool,
        "asyncio.to_thread": via_to_thread,
    }
    for call in contenders.values():
        await call()
    rounds = 5 if quick else 15
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    rng = random.Random(11)
    for _ in range(rounds):
        rng.shuffle(names)
        for name in names:
            t0 = time.perf_counter()
            await contenders[name]()
            samples[name].append(n / (time.perf_counter() - t0))
    await ex.aclose()
    await ex_open.aclose()
    await pool.aclose()
    return {k: statistics.median(v) for k, v in samples.items()}


async def fan_out_curve(quick: bool) -> dict[int, dict[str, float]]:
    """µs per call of a gather of n trivial calls, n = 1 ... 1,000: the
    executor (no concurrency limit) and to_thread."""
    ex = ExecutorCore(OptimizationConfig(enable_concurrency_optimization=False))
    base = iter(range(0, 10**12, 10_000))
    out: dict[int, dict[str, float]] = {}
    for n in (1, 10, 100, 1000):
        contenders = {
            "caudal execute": lambda b, n=n: asyncio.gather(
                *(ex.execute(trivial, b + i) for i in range(n))
            ),
            "asyncio.to_thread": lambda b, n=n: asyncio.gather(
                *(asyncio.to_thread(trivial, b + i) for i in range(n))
            ),
        }
        reps = max(1, 300 // n) if quick else max(2, 2000 // n)
        samples: dict[str, list[float]] = {k: [] for k in contenders}
        for r in range(5 if quick else 9):
            order = list(contenders) if r % 2 else list(reversed(contenders))
            for name in order:
                t0 = time.perf_counter_ns()
                for _ in range(reps):
                    await contenders[name](next(base))
                samples[name].append((time.perf_counter_ns() - t0) / (reps * n) / 1000.0)
        out[n] = {k: statistics.median(v) for k, v in samples.items()}
    await ex.aclose()
    return out


async def main(quick: bool) -> None:
    lat = await latency(quick)
    thr_trivial = await throughput(trivial, quick)
    thr_sleep = await throughput(sleepy, quick)
    curve = await fan_out_curve(quick)
    print("1. latency, one call at a time (median µs per call)")
    for k, v in lat.items():
        print(f"   {k:38} {v:8.2f}")
    print("2. throughput, gather of 1,000 calls (calls/s)")
    print(f"   {'':38} {'trivial':>10} {'sleep 50 µs':>12}")
    for k in thr_trivial:
        print(f"   {k:38} {thr_trivial[k]:10.0f} {thr_sleep[k]:12.0f}")
    ex_name, ref = "caudal execute (sync step)", "asyncio.to_thread"
    how = "median of interleaved rounds, one process"
    lim = (
        f"default config (adaptive limit): {thr_trivial[ex_name]:.0f} trivial, "
        f"{thr_sleep[ex_name]:.0f} sleeping calls/s"
    )
    record(
        "sync_steps",
        floors=[
            Floor(
                "sync step latency, execute / to_thread",
                measured=lat[ex_name] / lat[ref],
                limit=1.0,
                detail=f"one call at a time; {lat[ex_name]:.1f} vs {lat[ref]:.1f} µs; {how}",
            ),
            Floor(
                "sync step throughput (gather 1,000 trivial), execute / to_thread",
                measured=thr_trivial[OPEN] / thr_trivial[ref],
                limit=1.0,
                at_least=True,
                detail=(
                    f"no concurrency limit: {thr_trivial[OPEN]:.0f} vs "
                    f"{thr_trivial[ref]:.0f} calls/s; {how}; {lim}"
                ),
            ),
            Floor(
                "sync step throughput (gather 1,000 x sleep 50 µs), execute / to_thread",
                measured=thr_sleep[OPEN] / thr_sleep[ref],
                limit=1.0,
                at_least=True,
                detail=(
                    f"no concurrency limit: {thr_sleep[OPEN]:.0f} vs "
                    f"{thr_sleep[ref]:.0f} calls/s; {how}"
                ),
            ),
        ],
        curves=[
            Curve(
                f"sync steps in one gather, {name}",
                x_label="calls in flight",
                y_label="µs per call",
                points=[(n, r[name]) for n, r in curve.items()],
            )
            for name in ("caudal execute", "asyncio.to_thread")
        ],
    )
    save(
        "sync_steps",
        {
            "quick": quick,
            "latency_us": lat,
            "throughput_trivial": thr_trivial,
            "throughput_sleep_50us": thr_sleep,
            "fan_out_us_per_call": {str(n): r for n, r in curve.items()},
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    asyncio.run(main(p.parse_args().quick))
