"""executor.health(): one report of every component."""

import asyncio
import uuid

from caudal import ExecutorCore, OptimizationConfig, Step
from caudal.integrations.redis import RedisCacheTier


def config(**kw):
    return OptimizationConfig(memory_pressure_threshold_mb=1e6, **kw)


async def test_a_fresh_executor_is_healthy():
    h = await ExecutorCore(config()).health()
    assert h["ok"] is True and h["problems"] == []
    assert h["cache"] == {"l1_entries": 0, "l2": None}
    assert h["breakers"] == {} and h["worker_pool"] is None
    assert h["memory"]["pressure_level"] == "normal" and h["memory"]["usage_mb"] > 0
    assert h["events"] == {"subscribers": 0, "dropped": 0}


async def test_an_open_breaker_and_waiting_callers_are_reported():
    ex = ExecutorCore(config(circuit_breaker_failure_threshold=2))

    async def down(x):
        raise ConnectionError("down")

    for i in range(3):
        await ex.execute(Step(down, "backend"), i)
    gate = asyncio.Event()

    async def held(x):
        await gate.wait()
        return x

    st = Step(held, "slow", max_concurrency=1)
    tasks = [asyncio.create_task(ex.execute(st, i)) for i in range(3)]
    await asyncio.sleep(0.01)
    h = await ex.health()
    assert h["ok"] is False
    assert h["breakers"] == {"backend": "open"}
    assert "circuit breaker 'backend' is open" in h["problems"]
    assert h["concurrency"]["keys_waiting"] == {"slow": {"limit": 1, "in_flight": 1, "waiting": 2}}
    gate.set()
    await asyncio.gather(*tasks)


async def test_the_shared_tier_is_pinged(redis_server):
    prefix = f"health{uuid.uuid4().hex[:8]}:"
    tier = RedisCacheTier(redis_server, prefix=prefix, op_timeout_s=10)  # a busy machine: not 50 ms
    ex = ExecutorCore(config(), cache_l2=tier)
    h = await ex.health()
    assert h["ok"] is True and h["cache"]["l2"]["ok"] is True
    await ex.aclose()
    # An unreachable tier makes the executor unhealthy, and says why.
    dead = RedisCacheTier("redis://127.0.0.1:1/0", prefix=prefix, op_timeout_s=0.2)
    ex2 = ExecutorCore(config(), cache_l2=dead)
    h = await ex2.health()
    assert h["ok"] is False and h["cache"]["l2"]["ok"] is False
    assert h["problems"][0].startswith("cache L2 unreachable")
    await ex2.aclose()


async def test_the_worker_pool_is_reported_once_it_exists():
    ex = ExecutorCore(config(worker_pool_size=2))
    await ex.execute(Step(lambda x: x, "sync"), 1)
    h = await ex.health()
    assert h["worker_pool"]["workers"] == 2 and h["worker_pool"]["rejected"] == 0
    await ex.aclose()
