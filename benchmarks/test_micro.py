"""Micro-benchmarks with pytest-benchmark (run by benchmarks/run.py; not part
of `make test`): the hot paths on their own, one figure each.

    .venv/bin/python -m pytest benchmarks/test_micro.py --benchmark-only

Each benchmark times a batch of N operations (async ones inside one event
loop) and reports the batch; divide by N (`extra_info["n"]`) for a call.
"""

from __future__ import annotations

import asyncio

import pytest

from caudal import Context, ExecutorCore, OptimizationConfig, Step
from caudal._core import cache_key

N = 1000


async def trivial(x):
    return x + 1


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def run_batch(benchmark, loop, make_batch):
    benchmark.extra_info["n"] = N
    benchmark(lambda: loop.run_until_complete(make_batch()))


def test_bare_await(benchmark, loop):
    async def batch():
        for i in range(N):
            await trivial(i)

    run_batch(benchmark, loop, batch)


@pytest.mark.parametrize("config", ["all_off", "defaults"])
def test_execute(benchmark, loop, config):
    flags = [f["name"] for f in OptimizationConfig.fields() if f["name"].startswith("enable_")]
    cfg = OptimizationConfig(**dict.fromkeys(flags, False)) if config == "all_off" else None
    ex = ExecutorCore(cfg)
    st = Step(trivial, "trivial")

    async def batch():
        for i in range(N):
            await ex.execute(st, i)

    run_batch(benchmark, loop, batch)


async def echo(x):
    return x


def test_cache_hit(benchmark, loop):
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True))
    st = Step(echo, "cached", cache=True)
    loop.run_until_complete(ex.execute(st, {"q": 1}))

    async def batch():
        for _ in range(N):
            r = await ex.execute(st, {"q": 1})
        assert r.cache_hit

    run_batch(benchmark, loop, batch)


def test_execute_many(benchmark, loop):
    ex = ExecutorCore()
    st = Step(trivial, "many")

    async def batch():
        await ex.execute_many(st, range(N))

    run_batch(benchmark, loop, batch)


def test_cache_key_small_dict(benchmark):
    value = {"prompt": "hello", "temperature": 0.2, "n": 3}
    benchmark.extra_info["n"] = N
    benchmark(lambda: [cache_key(value, "step") for _ in range(N)])


def test_context_snapshot_and_set(benchmark):
    ctx = Context({f"k{i}": i for i in range(10_000)})
    benchmark.extra_info["n"] = N
    benchmark(lambda: [ctx.set("k1", i) for i in range(N)])
