"""Contexts: snapshot + one write, get/set latency, memory per version
(issue: context). flujo's OptimizedContextManager copied contexts; a
caudal.Context is a persistent map (HAMT) whose snapshot is free.

1. Snapshot + one write, for contexts of 10 .. 100,000 keys (str keys, str
   values): caudal Context (snapshot() is the Context itself, then set)
   against dict.copy() + setitem, copy.deepcopy + setitem, a pydantic model
   holding the keys in a dict field (model_copy(update={"data": {...}})),
   pyrsistent pmap.set and immutables.Map.set.
2. get and set latency against immutables.Map (and dict as a floor), plus
   100 edits batched through mutate()/finish().
3. Memory kept per version: 50 versions of a 10,000-key context, one write
   each (tracemalloc).
4. The executor's memory (docs/memory.md):
   a. RSS growth over 1,000,000 executions (100,000 with --quick), record
      pool on and off: RSS sampled after a warm-up and every 10%;
   b. native allocations per execute, pool on and off (only when caudal._core
      was built with -DCAUDAL_COUNT_ALLOCATIONS=ON: `make bench-alloc`);
   c. execute latency with enable_object_pool on vs off, side by side;
   d. a forced memory-pressure threshold (1 MB: the process is always
      "critical"): what shrinks, and what it costs a cached workload.

Medians over interleaved rounds (benchmarks/_harness.py); ratios are the
contender's time over caudal's. Floors checked (reported, not asserted):
snapshot cost flat in the number of keys; at 10,000 keys snapshot+write
>= 100x faster than copy.deepcopy and >= 10x faster than dict.copy; get and
set within 2x of immutables.Map.

    python benchmarks/bench_memory_context.py [--quick] [--executor-only]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import immutables
import pydantic
import pyrsistent

from _harness import calibrate, interleaved, interleaved_sync, save
from caudal import Context, ExecutorCore, OptimizationConfig, Step, _core

SIZES = [10, 100, 1000, 10_000, 100_000]


class Model(pydantic.BaseModel):
    data: dict[str, Any]


def contexts(n: int) -> dict[str, Any]:
    d = {f"k{i}": f"value-{i}" for i in range(n)}
    return {
        "dict": d,
        "ctx": Context(d),
        "imap": immutables.Map(d),
        "pmap": pyrsistent.pmap(d),
        "model": Model(data=d),
    }


def snapshot_write(quick: bool) -> dict:
    rounds = 7 if quick else 21
    target = 0.004 if quick else 0.015  # seconds per batch
    deepcopy_budget_s = 3.0 if quick else 12.0
    results: dict[str, Any] = {}
    for n in SIZES:
        c = contexts(n)
        d, ctx, imap, pm, model = c["dict"], c["ctx"], c["imap"], c["pmap"], c["model"]
        key = f"k{n // 2}"

        def dict_copy(x, d=d, key=key):
            d2 = d.copy()
            d2[key] = x

        def deep(x, d=d, key=key):
            d2 = copy.deepcopy(d)
            d2[key] = x

        def pyd(x, model=model, key=key):
            model.model_copy(update={"data": {**model.data, key: x}})

        contenders = {
            "caudal Context snapshot()+set": lambda x, ctx=ctx, key=key: ctx.snapshot().set(key, x),
            "dict.copy()+set": dict_copy,
            "copy.deepcopy+set": deep,
            "pydantic model_copy(update=)": pyd,
            "pyrsistent pmap.set": lambda x, pm=pm, key=key: pm.set(key, x),
            "immutables Map.set": lambda x, imap=imap, key=key: imap.set(key, x),
        }
        batches, skipped = {}, {}
        for name, call in list(contenders.items()):
            batch, per_call = calibrate(call, target)
            if name.startswith("copy.deepcopy") and per_call * batch * rounds > deepcopy_budget_s:
                skipped[name] = (
                    f"skipped: one deepcopy takes {per_call * 1e3:.0f} ms; {rounds} rounds "
                    f"exceed the {deepcopy_budget_s:.0f} s budget"
                )
                del contenders[name]
                continue
            batches[name] = batch
        r = interleaved_sync(contenders, rounds=rounds, batch=batches, warmup=2)
        results[str(n)] = {"timings": r, "skipped": skipped}
    return results


def get_set(quick: bool) -> dict:
    rounds = 9 if quick else 31
    batch = 2000 if quick else 10_000
    results: dict[str, Any] = {}
    for n in (10, 1000, 100_000):
        c = contexts(n)
        d, ctx, imap = c["dict"], c["ctx"], c["imap"]
        keys = [f"k{(i * 7919) % n}" for i in range(1024)]
        contenders = {
            "get: caudal ctx[k]": lambda x, ctx=ctx, keys=keys: ctx[keys[x & 1023]],
            "get: immutables m[k]": lambda x, imap=imap, keys=keys: imap[keys[x & 1023]],
            "get: dict d[k]": lambda x, d=d, keys=keys: d[keys[x & 1023]],
            "get: caudal ctx.get(k)": lambda x, ctx=ctx, keys=keys: ctx.get(keys[x & 1023]),
            "get: immutables m.get(k)": lambda x, imap=imap, keys=keys: imap.get(keys[x & 1023]),
            "set: caudal ctx.set(k, v)": lambda x, ctx=ctx, keys=keys: ctx.set(keys[x & 1023], x),
            "set: immutables m.set(k, v)": lambda x, imap=imap, keys=keys: imap.set(
                keys[x & 1023], x
            ),
        }

        def batch_caudal(x, ctx=ctx, keys=keys):
            with ctx.mutate() as m:
                for i in range(100):
                    m[keys[(x + i) & 1023]] = x
            return m.finish()

        def batch_imm(x, imap=imap, keys=keys):
            with imap.mutate() as m:
                for i in range(100):
                    m[keys[(x + i) & 1023]] = x
            return m.finish()

        batched = {
            "100 sets: caudal mutate()/finish()": batch_caudal,
            "100 sets: immutables mutate()/finish()": batch_imm,
        }
        r = interleaved_sync(contenders, rounds=rounds, batch=batch)
        r.update(interleaved_sync(batched, rounds=rounds, batch=max(1, batch // 100)))
        results[str(n)] = r
    return results


def memory_per_version(quick: bool) -> dict:
    n, versions = 10_000, 50
    c = contexts(n)
    d, ctx, imap, pm, model = c["dict"], c["ctx"], c["imap"], c["pmap"], c["model"]
    makers = {
        "caudal Context": lambda i: ctx.set(f"k{i}", i),
        "dict.copy()": lambda i: {**d, f"k{i}": i},
        "copy.deepcopy": lambda i: copy.deepcopy(d) | {f"k{i}": i},
        "pydantic model_copy": lambda i: model.model_copy(
            update={"data": {**model.data, f"k{i}": i}}
        ),
        "pyrsistent pmap": lambda i: pm.set(f"k{i}", i),
        "immutables Map": lambda i: imap.set(f"k{i}", i),
    }
    out = {}
    for name, make in makers.items():
        gc.collect()
        tracemalloc.start()
        kept = [make(i) for i in range(versions)]
        gc.collect()
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[name] = size / versions
        del kept
    return {"keys": n, "versions": versions, "bytes_per_version": out}


# ------------------------------------------------------------ 4. executor
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


async def work(x):
    return x


async def rss_growth(n: int, pool: bool) -> dict:
    ex = ExecutorCore(OptimizationConfig(enable_object_pool=pool))
    step = Step(work, "work")
    execute = ex.execute
    for i in range(20_000):  # warm-up: step table, histograms, arenas
        await execute(step, i)
    gc.collect()
    start = rss_mb()
    samples = [start]
    tenth = n // 10
    t0 = time.perf_counter()
    for _ in range(10):
        for i in range(tenth):
            await execute(step, i)
        samples.append(rss_mb())
    elapsed = time.perf_counter() - t0
    gc.collect()
    end = rss_mb()
    pool_stats = ex.get_optimization_stats()["memory"]["object_pool"]
    return {
        "executions": tenth * 10,
        "rss_start_mb": start,
        "rss_end_mb": end,
        "rss_max_mb": max(samples),
        "growth_mb": end - start,
        "samples_mb": samples,
        "seconds": elapsed,
        "pool": pool_stats,
    }


async def allocations_per_execute(pool: bool, n: int = 20_000) -> float | None:
    if _core._native_allocations() is None:
        return None
    ex = ExecutorCore(OptimizationConfig(enable_object_pool=pool))
    step = Step(work, "work")
    for i in range(1000):
        await ex.execute(step, i)
    before = _core._native_allocations()
    for i in range(n):
        await ex.execute(step, i)
    return (_core._native_allocations() - before) / n


async def pool_latency(quick: bool) -> dict:
    on = ExecutorCore(OptimizationConfig(enable_object_pool=True))
    off = ExecutorCore(OptimizationConfig(enable_object_pool=False))
    step = Step(work, "work")

    async def bare(x):
        return await work(x)

    contenders = {
        "bare await": bare,
        "execute, enable_object_pool=True": lambda x: on.execute(step, x),
        "execute, enable_object_pool=False": lambda x: off.execute(step, x),
    }
    return await interleaved(
        contenders, rounds=15 if quick else 41, batch=2000 if quick else 5000, warmup=2000
    )


async def forced_pressure(quick: bool) -> dict:
    """A cached workload cycling over 500 keys (cache_max_size=1000: they
    all fit), with the normal threshold and, once the cache is warm, with
    memory_pressure_threshold_mb=1 applied (the process is then critical)."""
    keys = 500

    def config(threshold: float) -> OptimizationConfig:
        return OptimizationConfig(
            enable_cache_optimization=True,
            cache_max_size=1000,
            memory_pressure_threshold_mb=threshold,
        )

    normal, forced = ExecutorCore(config(100_000.0)), ExecutorCore(config(100_000.0))
    step = Step(work, "cached")
    for ex in (normal, forced):
        for i in range(keys):
            await ex.execute(step, i)
    await forced.apply_optimization_config(config(1.0))
    forced.get_optimization_stats()  # a reading now: critical, shrinks
    before = {id(ex): ex.get_optimization_stats()["cache"] for ex in (normal, forced)}
    contenders = {
        "threshold 100,000 MB (normal)": lambda x: normal.execute(step, x % keys),
        "threshold 1 MB (forced critical)": lambda x: forced.execute(step, x % keys),
    }
    timings = await interleaved(
        contenders, rounds=9 if quick else 21, batch=2000 if quick else 5000, warmup=keys
    )
    out: dict[str, Any] = {"timings": timings}
    for name, ex in (("normal", normal), ("forced", forced)):
        st = ex.get_optimization_stats()
        hits = st["cache"]["hits"] - before[id(ex)]["hits"]
        misses = st["cache"]["misses"] - before[id(ex)]["misses"]
        out[name] = {
            "level": st["memory"]["memory_pressure_level"],
            "usage_mb": st["memory"]["usage_mb"],
            "shrunk": st["memory"]["shrunk"],
            "cache_max_size": st["cache"]["max_size"],
            "cache_size": st["cache"]["size"],
            # Over the timed rounds only.
            "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
        }
    # The cost of one RSS reading (what each maintenance round adds, at most
    # every 250 ms): memory_stats() reads /proc/self/statm once.
    engine = forced._engine
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        engine.memory_stats()
    out["memory_stats_us"] = (time.perf_counter() - t0) / n * 1e6
    return out


async def executor_memory(quick: bool) -> dict:
    n = 100_000 if quick else 1_000_000
    return {
        "rss": {
            "pool_on": await rss_growth(n, True),
            "pool_off": await rss_growth(n, False),
        },
        "allocations_per_execute": {
            "pool_on": await allocations_per_execute(True),
            "pool_off": await allocations_per_execute(False),
            "counted": _core._native_allocations() is not None,
        },
        "latency": await pool_latency(quick),
        "pressure": await forced_pressure(quick),
    }


def print_executor_memory(r: dict) -> None:
    print("\n4. Executor memory")
    print("  a. RSS over executions (after a 20,000-execution warm-up)")
    print(f"    {'':<18} {'executions':>11} {'start MB':>9} {'end MB':>8} {'growth MB':>10}")
    for name, x in r["rss"].items():
        print(
            f"    {name:<18} {x['executions']:>11,} {x['rss_start_mb']:>9.1f} "
            f"{x['rss_end_mb']:>8.1f} {x['growth_mb']:>+10.2f}"
        )
    a = r["allocations_per_execute"]
    print("  b. native allocations per execute (operator new calls)")
    if a["counted"]:
        print(f"    pool on: {a['pool_on']:.3f}    pool off: {a['pool_off']:.3f}")
    else:
        print(
            "    not counted in this build (run `make bench-alloc`: a module built with "
            "-DCAUDAL_COUNT_ALLOCATIONS=ON)"
        )
    lat = r["latency"]
    print("  c. execute latency, median per call (interleaved rounds)")
    for name, t in lat.items():
        print(
            f"    {name:<36} {t['median_us'] * 1000:>7.0f} ns   "
            f"(p10 {t['p10_us'] * 1000:.0f}, p90 {t['p90_us'] * 1000:.0f})"
        )
    on = lat["execute, enable_object_pool=True"]["median_us"]
    off = lat["execute, enable_object_pool=False"]["median_us"]
    bare = lat["bare await"]["median_us"]
    print(
        f"    overhead above a bare await: pool on {(on - bare) * 1000:.0f} ns, "
        f"pool off {(off - bare) * 1000:.0f} ns (on/off = {(on - bare) / (off - bare):.2f})"
    )
    p = r["pressure"]
    print(
        "  d. forced memory pressure (cached workload over 500 keys, cache_max_size=1000; "
        "threshold 1 MB applied once warm)"
    )
    for name in ("normal", "forced"):
        x = p[name]
        print(
            f"    {name:<7} level={x['level']:<9} cache {x['cache_size']}/{x['cache_max_size']} "
            f"hit rate {x['hit_rate']:.2f}"
        )
        for s in x["shrunk"]:
            print(f"            shrunk: {s}")
    for name, t in p["timings"].items():
        print(f"    {name:<36} {t['median_us'] * 1000:>7.0f} ns per execute")
    print(f"    one RSS reading + stats read-out: {p['memory_stats_us']:.1f} us")


def fmt_us(us: float) -> str:
    return (
        f"{us * 1000:.0f} ns"
        if us < 1
        else (f"{us:.1f} us" if us < 1000 else f"{us / 1000:.2f} ms")
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--executor-only", action="store_true", help="only section 4 (the executor's memory)"
    )
    p.add_argument("--out", default="memory_context", help="results file name (no .json)")
    args = p.parse_args()
    t0 = time.time()
    if args.executor_only:
        em = asyncio.run(executor_memory(args.quick))
        print_executor_memory(em)
        save(args.out, {"quick": args.quick, "executor_memory": em})
        print(f"\n({time.time() - t0:.0f} s{', --quick' if args.quick else ''})")
        return 0
    sw = snapshot_write(args.quick)
    gs = get_set(args.quick)
    mem = memory_per_version(args.quick)

    ours = "caudal Context snapshot()+set"
    names = [
        ours,
        "dict.copy()+set",
        "copy.deepcopy+set",
        "pydantic model_copy(update=)",
        "pyrsistent pmap.set",
        "immutables Map.set",
    ]
    print("1. Snapshot + one write (median per call; x = contender / caudal)")
    print(f"{'keys':>8} | " + " | ".join(f"{n[:28]:>28}" for n in names))
    for n, row in sw.items():
        base = row["timings"][ours]["median_us"]
        cells = []
        for name in names:
            if name in row["skipped"]:
                cells.append(f"{'skipped':>28}")
                continue
            t = row["timings"][name]["median_us"]
            cell = fmt_us(t) if name == ours else f"{fmt_us(t)} ({t / base:.1f}x)"
            cells.append(f"{cell:>28}")
        print(f"{int(n):>8} | " + " | ".join(cells))
    for n, row in sw.items():
        for name, why in row["skipped"].items():
            print(f"  {name} at {n} keys: {why}")

    print("\n2. get / set latency (median per call)")
    for n, row in gs.items():
        print(f"  {int(n):,} keys")
        for name, t in row.items():
            print(f"    {name:<42} {fmt_us(t['median_us']):>10}")

    print(f"\n3. Memory kept per version ({mem['versions']} versions of {mem['keys']:,} keys)")
    for name, b in mem["bytes_per_version"].items():
        print(f"    {name:<24} {b / 1024:>10.1f} KiB")

    # Floors
    t10 = sw["10"]["timings"][ours]["median_us"]
    t100k = sw["100000"]["timings"][ours]["median_us"]
    at10k = sw["10000"]
    vs_deep = (
        at10k["timings"]["copy.deepcopy+set"]["median_us"] / at10k["timings"][ours]["median_us"]
        if "copy.deepcopy+set" in at10k["timings"]
        else None
    )
    vs_copy = at10k["timings"]["dict.copy()+set"]["median_us"] / at10k["timings"][ours]["median_us"]

    def ratio(row, a, b):
        return row[a]["median_us"] / row[b]["median_us"]

    get_ratio = max(ratio(r, "get: caudal ctx[k]", "get: immutables m[k]") for r in gs.values())
    getm_ratio = max(
        ratio(r, "get: caudal ctx.get(k)", "get: immutables m.get(k)") for r in gs.values()
    )
    set_ratio = max(
        ratio(r, "set: caudal ctx.set(k, v)", "set: immutables m.set(k, v)") for r in gs.values()
    )
    copy_growth = (
        sw["100000"]["timings"]["dict.copy()+set"]["median_us"]
        / sw["10"]["timings"]["dict.copy()+set"]["median_us"]
    )
    growth = t100k / t10
    floors = {
        # 10,000x more keys: the copied path grows from 1 to 4 nodes.
        f"snapshot+write, 100,000 keys / 10 keys (flat: <= 5x; dict.copy: {copy_growth:,.0f}x)": (
            growth,
            growth <= 5,
        ),
        "10,000 keys: copy.deepcopy / caudal (floor >= 100x)": (
            vs_deep,
            vs_deep and vs_deep >= 100,
        ),
        "10,000 keys: dict.copy / caudal (floor >= 10x)": (vs_copy, vs_copy >= 10),
        "get ctx[k] / immutables, worst size (floor <= 2x)": (get_ratio, get_ratio <= 2),
        "get ctx.get(k) / immutables, worst size (floor <= 2x)": (getm_ratio, getm_ratio <= 2),
        "set / immutables, worst size (floor <= 2x)": (set_ratio, set_ratio <= 2),
    }
    print("\nFloors")
    for name, (value, ok) in floors.items():
        shown = "n/a" if value is None else f"{value:.2f}x"
        verdict = "" if ok is None else ("  met" if ok else "  NOT MET")
        print(f"    {name:<72} {shown:>9}{verdict}")
    em = asyncio.run(executor_memory(args.quick))
    print_executor_memory(em)
    print(f"\n({time.time() - t0:.0f} s{', --quick' if args.quick else ''})")

    save(
        args.out,
        {
            "quick": args.quick,
            "snapshot_write": sw,
            "get_set": gs,
            "memory_per_version": mem,
            "floors": {k: {"value": v, "met": ok} for k, (v, ok) in floors.items()},
            "executor_memory": em,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
