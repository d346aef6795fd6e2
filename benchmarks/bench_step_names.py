"""Per-name state: what a step name costs to keep, and what it costs to call
with many names around.

1. Memory kept per step name used once: an executor runs N distinct step
   names once each (the step objects are then dropped), and the native heap
   in use (glibc mallinfo2: every C++ allocation, and Python's large ones) and
   the RSS are read at checkpoints. The floor is the marginal heap per name
   between two checkpoints whose step-table sizes are equal (the table keeps
   up to 4,096 entries: its share cancels out). Twice: with no bound, and with
   max_tracked_steps (idle names folded into the "(reclaimed)" row).
2. Per-call cost of a repeated step in an executor that has met 100,000
   distinct names against one that met 10 (interleaved rounds, medians).

    python benchmarks/bench_step_names.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _floors import Curve, Floor, record
from _harness import interleaved, save
from caudal import ExecutorCore, OptimizationConfig, Step

TABLE = 4096  # the step table's capacity: checkpoints are N = k * TABLE + OFFSET
OFFSET = 100
BOUND = 1000  # max_tracked_steps of the bounded run


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap_reader():
    """Bytes of heap in use (malloc'd and not freed), or None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2

    def heap() -> int:
        m = fn()
        return m.uordblks + m.hblkhd

    return heap


HEAP = _heap_reader()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def _payload(x):
    return x


async def kept_per_name(checkpoints: list[int], bound: int | None) -> dict:
    cfg = OptimizationConfig(max_tracked_steps=bound)
    ex = ExecutorCore(cfg)
    gc.collect()
    h0, r0 = (HEAP() if HEAP else 0), rss()
    points = []
    done = 0
    for n in checkpoints:
        while done < n:
            # A distinct name each: a new Step object, executed once, dropped.
            await ex.execute(Step(_payload, f"name-{done}"), done)
            done += 1
        gc.collect()
        heap = (HEAP() - h0) if HEAP else 0
        points.append({"names": n, "heap_bytes": heap, "rss_bytes": rss() - r0})
    stats = ex.get_optimization_stats()["execution"]
    total = stats["total_executions"]
    rows = sum(s["executions"] for s in stats["steps"].values())
    del ex
    gc.collect()
    return {"points": points, "total": total, "rows": rows, "names": stats["step_names"]}


async def per_call(quick: bool) -> dict:
    many = 20_000 if quick else 100_000
    cfg = OptimizationConfig(enable_cache_optimization=False)
    few_ex, many_ex = ExecutorCore(cfg), ExecutorCore(cfg)
    for i in range(10):
        await few_ex.execute(Step(_payload, f"name-{i}"), i)
    for i in range(many):
        await many_ex.execute(Step(_payload, f"name-{i}"), i)
    hot = [Step(_payload, f"hot-{i}") for i in range(10)]

    async def call_few(x):
        return await few_ex.execute(hot[x % 10], x)

    async def call_many(x):
        return await many_ex.execute(hot[x % 10], x)

    res = await interleaved(
        {"10 names": call_few, f"{many:,} names": call_many},
        rounds=9 if quick else 25,
        batch=2000,
    )
    return {"many": many, "results": res}


async def main(quick: bool) -> None:
    ks = [1, 3] if quick else [2, 24]  # 4,196 .. 12,388 (quick), 8,292 .. 98,404
    checkpoints = [1000] + [k * TABLE + OFFSET for k in ks]
    unbounded = await kept_per_name(checkpoints, None)
    bounded = await kept_per_name(checkpoints, BOUND)
    calls = await per_call(quick)

    def marginal(run: dict, key: str) -> float:
        a, b = run["points"][-2], run["points"][-1]
        return (b[key] - a[key]) / (b["names"] - a["names"])

    floors = [
        Floor(
            "heap kept per step name used once",
            measured=marginal(unbounded, "heap_bytes"),
            limit=1024,
            unit="B",
            detail=(
                f"mallinfo2, marginal between {checkpoints[-2]:,} and {checkpoints[-1]:,} "
                "names (equal step-table sizes)"
            ),
        ),
        Floor(
            f"heap kept per name, max_tracked_steps={BOUND}",
            measured=marginal(bounded, "heap_bytes"),
            limit=1024,
            unit="B",
            detail="idle names folded into the (reclaimed) row",
        ),
    ]
    r = calls["results"]
    few, many = r["10 names"]["median_us"], r[f"{calls['many']:,} names"]["median_us"]
    floors.append(
        Floor(
            f"per call, {calls['many']:,} names met / 10",
            measured=many / few,
            limit=1.5,
            detail=f"{many:.2f} vs {few:.2f} µs, repeated step, medians of interleaved rounds",
        )
    )
    curves = [
        Curve(
            "heap kept per step name (no bound)",
            x_label="names",
            y_label="bytes per name",
            points=[(p["names"], p["heap_bytes"] / p["names"]) for p in unbounded["points"]],
        ),
        Curve(
            f"heap kept per step name (max_tracked_steps={BOUND})",
            x_label="names",
            y_label="bytes per name",
            points=[(p["names"], p["heap_bytes"] / p["names"]) for p in bounded["points"]],
        ),
        Curve(
            "RSS growth per step name (no bound)",
            x_label="names",
            y_label="bytes per name",
            points=[(p["names"], p["rss_bytes"] / p["names"]) for p in unbounded["points"]],
        ),
    ]
    for label, run in (("no bound", unbounded), (f"bound {BOUND}", bounded)):
        print(
            f"{label}: total executions {run['total']:,}, rows add up to {run['rows']:,}, "
            f"step_names {run['names']}"
        )
    print(f"per call: {r}")
    record("step_names", floors=floors, curves=curves)
    save(
        "step_names",
        {"unbounded": unbounded, "bounded": bounded, "per_call": calls, "quick": quick},
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    asyncio.run(main(ap.parse_args().quick))
