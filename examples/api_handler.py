"""flujo's optimization example 2: a real-time API handler.

Requests arrive at about 400 per second for 1.2 s (simulated clients, no
network). The backend goes down for 0.3 s in the middle. flujo's
real-time configuration, except the breaker's recovery timeout: flujo
says 30 s, which means up to 30 s of refused calls after the backend is
back (docs/resilience.md measures this); a demo needs 0.1 s. With the
breaker open, requests are answered at once by a degraded fallback instead
of waiting on a dead backend.

    .venv/bin/python examples/api_handler.py
"""

import asyncio
import time
from collections import Counter

from caudal import ExecutorCore, OptimizationConfig, Step

config = OptimizationConfig(
    enable_step_optimization=True,
    enable_algorithm_optimization=True,
    telemetry_batch_size=5,
    telemetry_flush_interval_seconds=10.0,
    circuit_breaker_failure_threshold=3,
    circuit_breaker_recovery_timeout_seconds=0.1,  # flujo's example: 30
    object_pool_max_size=20,
    cache_max_size=100,
)

START = time.monotonic()
OUTAGE = (0.4, 0.7)  # seconds after start


async def backend(request):
    """The service behind the API: 3 ms, and down (a timeout after 50 ms)
    during the outage."""
    now = time.monotonic() - START
    if OUTAGE[0] <= now < OUTAGE[1]:
        await asyncio.sleep(0.05)
        raise ConnectionError("backend unavailable")
    await asyncio.sleep(0.003)
    return {"user": request["user"], "items": request["user"] % 7}


async def degraded(request):
    return {"user": request["user"], "items": None, "degraded": True}


api_step = Step(backend, name="api", timeout_s=0.5, fallback=degraded)


async def main():
    async with ExecutorCore(optimization_config=config) as executor:

        async def handle_request(request_data):
            return await executor.execute(api_step, request_data)

        outcomes = Counter()
        latencies = []

        async def client(i):
            t0 = time.perf_counter()
            result = await handle_request({"user": i})
            latencies.append(time.perf_counter() - t0)
            if not result.success:
                outcomes["error"] += 1
            elif result.output.get("degraded"):
                outcomes["degraded (fallback)"] += 1
            else:
                outcomes["ok"] += 1

        tasks = []
        for i in range(480):  # one request every 2.5 ms
            tasks.append(asyncio.create_task(client(i)))
            await asyncio.sleep(0.0025)
        await asyncio.gather(*tasks)

        latencies.sort()
        print(f"{len(latencies)} requests: {dict(outcomes)}")
        print(
            f"client latency p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms"
        )
        stats = executor.get_optimization_stats()
        cb = stats["circuit_breaker"]
        print(
            f"breaker opened {cb['open_count']} time(s), refused {cb['rejected_count']} calls "
            "(answered by the fallback without touching the backend)"
        )
        print(stats["circuit_breaker"])
        print(executor.get_performance_recommendations())


if __name__ == "__main__":
    asyncio.run(main())
