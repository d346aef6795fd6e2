"""The step table: cost per call as the number of distinct step objects grows.

The executor keeps what it found out about each step object in a bounded
table (StepTable::kDefaultCapacity = 4,096 entries, least recently used
evicted first). Cycling through more plain functions than that makes every
call a table miss, so a miss must cost about what a hit costs: a plain
function's analysis is shared by every function object of its code object,
and a miss on a full table refits the evicted entry of the same code for
the new function instead of making one. A caudal.Step's evicted entry is
kept for it, and Steps that keep coming back make the table grow (up to
65,536 entries): a chain pipeline larger than the table stops missing
after its first runs.

1. µs per ``execute`` against distinct step objects (10, 1k, 4k, 5k, 10k,
   100k), cycled in order, each a distinct closure of one factory
   (``make(i)``: a step that captures ``i``), cache off and cache on (new
   inputs: every call a cache miss, keyed under the closure's identity,
   unless the cache admission stops caching a step that never hits, as it
   does for all of them alike); plus a fresh ``lambda`` per call (a plain
   ``def``: it runs in a worker thread, so its baseline is 10 lambdas made
   once, cycled) and a fresh ``async def`` per call, cache off and on. Every
   contender has its own ExecutorCore; all run interleaved in one loop
   (benchmarks/_harness.py), medians over rounds.
2. µs per step of a chain pipeline (caudal's Pipeline, ``Step(fn, name)``
   per step, each depending on the one before) against its size, 1k and 10k
   steps (and more in the curve): the first run of each is warm-up (first
   analyses), then runs interleaved.

Floors: 100,000 steps and a fresh function per call at most 1.5x 10 steps
(cache off and on); a 10,000-step chain at most 1.5x a 1,000-step one per
step.

    python benchmarks/bench_step_table.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _floors import Curve, Floor, record
from _harness import interleaved, round_ratio, save
from caudal import ExecutorCore, OptimizationConfig, Pipeline, Step

SIZES = (10, 1_000, 4_000, 5_000, 10_000, 100_000)


def make(i: int):
    async def step(x):
        return x + i

    return step


def executor(cache: bool) -> ExecutorCore:
    return ExecutorCore(
        OptimizationConfig(
            enable_cache_optimization=cache,
            cache_max_size=10_000,
            memory_pressure_threshold_mb=1e6,
        )
    )


def cycling(ex: ExecutorCore, steps: list):
    """Executes the steps in turn, one per call."""
    n = len(steps)
    execute = ex.execute
    pos = [0]

    async def call(x: int) -> None:
        i = pos[0]
        pos[0] = i + 1 if i + 1 < n else 0
        await execute(steps[i], x)

    return call


def fresh_lambda(ex: ExecutorCore):
    """A new (sync) lambda per call: same code object, new function."""
    execute = ex.execute

    async def call(x: int) -> None:
        await execute(lambda v: v + 1, x)

    return call


def sync_lambdas(ex: ExecutorCore, n: int):
    """The baseline of a fresh lambda: n lambdas made once, cycled (a
    plain def runs in a worker thread: the same hop for both)."""
    return cycling(ex, [lambda v, i=i: v + i for i in range(n)])


def fresh_async(ex: ExecutorCore):
    """A new ``async def`` function object per call."""
    execute = ex.execute

    async def call(x: int) -> None:
        async def step(v):
            return v + 1

        await execute(step, x)

    return call


# The floors' ratios: (many, few) contender pairs, per cache setting.
RATIOS = [
    (f"{many}, {tag}", f"{few}, {tag}")
    for tag in ("cache off", "cache on")
    for many, few in (
        ("100000 steps", "10 steps"),
        ("fresh lambda", "10 sync lambdas"),
        ("fresh async def", "10 steps"),
    )
]


async def per_call(quick: bool) -> dict:
    contenders = {}
    executors = []
    for cache in (False, True):
        tag = "cache on" if cache else "cache off"
        for n in SIZES:
            ex = executor(cache)
            executors.append(ex)
            contenders[f"{n} steps, {tag}"] = cycling(ex, [make(i) for i in range(n)])
        for name, make_call in (
            ("fresh lambda", fresh_lambda),
            ("fresh async def", fresh_async),
            ("10 sync lambdas", lambda ex: sync_lambdas(ex, 10)),
        ):
            ex = executor(cache)
            executors.append(ex)
            contenders[f"{name}, {tag}"] = make_call(ex)
    rounds, batch = (5, 2_000) if quick else (15, 20_000)
    res = await interleaved(contenders, rounds=rounds, batch=batch, warmup=2_000)
    for ex in executors:
        await ex.aclose()
    return {
        "median_us": {k: v["median_us"] for k, v in res.items()},
        "ratio": {f"{a} / {b}": round_ratio(res, a, b) for a, b in RATIOS},
    }


async def work(x):
    return x


def chain(n: int) -> Pipeline:
    steps = [Step(work, f"c{i}") for i in range(n)]
    return Pipeline(steps, depends_on={f"c{i}": [f"c{i - 1}"] for i in range(1, n)})


async def per_step(quick: bool) -> dict:
    sizes = (1_000, 10_000) if quick else (1_000, 4_000, 5_000, 10_000, 20_000)
    rounds = 3 if quick else 7
    pipes = {}
    for n in sizes:
        ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=False))
        p = chain(n)
        await p.run(0, executor=ex, store=False)  # warm-up: first analyses
        pipes[n] = (p, ex)
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    rng = random.Random(3)
    order = list(sizes)
    for _ in range(rounds):
        rng.shuffle(order)
        for n in order:
            p, ex = pipes[n]
            reps = max(1, 20_000 // n)
            t0 = time.perf_counter()
            for _ in range(reps):
                run = await p.run(0, executor=ex, store=False)
            samples[n].append((time.perf_counter() - t0) / reps / n * 1e6)
            assert run.status == "completed"
    for _p, ex in pipes.values():
        await ex.aclose()
    return {n: statistics.median(s) for n, s in samples.items()}


async def main(quick: bool) -> dict:
    calls = await per_call(quick)
    # The per-call section's executors and step objects (hundreds of
    # thousands) are garbage now, some of it in cycles: collected here, so
    # that the chains' runs do not pay for traversing them.
    gc.collect()
    steps = await per_step(quick)
    return {
        "quick": quick,
        "per_call_us": calls["median_us"],
        "per_call_ratio": calls["ratio"],
        "chain_us_per_step": steps,
    }


def report(res: dict) -> None:
    c = res["per_call_us"]
    floors = []
    curves = []

    def ratio(name: str, many: str, few: str, note: str = "") -> Floor:
        return Floor(
            name,
            measured=res["per_call_ratio"][f"{many} / {few}"],
            limit=1.5,
            detail=f"{c[many]:.2f} vs {c[few]:.2f} µs{note} (medians); the ratio: median "
            "over rounds of the round's ratio",
        )

    for tag in ("cache off", "cache on"):
        base = f"10 steps, {tag}"
        floors += [
            ratio(f"per call, 100,000 steps / 10 steps, {tag}", f"100000 steps, {tag}", base),
            ratio(
                f"per call, fresh lambda / 10 lambdas, {tag}",
                f"fresh lambda, {tag}",
                f"10 sync lambdas, {tag}",
                " (sync: a worker thread each)",
            ),
            ratio(f"per call, fresh async def / 10 steps, {tag}", f"fresh async def, {tag}", base),
        ]
        curves.append(
            Curve(
                f"µs per call against distinct step objects, {tag}",
                x_label="distinct steps",
                y_label="µs per call",
                points=[(n, round(c[f"{n} steps, {tag}"], 3)) for n in SIZES],
            )
        )
    s = res["chain_us_per_step"]
    floors.append(
        Floor(
            "chain pipeline per step, 10,000 steps / 1,000 steps",
            measured=s[10_000] / s[1_000],
            limit=1.5,
            detail=f"{s[10_000]:.2f} vs {s[1_000]:.2f} µs per step; median of runs",
        )
    )
    curves.append(
        Curve(
            "chain pipeline: µs per step against its size",
            x_label="steps",
            y_label="µs per step",
            points=[(n, round(v, 3)) for n, v in sorted(s.items())],
        )
    )
    record("step_table", floors=floors, curves=curves)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    res = asyncio.run(main(args.quick))
    if not args.quick:
        save("bench_step_table", res)
    report(res)
