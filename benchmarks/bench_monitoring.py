"""What watching costs: the per-call price of execute_with_monitoring against
execute, and the off-hot-path read-outs a notebook or a monitoring loop
makes (stats, recommendations, a LatencyRecorder sample, a plot).

Rows, interleaved in one process and one event loop (benchmarks/_harness.py):
  execute                    a trivial async step
  execute_with_monitoring    the same, plus two reads of /proc/self/statm
then, per call with 1 and 20 steps known to the executor:
  get_optimization_stats(), get_performance_recommendations(),
  LatencyRecorder.sample(), repr(stats), stats._repr_html_(),
  and one plot_latency() rendered to PNG.

    python benchmarks/bench_monitoring.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import interleaved, interleaved_sync, save
from caudal import ExecutorCore, LatencyRecorder, Step


async def trivial(x):
    return x


def readouts(e: ExecutorCore, rec: LatencyRecorder, stats: dict) -> dict:
    return {
        "get_optimization_stats()": lambda _: e.get_optimization_stats(),
        "get_performance_recommendations()": lambda _: e.get_performance_recommendations(),
        "LatencyRecorder.sample()": lambda _: rec.sample(),
        "repr(stats)": lambda _: repr(stats),
        "stats._repr_html_()": lambda _: stats._repr_html_(),
    }


async def main(quick: bool) -> None:
    ex = ExecutorCore()
    step = Step(trivial)
    hot = await interleaved(
        {
            "execute": lambda x: ex.execute(step, x),
            "execute_with_monitoring": lambda x: ex.execute_with_monitoring(step, x),
        },
        rounds=10 if quick else 40,
        batch=500,
    )
    print("per call, trivial step (median µs)")
    for name, r in hot.items():
        print(f"  {name:26} {r['median_us']:8.3f}")
    ratio = hot["execute_with_monitoring"]["median_us"] / hot["execute"]["median_us"]
    print(f"  execute_with_monitoring / execute: {ratio:.1f}x")

    results = {"hot_path": hot}
    print("\nread-outs, off the hot path (median µs per call)")
    print(f"  {'':44} {'1 step':>9} {'20 steps':>9}")
    reads: dict[str, dict[int, float]] = {}
    for nsteps in (1, 20):
        e = ExecutorCore()
        for j in range(nsteps):
            await e.execute_many(Step(trivial, name=f"step_{j}"), range(50), progress=False)
        rec = LatencyRecorder(e)
        stats = e.get_optimization_stats()
        r = interleaved_sync(readouts(e, rec, stats), rounds=5 if quick else 15, batch=20)
        for name, v in r.items():
            reads.setdefault(name, {})[nsteps] = v["median_us"]
        t0 = time.perf_counter()
        e.plot_latency("step_0").savefig(io.BytesIO(), format="png")
        # The first plot of the process imports matplotlib (and may build its
        # font cache); the second is what each later plot costs.
        label = "plot_latency() to PNG (first of the process)" if nsteps == 1 else None
        label = label or "plot_latency() to PNG (a later one)"
        reads.setdefault(label, {})[nsteps] = (time.perf_counter() - t0) * 1e6
    for name, by in reads.items():
        cells = [f"{by[n]:9.0f}" if n in by else f"{'':9}" for n in (1, 20)]
        print(f"  {name:44} {' '.join(cells)}")
    results["read_outs_us"] = {k: {str(n): v for n, v in by.items()} for k, by in reads.items()}
    save("monitoring", results)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    asyncio.run(main(ap.parse_args().quick))
