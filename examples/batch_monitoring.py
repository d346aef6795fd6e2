"""flujo's optimization example 3 (and its troubleshooting guide's
monitoring loops): a batch with monitoring.

``execute_with_monitoring`` for one batch, then a larger run while a
monitoring task prints what flujo's monitoring loops print by hand (average time,
slow executions, recommendations) and a LatencyRecorder keeps percentiles
per interval. ``--plot DIR`` saves the latency and concurrency plots there.

    .venv/bin/python examples/batch_monitoring.py [--plot /tmp/plots]
"""

import argparse
import asyncio
import random
from pathlib import Path

from caudal import ExecutorCore, OptimizationConfig, Step

config = OptimizationConfig(
    enable_performance_monitoring=True,
    enable_optimized_telemetry=True,
    slow_execution_threshold_ms=20.0,
)
rng = random.Random(3)


async def batch_process(item):
    """Mostly 2-6 ms; one item in 12 takes 30 ms (a slow path)."""
    await asyncio.sleep(0.03 if rng.random() < 0.08 else rng.uniform(0.002, 0.006))
    return item * 2


async def monitor_performance(executor, every_s, stop):
    """flujo's monitoring loop, one line per tick instead of a wall of dicts."""
    while not stop.is_set():
        await asyncio.sleep(every_s)
        ex = executor.get_optimization_stats()["execution"]
        print(
            f"  monitor: {ex['total_executions']:4} done, avg {ex['avg_time_ms']:.1f} ms, "
            f"p95 {ex['p95_ms']:.1f} ms, {ex['slow_executions']} slow, "
            f"{ex['in_flight']} in flight"
        )


async def main():
    async with ExecutorCore(optimization_config=config) as executor:
        batch_process_step = Step(batch_process, max_concurrency=8)

        result, metrics = await executor.execute_with_monitoring(batch_process_step, 21)
        print(
            f"one batch: output {result.output}, {metrics['execution_time_ms']:.1f} ms, "
            f"memory {metrics['memory_usage_mb']:.0f} MB"
        )

        recorder = executor.start_latency_recorder(interval_s=0.1)
        stop = asyncio.Event()
        monitor = asyncio.create_task(monitor_performance(executor, 0.15, stop))
        results = await executor.execute_many(batch_process_step, range(1200))
        stop.set()
        await monitor
        recorder.stop()
        print(
            f"{sum(r.success for r in results)}/{len(results)} items, "
            f"{len(recorder.samples())} recorder intervals"
        )
        print(executor.get_performance_recommendations())
        return executor, batch_process_step


def save_plots(executor, step, plot_dir):
    out = Path(plot_dir)
    out.mkdir(parents=True, exist_ok=True)
    executor.plot_latency(step).savefig(out / "batch_latency.png")
    executor.plot_concurrency().savefig(out / "batch_concurrency.png")
    print(f"plots in {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--plot", metavar="DIR", help="save the plots (PNG) in DIR")
    args = ap.parse_args()
    executor, step = asyncio.run(main())
    if args.plot:
        save_plots(executor, step, args.plot)
