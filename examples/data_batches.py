"""flujo's optimization example 1: a data-processing pipeline over batches.

flujo's configuration (cache on, ten executions at a time), batches
processed with ``execute_many`` under that limit, repeated batches served
from the cache; then the stats sections caudal prints as tables.

    .venv/bin/python examples/data_batches.py
"""

import asyncio
import random

from caudal import ExecutorCore, OptimizationConfig, Step

config = OptimizationConfig(
    object_pool_max_size=100,
    enable_memory_optimization=True,
    enable_step_optimization=True,
    enable_algorithm_optimization=True,
    max_concurrent_executions=10,
    enable_cache_optimization=True,
    cache_max_size=1000,
)


async def process_batch(batch):
    """Pretend I/O (a database read) plus a little CPU: 2 ms a batch."""
    await asyncio.sleep(0.002)
    values = [r["value"] for r in batch["records"]]
    return {"batch": batch["id"], "n": len(values), "total": sum(values), "max": max(values)}


def make_batches(n_batches=60, distinct=40, size=50, seed=7):
    """``n_batches`` batches of which only ``distinct`` differ: re-runs of the
    same input are what a result cache is for."""
    rng = random.Random(seed)
    unique = [
        {"id": i, "records": [{"value": rng.randint(0, 100)} for _ in range(size)]}
        for i in range(distinct)
    ]
    return [unique[i % distinct] for i in range(n_batches)]


async def main():
    async with ExecutorCore(optimization_config=config) as executor:
        process_batch_step = Step(process_batch, cache=True)
        data_batches = make_batches()
        results = await executor.execute_many(process_batch_step, data_batches)
        ok = [r for r in results if r.success]
        hits = sum(r.cache_hit for r in ok)
        print(f"{len(ok)}/{len(results)} batches processed, {hits} from the cache")
        print("first result:", results[0])
        stats = executor.get_optimization_stats()
        print(stats["execution"])
        print(stats["cache"])
        print(f"cache hit rate: {stats['cache']['hit_rate']:.2%}")  # still a plain dict


if __name__ == "__main__":
    asyncio.run(main())
