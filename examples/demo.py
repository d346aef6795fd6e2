"""`make demo`: a small data pipeline through caudal's ExecutorCore.

Three steps — fetch (async, flaky), parse (sync, runs in a worker thread),
score (async, with a timeout and a fallback) — over a batch of records, run
concurrently; then the measured stats and recommendations.
"""

import asyncio
import json
import random

from caudal import ExecutorCore, OptimizationConfig, Step

rng = random.Random(42)


async def fetch(record_id):
    """Pretend API call: 5 ms, fails 20% of the time."""
    await asyncio.sleep(0.005)
    if rng.random() < 0.2:
        raise ConnectionError(f"backend hiccup on record {record_id}")
    return json.dumps({"id": record_id, "text": f"record number {record_id}"})


def parse(payload):
    """CPU work in plain Python: runs off the event loop."""
    doc = json.loads(payload)
    doc["words"] = len(doc["text"].split())
    return doc


async def score(doc):
    await asyncio.sleep(0.002 if doc["id"] % 10 else 1.0)  # every 10th is too slow
    return {**doc, "score": doc["words"] * 0.5}


async def cheap_score(doc):
    return {**doc, "score": 0.0, "degraded": True}


async def main():
    config = OptimizationConfig(slow_execution_threshold_ms=50.0)
    async with ExecutorCore(optimization_config=config) as executor:
        fetch_step = Step(fetch, max_retries=3)
        parse_step = Step(parse)
        score_step = Step(score, timeout_s=0.1, fallback=cheap_score)

        async def pipeline(record_id):
            for step in (fetch_step, parse_step, score_step):
                result = await executor.execute(step, record_id)
                if not result.success:
                    return result
                record_id = result.output
            return result

        results = await asyncio.gather(*(pipeline(i) for i in range(40)))
        ok = [r for r in results if r.success]
        degraded = [r for r in ok if r.output.get("degraded")]
        print(f"pipeline: {len(ok)}/{len(results)} records scored, {len(degraded)} by the fallback")
        print("first result:", results[1])

        stats = executor.get_optimization_stats()
        print("\nper-step statistics (measured natively):")
        print(
            f"  {'step':8} {'runs':>5} {'attempts':>8} {'retries':>7} {'p50 ms':>8} {'p99 ms':>8}"
        )
        for name, s in stats["execution"]["steps"].items():
            print(
                f"  {name:8} {s['executions']:5} {s['attempts']:8} {s['retries']:7} "
                f"{s['p50_ms']:8.2f} {s['p99_ms']:8.2f}"
            )
        eh = stats["error_handling"]
        print(
            f"\nerror rate {eh['error_rate']:.1%}, recovery success rate "
            f"{eh['recovery_success_rate']:.1%}, memory {stats['memory']['usage_mb']:.0f} MB"
        )
        print("\nrecommendations:")
        for rec in executor.get_performance_recommendations():
            print(f"  [{rec['priority']}] {rec['description']}")


if __name__ == "__main__":
    asyncio.run(main())
