"""The executor's clock: reading the CPU's time-stamp counter against
clock_gettime(CLOCK_MONOTONIC), on the execute paths that read it.

Where the kernel keeps time with the TSC, caudal's clock reads the counter
itself and converts it (cpp/caudal/executor/calibrated_clock.h) instead of
calling clock_gettime; ``CAUDAL_CLOCK=system`` keeps clock_gettime. The clock
is chosen once per process, so the two cannot share one: child processes
alternate, system then TSC, pair after pair. Each child times, in one event
loop and interleaved round by round (benchmarks/_harness.py), a bare
``await step(x)`` and three execute paths with every optimization on (a
cache hit, a miss that the admission stops looking up, a miss and a store
with the cache forced on), and reports each path's median cost above the
bare await; then the cost of
one read of each clock from Python (``time.monotonic_ns()`` against
``caudal._core.monotonic_ns()``, both plain C functions of no argument).
Printed: the median over the children of each, for each clock, and the
difference.

    python benchmarks/bench_clock.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PATHS = ("cache hit", "cache miss", "cache forced on, miss and store")


def child(rounds: int, batch: int) -> None:
    from _harness import interleaved, interleaved_sync
    from caudal import ExecutorCore, OptimizationConfig, Step
    from caudal._core import clock_source, monotonic_ns

    flags = [
        f["name"]
        for f in OptimizationConfig.fields()
        if f["type"] == "bool" and f["name"].startswith("enable_")
    ]

    async def step(x):
        return x + 1

    async def hit_step(x):
        return x + 1

    # Past the calibration (the first 10 ms of reads use clock_gettime).
    end = time.monotonic() + 0.05
    while time.monotonic() < end:
        monotonic_ns()

    async def main() -> dict:
        hits = ExecutorCore(OptimizationConfig(**dict.fromkeys(flags, True)))
        misses = ExecutorCore(OptimizationConfig(**dict.fromkeys(flags, True)))
        forced = Step(step, "forced", cache=True)
        await hits.execute(hit_step, -1)
        # The harness's inputs are distinct (but for its warm-up's): the
        # miss rows miss.
        res = await interleaved(
            {
                "bare": lambda x: step(x),
                PATHS[0]: lambda x: hits.execute(hit_step, -1),
                PATHS[1]: lambda x: misses.execute(step, x),
                PATHS[2]: lambda x: misses.execute(forced, x),
            },
            rounds=rounds,
            batch=batch,
        )
        return {p: res[p]["median_us"] - res["bare"]["median_us"] for p in PATHS}

    out = asyncio.run(main())
    # One read from Python, against time.monotonic_ns() (clock_gettime),
    # both plain C functions of no argument, called the same way.
    reads = interleaved_sync(
        {"time.monotonic_ns": lambda x: time.monotonic_ns(), "caudal": lambda x: monotonic_ns()},
        rounds=rounds,
        batch=batch * 10,
    )
    read_ns = {k: v["median_us"] * 1e3 for k, v in reads.items()}
    print(json.dumps({"above_bare_us": out, "read_ns": read_ns, "clock": clock_source()["source"]}))


def run_child(system: bool, rounds: int, batch: int) -> dict:
    env = dict(os.environ)
    env.pop("CAUDAL_CLOCK", None)
    if system:
        env["CAUDAL_CLOCK"] = "system"
    cmd = [sys.executable, __file__, "--child", str(rounds), str(batch)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    from _harness import save

    pairs, rounds, batch = (3, 7, 2000) if args.quick else (10, 15, 10000)
    runs: dict[str, list[dict]] = {"system": [], "tsc": []}
    for _ in range(pairs):
        runs["system"].append(run_child(True, rounds, batch))
        runs["tsc"].append(run_child(False, rounds, batch))
    sources = {k: sorted({r["clock"] for r in v}) for k, v in runs.items()}
    med = {
        k: {p: statistics.median(r["above_bare_us"][p] for r in v) for p in PATHS}
        for k, v in runs.items()
    }
    print(
        f"{pairs} pairs of child processes (system clock, then TSC), each the median "
        f"of {rounds} interleaved rounds of {batch} calls; every optimization on"
    )
    print(f"clock sources seen: CAUDAL_CLOCK=system {sources['system']}, default {sources['tsc']}")
    print(f"{'path (µs above a bare await)':36} {'system':>8} {'tsc':>8} {'saved':>8}")
    rows = []
    for path in PATHS:
        s, t = med["system"][path], med["tsc"][path]
        rows.append({"path": path, "system_us": s, "tsc_us": t, "saved_us": s - t})
        print(f"{path:36} {s:8.3f} {t:8.3f} {s - t:8.3f}")
    reads = {
        k: statistics.median(r["read_ns"]["caudal"] - r["read_ns"]["time.monotonic_ns"] for r in v)
        for k, v in runs.items()
    }
    read_ns = {
        name: statistics.median(r["read_ns"][name] for r in runs["tsc"])
        for name in ("time.monotonic_ns", "caudal")
    }
    print(
        f"one read from Python (a loop of calls, ns): time.monotonic_ns() "
        f"{read_ns['time.monotonic_ns']:.1f}, caudal._core.monotonic_ns() {read_ns['caudal']:.1f}; "
        f"caudal's minus time's: {reads['tsc']:.1f} (CAUDAL_CLOCK=system: {reads['system']:.1f})"
    )
    if sources["tsc"] != ["tsc"]:
        print("(the TSC is not used on this machine: both columns read the system clock)")
    path = save(
        "clock",
        {
            "quick": args.quick,
            "rows": rows,
            "read_ns": read_ns,
            "read_saved_ns": -reads["tsc"],
            "sources": sources,
            "runs": runs,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
