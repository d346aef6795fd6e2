"""Result cache and fast keys (issue: cache).

1. Per-call cost on a small dict input, one process, interleaved: bare await;
   caudal execute with a cache hit; caudal with a cache miss (all distinct
   inputs); and the usual Python alternatives on the same async step:
   ``cachetools.TTLCache`` used the way ``cachetools.cached`` does (a dict
   input needs a key function: ``hashkey(frozenset(d.items()))``), and
   ``functools.lru_cache`` on a sync function of a hashable input.
2. Key computation for inputs from 100 B to 1 MB: caudal's native typed walk
   (``caudal._core.cache_key``) vs ``pickle.dumps`` + xxhash128 and
   ``json.dumps(sort_keys=True)`` + sha256.
(L2 hit latency: benchmarks/bench_cache_l2.py.)

    python benchmarks/bench_cache.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import pickle
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cachetools
import xxhash
from cachetools.keys import hashkey

from _harness import interleaved, save
from caudal import ExecutorCore, OptimizationConfig, Step, _core

SMALL = {"user": "u-1842", "query": "weather in Lisbon", "lang": "en", "k": 5}


async def step_fn(d):
    return d["k"]


async def call_cost(quick: bool) -> dict:
    hit_ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True))
    miss_ex = ExecutorCore(
        OptimizationConfig(enable_cache_optimization=True, cache_max_size=100_000)
    )
    off_ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=False))
    step = Step(step_fn, "lookup")
    await hit_ex.execute(step, SMALL)  # warm: every later call hits

    ttl = cachetools.TTLCache(maxsize=500, ttl=7200)

    async def cachetools_ttl(_x):
        k = hashkey(frozenset(SMALL.items()))
        try:
            return ttl[k]
        except KeyError:
            pass
        v = await step_fn(SMALL)
        ttl[k] = v
        return v

    @functools.lru_cache(maxsize=500)
    def lru_sync(frozen):
        return dict(frozen)["k"]

    frozen = frozenset(SMALL.items())

    async def lru(_x):
        return lru_sync(frozen)

    miss_inputs = [{**SMALL, "k": i} for i in range(400_000)]

    async def miss(i):
        return await miss_ex.execute(step, miss_inputs[i % len(miss_inputs)])

    contenders = {
        "bare await": lambda _x: step_fn(SMALL),
        "caudal execute, cache off": lambda _x: off_ex.execute(step, SMALL),
        "caudal execute, cache hit": lambda _x: hit_ex.execute(step, SMALL),
        "caudal execute, cache miss": miss,
        "cachetools TTLCache (as cached())": cachetools_ttl,
        "functools.lru_cache": lru,
    }
    rounds, batch = (11, 300) if quick else (31, 1000)
    res = await interleaved(contenders, rounds=rounds, batch=batch)
    r = await hit_ex.execute(step, SMALL)
    assert r.cache_hit
    return res


def sized_inputs():
    """Structured inputs of about 100 B, 1 KB, 10 KB, 100 KB and 1 MB: a dict
    of records (str/int/float/list fields), like a batch of rows or messages."""
    out = {}
    for label, n in (
        ("100 B", 1),
        ("1 KB", 10),
        ("10 KB", 100),
        ("100 KB", 1000),
        ("1 MB", 10_000),
    ):
        rows = {
            f"row-{i}": {"id": i, "name": f"item {i}", "score": i * 0.5, "tags": ["a", "b"]}
            for i in range(n)
        }
        out[label] = rows
    out["1 MB (one string)"] = {"text": "x" * 1_000_000}
    return out


def time_fn(fn, x, reps):
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn(x)
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000.0


def key_cost(quick: bool) -> dict:
    fns = {
        "caudal cache_key": lambda x: _core.cache_key(x, "step"),
        "pickle + xxhash128": lambda x: xxhash.xxh3_128_digest(pickle.dumps(x, protocol=5)),
        "json + sha256": lambda x: hashlib.sha256(json.dumps(x, sort_keys=True).encode()).digest(),
    }
    out = {}
    for label, x in sized_inputs().items():
        size = len(pickle.dumps(x))
        reps = max(5, min(2000, 2_000_000 // max(size, 1))) // (4 if quick else 1) or 3
        row = {}
        for _ in range(3):  # interleave the contenders a few times; keep the best median
            for name, fn in fns.items():
                v = time_fn(fn, x, reps)
                row[name] = min(row.get(name, v), v)
        out[label] = {"pickled_bytes": size, **row}
    return out


async def main(quick: bool) -> None:
    cc = await call_cost(quick)
    bare = cc["bare await"]["median_us"]
    hit = cc["caudal execute, cache hit"]["median_us"]
    ct = cc["cachetools TTLCache (as cached())"]["median_us"]
    print("1. per call, small dict input (median µs)")
    for name, r in cc.items():
        print(f"   {name:36} {r['median_us']:8.3f}")
    print(
        f"   cache hit above bare await: {hit - bare:.3f} µs; "
        f"vs cachetools TTLCache: {ct / hit:.2f}x faster"
    )
    kc = key_cost(quick)
    print("\n2. key computation (median µs per key)")
    print(
        f"   {'input':20} {'pickled B':>10} {'caudal':>10} {'pickle+xxh':>11} "
        f"{'json+sha256':>12} {'caudal/pickle':>14}"
    )
    for label, r in kc.items():
        ratio = r["caudal cache_key"] / r["pickle + xxhash128"]
        print(
            f"   {label:20} {r['pickled_bytes']:10d} {r['caudal cache_key']:10.2f} "
            f"{r['pickle + xxhash128']:11.2f} {r['json + sha256']:12.2f} {ratio:14.2f}"
        )
    save("cache", {"quick": quick, "call_cost": cc, "key_cost": kc})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    asyncio.run(main(p.parse_args().quick))
